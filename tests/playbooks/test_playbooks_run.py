"""`journal playbooks run`: a real Playbooks program, compiled and interpreted through a local
stand-in API, interrupted in a real process, resumed and replayed with the same command."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import diskcache  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal, RunStatus
from replay._cli import app
from tests.playbooks.api import GOODBYE, HELLO, PlaybooksAPI

JOURNAL_SCRIPT = Path(sys.executable).with_name("journal")


def command(*args: str) -> list[str]:
    return [str(JOURNAL_SCRIPT), "playbooks", "run", *args]


class Ran(NamedTuple):
    code: int
    out: str
    err: str


def in_process(*args: str) -> Ran:
    """The command run here, as `journal playbooks run ARGS`: exit code, stdout, stderr."""
    result = CliRunner().invoke(app, ["playbooks", "run", *args], prog_name="journal")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_at_goodbye(api: PlaybooksAPI, project: Path, signum: int) -> str:
    """Start the program in a child process (standard input closed), wait until its goodbye
    turn is in flight at the API, check the compile and the hello turn are journaled by then,
    and send `signum`. Returns what the child wrote on stderr."""
    api.hold_goodbye = True
    errors = project / "child.err"
    with errors.open("w") as stderr:
        child = subprocess.Popen(
            command("hello.pb", "--run-id", "hello-1"),
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            # Ctrl+C as in a terminal: a suite started in the background (`make test &`)
            # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=_default_sigint,
        )
        try:
            assert api.goodbye_arrived.wait(120), errors.read_text()
            with Journal(project / "journal" / "runs.db", read_only=True) as journal:
                done = [e for e in journal.events("hello-1") if e.status.value == "completed"]
            assert len(done) == 2  # the compile and the hello turn, answered and committed
            assert api.roles() == ["compile", "hello", "goodbye"]
            child.send_signal(signum)
            if signum != signal.SIGKILL:
                time.sleep(0.3)  # the signal lands while the call is still in flight
            api.release.set()
            code = child.wait(60)
        finally:
            child.kill()
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 130), errors.read_text()
    return errors.read_text()


def test_sigkill_mid_run_then_resume_and_replay_pay_no_answered_call_twice(
    api: PlaybooksAPI, project: Path
) -> None:
    """SIGKILL while the interpreter's second call is in flight: the compile and the first
    turn were answered and journaled, so the resume (the same command with --resume) asks the
    API only for the call in flight, which never got its answer. A resume of the edited
    program stops at its first call, the compile, says how to fork, and sends nothing; the
    run stays resumable. Settings come from
    journal.toml (the journal's url), and Playbooks' LLM cache stays off although the
    environment asks for it: it would answer ahead of the journal. The replay sends nothing."""
    interrupted_at_goodbye(api, project, signal.SIGKILL)
    with Journal(project / "journal" / "runs.db", read_only=True) as journal:
        assert journal.run("hello-1").status is RunStatus.RUNNING  # killed: no owner left

    program = project / "hello.pb"
    original = program.read_text()
    program.write_text(original.replace("then goodbye", "then farewell"))
    ran = in_process("hello.pb", "--run-id", "hello-1", "--resume")
    assert ran.code == 1  # the edit shows at the first call, the compile; nothing was sent
    assert "0:1" in ran.err and 'on_divergence = "fork" in [playbooks]' in ran.err
    assert len(api.received) == 3
    program.write_text(original)

    ran = in_process("hello.pb", "--run-id", "hello-1", "--resume")
    assert ran.code == 0, ran.err
    assert HELLO in ran.out and GOODBYE in ran.out
    assert "run hello-1 (resume): 2 served from the journal, 0 executed live, " in ran.err
    assert "1 re-executed after a crash" in ran.err
    assert "Playbooks' LLM cache (LLM_CACHE_ENABLED) is off for this run" in ran.err
    assert api.roles() == ["compile", "hello", "goodbye", "goodbye"]
    assert api.paid_twice() == ["goodbye", "goodbye"]  # only the call in flight at the kill
    assert len(diskcache.Cache(str(project / "llm-cache"))) == 0  # Playbooks' cache unused

    api.stop()  # offline: a request now could not even connect
    ran = in_process("hello.pb", "--run-id", "hello-1", "--replay")
    assert ran.code == 0, ran.err
    assert HELLO in ran.out and GOODBYE in ran.out
    assert "run hello-1 (replay): 3 served from the journal, 0 executed live" in ran.err
    assert len(api.received) == 4


def test_ctrl_c_mid_run_then_resume_pays_for_nothing_and_an_edit_is_caught(
    api: PlaybooksAPI, project: Path
) -> None:
    """SIGINT (Ctrl+C) while the interpreter's second call is in flight: Playbooks calls
    its LLM synchronously, so the call completes and is journaled before the run stops; the
    command exits 130 and prints how to resume. The resume (--resume without a run id: this
    program's newest interrupted run) and the replay send the API nothing: no request was
    paid twice, the compile included. An edited program no longer replays: exit 3 at the
    compile, the first call."""
    stderr = interrupted_at_goodbye(api, project, signal.SIGINT)
    assert "run hello-1 interrupted" in stderr
    assert "Resume it: journal playbooks run hello.pb --run-id hello-1 --resume" in stderr

    ran = in_process("hello.pb", "--resume")
    assert ran.code == 0, ran.err
    assert "run hello-1 (resume): 3 served from the journal, 0 executed live" in ran.err
    ran = in_process("hello.pb", "--run-id", "hello-1", "--replay")
    assert ran.code == 0, ran.err
    assert HELLO in ran.out and GOODBYE in ran.out
    assert api.roles() == ["compile", "hello", "goodbye"] and api.paid_twice() == []

    program = project / "hello.pb"
    program.write_text(program.read_text().replace("then goodbye", "then farewell"))
    ran = in_process("hello.pb", "--run-id", "hello-1", "--replay")
    assert ran.code == 3
    assert "does not reproduce" in ran.err and "0:1" in ran.err
    assert len(api.received) == 3


def test_a_new_run_gets_an_id_and_is_told_how_to_resume(api: PlaybooksAPI, project: Path) -> None:
    """Without --run-id the run is named after the program; the command prints the name and
    the command that resumes it before the program starts, and runs it to its end. Starting
    it again under the same name is refused with the ways to continue it."""
    ran = in_process("hello.pb")
    assert ran.code == 0, ran.err
    first = next(line for line in ran.err.splitlines() if line.startswith("journal: run "))
    assert first.startswith("journal: run hello-") and "--resume" in first
    run_id = first.split()[2]
    assert f"journal playbooks run hello.pb --run-id {run_id} --resume" in first
    assert "0 served from the journal, 3 executed live" in ran.err
    ran = in_process("hello.pb", "--run-id", run_id)
    assert ran.code == 1
    assert f"run {run_id!r} already exists (completed" in ran.err and "--replay" in ran.err
    assert api.roles() == ["compile", "hello", "goodbye"]


def test_a_run_failed_by_an_unreachable_api_is_retried_once_it_is_back(
    api: PlaybooksAPI, project: Path
) -> None:
    """litellm turns the journaled transport error into its own exception: the run's failure
    must still reopen that request, so `journal retry` sends it again once the API is back
    (it served the recorded failure again, retry after retry)."""
    api.down = True
    ran = in_process("hello.pb", "--run-id", "down-1")
    assert ran.code == 1, ran.err
    api.down = False
    retried = CliRunner().invoke(app, ["retry", "down-1"], prog_name="journal")
    assert retried.exit_code == 0, retried.stderr
    assert api.roles() == ["compile", "hello", "goodbye"]
    with Journal(project / "journal" / "runs.db", read_only=True) as journal:
        assert journal.run("down-1").status is RunStatus.COMPLETED
        assert {v.verdict for v in journal.verify()} == {"intact"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('[playbooks]\non_divergence = "skip"\n', "on_divergence 'skip' (from "),
        ("[playbooks]\nresume = true\n", "unknown [playbooks] settings ['resume']"),
        ('[playbooks]\napplication = "no.such.app"\n', "'no.such.app' (from "),
        ('durability = "fast"\n', "durability 'fast' (from "),
    ],
)
def test_a_bad_setting_is_named_with_its_file_and_the_fix(
    project: Path, settings: str, message: str
) -> None:
    """A bad value in journal.toml stops the command before anything runs: the error names
    the setting, the file it came from, and what it may be."""
    (project / "journal.toml").write_text(settings)
    ran = in_process("hello.pb")
    assert ran.code == 1
    assert message in ran.err and "journal.toml" in ran.err
    assert not (project / ".journal").exists()


def test_a_missing_program_is_an_error_that_says_what_to_pass(project: Path) -> None:
    """No such file, or a folder: a clear error, exit 1, and no journal is created."""
    ran = in_process("nowhere.pb")
    assert ran.code == 1 and "no program at nowhere.pb" in ran.err and ".pbasm" in ran.err
    ran = in_process(".")
    assert ran.code == 1 and "is not a file" in ran.err
    assert not (project / "journal").exists()


def test_resume_and_replay_need_a_run_that_exists(project: Path) -> None:
    """--resume or --replay of a run the journal does not hold is refused (a typo must not
    start a fresh run that pays for everything again); so are both flags at once."""
    ran = in_process("hello.pb", "--run-id", "nope", "--resume")
    assert ran.code == 1 and "no journal at journal/runs.db" in ran.err
    Journal(project / "journal" / "runs.db").close()
    ran = in_process("hello.pb", "--run-id", "nope", "--replay")
    assert ran.code == 1 and "no run 'nope' in this journal" in ran.err
    ran = in_process("hello.pb", "--resume")
    assert ran.code == 1 and "no interrupted run of hello.pb" in ran.err
    ran = in_process("hello.pb", "--resume", "--replay")
    assert ran.code == 2 and "choose one of --resume and --replay" in ran.err
    with Journal(project / "journal" / "runs.db", read_only=True) as journal:
        assert journal.runs() == []


async def _other() -> str:
    return "not a Playbooks program"


def test_a_run_continued_with_another_program_path_or_application_says_which_it_was(
    api: PlaybooksAPI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run records the program's path from the folder it was started in, and the
    application: resumed or replayed from another folder, with another [playbooks]
    application, or under the id of a run that is no Playbooks program, the command says
    what the run was and what to do, in its own words, and sends nothing (the workflow's own
    check spoke of inputs and run_id)."""
    assert in_process("hello.pb", "--run-id", "hello-1").code == 0
    (project / "sub").mkdir()
    (project / "sub" / "journal.toml").write_text('url = "../journal/runs.db"\n')
    monkeypatch.chdir(project / "sub")
    ran = in_process("../hello.pb", "--run-id", "hello-1", "--replay")
    assert ran.code == 1
    assert "ran the program hello.pb (its path from the folder the run was started in)" in ran.err
    assert "`journal playbooks run hello.pb --run-id hello-1 --replay`" in ran.err
    assert "inputs" not in ran.err

    monkeypatch.chdir(project)
    (project / "journal.toml").write_text(
        'url = "journal/runs.db"\n\n[playbooks]\napplication = "tests.playbooks.api"\n'
    )
    ran = in_process("hello.pb", "--run-id", "hello-1", "--resume")
    assert ran.code == 1
    assert "application is now tests.playbooks.api" in ran.err
    assert 'set application = "playbooks.applications.agent_chat"' in ran.err

    (project / "journal.toml").write_text('url = "journal/runs.db"\n')
    with Journal(project / "journal" / "runs.db") as journal:
        asyncio.run(replay.run(_other, journal=journal, run_id="other-1"))
    ran = in_process("hello.pb", "--run-id", "other-1", "--resume")
    assert ran.code == 1 and "is not a run of a Playbooks program" in ran.err
    assert api.roles() == ["compile", "hello", "goodbye"]
