"""Retrying a failed run in place (`replay.retry`, `journal retry`): what completed is served,
the failed tail runs again, the history and the chain are kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import replay
from journal import (
    EventKind,
    EventStatus,
    Journal,
    LeaseLost,
    MemoryStore,
    RunCancelled,
    RunNotFailed,
    RunStatus,
)
from replay import step
from replay.integrations import AsyncJournalTransport


class Calls:
    """What the step bodies ran, and which of them fail right now."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.broken: set[str] = set()

    def body(self, name: str, value: Any) -> Any:
        self.ran.append(name)
        if name in self.broken:
            raise ValueError(f"{name} is broken")
        return value


def _steps(calls: Calls) -> Any:
    @step
    async def fetch(n: int) -> int:
        return calls.body(f"fetch:{n}", n * 2)

    @step
    async def judge(n: int) -> int:
        return calls.body(f"judge:{n}", n + 1)

    async def workflow(n: int) -> int:
        a = await fetch(n)
        b = await judge(a)
        return await fetch(b)

    return workflow


def test_a_fixed_step_is_retried_in_place_and_the_rest_is_served(journal: Journal) -> None:
    calls = Calls()
    workflow = _steps(calls)
    calls.broken = {"judge:6"}
    with pytest.raises(ValueError, match="judge:6 is broken"):
        asyncio.run(replay.run(workflow, 3, journal=journal, run_id="r"))
    failed_events = journal.events("r")

    # Calling again returns the recorded failure, saying so and naming the way out.
    with pytest.raises(ValueError, match="judge:6 is broken") as again:
        asyncio.run(replay.run(workflow, 3, journal=journal, run_id="r"))
    note = " ".join(getattr(again.value, "__notes__", []))
    assert "recorded failure of run 'r'" in note
    assert "replay.retry(" in note and "`journal retry r`" in note
    assert calls.ran == ["fetch:3", "judge:6"]

    calls.broken = set()
    calls.ran = []
    assert asyncio.run(replay.retry(workflow, 3, journal=journal, run_id="r")) == 14
    assert calls.ran == ["judge:6", "fetch:7"]  # fetch:3 served, never run again

    run = journal.run("r")
    assert run.status is RunStatus.COMPLETED and run.error is None
    events = journal.events("r")
    assert events[: len(failed_events)] == failed_events  # history kept, unchanged
    marker = events[len(failed_events)]
    assert (marker.kind, marker.name, marker.key) == (EventKind.FORK, "replay.retry", "retry@3")
    held = orjson.loads(marker.payload or b"")
    assert held["reason"] == "retry" and held["keys"] == ["0:2"]
    assert held["failure"]["message"] == "judge:6 is broken"
    assert [(e.key, e.status, e.attempt) for e in events[len(failed_events) + 1 :]] == [
        ("0:2", EventStatus.COMPLETED, 1),
        ("0:3", EventStatus.COMPLETED, 1),
    ]
    assert [v.verdict for v in journal.verify("r")] == ["intact"]
    assert {v.verdict for v in journal.verify()} == {"intact"}  # the head too

    # The retried run is finished: called again it returns its result; replayed offline,
    # it reproduces it without running anything.
    calls.ran = []
    assert asyncio.run(replay.run(workflow, 3, journal=journal, run_id="r")) == 14
    outcome = asyncio.run(
        replay.run_with_summary(workflow, 3, journal=journal, run_id="r", mode="replay")
    )
    assert outcome.result == 14 and outcome.summary.result_matches_recorded
    assert calls.ran == []


def test_a_failure_the_workflow_caught_is_served_not_retried(tmp_path: Path) -> None:
    """Only the tail after the last completed step runs again: a tool failure the workflow
    handled (and went on from) is part of the history, served as it was."""
    calls = Calls()
    bug = [True]

    @step
    async def tool(name: str) -> str:
        return calls.body(f"tool:{name}", name.upper())

    async def workflow() -> str:
        try:
            first = await tool("a")
        except ValueError:
            first = "fallback"
        second = await tool("b")
        if bug[0]:
            raise KeyError("bug in the workflow's own code")
        return first + second

    calls.broken = {"tool:a"}
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(KeyError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        bug[0] = False
        calls.broken = set()  # tool a works now: it must still be served as failed
        calls.ran = []
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == "fallbackB"
        assert calls.ran == []
        marker = next(e for e in journal.events("w") if e.kind is EventKind.FORK)
        assert orjson.loads(marker.payload or b"")["keys"] == []


def test_siblings_cancelled_by_the_failure_run_again(journal: Journal) -> None:
    calls = Calls()

    @step
    async def quick(n: int) -> int:
        return calls.body(f"quick:{n}", n)

    @step
    async def slow(n: int) -> int:
        calls.ran.append(f"slow-started:{n}")
        await asyncio.sleep(0.05 if "slow" in calls.broken else 0)
        return calls.body(f"slow:{n}", n * 10)

    @step
    async def breaks(n: int) -> int:
        await asyncio.sleep(0.01)
        return calls.body(f"breaks:{n}", n * 100)

    async def workflow() -> int:
        first = await quick(1)
        async with asyncio.TaskGroup() as group:
            a = group.create_task(slow(2))
            b = group.create_task(breaks(3))
        return first + a.result() + b.result()

    calls.broken = {"breaks:3", "slow"}
    with pytest.raises(ExceptionGroup):
        asyncio.run(replay.run(workflow, journal=journal, run_id="g"))
    statuses = {(e.key, e.status) for e in journal.events("g")}
    assert ("0/1:1", EventStatus.CANCELLED) in statuses  # slow, cancelled by the failure
    calls.broken, calls.ran = set(), []
    assert asyncio.run(replay.retry(workflow, journal=journal, run_id="g")) == 321
    assert sorted(calls.ran) == ["breaks:3", "slow-started:2", "slow:2"]
    assert [v.verdict for v in journal.verify("g")] == ["intact"]


def test_a_retried_step_gets_its_whole_retry_policy_again(tmp_path: Path) -> None:
    attempts: list[int] = []
    fixed = [False]

    @step(retries=2, retry_delay=0)
    async def call() -> str:
        attempts.append(1)
        if not fixed[0] or len(attempts) < 6:
            raise ConnectionError("down")
        return "up"

    async def workflow() -> str:
        return await call()

    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(ConnectionError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="p"))
        assert len(attempts) == 3
        fixed[0] = True
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="p")) == "up"
        assert len(attempts) == 6  # three more attempts: the third succeeds
        after = [e for e in journal.events("p") if e.seq > 4 and e.kind is not EventKind.FORK]
        assert [(e.status, e.attempt) for e in after] == [
            (EventStatus.RETRYING, 1),
            (EventStatus.RETRYING, 2),
            (EventStatus.COMPLETED, 3),
        ]


def test_a_run_can_fail_again_and_be_retried_again(journal: Journal) -> None:
    calls = Calls()
    workflow = _steps(calls)
    calls.broken = {"judge:6"}
    with pytest.raises(ValueError):
        asyncio.run(replay.run(workflow, 3, journal=journal, run_id="twice"))
    calls.broken = {"fetch:7"}  # the first fix moves the failure one step on
    with pytest.raises(ValueError, match="fetch:7"):
        asyncio.run(replay.retry(workflow, 3, journal=journal, run_id="twice"))
    calls.broken, calls.ran = set(), []
    assert asyncio.run(replay.retry(workflow, 3, journal=journal, run_id="twice")) == 14
    assert calls.ran == ["fetch:7"]  # judge:6 completed in the first retry: served
    markers = [e for e in journal.events("twice") if e.kind is EventKind.FORK]
    assert len(markers) == 2
    assert [v.verdict for v in journal.verify("twice")] == ["intact"]
    reasons = [h.reason for h in journal.store.read_heads() if h.run_id == "twice"]
    assert reasons == ["created", "finished", "reopened", "finished", "reopened", "finished"]
    assert {v.verdict for v in journal.verify()} == {"intact"}  # the head too


async def queued(n: int) -> int:
    return n


def test_only_a_failed_run_is_retried(tmp_path: Path) -> None:
    calls = Calls()
    workflow = _steps(calls)
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(replay.RunNotFound, match="Only a recorded run that failed"):
            asyncio.run(replay.retry(workflow, 1, journal=journal, run_id="none"))
        asyncio.run(replay.run(workflow, 1, journal=journal, run_id="done"))
        with pytest.raises(RunNotFailed, match="is completed, not failed") as refused:
            asyncio.run(replay.retry(workflow, 1, journal=journal, run_id="done"))
        assert "fork" in str(refused.value)
        replay.submit(queued, 1, journal=journal, run_id="queued")
        with pytest.raises(RunNotFailed, match="is running, not failed.*resumed"):
            asyncio.run(replay.retry(queued, 1, journal=journal, run_id="queued"))
        assert journal.run("done").status is RunStatus.COMPLETED
        assert journal.run("queued").status is RunStatus.RUNNING
        assert [h.reason for h in journal.store.read_heads()] == ["created", "finished", "created"]


def test_a_child_run_that_failed_with_its_parent_is_retried_too(journal: Journal) -> None:
    calls = Calls()

    @step
    async def work(n: int) -> int:
        return calls.body(f"work:{n}", n + 1)

    async def child(n: int) -> int:
        return await work(n)

    async def parent(n: int) -> int:
        first = await work(0)
        second = await replay.run(child, n, journal=journal)
        return first + second

    calls.broken = {"work:5"}
    with pytest.raises(ValueError):
        asyncio.run(replay.run(parent, 5, journal=journal, run_id="parent"))
    child_id = next(r.run_id for r in journal.runs() if r.parent_run_id == "parent")
    assert journal.run(child_id).status is RunStatus.FAILED
    calls.broken, calls.ran = set(), []
    assert asyncio.run(replay.retry(parent, 5, journal=journal, run_id="parent")) == 7
    assert calls.ran == ["work:5"]
    assert journal.run(child_id).status is RunStatus.COMPLETED
    assert [v.verdict for v in journal.verify()] == ["intact", "intact"]


def test_a_journaled_block_is_retried_with_retry_true(tmp_path: Path) -> None:
    calls = Calls()

    @step
    async def part(n: int) -> int:
        return calls.body(f"part:{n}", n)

    async def block() -> int:
        return await part(1) + await part(2)

    async def once(retry: bool = False) -> None:
        async with replay.journaled(journal, "block", retry=retry):
            await block()

    calls.broken = {"part:2"}
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(ValueError):
            asyncio.run(once())
        calls.broken, calls.ran = set(), []
        asyncio.run(once(retry=True))
        assert calls.ran == ["part:2"]
        assert journal.run("block").status is RunStatus.COMPLETED
        with pytest.raises(RunNotFailed):
            asyncio.run(once(retry=True))


def test_setting_a_finished_run_back_to_failed_to_reopen_it_is_caught(tmp_path: Path) -> None:
    """Someone who flips a completed run's status to `failed` and retries it (to rewrite its
    ending) leaves a head that says the run finished completed and was then reopened."""
    calls = Calls()
    workflow = _steps(calls)
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        asyncio.run(replay.run(workflow, 3, journal=journal, run_id="done"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET status = 'failed' WHERE run_id = 'done'")
    with Journal(path) as journal:
        asyncio.run(replay.retry(workflow, 3, journal=journal, run_id="done"))
        verdict = journal.verify()[0]
    assert verdict.verdict == "broken"
    assert "reopened here, but it had not failed" in str(verdict), verdict


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_the_store_reopens_only_a_failed_run_it_owns(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from journal._events import trusted_event
    from journal.stores import SQLiteStore
    from journal.stores._ownership import new_owner
    from tests.conftest import postgres_store
    from tests.factories import make_run

    if kind == "memory":
        store: Any = MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "j.db")
    else:
        store = postgres_store(request.getfixturevalue("pg_schema"))
    store.create_run(make_run("x"))
    owner = new_owner(60)
    store.claim("x", owner, resuming=False)
    marker = trusted_event(
        "x", 1, "retry@1", EventKind.FORK, "replay.retry", "", EventStatus.COMPLETED, 0, b"{}",
        make_run("x").created_at,
    )  # fmt: skip
    with pytest.raises(RunNotFailed):
        store.reopen("x", owner.token, [marker])
    store.finish("x", owner.token, RunStatus.FAILED, error=b"{}")
    with pytest.raises(LeaseLost):
        store.reopen("x", "not-the-owner", [marker])  # nobody owns it
    owner = new_owner(60)
    store.claim("x", owner, resuming=True)
    with pytest.raises(LeaseLost):
        store.reopen("x", "not-the-owner", [marker])  # another process owns it
    assert store.get_run("x").status is RunStatus.FAILED
    reopened = store.reopen("x", owner.token, [marker])
    assert reopened.status is RunStatus.RUNNING
    assert (reopened.error, reopened.finished_at) == (None, None)
    assert store.count_events("x") == 1


@given(
    fail_at=st.integers(min_value=0, max_value=5),
    gathered=st.booleans(),
)
def test_any_failure_point_then_retry_gives_the_unfailed_result(
    fail_at: int, gathered: bool
) -> None:
    """The law: a run failed at any step, fixed and retried, returns what a run that never
    failed returns, and every step that completed before the failure (in the journal) ran
    exactly once."""
    calls = Calls()

    @step
    async def inc(i: int, total: int) -> int:
        return calls.body(f"inc:{i}", total + i)

    async def workflow() -> int:
        total = 0
        for i in range(3):
            total = await inc(i, total)
        if gathered:
            parts = await asyncio.gather(inc(10, total), inc(11, total), inc(12, total))
            return sum(parts)
        for i in range(3, 6):
            total = await inc(i, total)
        return total

    names = [f"inc:{i}" for i in ([0, 1, 2, 10, 11, 12] if gathered else range(6))]
    expected = asyncio.run(replay.run(workflow, journal=Journal(store=MemoryStore()), run_id="x"))
    journal = Journal(store=MemoryStore())
    calls.ran, calls.broken = [], {names[fail_at]}
    with pytest.raises(ValueError):
        asyncio.run(replay.run(workflow, journal=journal, run_id="x"))
    events = journal.events("x")
    failed_at = next(e.seq for e in events if e.status is EventStatus.FAILED)
    completed_before = {
        f"inc:{(e.call_arguments() or {})['i']}"
        for e in events
        if e.status is EventStatus.COMPLETED and e.seq < failed_at
    }
    calls.ran, calls.broken = [], set()
    assert asyncio.run(replay.retry(workflow, journal=journal, run_id="x")) == expected
    assert not set(calls.ran) & completed_before
    assert names[fail_at] in calls.ran
    assert [v.verdict for v in journal.verify("x")] == ["intact"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).with_name("journal"))
    return subprocess.run(
        [script, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


_AGENT = """\
import asyncio
from journal import Journal
from replay import run, step

@step
async def lookup(city: str) -> str:
    with open("lookups.txt", "a") as f:
        f.write(city + "\\n")
    return city.upper()

@step
async def forecast(place: str) -> str:
    return {bug}

async def weather(city: str) -> str:
    return await forecast(await lookup(city))

if __name__ == "__main__":
    with Journal("runs.db") as j:
        print(asyncio.run(run(weather, "oslo", journal=j, run_id="w-1")))
"""


def test_journal_retry_reruns_the_fixed_code_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(_AGENT.format(bug="place.lower(1)"))
    first = subprocess.run(
        [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 1 and "TypeError" in first.stderr
    entry = ["--entry", "agent.py:weather", "--db", "runs.db"]

    resumed = _cli("resume", "w-1", *entry, cwd=tmp_path)
    assert resumed.returncode == 1
    assert "recorded failure; nothing ran" in resumed.stderr
    assert "journal retry w-1" in resumed.stderr

    (tmp_path / "agent.py").write_text(_AGENT.format(bug='f"sunny in {place}"'))
    retried = _cli("retry", "w-1", *entry, "--json", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    shown = json.loads(retried.stdout)
    assert shown["status"] == "completed" and shown["result"] == "sunny in OSLO"
    assert (tmp_path / "lookups.txt").read_text() == "oslo\n"  # served, not run again

    again = _cli("retry", "w-1", *entry, cwd=tmp_path)
    assert again.returncode == 1
    assert "is completed, not failed" in again.stderr and "journal fork" in again.stderr
    assert "Journal.fork" not in again.stderr
    verified = _cli("verify", "--db", "runs.db", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- found by an adversarial round: what the run's failure came from, and what depends on it ---


@pytest.mark.parametrize("reraise", ["from", "context", "from None"])
def test_a_failure_wrapped_after_a_cleanup_step_is_retried_once(
    tmp_path: Path, reraise: str
) -> None:
    """The step whose failure the run's error has as its cause or context runs again; the
    cleanup step awaited between catching and re-raising depends on it and is not carried
    ahead of it (that once deadlocked the retry and left the run stuck)."""
    calls = Calls()

    @step
    async def fetch() -> str:
        return calls.body("fetch", "page")

    @step
    async def cleanup() -> int:
        return calls.body("cleanup", 1)

    async def workflow() -> str:
        try:
            return await fetch()
        except ValueError as error:
            await cleanup()
            if reraise == "from":
                raise RuntimeError("wrapped") from error
            if reraise == "context":
                raise RuntimeError("wrapped")  # noqa: B904 - the implicit context is the point
            raise RuntimeError(f"wrapped: {error}") from None

    calls.broken = {"fetch"}
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(RuntimeError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        calls.broken, calls.ran = set(), []
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == "page"
        assert calls.ran == ["fetch"]
        assert journal.run("w").status is RunStatus.COMPLETED
        assert {v.verdict for v in journal.verify()} == {"intact"}


def test_a_handled_failure_alike_the_runs_own_error_is_still_served(tmp_path: Path) -> None:
    calls = Calls()
    fixed = [False]

    @step
    async def charge() -> int:
        return calls.body("charge", 1)

    @step
    async def notify() -> int:
        return calls.body("notify", 2)

    async def workflow() -> int:
        with contextlib.suppress(ValueError):
            await charge()  # handled: the workflow goes on without the charge
        await notify()
        if not fixed[0]:
            raise ValueError("charge is broken")  # the workflow's own error, worded alike
        return 3

    calls.broken = {"charge"}
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(ValueError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        fixed[0], calls.broken, calls.ran = True, set(), []
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == 3
        assert calls.ran == []  # charge is a side effect: never again


def test_a_step_the_workflow_timed_out_itself_is_not_run_again(tmp_path: Path) -> None:
    ran: list[str] = []
    fixed = [False]

    @step
    async def slow() -> str:
        ran.append("slow")
        await asyncio.sleep(5)
        return "late"

    async def workflow() -> str:
        try:
            return await replay.wait_for(slow(), 0.05)
        except TimeoutError:
            if not fixed[0]:
                raise RuntimeError("gave up") from None
            return "fallback"

    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(RuntimeError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        fixed[0] = True
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == "fallback"
        assert ran == ["slow"]


def test_a_waiting_sibling_that_completed_after_the_failure_is_served(tmp_path: Path) -> None:
    calls = Calls()

    @step
    async def llm(n: int) -> int:
        calls.ran.append(f"start:{n}")
        await asyncio.sleep(0.05 * n)
        return calls.body(f"llm:{n}", n)

    async def workflow() -> list[int]:
        return list(await asyncio.gather(llm(1), llm(2), return_exceptions=False))

    calls.broken = {"llm:1"}
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(ValueError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        rows = [(e.key, e.status) for e in journal.events("w")]
        # llm(2) started before llm(1) failed; gather raised, and the run ended: llm(2) was
        # cancelled as it ended, so it runs again; llm(1) runs again.
        assert ("0/2:1", EventStatus.CANCELLED) in rows
        calls.broken, calls.ran = set(), []
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == [1, 2]
        assert sorted(calls.ran) == ["llm:1", "llm:2", "start:1", "start:2"]


def test_a_cancel_asked_before_the_run_failed_does_not_cancel_its_retry(tmp_path: Path) -> None:
    """A request made while the run ran, which it failed before seeing, is spent: the retry
    (with the fix) is not cancelled by it, not at its heartbeat, and not when a later sitting
    resumes an interrupted retry. A request made after the retry began still counts."""
    broken = [True]
    hold = [0.4]

    @step
    async def first() -> int:
        if broken[0]:
            raise ValueError("first is broken")
        return 1

    @step
    async def slow() -> int:
        await asyncio.sleep(hold[0])
        return 2

    async def workflow() -> int:
        return await first() + await slow()

    async def interrupted_retry(journal: Journal) -> None:
        task = asyncio.create_task(
            replay.retry(workflow, journal=journal, run_id="c", lease_seconds=0.3)
        )
        await asyncio.sleep(0.2)  # in `slow`, and past a heartbeat
        task.cancel()  # Ctrl+C: the run is left interrupted
        with pytest.raises(asyncio.CancelledError):
            await task

    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(ValueError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="c"))
        journal.store.send_signal("c", "replay.cancel", b'{"reason": "user asked"}')
        broken[0] = False
        asyncio.run(interrupted_retry(journal))
        assert journal.run("c").status is RunStatus.RUNNING
        result = asyncio.run(replay.run(workflow, journal=journal, run_id="c", lease_seconds=0.3))
        assert result == 3 and journal.run("c").status is RunStatus.COMPLETED

        broken[0] = True
        with pytest.raises(ValueError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="d"))
        journal.store.send_signal("d", "replay.cancel", b'{"reason": "spent"}')

        async def cancelled_during_retry() -> None:
            task = asyncio.create_task(
                replay.retry(workflow, journal=journal, run_id="d", lease_seconds=0.3)
            )
            await asyncio.sleep(0.15)
            replay.cancel(journal, "d", "asked again")
            with pytest.raises(RunCancelled, match="asked again"):
                await task

        broken[0], hold[0] = False, 2.0
        asyncio.run(cancelled_during_retry())
        assert journal.run("d").status is RunStatus.CANCELLED


def test_a_finished_run_set_back_and_run_to_a_new_end_is_caught(tmp_path: Path) -> None:
    """Set a completed run back to running by hand, let it fail, then retry it to a forged
    result: each step is done by the library, but the head shows a run that finished twice
    without a retry between (found by an adversarial round; `verify --since` said intact)."""
    answer = [["a", "b"]]

    async def workflow() -> list[str]:
        if answer[0] is None:
            raise ValueError("now it fails")
        return answer[0]

    path = tmp_path / "j.db"
    with Journal(path) as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        kept = journal.head()
        assert kept is not None
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET status = 'running' WHERE run_id = 'r'")
    with Journal(path) as journal:
        answer[0] = None  # type: ignore[list-item]
        with pytest.raises(ValueError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        answer[0] = ["FORGED"]
        asyncio.run(replay.retry(workflow, journal=journal, run_id="r"))
        verdict = journal.verify(since=f"{kept.n}:{kept.hash}")[0]
    assert verdict.verdict == "broken"
    assert "had finished completed" in str(verdict) and "set back" in str(verdict)


def test_gather_branches_that_completed_are_served_whatever_their_order(tmp_path: Path) -> None:
    """Found by the second adversarial round: a branch listed after the failing one (begun
    after its first row) and completed steps in a branch that also had a step cut short
    ran again. A branch's completed steps are its own work: served."""
    calls = Calls()

    @step
    async def part(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return calls.body(name, name.upper())

    async def branch(prefix: str, count: int) -> list[str]:
        return [await part(f"{prefix}{i}", 0.03) for i in range(count)]

    async def workflow() -> list[Any]:
        first = await asyncio.gather(part("a", 0.1), part("b", 0))
        second = await asyncio.gather(branch("x", 5), part("z", 0.08))
        return [first, second]

    for broken in ("a", "z"):
        calls.broken, calls.ran = {broken}, []
        with Journal(tmp_path / f"{broken}.db") as journal:
            with pytest.raises(ValueError):
                asyncio.run(replay.run(workflow, journal=journal, run_id="g"))
            completed = set(calls.ran) - {broken}
            calls.broken, calls.ran = set(), []
            result = asyncio.run(replay.retry(workflow, journal=journal, run_id="g"))
            assert result == [["A", "B"], [["X0", "X1", "X2", "X3", "X4"], "Z"]]
            assert not set(calls.ran) & completed, (broken, calls.ran, completed)
            assert broken in calls.ran
            assert {v.verdict for v in journal.verify()} == {"intact"}


def test_a_run_finished_twice_the_same_way_is_not_a_rewrite(journal: Journal) -> None:
    """Two workers racing for a run: the second claimed it as the first finished it, served
    every step and sealed the same outcome again. The head then holds two equal `finished`
    entries: honest, not a run set back (a 4-worker test on PostgreSQL met it)."""
    from journal.stores._ownership import new_owner

    calls = Calls()
    workflow = _steps(calls)
    asyncio.run(replay.run(workflow, 3, journal=journal, run_id="raced"))
    done = journal.run("raced")
    late = new_owner(60)
    journal.store.claim("raced", late, resuming=True)
    journal.store.finish(
        "raced", late.token, RunStatus.COMPLETED, result=done.result, seal=done.seal
    )
    reasons = [h.reason for h in journal.store.read_heads() if h.run_id == "raced"]
    assert reasons == ["created", "finished", "finished"]
    assert {v.verdict for v in journal.verify()} == {"intact"}


@pytest.mark.parametrize(
    ("linked", "cleanup"),
    [(True, False), (True, True), (False, False)],
    ids=["raised-from-it", "raised-from-it-after-a-step", "link-dropped"],
)
def test_a_request_that_failed_the_run_through_a_wrapping_error_is_retried(
    tmp_path: Path, linked: bool, cleanup: bool
) -> None:
    """An SDK turns a journaled request's transport error into its own exception: raised from
    it (after a step of its own, perhaps), or (as litellm does) right after it with no link.
    Each way the retry, with the API back, sends that request again; the recorded failure was
    once served again, retry after retry."""
    api = {"up": False, "calls": 0}

    @step
    async def note_outage() -> None:
        return None

    def handler(request: httpx2.Request) -> httpx2.Response:
        if not api["up"]:
            raise httpx2.ConnectError("connection refused", request=request)
        api["calls"] += 1
        return httpx2.Response(200, text="pong")

    async def workflow() -> str:
        transport = AsyncJournalTransport(httpx2.MockTransport(handler))
        async with httpx2.AsyncClient(transport=transport) as client:
            failed = None
            try:
                return (await client.get("http://api.example/v1/ping")).text
            except httpx2.ConnectError as exc:
                if cleanup:
                    await note_outage()
                if linked:
                    raise RuntimeError("the API is unreachable") from exc
                failed = type(exc).__name__
            raise RuntimeError(f"the API is unreachable ({failed})")

    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(RuntimeError):
            asyncio.run(replay.run(workflow, journal=journal, run_id="w"))
        api["up"] = True
        assert asyncio.run(replay.retry(workflow, journal=journal, run_id="w")) == "pong"
        assert api["calls"] == 1
        assert {v.verdict for v in journal.verify()} == {"intact"}
