"""A step cancelled by the workflow is an outcome: journaled, replayed, never run again."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import replay
from journal import EventStatus, Journal

executions: Counter[str] = Counter()
slow_seconds: dict[str, float] = {}


@replay.step(kind="llm")
async def slow(name: str) -> str:
    executions[name] += 1
    await asyncio.sleep(slow_seconds.get(name, 5.0))
    return f"{name} done"


@replay.step(kind="tool")
async def fallback(reason: str) -> str:
    executions["fallback"] += 1
    return f"fallback after {reason}"


@replay.step(kind="tool")
async def failing() -> None:
    executions["failing"] += 1
    await asyncio.sleep(0.02)
    raise ValueError("the tool broke")


@pytest.fixture(autouse=True)
def _fresh() -> None:
    executions.clear()
    slow_seconds.clear()


def _statuses(journal: Journal, run_id: str) -> list[tuple[str, str, str]]:
    return [(e.key, e.name, e.status.value) for e in journal.events(run_id)]


def _replayed(journal: Journal, workflow: object, run_id: str) -> replay.RunOutcome[object]:
    executions.clear()
    return asyncio.run(
        replay.run_with_summary(workflow, journal=journal, run_id=run_id, mode="replay")  # type: ignore[arg-type]
    )


async def wait_for_times_out() -> str:
    try:
        return await asyncio.wait_for(slow("llm"), 0.05)
    except TimeoutError:
        return await fallback("timeout")


async def timeout_block() -> str:
    try:
        async with asyncio.timeout(0.05):
            return await slow("llm")
    except TimeoutError:
        return await fallback("timeout")


async def task_cancelled() -> str:
    task = asyncio.create_task(slow("llm"))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return await fallback("cancelled")


async def sibling_fails() -> str:
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(slow("llm"))
            group.create_task(failing())
    except ExceptionGroup:
        return await fallback("sibling failed")
    return "no failure"


@pytest.mark.parametrize(
    ("workflow", "cancelled_key", "expected"),
    [
        (wait_for_times_out, "0/1:1", "fallback after timeout"),
        (timeout_block, "0:1", "fallback after timeout"),
        (task_cancelled, "0/1:1", "fallback after cancelled"),
        (sibling_fails, "0/1:1", "fallback after sibling failed"),
    ],
)
def test_a_cancelled_step_is_journaled_and_replays_without_running(
    journal: Journal, workflow: object, cancelled_key: str, expected: str
) -> None:
    """wait_for and asyncio.timeout expiring, task.cancel() and a failing TaskGroup sibling
    each leave the step `cancelled` in the journal. The finished run replays offline to the
    same result without running the step (no FrontierReached), and a resume of the finished
    run returns the recorded result."""
    live = asyncio.run(replay.run(workflow, journal=journal, run_id="c"))  # type: ignore[arg-type]
    assert live == expected and executions["llm"] == 1
    rows = _statuses(journal, "c")
    assert (cancelled_key, "slow", "cancelled") in rows
    assert [s for k, _, s in rows if k == cancelled_key] == ["started", "cancelled"]
    replayed = _replayed(journal, workflow, "c")
    assert replayed.result == live and executions == Counter()
    assert replayed.summary.unconsumed == () and replayed.summary.executed == 0


async def retry_after_timeout() -> str:
    """Take the fallback branch on timeout; a resumed run that re-ran `slow` would get an
    instant answer (see the test) and take the other branch."""
    try:
        answer = await asyncio.wait_for(slow("llm"), 0.05)
    except TimeoutError:
        answer = await fallback("timeout")
    await slow("stop here")  # the first sitting is interrupted inside this step
    return answer


def test_resume_after_a_cancellation_does_not_run_the_abandoned_call_again(
    journal: Journal,
) -> None:
    """The run is interrupted after a timeout cancelled `slow`. On resume the abandoned call is
    not run again (it would now answer at once and take the other branch, a divergence); the
    timeout cancels it again, and the run finishes on the branch it took live."""
    slow_seconds["stop here"] = 0.0

    async def interrupted() -> str:
        try:
            await asyncio.wait_for(slow("llm"), 0.05)
        except TimeoutError:
            await fallback("timeout")
        raise KeyboardInterrupt  # Ctrl+C after the fallback was journaled

    interrupted.__qualname__ = retry_after_timeout.__qualname__
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(interrupted, journal=journal, run_id="r"))
    executions.clear()
    slow_seconds["llm"] = 0.0  # run again, the call would now beat the timeout
    outcome = asyncio.run(replay.run_with_summary(retry_after_timeout, journal=journal, run_id="r"))
    assert outcome.result == "fallback after timeout"
    assert executions == Counter({"stop here": 1})
    assert outcome.summary.reexecuted == 0


def test_a_step_cancelled_while_waiting_to_retry_is_cancelled_on_replay(journal: Journal) -> None:
    """A step whose first attempt failed and that is cancelled during its retry delay records
    that attempt as cancelled; replay raises the cancellation at the same place."""
    attempts: list[int] = []

    @replay.step(retries=2, retry_delay=5.0)
    async def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("down")

    async def workflow() -> str:
        try:
            return await asyncio.wait_for(flaky(), 0.1)
        except TimeoutError:
            return "gave up"

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="f")) == "gave up"
    assert [e.status for e in journal.events("f")][-2:] == [
        EventStatus.RETRYING,
        EventStatus.CANCELLED,
    ]
    attempts.clear()
    replayed = asyncio.run(replay.run(workflow, journal=journal, run_id="f", mode="replay"))
    assert replayed == "gave up" and attempts == []


def test_a_recorded_cancellation_that_does_not_happen_again_is_a_clear_error(
    journal: Journal,
) -> None:
    """If the code no longer cancels what was cancelled live, replay says so (never hangs)."""
    asyncio.run(replay.run(wait_for_times_out, journal=journal, run_id="w"))

    async def without_timeout() -> str:  # the same workflow, its timeout removed
        return await asyncio.ensure_future(slow("llm"))

    without_timeout.__qualname__ = wait_for_times_out.__qualname__
    with pytest.raises(replay.NonDeterminismError, match="nothing cancels it now") as err:
        asyncio.run(replay.run(without_timeout, journal=journal, run_id="w", mode="replay"))
    assert err.value.key == "0/1:1" and "slow" in str(err.value)
