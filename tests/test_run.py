"""run(): start, resume, completed runs, replay mode, conflicts, journaled() blocks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import replay
from journal import EventStatus, Journal, JournalUnavailable, RunStatus
from replay import (
    FrontierReached,
    RunConflict,
    RunNotFound,
    journaled,
    run,
    run_with_summary,
    step,
)

executed: list[str] = []


class Crash(BaseException):
    """Stands in for a process dying: not an Exception, so nothing records a failure."""


@step
async def fetch(item: str) -> str:
    executed.append(item)
    await asyncio.sleep(0)
    return item.upper()


async def three_steps(prefix: str) -> list[str]:
    return [await fetch(f"{prefix}-{i}") for i in range(3)]


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()


def test_completed_run_returns_recorded_result_without_executing(journal: Journal) -> None:
    """Calling run() again on a completed run returns the recorded result; nothing runs."""
    first = asyncio.run(run(three_steps, "a", journal=journal, run_id="r1"))
    outcome = asyncio.run(run_with_summary(three_steps, "a", journal=journal, run_id="r1"))
    assert outcome.result == first == ["A-0", "A-1", "A-2"]
    assert outcome.summary.already_finished
    assert executed == ["a-0", "a-1", "a-2"]
    assert journal.run("r1").status is RunStatus.COMPLETED


def test_failed_run_reraises_recorded_error_without_executing(journal: Journal) -> None:
    """A run whose workflow raised re-raises the same error when called again."""

    async def failing(x: int) -> int:
        await fetch("f")
        raise KeyError(f"missing {x}")

    with pytest.raises(KeyError, match="missing 1"):
        asyncio.run(run(failing, 1, journal=journal, run_id="f1"))
    with pytest.raises(KeyError, match="missing 1"):
        asyncio.run(run(failing, 1, journal=journal, run_id="f1"))
    assert executed == ["f"]
    assert journal.run("f1").status is RunStatus.FAILED


def test_resume_after_crash_serves_completed_steps_and_continues(journal: Journal) -> None:
    """A crash after step 2: resume serves steps 1-2 and runs only step 3 live."""

    async def crashy(prefix: str) -> list[str]:
        out = [await fetch(f"{prefix}-0"), await fetch(f"{prefix}-1")]
        if len(executed) == 2 and crash_once:
            crash_once.clear()
            raise Crash
        out.append(await fetch(f"{prefix}-2"))
        return out

    crash_once = [True]
    with pytest.raises(Crash):
        asyncio.run(run(crashy, "c", journal=journal, run_id="c1"))
    assert journal.run("c1").status is RunStatus.RUNNING
    outcome = asyncio.run(run_with_summary(crashy, "c", journal=journal, run_id="c1"))
    assert outcome.result == ["C-0", "C-1", "C-2"]
    assert executed == ["c-0", "c-1", "c-2"]
    assert (outcome.summary.served, outcome.summary.executed) == (2, 1)
    assert journal.run("c1").resumes == 1


@step
async def hangs(item: str) -> str:
    executed.append(item)
    raise Crash  # dies mid-step: the step was in flight


def test_step_in_flight_at_crash_is_executed_again(journal: Journal) -> None:
    """A step whose start is journaled but not its end runs again, as attempt 2."""
    state = {"crash": True}

    @step(name="in_flight")
    async def in_flight() -> str:
        executed.append("in_flight")
        await asyncio.sleep(0.01)  # yields: the started row is written while in flight
        if state["crash"]:
            state["crash"] = False
            raise Crash
        return "done"

    async def wf() -> str:
        await fetch("before")
        return await in_flight()

    with pytest.raises(Crash):
        asyncio.run(run(wf, journal=journal, run_id="if"))
    rows = [(e.key, e.status) for e in journal.events("if")]
    assert rows[-1] == ("0:2", EventStatus.STARTED)
    outcome = asyncio.run(run_with_summary(wf, journal=journal, run_id="if"))
    assert outcome.result == "done"
    assert (outcome.summary.served, outcome.summary.reexecuted) == (1, 1)
    assert executed == ["before", "in_flight", "in_flight"]
    last = journal.events("if")[-1]
    assert (last.status, last.attempt) == (EventStatus.COMPLETED, 2)


def test_replay_mode_never_goes_live(journal: Journal) -> None:
    """Replay of a partial run serves what exists, then raises FrontierReached naming the step."""

    crash = [True]

    async def crashy() -> list[str]:
        out = [await fetch("x")]
        if crash.pop():
            raise Crash
        out.append(await fetch("y"))
        return out

    with pytest.raises(Crash):
        asyncio.run(run(crashy, journal=journal, run_id="p1"))
    crash.append(False)
    with pytest.raises(FrontierReached) as info:
        asyncio.run(run(crashy, journal=journal, run_id="p1", mode="replay"))
    assert executed == ["x"]
    message = str(info.value)
    assert "'p1'" in message and "0:2" in message and "fetch" in message
    assert "mode='resume'" in message


def test_replay_mode_on_unknown_run_is_a_clear_error(journal: Journal) -> None:
    """Replaying a run that was never recorded says so."""
    with pytest.raises(RunNotFound, match="'nope'"):
        asyncio.run(run(three_steps, "a", journal=journal, run_id="nope", mode="replay"))


def test_replay_reports_unconsumed_events(journal: Journal) -> None:
    """When replayed code takes a shorter path, the steps it skipped are reported."""
    asyncio.run(run(three_steps, "u", journal=journal, run_id="u1"))

    async def shorter(prefix: str) -> list[str]:
        return [await fetch(f"{prefix}-0")]

    shorter.__qualname__ = three_steps.__qualname__
    shorter.__module__ = three_steps.__module__
    outcome = asyncio.run(
        run_with_summary(shorter, "u", journal=journal, run_id="u1", mode="replay")
    )
    assert outcome.summary.unconsumed == ("0:2", "0:3")
    assert outcome.summary.result_matches_recorded is False
    assert "2 recorded steps never reached" in str(outcome.summary)


def test_replay_result_matches_recorded(journal: Journal) -> None:
    """A faithful replay reports that it reproduced the recorded result."""
    asyncio.run(run(three_steps, "m", journal=journal, run_id="m1"))
    outcome = asyncio.run(
        run_with_summary(three_steps, "m", journal=journal, run_id="m1", mode="replay")
    )
    assert outcome.summary.result_matches_recorded is True
    assert outcome.summary.served == 3


def test_run_id_reused_with_other_inputs_is_refused(journal: Journal) -> None:
    """Same run id, different inputs: RunConflict naming both inputs and the fix."""
    asyncio.run(run(three_steps, "a", journal=journal, run_id="dup"))
    with pytest.raises(RunConflict) as info:
        asyncio.run(run(three_steps, "b", journal=journal, run_id="dup"))
    assert '"a"' in str(info.value) and '"b"' in str(info.value)
    assert "new run_id" in str(info.value)


def test_run_id_reused_for_another_workflow_is_refused(journal: Journal) -> None:
    """Same run id, different workflow: RunConflict naming both workflows."""

    async def other(prefix: str) -> list[str]:
        return []

    asyncio.run(run(three_steps, "a", journal=journal, run_id="dup2"))
    with pytest.raises(RunConflict, match="three_steps.*other"):
        asyncio.run(run(other, "a", journal=journal, run_id="dup2"))


def test_script_workflow_resumes_when_imported_by_name(journal: Journal) -> None:
    """A run recorded from a script (`__main__:f`) resumes from `module:f` with the same name."""

    async def three_steps(prefix: str) -> list[str]:  # same qualname, another module
        return [await fetch(f"{prefix}-{i}") for i in range(3)]

    three_steps.__module__ = "__main__"
    three_steps.__qualname__ = "three_steps"
    asyncio.run(run(three_steps, "s", journal=journal, run_id="main"))
    assert journal.run("main").workflow == "__main__:three_steps"
    outcome = asyncio.run(
        run_with_summary(globals()["three_steps"], "s", journal=journal, run_id="main")
    )
    assert outcome.summary.already_finished


def test_run_requires_async_workflow(journal: Journal) -> None:
    """A sync workflow is refused with the fix."""

    def sync_wf() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        asyncio.run(run(sync_wf, journal=journal, run_id="s"))  # type: ignore[arg-type]


def test_bad_mode_is_refused(journal: Journal) -> None:
    """Unknown modes are named with the valid ones."""
    with pytest.raises(ValueError, match="'resume'.*'replay'"):
        asyncio.run(run(three_steps, "a", journal=journal, mode="live"))  # type: ignore[arg-type]


def test_workflow_except_exception_cannot_swallow_engine_signals(journal: Journal) -> None:
    """FrontierReached passes through a workflow's `except Exception`."""

    async def swallowing() -> str:
        try:
            await fetch("a")
            if not executed:
                return "never"
            await fetch("b")
        except Exception:
            return "swallowed"
        return "ok"

    asyncio.run(run(swallowing, journal=journal, run_id="sw"))
    asyncio.run(run(swallowing, journal=journal, run_id="sw", mode="replay"))
    executed.clear()

    async def more() -> str:
        try:
            await fetch("a")
            await fetch("b")
            await fetch("c")
        except Exception:
            return "swallowed"
        return "ok"

    more.__qualname__ = swallowing.__qualname__
    with pytest.raises(FrontierReached):
        asyncio.run(run(more, journal=journal, run_id="sw", mode="replay"))


class Executor:
    """Stands in for a framework's executor we do not own: it calls steps deep inside."""

    async def execute(self, program: list[str]) -> list[str]:
        return [await fetch(line) for line in program]


def test_journaled_block_wraps_code_you_do_not_own(journal: Journal) -> None:
    """Steps called inside `journaled(...)` are journaled; re-entry serves them."""

    async def session(crash: bool) -> list[str]:
        async with journaled(journal, run_id="neg-7") as handle:
            out = await Executor().execute(["a", "b"])
            if crash:
                raise Crash
            out += await Executor().execute(["c"])
        assert handle.summary is not None
        summaries.append(handle.summary)
        return out

    summaries: list = []
    with pytest.raises(Crash):
        asyncio.run(session(crash=True))
    assert asyncio.run(session(crash=False)) == ["A", "B", "C"]
    assert executed == ["a", "b", "c"]
    assert (summaries[0].served, summaries[0].executed) == (2, 1)
    assert journal.run("neg-7").status is RunStatus.COMPLETED
    # A finished block is replayed: served, and new work needs a new run id.
    assert asyncio.run(session(crash=False)) == ["A", "B", "C"]
    assert executed == ["a", "b", "c"]


def test_journaled_block_cannot_reuse_a_workflow_run_id(journal: Journal) -> None:
    """A run id belongs to a workflow or to a block, never both."""
    asyncio.run(run(three_steps, "a", journal=journal, run_id="both"))

    async def block() -> None:
        async with journaled(journal, run_id="both"):
            pass

    with pytest.raises(RunConflict):
        asyncio.run(block())


def test_journal_opens_paths_and_urls(tmp_path: Path) -> None:
    """Journal() takes a path, a sqlite:/// URL or memory://; others are clear errors."""
    for target in (tmp_path / "a.db", f"sqlite:///{tmp_path}/b.db", "memory://"):
        with Journal(target) as j:
            asyncio.run(run(three_steps, "a", journal=j, run_id="x"))
            assert j.run("x").status is RunStatus.COMPLETED
    with pytest.raises(JournalUnavailable, match="Unknown journal URL scheme 'ftp'"):
        Journal("ftp://x/y")
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, not a database" * 100)
    with pytest.raises(JournalUnavailable, match="cannot be opened as a journal"):
        Journal(not_a_db)


def test_unknown_run_lookup_suggests_near_names(journal: Journal) -> None:
    """Journal.run() on a missing id names it and suggests near matches."""
    asyncio.run(run(three_steps, "a", journal=journal, run_id="cats-1"))
    with pytest.raises(RunNotFound, match="Did you mean 'cats-1'"):
        journal.run("cats")


def test_a_run_without_a_run_id_says_it_cannot_be_resumed(tmp_path: Path) -> None:
    """Started without an id, a run gets a random one: after a crash, calling again starts a
    new run. That is said, once per call site, pointing at the caller's line."""
    import warnings

    async def tiny() -> int:
        return 1

    with Journal(tmp_path / "j.db") as journal, pytest.warns(replay.MissingRunId) as said:
        asyncio.run(replay.run(tiny, journal=journal))
    (warning,) = said
    assert "run_id=" in str(warning.message) and warning.filename == __file__
    with Journal(tmp_path / "j.db") as journal, warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(replay.run(tiny, journal=journal, run_id="named"))  # no warning
    with Journal(tmp_path / "j.db") as journal, warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # Python's own: once per call site and text
        for _ in range(3):  # it once named each run's random id, so it said so every time
            asyncio.run(replay.run(tiny, journal=journal))
    assert [w.category for w in shown] == [replay.MissingRunId]
