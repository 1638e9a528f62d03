"""Timeouts whose expiry is journaled: `replay.timeout` and `replay.wait_for`.

A plain asyncio timer is wall-clock time: on replay it fires after the same number of seconds,
while everything journaled around it is served at once, so it can fire at another point of the
run or not at all. These record when the deadline fell (a journaled clock step) and whether the
timeout expired, at its place in the run's history. On replay an expired timeout cancels the
block at exactly that place, with no waiting; one that did not expire never fires. A run
resumed after a crash keeps the recorded deadline: it waits only for what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from journal import EventKind, EventStatus, canonical_json, fingerprint

from ._context import current_scope
from ._errors import ReplayError
from ._history import Turn, run_ready
from ._session import LivePlan, Session
from ._steps import step

T = TypeVar("T")


@step(name="replay.timeout_deadline", kind=EventKind.CLOCK)
async def _deadline(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class _TimerStep:
    """What the session needs of the timer's own event: its name and kind, like a StepSpec."""

    name = "replay.timeout"
    kind = EventKind.TIMER
    called_from_library = True
    """Its call site is the user's line, past `wait_for` and `__aenter__`."""
    passive = True
    """Waiting for its deadline is a loop timer, not outside work the run is busy with."""
    is_async = False
    """Its row is taken in turn when the block ends (or expires), never held to settle."""


_TIMER: Any = _TimerStep()
_EXPIRED, _KEPT = b"true", b"false"
_EXPIRED_BUSY = b'{"expired":true,"loop_busy":true}'
"""Expired while the workflow still had something to take in (a thread's result the loop had
not handed over yet): on replay it fires at once, not after the workflow settles."""


def _expired(payload: bytes | None) -> bool:
    return payload in (_EXPIRED, _EXPIRED_BUSY)


class _State(enum.Enum):
    CREATED = "created"
    ENTERED = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    EXITED = "finished"


class Timeout:
    """`async with replay.timeout(seconds):` cancels the block after `seconds`, as
    `asyncio.timeout` does (TimeoutError out of the block), with the expiry journaled.

    Outside a journaled run, or with `seconds=None` (no limit), it is `asyncio.timeout`.
    """

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError(f"timeout() needs seconds >= 0 (or None), not {seconds}")
        self.seconds = seconds
        self._plain: asyncio.Timeout | None = None
        self._state = _State.CREATED
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._session: Session | None = None
        self._plan: LivePlan | None = None
        self._turn: Turn | None = None
        self._handle: asyncio.TimerHandle | None = None

    def expired(self) -> bool:
        """Whether the block was cancelled by this timeout."""
        if self._plain is not None:
            return self._plain.expired()
        return self._state in (_State.EXPIRING, _State.EXPIRED)

    async def __aenter__(self) -> Timeout:
        if self._state is not _State.CREATED:
            raise RuntimeError("a replay.timeout() has already been entered")
        scope = current_scope.get()
        task = asyncio.current_task()
        if scope is None or self.seconds is None or task is None:
            self._plain = asyncio.timeout(self.seconds)
            await self._plain.__aenter__()
            self._state = _State.ENTERED
            return self
        self._task, self._cancelling = task, task.cancelling()
        deadline = await _deadline(self.seconds)
        session = self._session = scope.session
        key = scope.next_key()
        arguments = canonical_json({"seconds": self.seconds})
        decision = session.prepare(_TIMER, key, arguments, fingerprint(_TIMER.name, arguments), 1)
        self._state = _State.ENTERED
        if isinstance(decision, LivePlan):
            self._plan = decision
            session.start(_TIMER, decision)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            self._handle = task.get_loop().call_later(max(remaining, 0.0), self._expire_live)
        elif isinstance(decision, Turn):
            if _expired(decision.row[7]):
                settle = decision.row[7] != _EXPIRED_BUSY
                with session.lock:
                    expire = self._expire_served(decision.pos)
                    session.history.at_turn(decision.pos, expire, settle=settle)
            else:
                self._turn = decision  # taken when the block ends, as it was recorded
        elif _expired(decision[7]):
            self._expire()  # it expired before anything else was recorded: at once
        return self

    def _expire_live(self) -> None:
        session, plan = self._session, self._plan
        assert session is not None and plan is not None
        self._plan = None
        if session.stopping is None:
            # Under the session's lock: a thread writing its outcome now comes before or after.
            with contextlib.suppress(ReplayError), session.lock:
                busy = session.untaken > 0 or run_ready(session.loop, *session.run_tasks())
                outcome = _EXPIRED_BUSY if busy else _EXPIRED
                session.finish(_TIMER, plan, EventStatus.COMPLETED, outcome)
        self._expire()

    def _expire_served(self, pos: int) -> Any:
        def expire() -> None:
            session = self._session
            assert session is not None
            session.history.reach(pos)
            assert self._task is not None
            loop = self._task.get_loop()
            try:
                here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is loop:
                self._expire_if_entered()
            else:  # the turn came in another thread: cancel on the task's own loop
                loop.call_soon_threadsafe(self._expire_if_entered)

        return expire

    def _expire_if_entered(self) -> None:
        if self._state is _State.ENTERED:
            self._expire()

    def _expire(self) -> None:
        assert self._task is not None
        self._state = _State.EXPIRING
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._plain is not None:
            await self._plain.__aexit__(exc_type, exc, traceback)
            return None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        session = self._session
        assert session is not None and self._task is not None
        if self._state is _State.EXPIRING:
            self._state = _State.EXPIRED
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
            return None
        self._state = _State.EXITED
        if self._plan is not None:  # live, and the deadline did not come: say so, in order
            plan, self._plan = self._plan, None
            if session.stopping is None or session.ending_normally:
                session.finish(_TIMER, plan, EventStatus.COMPLETED, _KEPT)
        elif self._turn is not None and session.stopping is None:
            # Taken even while a cancellation from outside unwinds the block: live, the row
            # that says "not expired" was written on this way out too.
            turn, self._turn = self._turn, None
            await session.take_turn(turn)
        return None


def timeout(seconds: float | None) -> Timeout:
    """A journaled `asyncio.timeout`: the block is cancelled after `seconds` and TimeoutError
    raised out of it; on replay at the same place in the run, without waiting.

    >>> async with replay.timeout(30):
    ...     answer = await ask_llm(prompt)
    """
    return Timeout(seconds)


async def wait_for(awaitable: Awaitable[T], seconds: float | None) -> T:
    """A journaled `asyncio.wait_for`: the awaitable's result, or TimeoutError after
    `seconds` (the awaitable is cancelled), replayed at the same place without waiting.

    >>> try:
    ...     answer = await replay.wait_for(ask_llm(prompt), 30)
    ... except TimeoutError:
    ...     answer = "no answer in time"
    """
    if seconds is None:
        return await awaitable
    async with Timeout(seconds):
        return await awaitable
