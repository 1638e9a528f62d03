"""Retry timing: delays, backoff, the cap and jitter, checked on a clock the test runs.

The retry loop waits through `replay._steps._pause` (and `_pause_sync` for sync steps); the
tests swap in a clock that records each wait and returns at once, so the figures are exact
and the suite does not sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import replay
from journal import EventStatus, Journal
from replay import RetryPolicy, run, step
from replay import _steps as steps


class Clock:
    """Virtual time: each wait is recorded and moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    async def pause(self, seconds: float) -> None:
        self.pause_sync(seconds)
        await asyncio.sleep(0)

    def pause_sync(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    running = Clock()
    monkeypatch.setattr(steps, "_pause", running.pause)
    monkeypatch.setattr(steps, "_pause_sync", running.pause_sync)
    return running


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "j.db") as opened:
        yield opened


def failing(times: int, **retry: float) -> Callable[[], Awaitable[str]]:
    """A workflow whose one async step fails `times` times (ConnectionError), then says "ok"."""
    left = [times]

    @step(**retry)  # type: ignore[call-overload]
    async def flaky() -> str:
        if left[0]:
            left[0] -= 1
            raise ConnectionError("rate limited")
        return "ok"

    async def workflow() -> str:
        return await flaky()

    return workflow


def test_delays_grow_by_backoff_up_to_the_cap(clock: Clock, journal: Journal) -> None:
    """retry_delay=1, backoff=2, max_delay=5: waits of 1, 2, 4, 5, 5 seconds, exactly."""
    workflow = failing(5, retries=5, retry_delay=1.0, backoff=2.0, max_delay=5.0, jitter=0.0)
    assert asyncio.run(run(workflow, journal=journal, run_id="r")) == "ok"
    assert clock.waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    statuses = [e.status for e in journal.events("r") if e.status != EventStatus.STARTED]
    assert statuses == [EventStatus.RETRYING] * 5 + [EventStatus.COMPLETED]


def test_a_sync_step_waits_the_same_way(clock: Clock, journal: Journal) -> None:
    left = [3]

    @step(retries=3, retry_delay=0.5, backoff=3.0, max_delay=60.0, jitter=0.0)
    def flaky() -> str:
        if left[0]:
            left[0] -= 1
            raise ConnectionError("reset")
        return "ok"

    async def workflow() -> str:
        return flaky()

    assert asyncio.run(run(workflow, journal=journal, run_id="r")) == "ok"
    assert clock.waits == [0.5, 1.5, 4.5]


def test_the_last_failure_is_not_followed_by_a_wait(clock: Clock, journal: Journal) -> None:
    """Two retries: three attempts and two waits; the final failure is raised at once."""

    @step(retries=2, retry_delay=2.0, jitter=0.0)
    async def broken() -> str:
        raise ConnectionError("down")

    async def workflow() -> str:
        return await broken()

    with pytest.raises(ConnectionError):
        asyncio.run(run(workflow, journal=journal, run_id="r"))
    assert clock.waits == [2.0, 4.0]


def test_jitter_takes_off_up_to_its_fraction(
    clock: Clock, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jitter=0.5 with draws 0, 1 and 0.5: the full delay, half of it, three quarters."""
    draws = iter([0.0, 1.0, 0.5])
    monkeypatch.setattr(steps, "_draw", lambda: next(draws))
    workflow = failing(3, retries=3, retry_delay=1.0, backoff=2.0, jitter=0.5)
    asyncio.run(run(workflow, journal=journal, run_id="r"))
    assert clock.waits == [1.0, 1.0, 3.0]


def test_the_default_jitter_spreads_retries_by_up_to_a_tenth() -> None:
    """Runs that failed together retry at different moments, never later than the delay."""
    policy = RetryPolicy(retries=3, delay=10.0)
    delays = [policy.delay_before(1) for _ in range(200)]
    assert all(9.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 150
    assert RetryPolicy(delay=10.0, jitter=0.0).delay_before(1) == 10.0
    assert RetryPolicy(delay=10.0, max_delay=15.0, jitter=0.0).delay_before(3) == 15.0


def test_replay_serves_failed_attempts_without_waiting(clock: Clock, journal: Journal) -> None:
    workflow = failing(2, retries=2, retry_delay=3.0, jitter=0.0)
    asyncio.run(run(workflow, journal=journal, run_id="r"))
    assert clock.waits == [3.0, 3.0 * 2]
    assert asyncio.run(run(workflow, journal=journal, run_id="r", mode="replay")) == "ok"
    assert clock.waits == [3.0, 6.0]  # no new waits


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be 0 or more, not -1"),
        ({"retry_delay": -0.5}, "retry_delay must be 0 or more seconds, not -0.5"),
        ({"backoff": 0.5}, "backoff must be 1 or more"),
        ({"max_delay": -1.0}, "max_delay must be 0 or more seconds"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1, not 1.5"),
    ],
)
def test_a_bad_retry_setting_is_refused_when_decorating(
    options: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        replay.step(**options)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "options",
    [
        {"backoff": 1.0},  # equal delays
        {"backoff": 1.5},
        {"retries": 0, "retry_delay": 0.0, "max_delay": 0.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
    ],
)
def test_the_edge_of_each_retry_setting_is_allowed(options: dict[str, float]) -> None:
    """The bounds are inclusive: a backoff of exactly 1 keeps delays equal, and any backoff
    of 1 or more is a valid one (a check that moved the bound would refuse these)."""
    replay.step(**options)  # type: ignore[call-overload]


def test_the_idempotency_key_is_the_live_steps_and_only_while_it_runs(journal: Journal) -> None:
    seen: list[str | None] = []

    @replay.step
    async def charge() -> str:
        key = replay.idempotency_key()
        seen.append(key)
        return key or ""

    async def flow() -> None:
        seen.append(replay.idempotency_key())
        await charge()
        seen.append(replay.idempotency_key())  # back in workflow code: none

    asyncio.run(replay.run(flow, journal=journal, run_id="keys"))
    assert seen == [None, "keys:0:1", None]
