"""Journaled stand-ins for what makes code non-deterministic: the clock, ids, randomness, time.

Inside a run each is a journaled step, so replay sees the values the live run saw. Outside a
run they behave like their standard-library counterparts.
"""

from __future__ import annotations

import asyncio
import random as _random
import uuid as _uuid
from datetime import UTC, datetime, timedelta

from journal import EventKind

from ._context import current_scope
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

    Replay mode does not wait at all.
    """
    if seconds < 0:
        raise ValueError(f"sleep() needs seconds >= 0, not {seconds}")
    scope = current_scope.get()
    if scope is None:
        await asyncio.sleep(seconds)
        return
    wake_at = await _wake_up_time(seconds)
    if scope.session.mode == "replay":
        return
    remaining = (wake_at - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        await asyncio.sleep(remaining)
