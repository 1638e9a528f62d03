"""The pytest plugin (`journal_replay` fixture): a test records its workflow run once, live,
then replays it offline from the committed file, and fails with the divergence diff when the
code changes. Driven with pytester: inner pytest runs in a fresh folder, with the plugin loaded
through its entry point, as a user's project would have it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_TEST = """\
import replay
from replay import step

CALLS = []

@step(kind="llm")
async def ask(prompt: str) -> str:
    CALLS.append(prompt)  # what a paid call would be
    return "answer to " + prompt

async def research(topic: str) -> str:
    first = await ask(topic)
    return first + " / " + await ask("summarise " + first)

def test_research(journal_replay):
    CALLS.clear()
    assert journal_replay.run(research, "cats") == (
        "answer to cats / answer to summarise answer to cats"
    )
    print("CALLS", len(CALLS), "RECORDING", journal_replay.recording)
"""


def _ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\naddopts = --strict-markers -p no:cacheprovider\nfilterwarnings = error\n"
        "    ignore::replay.MissingRunId\n"
    )


def test_a_run_is_recorded_once_and_replayed_offline_after(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    first = pytester.runpytest("-s")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*CALLS 2 RECORDING True*"])
    recorded = pytester.path / "journals" / "test_agent" / "test_research.db"
    assert recorded.is_file()
    assert sorted(p.name for p in recorded.parent.iterdir()) == ["test_research.db"]  # one file

    again = pytester.runpytest("-s", "--journal-mode=replay")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*CALLS 0 RECORDING False*"])  # nothing paid again

    forced = pytester.runpytest("-s", "--journal-record")
    forced.assert_outcomes(passed=1)
    forced.stdout.fnmatch_lines(["*CALLS 2 RECORDING True*"])


def test_a_changed_call_fails_with_the_divergence_diff(pytester: pytest.Pytester) -> None:
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        test_agent=_TEST.replace('await ask("summarise " + first)', 'await ask("shorten " + first)')
    )
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*Run 'test_research-1' diverged from its journal at step 0:2*",
            "*recorded: ask(prompt='summarise answer to cats')*",
            "*now:      ask(prompt='shorten answer to cats')*",
            "*Fix: if the change is meant, record the test again with --journal-record*",
        ]
    )


def test_a_changed_result_or_a_dropped_step_fails_with_what_changed(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        test_agent=_TEST.replace('return first + " / "', 'return first + " | "').replace(
            '" / answer', '" | answer'
        )
    )
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        ["*returns 'answer to cats | answer to summarise*not what it returned*"]
    )
    pytester.makepyfile(
        test_agent=_TEST.replace(
            'return first + " / " + await ask("summarise " + first)', "return first"
        ).replace(' / answer to summarise answer to cats"', '"')
    )
    dropped = pytester.runpytest()
    dropped.assert_outcomes(failed=1)
    dropped.stdout.fnmatch_lines(["*no longer asks for recorded steps 0:2*--journal-record*"])


def test_replay_mode_fails_where_a_journal_is_missing_and_modes_are_checked(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    missing = pytester.runpytest("--journal-mode=replay")
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines(["*no recorded journal at*test_research.db*--journal-record*"])
    assert not (pytester.path / "journals" / "test_agent" / "test_research.db").exists()
    bogus = pytester.runpytest("--journal-mode=bogus")
    assert bogus.ret == 4
    bogus.stderr.fnmatch_lines(["*argument --journal-mode: invalid choice*"])
    pytester.makepyfile(
        test_marked="""\
import pytest

@pytest.mark.journal(mode="sometimes")
def test_marked(journal_replay):
    pass
"""
    )
    marked = pytester.runpytest("test_marked.py")
    marked.stdout.fnmatch_lines(["*journal mode 'sometimes'*not one of once, record, replay*"])
    assert marked.ret != 0


def test_the_marker_names_the_file_and_parametrized_tests_get_their_own(
    pytester: pytest.Pytester,
) -> None:
    _ini(pytester)
    pytester.makepyfile(
        test_many="""\
import pytest
from replay import step

@step
async def double(n: int) -> int:
    return 2 * n

async def flow(n: int) -> int:
    return await double(n)

@pytest.mark.parametrize("n", [1, 2])
def test_each(journal_replay, n):
    assert journal_replay.run(flow, n) == 2 * n

@pytest.mark.journal(name="shared flow")
def test_named(journal_replay):
    assert journal_replay.run(flow, 5) == 10
"""
    )
    pytester.runpytest().assert_outcomes(passed=3)
    folder = pytester.path / "journals" / "test_many"
    assert sorted(p.name for p in folder.iterdir()) == [
        "shared-flow.db",
        "test_each-1.db",
        "test_each-2.db",
    ]
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=3)
    help_text = pytester.runpytest("--help")
    help_text.stdout.fnmatch_lines(["*--journal-mode*", "*--journal-record*"])
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["*@pytest.mark.journal(name=None, mode=None)*"])


def test_the_recorded_file_verifies_and_shows(pytester: pytest.Pytester) -> None:
    """The committed file is a journal like any other: verify and show read it."""
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    from journal import Journal

    path: Path = pytester.path / "journals" / "test_agent" / "test_research.db"
    with Journal(path, read_only=True) as journal:
        assert {v.verdict for v in journal.verify()} == {"intact"}
        (run,) = journal.runs()
        assert run.run_id == "test_research-1" and run.status.value == "completed"


_HTTP_TEST = """\
import os
import httpx
from replay.integrations import instrument, uninstrument

async def chat(question: str) -> str:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            os.environ["LLM_BASE"] + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": question}]},
        )
    return reply.json()["choices"][0]["message"]["content"]

def test_chat(journal_replay):
    if journal_replay.recording:  # replaying, the plugin switches it on for the recorded run
        instrument()
    try:
        assert "owls" in journal_replay.run(chat, "tell me about owls")
    finally:
        uninstrument()
"""


def test_sdk_requests_recorded_through_instrument_replay_with_the_server_gone(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP requests journaled by instrument() while recording are served on replay: with
    the server stopped, the test still passes, and no request reached it twice."""
    from tests.streams import LocalLLM

    _ini(pytester)
    pytester.makepyfile(test_http=_HTTP_TEST)
    server = LocalLLM(tmp_path / "requests.log")
    monkeypatch.setenv("LLM_BASE", server.base_url)
    try:
        pytester.runpytest().assert_outcomes(passed=1)
    finally:
        server.stop()
    assert server.questions() == ["tell me about owls"]
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)
    assert server.questions() == ["tell me about owls"]  # nothing more reached it


_DOUBLE = """\
import pytest
from replay import step

@step
async def double(n: int) -> int:
    return 2 * n

async def flow(n: int) -> int:
    return await double(n)
"""


def test_bad_modes_and_marker_arguments_are_named(pytester: pytest.Pytester) -> None:
    """A journal_mode ini value or conflicting flags stop pytest at once (usage error); a
    marker's positional or misspelt argument or an empty name fails its test, naming it."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\njournal_mode = Replay\n")
    pytester.makepyfile(
        test_marks=_DOUBLE
        + """
@pytest.mark.journal("mine")
def test_positional(journal_replay):
    pass

@pytest.mark.journal(mdoe="replay")
def test_misspelt(journal_replay):
    pass

@pytest.mark.journal(name="///")
def test_empty(journal_replay):
    pass
"""
    )
    bad_ini = pytester.runpytest()
    assert bad_ini.ret == pytest.ExitCode.USAGE_ERROR
    bad_ini.stderr.fnmatch_lines(["*journal_mode ini key is 'Replay'*once, record or replay*"])
    _ini(pytester)
    both = pytester.runpytest("--journal-record", "--journal-mode=replay")
    assert both.ret == pytest.ExitCode.USAGE_ERROR
    both.stderr.fnmatch_lines(["*--journal-record*--journal-mode=replay*one of them*"])
    marks = pytester.runpytest()
    marks.assert_outcomes(errors=3)
    marks.stdout.fnmatch_lines_random(
        [
            "*journal marker takes keywords only*not ('mine',)*name='mine'*",
            "*journal marker got mdoe=*it takes name and mode*",
            "*journal marker's name '///' leaves no file name*",
        ]
    )
    marks.stdout.no_fnmatch_line("*During handling of the above exception*")
    assert not (pytester.path / "journals" / "test_marks" / ".db").exists()


def test_tests_in_classes_and_cases_with_punctuated_ids_get_files_of_their_own(
    pytester: pytest.Pytester,
) -> None:
    """Two classes' `test_x`, cases whose ids differ only in characters a file name cannot
    hold, and a case with a long id each record their own file (no RunConflict, no
    `File name too long`), and all of them replay."""
    _ini(pytester)
    pytester.makepyfile(
        test_names=_DOUBLE
        + """
class TestA:
    def test_x(self, journal_replay):
        assert journal_replay.run(flow, 1) == 2

class TestB:
    def test_x(self, journal_replay):
        assert journal_replay.run(flow, 3) == 6

LONG = "summarise: " + "the printer jammed " * 20

@pytest.mark.parametrize("q", ["what?", "what!", LONG], ids=str)
def test_q(journal_replay, q):
    assert journal_replay.run(flow, len(q)) == 2 * len(q)
"""
    )
    pytester.runpytest().assert_outcomes(passed=5)
    names = sorted(p.name for p in (pytester.path / "journals" / "test_names").iterdir())
    assert names[:2] == ["TestA.test_x.db", "TestB.test_x.db"]
    assert len(names) == 5 and all(len(name) < 130 for name in names)
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=5)


def test_two_tests_naming_the_same_file_fail_with_both_names(pytester: pytest.Pytester) -> None:
    """A file is one test's: a marker name two tests share fails both, naming the other,
    instead of one test's recording replacing the other's."""
    _ini(pytester)
    pytester.makepyfile(
        test_shared=_DOUBLE
        + """
@pytest.mark.journal(name="flow")
def test_one(journal_replay):
    assert journal_replay.run(flow, 1) == 2

@pytest.mark.journal(name="flow")
def test_two(journal_replay):
    assert journal_replay.run(flow, 2) == 4
"""
    )
    shared = pytester.runpytest("--journal-record")
    shared.assert_outcomes(errors=2)
    shared.stdout.fnmatch_lines(
        ["*journals/test_shared/flow.db is also the journal of test_shared.py::test_two*"]
    )
    assert not (pytester.path / "journals" / "test_shared" / "flow.db").exists()


def test_a_run_after_one_that_raised_gets_an_id_of_its_own(pytester: pytest.Pytester) -> None:
    """The default run ids count the runs a test starts, the failed ones too: a second run
    after one that raised is not taken for the first."""
    _ini(pytester)
    pytester.makepyfile(
        test_refused="""\
import pytest
from replay import step

class Refused(Exception):
    pass

@step
async def charge(amount: int) -> str:
    if amount > 100:
        raise Refused(f"over limit: {amount}")
    return f"charged {amount}"

async def pay(amount: int) -> str:
    return await charge(amount)

def test_pay(journal_replay):
    with pytest.raises(Refused, match="over limit"):
        journal_replay.run(pay, 500)
    assert journal_replay.run(pay, 5) == "charged 5"
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)


def test_the_diff_is_shown_whole_when_an_argument_holds_fix(pytester: pytest.Pytester) -> None:
    """A prompt with "Fix:" in it does not cut the divergence diff short."""
    _ini(pytester)
    source = """\
from replay import step

@step(kind="llm")
async def ask(prompt: str) -> str:
    return "ok"

async def review() -> str:
    return await ask("Review this diff. Fix: the loop bound")

def test_review(journal_replay):
    assert journal_replay.run(review) == "ok"
"""
    pytester.makepyfile(test_review=source)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(test_review=source.replace("bound", "bound and the log level"))
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*recorded: ask(prompt='Review this diff. Fix: the loop bound')*",
            "*now:      ask(prompt='Review this diff. Fix: the loop bound and the log level')*",
            "*Likely cause:*",
            "*Replayed from*--journal-record*",
        ]
    )
    changed.stdout.no_fnmatch_line("*During handling of the above exception*")


def test_run_inside_a_running_event_loop_says_to_await_arun(pytester: pytest.Pytester) -> None:
    """`run()` called where an event loop runs (an async test) fails saying to await
    `arun()`, and leaves no coroutine never awaited behind."""
    _ini(pytester)
    pytester.makepyfile(
        test_loop=_DOUBLE
        + """
import asyncio

def test_nested(journal_replay):
    async def main():
        return journal_replay.run(flow, 1)
    asyncio.run(main())
"""
    )
    nested = pytester.runpytest()
    nested.assert_outcomes(failed=1)
    nested.stdout.fnmatch_lines(["*inside a running event loop*await journal_replay.arun(*"])
    nested.stdout.no_fnmatch_line("*never awaited*")


def test_arun_on_trio_says_it_needs_asyncio(pytester: pytest.Pytester) -> None:
    """The engine runs on asyncio: `arun()` awaited under trio says so, rather than failing
    deep inside with "no running event loop"."""
    pytest.importorskip("trio", reason="trio comes with selenium (the dev extra)")
    _ini(pytester)
    pytester.makepyfile(
        test_trio=_DOUBLE
        + """
import trio

def test_on_trio(journal_replay):
    trio.run(journal_replay.arun, flow, 1)
"""
    )
    on_trio = pytester.runpytest()
    on_trio.assert_outcomes(failed=1)
    on_trio.stdout.fnmatch_lines(["*arun() runs on asyncio*no asyncio event loop runs here*"])


def test_recording_again_keeps_the_journal_of_a_test_that_skips(
    pytester: pytest.Pytester,
) -> None:
    """--journal-record replaces a journal when the test records into it, not before: a
    test that skips (no key to record with here) keeps its committed file."""
    _ini(pytester)
    pytester.makepyfile(
        test_keyed=_DOUBLE
        + """
import os

def test_keyed(journal_replay):
    if journal_replay.recording and "LLM_KEY" not in os.environ:
        pytest.skip("recording needs LLM_KEY")
    assert journal_replay.run(flow, 1) == 2
"""
    )
    recorded = pytester.path / "journals" / "test_keyed" / "test_keyed.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LLM_KEY", "k")
        pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--journal-record").assert_outcomes(skipped=1)
    assert recorded.is_file()
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)
    pointer = "version https://git-lfs.github.com/spec/v1\n"  # not fetched: left as it is
    recorded.write_text(pointer)
    pytester.runpytest("--journal-record").assert_outcomes(skipped=1)
    assert recorded.read_text() == pointer


def test_a_recording_cut_short_is_named_as_such(pytester: pytest.Pytester) -> None:
    """A journal whose recording stopped mid-run (the process died) fails the replay saying
    so, not as if the code had changed."""
    _ini(pytester)
    pytester.makepyfile(
        test_cut=_DOUBLE
        + """
import os

class Killed(BaseException):
    '''Stands in for the process dying while it records.'''

async def twice(n: int) -> int:
    first = await double(n)
    if os.environ.get("KILL"):
        raise Killed
    return first + await double(first)

def test_twice(journal_replay):
    assert journal_replay.run(twice, 1) == 6
"""
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KILL", "1")
        pytester.runpytest().assert_outcomes(failed=1)
    cut = pytester.runpytest()
    cut.assert_outcomes(failed=1)
    cut.stdout.fnmatch_lines(
        ["*recording of run 'test_twice-1'*did not finish (it is running)*--journal-record*"]
    )
    cut.stdout.no_fnmatch_line("*if the change is meant*")


def _tamper(path: Path, sql: str) -> None:
    """Edit a journal as someone with the file would: drop the append-only triggers, edit."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'")
        kept = triggers.fetchall()
        for name, _ in kept:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(sql)
        for _, create in kept:
            conn.execute(create)
    conn.close()


def test_a_journal_edited_by_hand_fails_the_replay(pytester: pytest.Pytester) -> None:
    """A recorded result edited in the file (and the test edited to match) fails as an
    edit, with what verify finds, instead of passing on forged data."""
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    pytester.runpytest().assert_outcomes(passed=1)
    path = pytester.path / "journals" / "test_agent" / "test_research.db"
    _tamper(
        path,
        "UPDATE events SET payload = CAST('\"answer to dogs\"' AS BLOB) "
        "WHERE seq = 1 AND status = 'completed'",
    )
    forged = pytester.runpytest()
    forged.assert_outcomes(failed=1)
    forged.stdout.fnmatch_lines(
        ["*test_research.db was edited after it was recorded*run 'test_research-1'*seq 1*"]
    )


def test_a_journal_signed_with_another_key_replays(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal recorded with one JOURNAL_HMAC_KEY replays where another is set (a
    developer's key, CI's): the run cannot be verified there, which is not an edit."""
    _ini(pytester)
    pytester.makepyfile(test_agent=_TEST)
    monkeypatch.setenv("JOURNAL_HMAC_KEY", "the key it was recorded with")
    pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("JOURNAL_HMAC_KEY", "another key")
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)


def test_a_step_whose_return_type_changed_fails_with_the_record_hint(
    pytester: pytest.Pytester,
) -> None:
    """A step's return model that gained a required field no longer decodes what was
    recorded: the replay fails naming the step and the type, and the flag that records it
    again, without a traceback through pydantic."""
    _ini(pytester)
    source = """\
from pydantic import BaseModel
from replay import step

class Answer(BaseModel):
    text: str

@step(kind="llm")
async def ask(question: str) -> Answer:
    return Answer(text="Fix: " + question)  # "Fix:" in a value is the value's

async def flow(question: str) -> str:
    return (await ask(question)).text

def test_flow(journal_replay):
    assert journal_replay.run(flow, "owls") == "Fix: owls"
"""
    pytester.makepyfile(test_typed=source)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        test_typed=source.replace("    text: str\n", "    text: str\n    score: float\n")
    )
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*step 0:1 (ask)*does not decode as Answer*score*Fix: owls*annotation changed*",
            "*Replayed from*--journal-record*",
        ]
    )
    changed.stdout.no_fnmatch_line("*_codec.py*")


def test_changed_inputs_and_a_file_that_is_no_journal_name_the_fix(
    pytester: pytest.Pytester,
) -> None:
    """Inputs other than the recorded ones, and a file that is not a journal (a Git LFS
    pointer), fail without a traceback into the engine and name --journal-record."""
    _ini(pytester)
    pytester.makepyfile(
        test_inputs=_DOUBLE
        + """
def test_flow(journal_replay):
    assert journal_replay.run(flow, 1) == 2
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        test_inputs=_DOUBLE
        + """
def test_flow(journal_replay):
    assert journal_replay.run(flow, 2) == 4
"""
    )
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        ["*recorded with inputs*called now with inputs*", "*Replayed from*--journal-record*"]
    )
    changed.stdout.no_fnmatch_line("*_run.py*")
    path = pytester.path / "journals" / "test_inputs" / "test_flow.db"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 45056\n")
    pointer = pytester.runpytest()
    pointer.assert_outcomes(failed=1)
    pointer.stdout.fnmatch_lines(
        ["*test_flow.db cannot be read as a journal*not a database*--journal-record*"]
    )
    pointer.stdout.no_fnmatch_line("*During handling of the above exception*")


def test_a_recorded_failure_that_now_returns_fails(pytester: pytest.Pytester) -> None:
    """A run recorded failing that now returns a value returns something else than it did:
    the replay fails, naming the recorded error and the new result."""
    _ini(pytester)
    source = """\
import pytest
from replay import step

class Refused(Exception):
    pass

@step
async def charge(amount: int) -> str:
    raise Refused(f"over limit: {amount}")

async def pay(amount: int) -> str:
    return await charge(amount)

def test_pay(journal_replay):
    with pytest.raises(Refused):
        journal_replay.run(pay, 500)
"""
    pytester.makepyfile(test_pay=source)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)
    pytester.makepyfile(
        test_pay=source.replace(
            "    return await charge(amount)",
            "    try:\n        return await charge(amount)\n    except Refused:\n"
            '        return "declined"',
        ).replace("    with pytest.raises(Refused):\n    ", "    ")
    )
    swallowed = pytester.runpytest()
    swallowed.assert_outcomes(failed=1)
    swallowed.stdout.fnmatch_lines(
        ["*run 'test_pay-1'*returns 'declined'*recorded*Refused: over limit: 500*"]
    )


def test_a_replay_sends_no_request_that_the_recording_did_not_journal(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline means offline: the plugin journals a run's HTTP requests while it records,
    though the test never called instrument(), so the replay asks the server nothing."""
    from tests.streams import LocalLLM

    _ini(pytester)
    pytester.makepyfile(
        test_http=_HTTP_TEST.replace(
            "    if journal_replay.recording:  # replaying, the plugin switches it on for the "
            "recorded run\n        instrument()\n",
            "",
        )
    )
    server = LocalLLM(tmp_path / "requests.log")
    monkeypatch.setenv("LLM_BASE", server.base_url)
    try:
        pytester.runpytest().assert_outcomes(passed=1)
        assert server.questions() == ["tell me about owls"]
        pytester.runpytest("--journal-mode=replay")
        assert server.questions() == ["tell me about owls"]  # the replay asked nothing
    finally:
        server.stop()


def test_loading_the_plugin_does_not_import_the_engine() -> None:
    """pytest loads the plugin in every run of every project in the environment: loading it
    costs pytest and the standard library only; the engine comes with the fixture."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, importlib.metadata as m; "
            "[e.load() for e in m.entry_points(group='pytest11') if e.name == 'journal']; "
            "print(sorted(n for n in ('journal', 'pydantic', 'structlog') if n in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert loaded.stdout.strip() == "[]"


def test_a_recorded_run_the_test_no_longer_starts_fails(pytester: pytest.Pytester) -> None:
    """A test that made two runs when it was recorded and makes one now has changed, as a run
    that no longer asks for a recorded step has."""
    _ini(pytester)
    source = (
        _DOUBLE
        + """
def test_runs(journal_replay):
    assert journal_replay.run(flow, 1) == 2
    assert journal_replay.run(flow, 2) == 4
"""
    )
    pytester.makepyfile(test_runs=source)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        test_runs=source.replace("    assert journal_replay.run(flow, 2) == 4\n", "")
    )
    fewer = pytester.runpytest()
    assert fewer.ret == pytest.ExitCode.TESTS_FAILED
    fewer.assert_outcomes(passed=1, errors=1)  # an error at the fixture's teardown
    fewer.stdout.fnmatch_lines(["*no longer starts recorded run 'test_runs-2'*--journal-record*"])
    # A test whose body already failed gets that failure alone, not a second error.
    pytester.makepyfile(
        test_runs=source.replace("    assert journal_replay.run(flow, 2) == 4\n", "    assert 0\n")
    )
    pytester.runpytest().assert_outcomes(failed=1)


_KEYED_TEST = """\
import os
import httpx
from replay.integrations import instrument, uninstrument

async def chat(question: str, api_key: str) -> str:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            os.environ["LLM_BASE"] + os.environ["LLM_PATH"],
            headers={"Authorization": "Bearer " + api_key, "api-key": api_key},
            json={"model": "m", "messages": [{"role": "user", "content": question}]},
        )
    return reply.text

def test_chat(journal_replay):
    if journal_replay.recording:
        instrument()
    try:
        assert journal_replay.run(chat, "tell me about owls", os.environ["LLM_KEY"])
    finally:
        uninstrument()
"""


def _record_keyed(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> bytes:
    """Record `_KEYED_TEST` against the local server, POSTing to `path`; the file's bytes."""
    from tests.streams import LocalLLM

    _ini(pytester)
    pytester.makepyfile(test_keyed=_KEYED_TEST)
    server = LocalLLM(tmp_path / "requests.log")
    monkeypatch.setenv("LLM_BASE", server.base_url)
    monkeypatch.setenv("LLM_PATH", path)
    monkeypatch.setenv("LLM_KEY", "sk-committed-by-mistake-0123456789")
    try:
        pytester.runpytest().assert_outcomes(passed=1)
    finally:
        server.stop()
    return (pytester.path / "journals" / "test_keyed" / "test_chat.db").read_bytes()


def test_the_committed_file_holds_no_api_key(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file a replay test commits holds neither the key an SDK sends in its headers nor
    the one passed to the workflow; the replay passes with the server gone."""
    recorded = _record_keyed(pytester, tmp_path, monkeypatch, "/chat/completions")
    assert b"owls" in recorded  # the run is there
    assert b"sk-committed-by-mistake" not in recorded
    pytester.runpytest("--journal-mode=replay").assert_outcomes(passed=1)
