"""What runs while a sitting ends: nothing is run or journaled once it stops, nothing is left
running unjournaled when it finishes, and engine signals reach the caller as themselves."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import replay
from journal import EventStatus, Journal, RunStatus

effects: Counter[str] = Counter()


@replay.step(kind="tool")
async def acquire_lock() -> str:
    effects["acquire"] += 1
    return "lock-1"


@replay.step(kind="tool")
async def release_lock(lock: str) -> None:
    effects["release"] += 1


@replay.step(kind="tool")
async def ship(approved: bool) -> str:
    effects["ship"] += 1
    return "shipped" if approved else "held back"


@replay.step(kind="tool")
async def side_effect(name: str, seconds: float = 0.0) -> str:
    await asyncio.sleep(seconds)
    effects[name] += 1
    return name


@pytest.fixture(autouse=True)
def _fresh() -> None:
    effects.clear()


async def approval_with_cleanup() -> str:
    lock = await acquire_lock()
    try:
        approved = await replay.signal("approve")
    finally:
        await release_lock(lock)  # runs while Suspended unwinds the stack, and at the end
    return await ship(approved)


def test_a_finally_around_a_signal_neither_runs_nor_journals_while_suspending(
    journal: Journal,
) -> None:
    """The cleanup step in `finally:` around replay.signal() does not run (no effect) and is
    not journaled at the next key while the run suspends; once the signal arrives the run
    resumes without a divergence, and the cleanup runs then, once."""
    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(approval_with_cleanup, journal=journal, run_id="a"))
    assert effects == Counter({"acquire": 1})
    assert [e.name for e in journal.events("a")] == ["acquire_lock", "replay.signal"]
    journal.signal("a", "approve", True)
    assert asyncio.run(replay.run(approval_with_cleanup, journal=journal, run_id="a")) == "shipped"
    assert effects == Counter({"acquire": 1, "release": 1, "ship": 1})


def test_a_finally_around_a_long_durable_sleep_is_not_journaled_while_suspending(
    journal: Journal,
) -> None:
    """The same for a durable sleep that suspends the run: its cleanup waits for the resume."""

    async def nap() -> str:
        lock = await acquire_lock()
        try:
            await replay.sleep(3600)
        finally:
            await release_lock(lock)
        return "woke"

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(nap, journal=journal, run_id="n", suspend_after=1))
    assert effects == Counter({"acquire": 1})
    assert "release_lock" not in [e.name for e in journal.events("n")]


def test_a_task_left_running_is_cancelled_and_recorded_when_the_run_ends(
    journal: Journal,
) -> None:
    """A task the workflow started and never awaited does not run its step after the run has
    ended, unjournaled: it is cancelled when the run finishes, recorded as cancelled, and
    replay reproduces that."""

    async def fire_and_forget() -> str:
        asyncio.get_running_loop().create_task(side_effect("email", 0.2))
        return await side_effect("answer")

    async def main() -> str:
        result = await replay.run(fire_and_forget, journal=journal, run_id="f")
        await asyncio.sleep(0.4)  # the orphan would have done its effect by now
        return result

    assert asyncio.run(main()) == "answer"
    assert effects == Counter({"answer": 1})
    rows = [(e.key, e.status) for e in journal.events("f")]
    assert ("0/1:1", EventStatus.CANCELLED) in rows
    assert journal.run("f").status is RunStatus.COMPLETED
    effects.clear()
    outcome = asyncio.run(
        replay.run_with_summary(fire_and_forget, journal=journal, run_id="f", mode="replay")
    )
    assert outcome.result == "answer" and effects == Counter() and outcome.summary.unconsumed == ()


def test_ctrl_c_during_a_step_leaves_the_run_as_a_crash_would(tmp_path: Path) -> None:
    """run() cancelled from outside (Ctrl+C under asyncio.run, a worker stopping): the step in
    flight and the cleanup in `finally:` are not journaled (the cleanup does not run), so the
    resumed run goes on where the stop found it, with no divergence."""
    path = tmp_path / "j.db"

    async def guarded() -> str:
        lock = await acquire_lock()
        try:
            return await side_effect("work", 0.3)
        finally:
            await release_lock(lock)

    async def stop_midway() -> None:
        with Journal(path) as journal:
            running = asyncio.ensure_future(replay.run(guarded, journal=journal, run_id="g"))
            await asyncio.sleep(0.1)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

    asyncio.run(stop_midway())
    assert effects == Counter({"acquire": 1})
    with Journal(path) as journal:
        statuses = [(e.name, e.status.value) for e in journal.events("g")]
        assert statuses == [("acquire_lock", "completed"), ("side_effect", "started")]
        assert journal.run("g").owner is None
        assert asyncio.run(replay.run(guarded, journal=journal, run_id="g")) == "work"
    assert effects == Counter({"acquire": 1, "work": 1, "release": 1})


def test_a_journaled_block_cancelled_from_outside_resumes_cleanly(tmp_path: Path) -> None:
    """A journaled(...) block cancelled from outside: its cleanup steps ran while it unwound,
    but they are not part of the run (superseded), so a resume continues without a divergence
    and the in-flight step runs again."""
    path = tmp_path / "j.db"

    async def body() -> str:
        lock = await acquire_lock()
        try:
            await side_effect("work", 0.3)
            return await side_effect("checked")  # recorded where the cleanup would have been
        finally:
            await release_lock(lock)

    async def block() -> str:
        with Journal(path) as journal:
            async with replay.journaled(journal, "b"):
                return await body()

    async def stop_midway() -> None:
        running = asyncio.ensure_future(block())
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(stop_midway())
    assert asyncio.run(block()) == "checked"
    assert effects["work"] == 1 and effects["acquire"] == 1 and effects["checked"] == 1
    with Journal(path) as journal:
        assert journal.run("b").status is RunStatus.COMPLETED
        assert all(v.ok for v in journal.verify("b"))


def test_engine_signals_inside_a_task_group_reach_the_caller_as_themselves(
    journal: Journal,
) -> None:
    """A NonDeterminismError raised in a TaskGroup's task reaches run()'s caller as a
    NonDeterminismError, not wrapped in a BaseExceptionGroup; so does Suspended, and the run
    is left waiting."""
    topic = {"value": "cats"}

    async def grouped() -> list[str]:
        async with asyncio.TaskGroup() as group:
            first = group.create_task(side_effect(topic["value"]))
            second = group.create_task(side_effect("other", 0.05))
        return [first.result(), second.result()]

    asyncio.run(replay.run(grouped, journal=journal, run_id="g"))
    topic["value"] = "dogs"
    with pytest.raises(replay.NonDeterminismError) as err:
        asyncio.run(replay.run(grouped, journal=journal, run_id="g", mode="replay"))
    assert err.value.key == "0/1:1"

    async def waits_in_group() -> str:
        async with asyncio.TaskGroup() as group:
            answer = group.create_task(replay.signal("go"))
            group.create_task(side_effect("meanwhile"))
        return str(answer.result())

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(waits_in_group, journal=journal, run_id="w"))
    assert journal.run("w").status is RunStatus.WAITING


def test_a_run_sealed_with_a_step_in_flight_says_so(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """A step still in flight when the run finishes (here: work handed to a thread that the
    workflow did not wait for) is reported in the summary and the log. Replay serves it as
    what it was: a step that never finished (no FrontierReached blaming a crash)."""
    inside = threading.Event()

    @replay.step
    def slow_sync() -> str:
        inside.set()
        time.sleep(0.3)
        return "late"

    async def leaves_a_thread() -> str:
        inside.clear()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, slow_sync)  # never awaited
        for _ in range(100):  # live, until the step is under way (on replay it never runs)
            if inside.is_set():
                break
            await asyncio.sleep(0.01)
        return "done"

    caplog.set_level(logging.WARNING, logger="replay")
    outcome = asyncio.run(replay.run_with_summary(leaves_a_thread, journal=journal, run_id="s"))
    (unfinished,) = outcome.summary.unfinished
    assert unfinished.startswith("0/") and unfinished.endswith("slow_sync#1:1")
    assert "steps unfinished" in str(outcome.summary)
    assert "run.finished_with_steps_in_flight" in caplog.text
    # Replay: the step the run let go never finishes here either, and nothing blames a crash.
    inside.clear()
    replayed = asyncio.run(
        replay.run_with_summary(leaves_a_thread, journal=journal, run_id="s", mode="replay")
    )
    assert replayed.result == "done" and not inside.is_set()
    assert replayed.summary.executed == 0 and replayed.summary.unconsumed == ()
    assert replayed.summary.served == 1  # the step let go counts as served, as it was


def test_a_sync_step_writes_its_start_before_it_runs(tmp_path: Path) -> None:
    """A sync step called on the loop's thread (a sync SDK inside journaled(...)) has its
    `started` row committed before its body runs, so a crash mid-call leaves a trace and the
    resume counts it as re-executed."""
    path = tmp_path / "j.db"
    seen_inside: list[list[str]] = []

    @replay.step(kind="tool")
    def blocking_call() -> str:
        with sqlite3.connect(path) as other:  # what a crash right now would leave on disk
            rows = other.execute("SELECT status FROM events WHERE run_id = 'sync'").fetchall()
        seen_inside.append([status for (status,) in rows])
        if len(seen_inside) == 1:
            raise KeyboardInterrupt  # the process is stopped inside the call
        return "ok"

    async def block() -> str:
        with Journal(path) as journal:
            async with replay.journaled(journal, "sync") as handle:
                result = blocking_call()
            assert handle.summary is not None and handle.summary.reexecuted == 1
            return result

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(block())
    assert seen_inside == [["started"]]
    assert asyncio.run(block()) == "ok"


def test_a_replay_stuck_in_its_order_stops_a_workflow_that_waits_elsewhere(
    journal: Journal,
) -> None:
    """The recorded order cannot be met (the code now holds the first task back until the
    second is done, but live the first's step came first): the sitting stops with the
    NonDeterminismError even though the workflow's own task waits on an event, not a step."""
    held_back = {"on": False}
    refused: list[str] = []

    async def first(gate: asyncio.Event) -> str:
        if held_back["on"]:
            await gate.wait()
        return await side_effect("a")

    async def second(gate: asyncio.Event) -> str:
        try:
            answer = await side_effect("b", 0.05)
        except replay.NonDeterminismError:
            try:  # a step called once the sitting stopped raises the stop itself again
                await side_effect("after the stop")
            except replay.NonDeterminismError:
                refused.append("after the stop")
            raise
        gate.set()
        return answer

    async def workflow() -> list[str]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(first(gate)), asyncio.create_task(second(gate))]
        await gate.wait()
        return [await task for task in tasks]

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="held")) == ["a", "b"]
    held_back["on"] = True
    effects.clear()
    outcome: list[BaseException] = []

    def replay_it() -> None:  # in a thread: a replay that never stops fails the test, not CI
        try:
            asyncio.run(replay.run(workflow, journal=journal, run_id="held", mode="replay"))
        except BaseException as error:
            outcome.append(error)

    replaying = threading.Thread(target=replay_it, daemon=True)
    replaying.start()
    replaying.join(10)
    assert not replaying.is_alive(), "the replay never stopped"
    assert [type(error) for error in outcome] == [replay.NonDeterminismError]
    assert "0/1:1" in str(outcome[0]) and effects == Counter()
    assert refused == ["after the stop"]
