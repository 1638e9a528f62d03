"""Journaled stand-ins for what makes code non-deterministic: the clock, ids, randomness, time.

Inside a run each is a journaled step, so replay sees the values the live run saw. Outside a
run they behave like their standard-library counterparts.
"""

from __future__ import annotations

import asyncio
import contextvars
import random as _random
import uuid as _uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from journal import EventKind, JournalStore

from ._context import current_scope
from ._errors import SignalTimeout, Suspended
from ._steps import step


@step(name="replay.now", kind=EventKind.CLOCK)
async def now() -> datetime:
    """The current UTC time, journaled: replay returns the time the live run saw."""
    return datetime.now(UTC)


@step(name="replay.uuid4", kind=EventKind.UUID)
async def uuid4() -> _uuid.UUID:
    """A random UUID, journaled."""
    return _uuid.uuid4()


@step(name="replay.random", kind=EventKind.RANDOM)
async def random() -> float:
    """A float in [0, 1), journaled."""
    return _random.random()


@step(name="replay.sleep", kind=EventKind.SLEEP)
async def _wake_up_time(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def sleep(seconds: float) -> None:
    """Sleep durably: the wake-up time is journaled, so a resumed run waits only what is left.

    A sleep with more than the run's `suspend_after` seconds left (default 60) does not keep
    the process: the run is left `waiting` until then and `Suspended` is raised to `run()`'s
    caller; a worker continues it when it is due. Replay mode does not wait at all.
    """
    if seconds < 0:
        raise ValueError(f"sleep() needs seconds >= 0, not {seconds}")
    scope = current_scope.get()
    if scope is None:
        await asyncio.sleep(seconds)
        return
    wake_at = await _wake_up_time(seconds)
    session = scope.session
    if session.mode == "replay":
        return
    remaining = (wake_at - datetime.now(UTC)).total_seconds()
    if remaining > session.suspend_after:
        waiting = Suspended(session.run_id, wake_at=wake_at)
        session.stop(waiting)  # from here on the sitting runs and journals nothing
        raise waiting
    if remaining > 0:
        await asyncio.sleep(remaining)


_signal_source: contextvars.ContextVar[tuple[JournalStore, str] | None] = contextvars.ContextVar(
    "replay_signal_source", default=None
)


@step(name="replay.signal_deadline", kind=EventKind.CLOCK)
async def _deadline(timeout: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=timeout)


@step(name="replay.signal", kind=EventKind.SIGNAL)
async def _take_signal(name: str, number: int, deadline: datetime | None, timeout: float) -> Any:
    source = _signal_source.get()
    assert source is not None, "signal() sets its source around this step"
    store, run_id = source
    payload = store.read_signal(run_id, name, number)
    if payload is not None:
        return orjson.loads(payload)
    if deadline is not None and datetime.now(UTC) >= deadline:
        raise SignalTimeout(name, timeout)
    raise Suspended(run_id, wake_at=deadline, waiting_for=name)


async def signal(name: str, *, timeout: float | None = None) -> Any:
    """Wait for input from outside the run: the value sent with `journal signal RUN NAME JSON`
    or `Journal.signal(run_id, name, value)`, journaled like any result.

    A value sent before the run asks is kept and returned at once. With none yet, the run is
    left `waiting` for it, its lease released, and `Suspended` raised to `run()`'s caller; the
    process may exit, and a worker continues the run when the signal arrives. Each call takes
    the next value sent under `name`. With `timeout` seconds and still nothing by then, the
    run continues and this raises `SignalTimeout` (replayed as such).
    """
    scope = current_scope.get()
    if scope is None:
        raise RuntimeError(
            f"replay.signal({name!r}) waits for input sent to a journaled run, and none is "
            "running here. Fix: call it inside a workflow started with replay.run(...) or "
            "inside `async with journaled(...)`."
        )
    session = scope.session
    number = session.signals_asked.get(name, 0) + 1
    session.signals_asked[name] = number
    deadline = None if timeout is None else await _deadline(timeout)
    token = _signal_source.set((session.store, session.run_id))
    try:
        return await _take_signal(name, number, deadline, timeout or 0.0)
    finally:
        _signal_source.reset(token)
