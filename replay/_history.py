"""What the journal holds for a run, and in which order it is handed back to the workflow.

The journal is an ordered history, not a lookup table (DESIGN.md, "Replay of concurrent,
cancelled and threaded code"). Live, the workflow asked for steps and received their outcomes in
some order, and each row's `seq` is its place in that order. On resume and replay:

* a step is *asked* when the code calls it: its `started` and `retrying` rows are reached then;
* a served outcome (completed, failed) is *handed out* only once every row recorded before it
  has been reached; until then the asking task waits (a thread blocks);
* a `cancelled` outcome is never handed out: the step stays pending until whatever cancelled it
  live cancels it again;
* a live outcome on resume happened after everything recorded, so it is held until the whole
  recorded history has been reached.

When a held step can never get its turn (the code does not ask for what was recorded next, or
does not cancel what was cancelled live) and the loop has nothing left to run, every held party
gets a `NonDeterminismError` naming what was expected next: never a hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from journal._events import EventRow

from ._errors import CallDescription, NonDeterminismError

IDLE_SECONDS = 0.5
"""How long nothing may move the run's tasks, with a party held, before replay gives up."""
_PARK_SECONDS = 0.05
"""How long a thread whose turn has come waits for the loop to give it before taking it."""
_SETTLE_TURNS = 64
"""At most this many loop turns for the run's tasks to settle before the next outcome is handed
out anyway (a task polling with `sleep(0)` never settles)."""
SETTLE_SECONDS = 0.1
"""How long the run may stand still before what threads were handed is put in place anyway."""
_TICK = 0.02
_NO_PROGRESS_SECONDS = 60.0
"""On event loops whose internals cannot be read (uvloop): give up after this long unchanged."""

engine_handles: weakref.WeakSet[asyncio.Handle] = weakref.WeakSet()
"""Timers the engine itself keeps (heartbeats, these checks): they do not make a loop busy."""


class Turn:
    """A served outcome that must wait for its turn: the row and its place in the history."""

    __slots__ = ("pos", "row")

    def __init__(self, row: EventRow, pos: int) -> None:
        self.row = row
        self.pos = pos


class _Held:
    """One party waiting for its turn: a task (a future) or a thread (an event)."""

    __slots__ = ("error", "event", "future", "key", "name")

    def __init__(
        self,
        key: str,
        name: str,
        future: asyncio.Future[None] | None = None,
        event: threading.Event | None = None,
    ) -> None:
        self.key = key
        self.name = name
        self.future = future
        self.event = event
        self.error: BaseException | None = None

    def release(self, loop: asyncio.AbstractEventLoop, on_loop: bool) -> None:
        if self.event is not None:
            self.event.set()
        elif self.future is not None:
            if on_loop:
                _settle(self.future, None)
            else:
                loop.call_soon_threadsafe(_settle, self.future, None)

    def fail(self, loop: asyncio.AbstractEventLoop, error: BaseException, on_loop: bool) -> None:
        self.error = error
        if self.event is not None:
            self.event.set()
        elif self.future is not None:
            if on_loop:
                _settle(self.future, error)
            else:
                loop.call_soon_threadsafe(_settle, self.future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    elif isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)


class History:
    """The recorded rows of a run in order, and how far the re-run code has reached them.

    Every method expects the session's lock to be held by the caller, except the waits, which
    take it themselves (a wait must not hold it while it sleeps).
    """

    def __init__(
        self,
        run_id: str,
        rows: Sequence[EventRow],
        loop: asyncio.AbstractEventLoop,
        lock: threading.RLock,
    ) -> None:
        self.run_id = run_id
        self.rows = rows
        self.size = len(rows)
        self.pos_of = {row[0]: index for index, row in enumerate(rows)}
        self.reached = bytearray(self.size)
        self.cursor = 0
        """The first row not reached yet: every row before it has been."""
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.lock = lock
        self.held: dict[int, list[_Held]] = {}
        """Parties waiting, by the position whose turn they wait for (`size`: the end)."""
        self.timers: dict[int, Callable[[], None]] = {}
        """Callbacks to run when a position's turn comes (a timeout that expired there)."""
        self.asked: set[str] = set()
        self.busy: Callable[[], bool] = lambda: False
        """Whether live work of this run is in flight (a step, a thread): then nobody is stuck."""
        self.settle_all: Callable[[], bool] = lambda: False
        """Put in place what threads were handed but have not used yet; whether anything was."""
        self.tasks: Callable[[], set[asyncio.Task[Any]]] = set
        """The run's own tasks (the workflow's and the ones it started)."""
        self.on_stuck: Callable[[BaseException], None] = lambda error: None
        self.stopped: Callable[[], BaseException | None] = lambda: None
        """What the sitting stopped with (None while it goes on): a held step cancelled then is
        not a divergence, and nothing may start waiting any more."""
        self._watch: asyncio.TimerHandle | None = None
        self._settling = False
        self._settle_checks = 0
        self._settle_since = 0.0
        self._progress = (-1, -1)
        self._quiet_since = 0.0
        self.reaches = 0

    # -- reaching ---------------------------------------------------------------------------

    @property
    def drained(self) -> bool:
        """Every recorded row has been reached: what happens now is new."""
        return self.cursor >= self.size

    def ask(self, key: str, rows: Sequence[EventRow]) -> None:
        """The code called the step `key`: `rows` (its rows before any outcome) are reached."""
        self.asked.add(key)
        pos_of = self.pos_of
        for row in rows:
            pos = pos_of.get(row[0])
            if pos is not None:
                self.reach(pos)

    def place(self, row: EventRow) -> int:
        return self.pos_of[row[0]]

    def reach(self, pos: int) -> None:
        """Row `pos` happened again; move the cursor and give the next party its turn."""
        reached = self.reached
        if reached[pos]:
            return
        reached[pos] = 1
        self.reaches += 1
        if pos != self.cursor:
            return
        size = self.size
        cursor = pos + 1
        while cursor < size and reached[cursor]:
            cursor += 1
        self.cursor = cursor
        if self.held or self.timers:
            self._release(cursor)

    def forget_from(self, seq: int) -> None:
        """Rows from `seq` on were superseded (a fork): nothing waits for them any more."""
        for pos, row in enumerate(self.rows):
            if row[0] >= seq:
                self.reach(pos)

    def _release(self, cursor: int) -> None:
        """Give what waits at `cursor` its turn. A task gets it once the run's tasks have done
        what the last outcome woke them to do: live, the next result arrived after the workflow
        had reacted to the previous one (a loop that takes one finished task per wake must not
        find two). So does a thread, unless the loop's thread is blocked (see `_park`)."""
        due = cursor in self.timers or any(pos <= cursor for pos in self.held)
        if due and not self._settling:
            self._settling = True
            self._settle_checks = 0
            self._settle_since = time.monotonic()
            if threading.get_ident() == self.loop_thread:
                handle = self.loop.call_soon(self._settle)
                engine_handles.add(handle)
            else:
                self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self.lock:
            self._settling = False
            busy = _run_ready(self.loop, self.tasks())
            if busy and self._settle_checks < _SETTLE_TURNS:
                self._settling = True
                self._settle_checks += 1
                engine_handles.add(self.loop.call_soon(self._settle))
                return
            self._give_turn(self.cursor)

    def _give_turn(self, cursor: int) -> None:
        on_loop = threading.get_ident() == self.loop_thread
        for overtaken in [pos for pos in self.held if pos < cursor]:
            # Reached by someone else meanwhile (a fork superseded its row): its turn is past.
            for party in self.held.pop(overtaken):
                party.release(self.loop, on_loop)
        timer = self.timers.pop(cursor, None)
        if timer is not None:
            timer()  # reaches `cursor` itself, which releases what comes after
            return
        if cursor < self.size and self.rows[cursor][5] == "cancelled":
            return  # it waits to be cancelled, not for a turn
        for party in self.held.pop(cursor, ()):
            party.release(self.loop, on_loop)

    def at_turn(self, pos: int, callback: Callable[[], None]) -> None:
        """Call `callback` when row `pos` gets its turn (now, if it has it); it must reach it."""
        if pos == self.cursor:
            callback()
        else:
            self.timers[pos] = callback

    # -- waiting ----------------------------------------------------------------------------

    async def wait_turn(self, turn: Turn) -> None:
        """Return once `turn` may be handed out (its position reached), in this task.

        A recorded cancellation returns only by raising CancelledError, when the code cancels
        the step again. Raises `NonDeterminismError` if the turn can never come.
        """
        row, pos = turn.row, turn.pos
        cancelled = row[5] == "cancelled"
        with self.lock:
            self._refuse_after_stop()
            if pos == self.cursor and not cancelled:
                self.reach(pos)
                return
            party = _Held(row[1], row[3], future=self.loop.create_future())
            self.held.setdefault(pos, []).append(party)
            self._watch_soon()
        try:
            await party.future  # type: ignore[misc]
        except asyncio.CancelledError:
            with self.lock:
                self._drop(pos, party)
                if cancelled:
                    self.reach(pos)  # cancelled again, as it was live
                    raise
                if self.stopped() is not None:
                    raise
            raise self._cancelled_now(row) from None
        with self.lock:
            self.reach(pos)

    def wait_turn_blocking(
        self, turn: Turn, on_hold: Callable[[int], None], defer: list[int] | None = None
    ) -> None:
        """`wait_turn` for a thread: block until the turn comes. `on_hold(+1/-1)` counts the
        threads parked here, so a parked thread does not make the run look busy. With `defer`,
        the position is put there to be reached later instead of now."""
        row, pos = turn.row, turn.pos
        with self.lock:
            self._refuse_after_stop()
            if pos == self.cursor:
                if defer is None:
                    self.reach(pos)
                else:
                    defer.append(pos)
                return
            party = _Held(row[1], row[3], event=threading.Event())
            self.held.setdefault(pos, []).append(party)
            on_hold(1)
            self.loop.call_soon_threadsafe(self._watch_soon_locked)
        self._park(party, pos)
        with self.lock:
            on_hold(-1)
            if party.error is not None:
                raise party.error
            if defer is None:
                self.reach(pos)
            else:
                defer.append(pos)

    async def wait_drained(self, key: str, name: str) -> None:
        """Hold a live outcome until every recorded row has been reached (resume)."""
        with self.lock:
            if self.cursor >= self.size:
                return
            self._refuse_after_stop()
            party = _Held(key, name, future=self.loop.create_future())
            self.held.setdefault(self.size, []).append(party)
            self._watch_soon()
        try:
            await party.future  # type: ignore[misc]
        except asyncio.CancelledError:
            with self.lock:
                self._drop(self.size, party)
            raise

    def wait_drained_blocking(self, key: str, name: str, on_hold: Callable[[int], None]) -> None:
        with self.lock:
            if self.cursor >= self.size:
                return
            self._refuse_after_stop()
            party = _Held(key, name, event=threading.Event())
            self.held.setdefault(self.size, []).append(party)
            on_hold(1)
            self.loop.call_soon_threadsafe(self._watch_soon_locked)
        self._park(party, self.size)
        with self.lock:
            on_hold(-1)
            if party.error is not None:
                raise party.error

    def _park(self, party: _Held, pos: int) -> None:
        """Block this thread until `party` is given its turn. The turn is given on the loop,
        once the run's tasks have settled; if the loop does not get to it (its thread is
        blocked, waiting for this very thread), the turn is taken as soon as it has come."""
        assert party.event is not None
        while not party.event.wait(_PARK_SECONDS):
            with self.lock:
                stalled = self._settling and time.monotonic() - self._settle_since > _PARK_SECONDS
                if stalled and pos == self.cursor and not party.event.is_set():
                    self._drop(pos, party)
                    return

    def _refuse_after_stop(self) -> None:
        stop = self.stopped()
        if stop is not None:
            raise stop

    def _drop(self, pos: int, party: _Held) -> None:
        parties = self.held.get(pos)
        if parties and party in parties:
            parties.remove(party)
            if not parties:
                del self.held[pos]

    def fail_all(self, error: BaseException) -> None:
        """Every held party raises `error` (the sitting stops)."""
        held, self.held = self.held, {}
        self.timers.clear()
        on_loop = threading.get_ident() == self.loop_thread
        for parties in held.values():
            for party in parties:
                party.fail(self.loop, error, on_loop)

    # -- noticing that nothing can move -----------------------------------------------------

    def _watch_soon_locked(self) -> None:
        with self.lock:
            self._watch_soon()

    def _watch_soon(self) -> None:
        if self._watch is None:
            self._quiet_since = self.loop.time()
            self._progress = (-1, -1)
            self._watch = self.loop.call_later(_TICK, self._check)
            engine_handles.add(self._watch)

    def _check(self) -> None:
        self._watch = None
        with self.lock:
            if not self.held:
                return
            now = self.loop.time()
            progress = (self.cursor, self.reaches)
            idle = _run_idle(self.loop, self.tasks())
            quiet = now - self._quiet_since
            if progress != self._progress or idle is False:
                self._progress = progress
                self._quiet_since = now
            elif quiet >= SETTLE_SECONDS and self.settle_all():
                self._quiet_since = now  # a thread held its place while waiting: not stuck
            elif self.busy():
                self._quiet_since = now
            elif quiet >= (IDLE_SECONDS if idle else _NO_PROGRESS_SECONDS):
                error = self.stuck_error()
                self.on_stuck(error)
                self.fail_all(error)
                return
            self._watch = self.loop.call_later(_TICK, self._check)
            engine_handles.add(self._watch)

    def stuck_error(self) -> NonDeterminismError:
        """What the code failed to do: the row the recorded run had next, and who waits."""
        waiting = sorted(
            f"{party.key} ({party.name})" for parties in self.held.values() for party in parties
        )
        held = ", ".join(waiting[:5]) + (
            f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        )
        if self.cursor >= self.size:
            row = self.rows[-1] if self.rows else None
        else:
            row = self.rows[self.cursor]
        if row is None:  # pragma: no cover - held parties imply recorded rows
            return NonDeterminismError.out_of_order(self.run_id, "?", None, "", held)
        seq, key, _, name, _, status, _, payload, args = row
        arguments, site = _call_of(payload if status == "started" else args)
        recorded = CallDescription(name, arguments, site)
        if status == "cancelled" and key in self.asked:
            what = (
                f"the recorded run cancelled step {key} here (a timeout, task.cancel() or a "
                "failing TaskGroup sibling), and nothing cancels it now"
            )
        elif status in ("completed", "failed") and key in self.asked:
            what = f"step {key} was asked for but cannot take its recorded turn"
        else:
            what = (
                f"the recorded run asked for step {key} at this point (event seq {seq}), and "
                "the code does not ask for it now"
            )
        return NonDeterminismError.out_of_order(self.run_id, key, recorded, what, held)

    def _cancelled_now(self, row: EventRow) -> NonDeterminismError:
        arguments, site = _call_of(row[8])
        return NonDeterminismError.out_of_order(
            self.run_id,
            row[1],
            CallDescription(row[3], arguments, site),
            f"step {row[1]} was cancelled now (a timeout, task.cancel() or a failing TaskGroup "
            f"sibling), but the recorded run received its result ({row[5]})",
            f"{row[1]} ({row[3]})",
        )


def _call_of(payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    if not payload:
        return None, None
    try:
        started = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(started, dict):
        return None, None
    return started.get("args"), started.get("site")


def _run_idle(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> bool | None:
    """True if nothing the loop holds can move the run's own `tasks`: none of them is ready to
    run, and no timer will wake one (a sleep, a timeout). What else the loop serves (a web
    server, the caller's own timeout around the run) does not count. None if the loop's
    internals cannot be read (then only a long standstill counts)."""
    ready = getattr(loop, "_ready", None)
    scheduled = getattr(loop, "_scheduled", None)
    if ready is None or scheduled is None:
        return None
    waiting_on = {id(task._fut_waiter) for task in tasks if task._fut_waiter is not None}  # type: ignore[attr-defined]
    for handle in (*ready, *scheduled):
        if handle.cancelled() or handle in engine_handles:
            continue
        if _wakes(handle, tasks, waiting_on):
            return False
    return True


def _run_ready(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> bool:
    """Whether a callback ready to run now runs one of the run's `tasks` or settles what one
    waits for (False when the loop's internals cannot be read)."""
    ready = getattr(loop, "_ready", None)
    if not ready:
        return False
    waiting_on = {id(task._fut_waiter) for task in tasks if task._fut_waiter is not None}  # type: ignore[attr-defined]
    return any(
        not handle.cancelled()
        and handle not in engine_handles
        and _wakes(handle, tasks, waiting_on)
        for handle in ready
    )


def _wakes(handle: asyncio.Handle, tasks: set[asyncio.Task[Any]], waiting_on: set[int]) -> bool:
    """Whether `handle` runs one of `tasks`, or settles what one of them waits for."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if owner is not None and (owner in tasks or getattr(owner, "_task", None) in tasks):
        return True  # a task step or wakeup, an asyncio.Timeout or replay.Timeout firing
    # A future a task waits on being settled, or a task's own done callbacks (asyncio.wait
    # and gather learn from those that a task finished, and wake their caller).
    return any(
        id(arg) in waiting_on or (isinstance(arg, asyncio.Task) and arg in tasks)
        for arg in getattr(handle, "_args", None) or ()
    )
