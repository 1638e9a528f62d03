"""The `journal` command: each subcommand through typer's runner, and the installed script."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from journal import Journal
from replay import run, step, submit
from replay._cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


class Stop(BaseException):
    pass


@step(kind="tool")
async def fetch(page: int) -> str:
    await asyncio.sleep(0.001 * page)
    return f"page {page}"


@step(kind="llm")
async def summarise(text: str) -> str:
    if text == "stop":
        raise Stop
    return text.upper()


async def crawl(pages: int) -> str:
    found = await asyncio.gather(*(fetch(p) for p in range(pages)))
    return await summarise(" ".join(found))


async def halted() -> str:
    return await summarise("stop")


suffix = {"text": "", "query": "q"}


@step(kind="tool")
async def lookup(query: str) -> int:
    return len(query)


async def answer(question: str) -> str:
    found = await lookup(question + suffix["query"])
    return f"{question}={found}{suffix['text']}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        asyncio.run(run(crawl, 2, journal=j, run_id="crawl-old"))
        asyncio.run(run(crawl, 3, journal=j, run_id="crawl-new"))
        with contextlib.suppress(Stop):
            asyncio.run(run(halted, journal=j, run_id="halted"))
    return path


def test_runs_lists_newest_first_with_counts(db: Path) -> None:
    """`journal runs` shows every run, newest first, with its status and step count."""
    result = runner.invoke(app, ["runs", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["run", "workflow", "status"]
    assert [line.split()[0] for line in lines[1:]] == ["halted", "crawl-new", "crawl-old"]
    assert re.search(r"crawl-new\s+tests\.test_cli:crawl\s+completed\s+4\b", result.output)


def test_runs_filters_and_json(db: Path) -> None:
    """--status, --workflow, --limit and --since narrow the list; --json is machine-readable."""
    result = runner.invoke(app, ["runs", "--db", str(db), "--status", "running", "--json"])
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)
    assert only["run_id"] == "halted" and only["status"] == "running" and only["steps"] == 0
    result = runner.invoke(
        app, ["runs", "--db", str(db), "--workflow", "tests.test_cli:crawl", "--limit", "1"]
    )
    assert "crawl-new" in result.output and "crawl-old" not in result.output
    recent = runner.invoke(app, ["runs", "--db", str(db), "--since", "1h", "--json"])
    assert len(json.loads(recent.output)) == 3
    future = runner.invoke(app, ["runs", "--db", str(db), "--since", "2999-01-01", "--json"])
    assert json.loads(future.output) == []


def test_show_prints_the_timeline_indented_by_task(db: Path) -> None:
    """`journal show RUN`: one line per event; child-task keys are indented under the workflow."""
    result = runner.invoke(app, ["show", "crawl-new", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "crawl-new" in result.output and "completed" in result.output
    assert re.search(r"^\s+\d+\s{4}0/1:1\s+tool\s+fetch\s+started", result.output, re.M)
    assert re.search(r"^\s+\d+\s{2}0:1\s+llm\s+summarise\s+completed", result.output, re.M)


def test_show_step_and_payloads(db: Path) -> None:
    """--step KEY shows one step whole, with its arguments and recorded value."""
    result = runner.invoke(app, ["show", "crawl-new", "--db", str(db), "--step", "0:1", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    (event,) = shown["events"]
    assert event["arguments"] == {"text": "page 0 page 1 page 2"}
    assert event["payload"] == "PAGE 0 PAGE 1 PAGE 2"
    text = runner.invoke(app, ["show", "crawl-new", "--db", str(db), "--payloads"])
    assert '"PAGE 0 PAGE 1 PAGE 2"' in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "No run 'nope'"),
        (["show", "crawl-new", "--step", "9:9"], "has no step '9:9'"),
        (["runs", "--status", "done"], "unknown status 'done'"),
        (["runs", "--since", "yesterday"], "cannot read 'yesterday' as a time"),
    ],
)
def test_bad_input_exits_1_with_the_fix(db: Path, args: list[str], message: str) -> None:
    """Unknown runs, steps and option values are errors that say what was expected."""
    result = runner.invoke(app, [*args, "--db", str(db)])
    assert result.exit_code == 1
    assert message in result.output


def test_a_missing_journal_is_not_created(tmp_path: Path) -> None:
    """Reading commands never create a database where none was."""
    missing = tmp_path / "nowhere.db"
    result = runner.invoke(app, ["runs", "--db", str(missing)])
    assert result.exit_code == 1 and "no journal at" in result.output
    assert not missing.exists()


def test_installed_script_runs_and_every_command_is_documented(db: Path) -> None:
    """The `journal` script works as installed, and each command has help and a docs entry."""
    script = Path(sys.executable).with_name("journal")
    result = subprocess.run(
        [str(script), "runs", "--db", str(db), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3
    # A fresh process imports the recorded workflow (tests.test_cli:crawl) from where it stands.
    replayed = subprocess.run(
        [str(script), "replay", "crawl-new", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "reproduced" in replayed.stdout
    docs = (ROOT / "docs" / "cli.md").read_text()
    for command in app.registered_commands:
        name = command.name or ""
        assert command.callback is not None and command.callback.__doc__, name
        assert f"## journal {name}" in docs, f"docs/cli.md has no section for `journal {name}`"
    usage = runner.invoke(app, ["nonsense"])
    assert usage.exit_code == 2


def test_parse_since_reads_ages_and_dates() -> None:
    """Ages count back from now; ISO dates without a zone are UTC; anything else is refused."""
    from datetime import UTC, datetime, timedelta

    from journal import parse_since

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("1.5h", now=now) == now - timedelta(hours=1.5)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:00+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(ValueError, match="30m, 2h, 7d"):
        parse_since("last tuesday")


def test_replay_reproduces_a_recorded_run(db: Path) -> None:
    """`journal replay RUN` imports the recorded workflow and re-runs it offline: exit 0."""
    result = runner.invoke(app, ["replay", "crawl-new", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.output and "4 served from the journal" in result.output


def test_replay_exits_3_with_the_divergence_when_code_changed(tmp_path: Path) -> None:
    """A changed call is reported with the recorded and new call; a changed result too."""
    path = tmp_path / "j.db"
    with Journal(path) as j:
        asyncio.run(run(answer, "why", journal=j, run_id="a-1"))
    try:
        suffix["query"] = "?"
        changed = runner.invoke(app, ["replay", "a-1", "--db", str(path)])
        assert changed.exit_code == 3
        assert "does not reproduce" in changed.output
        assert "query: 'whyq' -> 'why?'" in changed.output
        suffix.update(query="q", text="!")
        different = runner.invoke(app, ["replay", "a-1", "--db", str(path)])
        assert different.exit_code == 3
        assert "result differs" in different.output and "why=4!" in different.output
    finally:
        suffix.update(query="q", text="")


def test_replay_of_a_script_run_needs_an_entry(tmp_path: Path) -> None:
    """A run recorded by a script names `__main__`: the error says to pass --entry."""
    script = tmp_path / "agent.py"
    script.write_text(
        "import asyncio, sys\n"
        "from journal import Journal\n"
        "from replay import run, step\n"
        "@step\n"
        "async def double(n: int) -> int:\n"
        "    return 2 * n\n"
        "async def agent(n: int) -> int:\n"
        "    return await double(n)\n"
        "if __name__ == '__main__':\n"
        "    print(asyncio.run(run(agent, 21, journal=Journal(sys.argv[1]), run_id='s-1')))\n"
    )
    path = tmp_path / "j.db"
    subprocess.run([sys.executable, str(script), str(path)], check=True, capture_output=True)
    needs = runner.invoke(app, ["replay", "s-1", "--db", str(path)])
    assert needs.exit_code == 1 and "--entry path/to/script.py:agent" in needs.output
    done = runner.invoke(app, ["replay", "s-1", "--db", str(path), "--entry", f"{script}:agent"])
    assert done.exit_code == 0, done.output
    assert "1 served from the journal" in done.output


def test_runs_lists_interrupted_runs(tmp_path: Path) -> None:
    """--status interrupted: running runs with no live owner (killed, crashed); a run a live
    process owns is not one of them."""
    from tests.factories import make_owner

    path = tmp_path / "j.db"

    async def cut() -> None:
        await fetch(1)
        raise KeyboardInterrupt

    with Journal(path) as journal:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(cut, journal=journal, run_id="cut-1"))
        asyncio.run(run(crawl, 1, journal=journal, run_id="done-1"))
        busy = journal.store.create_run(
            journal.run("cut-1").model_copy(update={"run_id": "busy-1", "owner": None})
        )
        journal.store.claim(
            busy.run_id,
            make_owner("t", host="elsewhere", pid=1, ttl=300),
            resuming=False,
        )  # fmt: skip
        assert [r.run_id for r in journal.interrupted()] == ["cut-1"]
    result = runner.invoke(app, ["runs", "--status", "interrupted", "--db", str(path)])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()[1:] if line.strip()]
    assert listed == ["cut-1"]


def test_version_and_short_help_and_plain_help_texts() -> None:
    """`journal --version`, `-h` everywhere, and help texts without `<bool>` placeholders, whose
    brackets are text (`[tool.journal]` once vanished as markup); through the installed script."""
    from importlib.metadata import version

    script = str(Path(sys.executable).with_name("journal"))
    shown = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (
        shown.returncode == 0
        and shown.stdout.strip() == f"journal-replay {version('journal-replay')}"
    )
    top = subprocess.run([script, "-h"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and "Commands:" in top.stdout
    commands = re.findall(r"^  ([a-z][a-z-]*)  ", top.stdout, flags=re.MULTILINE)
    assert {"runs", "show", "replay", "verify", "head", "gc", "upgrade-check"} <= set(commands)
    for command in [*(c.split() for c in commands), ["playbooks", "run"]]:
        # In this process: the same app the script runs. Values are named as in the docs
        # (`--db URL`, `show RUN`), never by their Python type (`--db <str>`, `{run_id}`).
        text = CliRunner().invoke(app, [*command, "-h"], prog_name="journal").stdout
        assert not re.search(r"<(bool|str|int|float|path|list)[^>]*>", text), (command, text)
        assert not re.search(r"[{\[][a-z_]+[}\]]", text.partition("\n")[0]), text
        assert "Usage: journal " in text, command
    show_help = CliRunner().invoke(app, ["show", "-h"], prog_name="journal").stdout
    assert "{RUN}" in show_help and "--db URL" in show_help
    runs_help = CliRunner().invoke(app, ["runs", "-h"], prog_name="journal").stdout
    assert "[tool.journal]" in runs_help


def test_runs_pages_and_says_when_more_match(tmp_path: Path) -> None:
    """`journal runs` stops at --limit and says so on stderr (it once stopped silently at 50);
    --offset gives the next page; --jsonl prints one object per line."""
    db = tmp_path / "j.db"

    async def tiny(n: int) -> int:
        return n

    with Journal(db) as journal:
        for n in range(5):
            asyncio.run(run(tiny, n, journal=journal, run_id=f"r{n}"))
    first = CliRunner().invoke(app, ["runs", "--db", str(db), "--limit", "2", "--jsonl"])
    assert first.exit_code == 0
    lines = [line for line in first.stdout.splitlines() if line.startswith("{")]
    assert [json.loads(line)["run_id"] for line in lines] == ["r4", "r3"]
    assert "more match: --offset 2" in first.stderr
    last = CliRunner().invoke(app, ["runs", "--db", str(db), "--limit", "2", "--offset", "4"])
    assert last.exit_code == 0 and "r0" in last.stdout and "r1" not in last.stdout
    assert "more match" not in last.stderr


_UNGUARDED = """
import asyncio
from journal import Journal
from replay import run, step

@step
async def ask(q: str) -> str:
    return f"answer to {q}"

async def agent(topic: str) -> str:
    return await ask(topic)

async def main() -> None:
    with Journal("runs.db") as j:
        print(await run(agent, "cats", journal=j, run_id="ng-1"))

asyncio.run(main())
"""


def test_replaying_a_script_without_a_main_guard_says_so(tmp_path: Path) -> None:
    """A script that runs itself when imported (no `if __name__ == "__main__":`) cannot be
    loaded inside replay: a clear error naming the fix, exit 1, never "does not reproduce"
    (it once exited 3 with a false divergence) and no never-awaited warning."""
    (tmp_path / "agent.py").write_text(_UNGUARDED)
    recorded = subprocess.run(
        [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert recorded.returncode == 0, recorded.stderr
    script = str(Path(sys.executable).with_name("journal"))
    replayed = subprocess.run(
        [script, "replay", "ng-1", "--entry", "agent.py:agent", "--db", "runs.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert 'if __name__ == "__main__":' in replayed.stderr
    assert "does not reproduce" not in replayed.stderr + replayed.stdout
    assert "never awaited" not in replayed.stderr


_FLOW = """
import asyncio

from journal import Journal
from replay import run, step


@step(kind="tool")
async def parse(text: str) -> int:
    return int(text)


async def flow(text: str) -> int:
    {before}return await parse(text) + 1
"""


def _journal_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).with_name("journal"))
    return subprocess.run(
        [script, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("top", "said"),
    [
        ('import os\nKEY = os.environ["NOT_SET_ANYWHERE_KEY"]\n', "NOT_SET_ANYWHERE_KEY"),
        ("import sys\nsys.exit(0)\n", "SystemExit"),
        (
            'print(asyncio.new_event_loop().run_until_complete(run(flow, "1", '
            'journal=Journal("runs.db"), run_id="r-1")))\n',
            'if __name__ == "__main__":',
        ),
    ],
    ids=["env", "exit", "run_until_complete"],
)
@pytest.mark.parametrize("text", ["1", "one"], ids=["completed", "failed"])
def test_an_entry_that_fails_to_import_is_an_error_not_a_verdict(
    tmp_path: Path, top: str, said: str, text: str
) -> None:
    """An entry file whose import fails (an unset environment variable, a `sys.exit`, a
    top-level `loop.run_until_complete`) replayed nothing: exit 1 naming the cause. It once
    said "does not reproduce" (exit 3), "reproduced the recorded failure" of a failed run with
    the import's error (exit 0), or exited 0 in silence."""
    with Journal(tmp_path / "runs.db") as journal:
        (tmp_path / "good.py").write_text(_FLOW.format(before=""))
        sys.path.insert(0, str(tmp_path))
        try:
            import good  # type: ignore[import-not-found]

            with contextlib.suppress(ValueError):
                asyncio.run(run(good.flow, text, journal=journal, run_id="r-1"))
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("good", None)
    (tmp_path / "agent.py").write_text(_FLOW.format(before="") + top)
    replayed = _journal_cli(
        tmp_path, "replay", "r-1", "--entry", "agent.py:flow", "--db", "runs.db"
    )
    out = replayed.stdout + replayed.stderr
    assert replayed.returncode == 1, out
    assert said in replayed.stderr and "nothing was" in replayed.stderr, out
    assert "reproduce" not in out


def test_replaying_a_failed_run_that_now_fails_otherwise_does_not_reproduce(
    tmp_path: Path,
) -> None:
    """A failed run whose code now raises another exception does not reproduce (exit 3, both
    failures named): `journal replay` once said "reproduced the recorded failure" of any
    exception at all. The same failure still reproduces, a step's failure whose type the CLI
    cannot import (`__main__:...`, served as `StepFailed`) included."""
    (tmp_path / "agent.py").write_text(
        _FLOW.format(before="")
        + '\n\nclass Refused(Exception):\n    pass\n\n\n@step(kind="tool")\n'
        'async def refund(amount: int) -> int:\n    raise Refused(f"{amount} is too much")\n'
        "\n\nasync def pay(amount: int) -> int:\n    return await refund(amount)\n\n\n"
        'if __name__ == "__main__":\n    import contextlib\n\n'
        "    with contextlib.suppress(Exception):\n"
        '        asyncio.run(run(flow, "one", journal=Journal("runs.db"), run_id="r-1"))\n'
        "    with contextlib.suppress(Refused):\n"
        '        asyncio.run(run(pay, 250, journal=Journal("runs.db"), run_id="r-2"))\n'
    )
    recorded = subprocess.run(
        [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert recorded.returncode == 0, recorded.stderr
    same = _journal_cli(tmp_path, "replay", "r-1", "--entry", "agent.py:flow", "--db", "runs.db")
    assert same.returncode == 0 and "reproduced the recorded failure" in same.stdout, same
    unimportable = _journal_cli(
        tmp_path, "replay", "r-2", "--entry", "agent.py:pay", "--db", "runs.db"
    )
    assert unimportable.returncode == 0, unimportable.stdout + unimportable.stderr
    assert "reproduced the recorded failure" in unimportable.stdout
    (tmp_path / "agent.py").write_text(_FLOW.format(before="1 / 0\n    "))
    other = _journal_cli(
        tmp_path, "replay", "r-1", "--entry", "agent.py:flow", "--db", "runs.db", "--json"
    )
    assert other.returncode == 3, other.stdout + other.stderr
    verdict = json.loads(other.stdout)
    assert verdict["reproduced"] is False
    assert "ZeroDivisionError" in verdict["detail"] and "ValueError" in verdict["detail"]


def test_runs_json_names_a_forks_parent_and_fork_point(tmp_path: Path) -> None:
    """docs/cli.md says a fork's parent and fork point show in `journal runs --json`."""
    db = tmp_path / "j.db"

    async def tiny(n: int) -> int:
        return n

    with Journal(db) as journal:
        asyncio.run(run(tiny, 1, journal=journal, run_id="parent"))
        journal.fork("parent", at=1, new_run_id="child")
    listed = CliRunner().invoke(app, ["runs", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    runs = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert (runs["child"]["parent_run_id"], runs["child"]["fork_seq"]) == ("parent", 1)
    assert runs["parent"]["parent_run_id"] is None


def test_runs_and_show_tell_submitted_and_interrupted_runs_apart(tmp_path: Path) -> None:
    """A run submitted and never started, and a run whose process stopped mid-way, both stored
    as `running` with no owner, once both showed "running, 0.0 ms": now `submitted` and
    `interrupted`, and a duration counts from the first start, not from submission."""
    import replay

    db = tmp_path / "j.db"

    with Journal(db) as journal:
        replay.submit(crawl, 2, journal=journal, run_id="queued")
        with contextlib.suppress(Stop):
            asyncio.run(run(halted, journal=journal, run_id="stopped"))
    listed = CliRunner().invoke(app, ["runs", "--db", str(db), "--json"])
    states = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert states["queued"]["state"] == "submitted" and states["queued"]["status"] == "running"
    assert states["queued"]["duration_seconds"] == 0
    assert states["stopped"]["state"] == "interrupted"
    table = CliRunner().invoke(app, ["runs", "--db", str(db)]).stdout
    assert "submitted" in table and "interrupted" in table
    shown = CliRunner().invoke(app, ["show", "stopped", "--db", str(db)]).stdout
    assert "interrupted" in shown.splitlines()[0]


def test_replay_resume_signal_and_worker_speak_json(tmp_path: Path) -> None:
    """--json on the commands that act, through the installed script, as scripts read them."""
    db = tmp_path / "j.db"
    script = str(Path(sys.executable).with_name("journal"))

    def journal_json(*args: str) -> tuple[int, Any]:
        done = subprocess.run(
            [script, *args, "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        return done.returncode, json.loads(done.stdout)

    with Journal(db) as journal:
        asyncio.run(run(answer, "why", journal=journal, run_id="a1"))
        submit(crawl, 2, journal=journal, run_id="queued")
    code, replayed = journal_json("replay", "a1")
    assert code == 0 and replayed["reproduced"] is True and replayed["summary"]["served"] == 1
    code, sent = journal_json("signal", "queued", "approval", "true")
    assert code == 0 and (sent["number"], sent["due"], sent["status"]) == (1, False, "running")
    code, stats = journal_json("worker", "--once", "--import", "tests.test_cli")
    assert code == 0 and stats["completed"] == 1
    code, resumed = journal_json("resume", "queued")
    assert code == 0 and resumed["status"] == "completed" and resumed["result"] == "PAGE 0 PAGE 1"


def test_cli_hints_name_cli_commands_not_python_calls(tmp_path: Path) -> None:
    """The library's hints speak to Python callers (`Journal.runs()`, `on_divergence='fork'`);
    the CLI says the same with its own commands."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        asyncio.run(run(answer, "why", journal=journal, run_id="hints"))
    missing = CliRunner().invoke(app, ["show", "no-such-run", "--db", str(db)])
    assert missing.exit_code == 1 and "`journal runs`" in missing.stderr
    assert "Journal.runs()" not in missing.stderr
    suffix["query"] = "changed"
    try:
        replayed = CliRunner().invoke(
            app, ["replay", "hints", "--db", str(db), "--entry", "tests.test_cli:answer"]
        )
    finally:
        suffix["query"] = "q"
    assert replayed.exit_code == 3, replayed.output
    assert "journal fork RUN --at SEQ" in replayed.stderr
    assert "on_divergence" not in replayed.stderr and "mode=" not in replayed.stderr


def test_the_cli_is_quiet_unless_asked_to_be_verbose(tmp_path: Path) -> None:
    """No log lines on stderr by default (the library's loggers carry a NullHandler); -v prints
    what the engine does, through the installed script."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        asyncio.run(run(answer, "why", journal=journal, run_id="quiet"))
    script = str(Path(sys.executable).with_name("journal"))
    base = [script, "replay", "quiet", "--db", str(db), "--entry", "tests.test_cli:answer"]
    quiet = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run(
        [script, "-v", *base[1:]], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert loud.returncode == 0 and "event='run.sitting_finished'" in loud.stderr, loud.stderr


def test_runs_transcripts_in_the_cli_page_have_the_columns_and_keys_it_prints(
    tmp_path: Path,
) -> None:
    """Every `journal runs` table in docs/cli.md has the columns the command prints for runs
    recorded by a script (each with the version that started it), and the `--json` transcript
    has its keys: the cancel section's table once lacked the version column and the JSON its
    `version` key."""
    db = tmp_path / "j.db"
    (tmp_path / "agent.py").write_text(
        "import asyncio\nfrom journal import Journal\nfrom replay import run\n\n\n"
        "async def forever() -> int:\n    return 1\n\n\n"
        'asyncio.run(run(forever, journal=Journal("j.db"), run_id="runaway"))\n'
    )
    made = subprocess.run(
        [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    table = CliRunner().invoke(app, ["runs", "--db", str(db)])
    listed = CliRunner().invoke(app, ["runs", "--db", str(db), "--json"])
    assert table.exit_code == 0 and listed.exit_code == 0
    header = table.stdout.splitlines()[0].split()
    keys = list(json.loads(listed.stdout)[0])
    docs = (ROOT / "docs" / "cli.md").read_text()
    tables = re.findall(r"^\$ journal runs(?! .*--json)[^\n]*\n([^\n]*)", docs, flags=re.M)
    assert tables
    for documented in tables:
        assert documented.split() == header, documented
    shown = re.search(r"^\$ journal runs [^\n]*--json\n(\[.*?^\])", docs, flags=re.M | re.S)
    assert shown is not None
    assert list(json.loads(shown.group(1))[0]) == keys
