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
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from journal._events import EventRow

from ._errors import CallDescription, NonDeterminismError
from ._loop_state import engine_handles, loop_state
from ._pools import GLANCE_SECONDS, own_loop_watch, parked, wait_for_room

IDLE_SECONDS = 0.5
"""How long the loop may have nothing left to do, with a party held, before replay gives up."""
_PARK_SECONDS = 0.05
"""How long a thread whose turn has come waits for the loop to give it before taking it."""
_SETTLE_TURNS = 64
"""At most this many loop turns for the run's tasks to settle before the next outcome is handed
out anyway (a task polling with `sleep(0)` never settles)."""
SETTLE_SECONDS = 0.1
"""How long the run may stand still before what threads were handed is put in place anyway."""
_TICK = 0.02
_NO_PROGRESS_SECONDS = 60.0
"""With a party held and no step or thread of the run at work, give up after this long without
any progress, whatever else the loop does (a web server in the same loop, a long timer)."""

_NO_OUTCOME = ("cancelled", "started", "retrying")
"""A served row with one of these statuses is never handed out: the step stays pending until
the code cancels it (a cancelled attempt; or an attempt in flight when the run ended)."""


class Turn:
    """A served outcome that must wait for its turn: the row and its place in the history
    (-1 for a step in flight when its run ended, which has none). `settle`: even at its turn,
    it waits for the run's tasks to settle first (the step waited live, and whatever was ready
    ran meanwhile)."""

    __slots__ = ("pos", "row", "settle")

    def __init__(self, row: EventRow, pos: int, settle: bool = False) -> None:
        self.row = row
        self.pos = pos
        self.settle = settle


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
            own = self.future.get_loop()  # another loop's, for async code under asyncio.run
            if on_loop and own is loop:
                _settle(self.future, None)
            else:
                own.call_soon_threadsafe(_settle, self.future, None)

    def fail(self, loop: asyncio.AbstractEventLoop, error: BaseException, on_loop: bool) -> None:
        self.error = error
        if self.event is not None:
            self.event.set()
        elif self.future is not None:
            own = self.future.get_loop()
            if on_loop and own is loop:
                _settle(self.future, error)
            else:
                own.call_soon_threadsafe(_settle, self.future, error)


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
        self.waking: set[_Held] = set()
        """Parties given their turn on another thread (a thread's, or a task on a loop of a
        thread's own) that have not gone on yet: the run is not idle while one is on its way
        (a thread starved of CPU, or waiting for room in its pool, may take a while)."""
        self.timers: dict[int, Callable[[], None]] = {}
        self.unsettled: set[int] = set()
        """Timers to fire as soon as their turn comes, without waiting for the run to settle."""
        """Callbacks to run when a position's turn comes (a timeout that expired there)."""
        self.asked: set[str] = set()
        self.busy: Callable[[], bool] = lambda: False
        """Whether live work of this run is in flight (a step, a thread): then nobody is stuck."""
        self.settle_all: Callable[[], bool] = lambda: False
        """Put in place what threads were handed but have not used yet; whether anything was."""
        self.tasks: Callable[[], tuple[set[asyncio.Task[Any]], asyncio.Task[Any] | None]]
        self.tasks = lambda: (set(), None)
        """The run's own tasks (the workflow's and the ones it started)."""
        self.on_stuck: Callable[[BaseException], None] = lambda error: None
        self.widen: Callable[[], bool] = lambda: False
        """Let a starved thread pool start one more thread (replay only); whether one did."""
        self.stand_in: Callable[[], bool] = lambda: False
        """Start a stand-in thread for a pool that holds the run's queued work while all its
        threads wait for turns; whether one started (called without the lock held)."""
        self.pool_moves_on: Callable[[], bool] = lambda: False
        """Whether a pool holding the run's queued work has a thread held for the turn of
        another run that is `moving` (it will free the thread); called without the lock."""
        self.waits_on_queued_work: Callable[[], bool] = lambda: False
        """Whether the outcome due next belongs to work queued in a thread pool, not started."""
        self.stuck_hint: Callable[[], str] = lambda: ""
        """What else to say when stuck (a starved pool on resume)."""
        self._checked_at = 0.0
        self.stopped: Callable[[], BaseException | None] = lambda: None
        """What the sitting stopped with (None while it goes on): a held step cancelled then is
        not a divergence, and nothing may start waiting any more."""
        self._watch: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._settling = False
        self._settle_checks = 0
        self._settle_since = 0.0
        self._progress = (-1, -1)
        self._quiet_since = 0.0
        self._moved_at = 0.0
        """When the check last saw the run move or do something (`moving`)."""
        self._stand_in_tried = False
        """The check gave a stand-in one last try before calling the run stuck."""
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
        """Rows from `seq` on were superseded (a fork): nothing waits for them any more, and
        whoever waited for one of them has its turn now (its row is carried past the fork)."""
        for pos, row in enumerate(self.rows):
            if row[0] >= seq:
                self.reach(pos)
        on_loop = threading.get_ident() == self.loop_thread
        for overtaken in [pos for pos in self.held if pos < self.cursor]:
            for party in self.held.pop(overtaken):
                self._wake(party, on_loop)

    def _release(self, cursor: int) -> None:
        """Give what waits at `cursor` its turn. A task gets it once the run's tasks have done
        what the last outcome woke them to do: live, the next result arrived after the workflow
        had reacted to the previous one (a loop that takes one finished task per wake must not
        find two). So does a thread, unless the loop's thread is blocked (see `_park`)."""
        if cursor in self.unsettled:
            self.unsettled.discard(cursor)
            self._give_turn(cursor)
            return
        due = cursor in self.timers or cursor in self.held
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
            busy = run_ready(self.loop, *self.tasks())
            if busy and self._settle_checks < _SETTLE_TURNS:
                self._settling = True
                self._settle_checks += 1
                engine_handles.add(self.loop.call_soon(self._settle))
                return
            self._give_turn(self.cursor)

    def _give_turn(self, cursor: int) -> None:
        on_loop = threading.get_ident() == self.loop_thread
        timer = self.timers.pop(cursor, None)
        if timer is not None:
            timer()  # reaches `cursor` itself, which releases what comes after
            return
        if cursor < self.size and self.rows[cursor][5] == "cancelled":
            return  # it waits to be cancelled, not for a turn
        for party in self.held.pop(cursor, ()):
            self._wake(party, on_loop)

    def _wake(self, party: _Held, on_loop: bool) -> None:
        """Give `party` its turn; one that goes on in another thread is `waking` until then."""
        future = party.future
        if party.event is not None or (future is not None and future.get_loop() is not self.loop):
            self.waking.add(party)
        party.release(self.loop, on_loop)

    def at_turn(self, pos: int, callback: Callable[[], None], *, settle: bool = True) -> None:
        """Call `callback` when row `pos` gets its turn (now, if it has it); it must reach it.
        With `settle`, once the run's tasks have settled after the row before it."""
        if pos == self.cursor:
            callback()
        else:
            self.timers[pos] = callback
            if not settle:
                self.unsettled.add(pos)

    # -- waiting ----------------------------------------------------------------------------

    async def wait_turn(self, turn: Turn, on_hold: Callable[[int], None]) -> None:
        """Return once `turn` may be handed out (its position reached), in this task.

        A recorded cancellation returns only by raising CancelledError, when the code cancels
        the step again. Raises `NonDeterminismError` if the turn can never come. A task on
        another loop (async code a thread of the run runs with `asyncio.run`) counts, like a
        waiting thread, through `on_hold`.
        """
        row, pos = turn.row, turn.pos
        cancelled = row[5] in _NO_OUTCOME
        with self.lock:
            self._refuse_after_stop()
            if pos == self.cursor and not cancelled:
                if not turn.settle:
                    self.reach(pos)
                    return
                party, foreign = self._held_task(row[1], row[3], pos, on_hold)
                self._release(pos)  # once the tasks ready now have run, as they did live
            else:
                party, foreign = self._held_task(row[1], row[3], pos, on_hold)
        try:
            await self._turn_of(party, foreign)
        except asyncio.CancelledError:
            with self.lock:
                self.waking.discard(party)
                if foreign:
                    on_hold(-1)
                self._drop(pos, party)
                if cancelled:
                    if pos >= 0:
                        self.reach(pos)  # cancelled again, as it was live
                    raise
                if self.stopped() is not None:
                    raise
                # Live, the step finished before the cancellation reached it (both in one turn
                # of the loop): the workflow got the outcome, and the cancellation at its next
                # await. Hand the outcome out now, and the cancellation back to the task.
                self.reach(pos)
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - a step awaits in a task
                raise
            task.uncancel()
            task.cancel()
            return
        except BaseException:
            if foreign:
                with self.lock:
                    self.waking.discard(party)
                    on_hold(-1)
            raise
        with self.lock:
            self.waking.discard(party)
            if foreign:
                on_hold(-1)
            self.reach(pos)

    async def _turn_of(self, party: _Held, foreign: bool) -> None:
        """Wait for `party`'s turn. On an event loop of a pool thread's own (`asyncio.run` in
        work handed to the pool), the thread counts as parked while nothing else on that
        loop can run (`_pools.OwnLoopWatch`), and goes on once its pool has room for it."""
        future = party.future
        assert future is not None
        if not foreign:
            await future
            return
        watch = own_loop_watch(self.waits_on_queued_work)
        watch.hold()
        try:
            await future
        finally:
            ok = future.done() and not future.cancelled() and future.exception() is None
            watch.release(ok, lambda: self.stopped() is not None)

    def others_ready(self) -> bool:
        """Whether other tasks of the run are ready to run, on the run's own loop (the asker is
        on it): live, they ran while a step waited, so they run before its outcome here."""
        if threading.get_ident() != self.loop_thread:
            return False
        return run_ready(self.loop, *self.tasks())

    def _held_task(
        self, key: str, name: str, pos: int, on_hold: Callable[[int], None]
    ) -> tuple[_Held, bool]:
        """A task's party held at `pos`, on whichever loop runs it; whether that loop is
        another than the run's own (a thread's)."""
        loop = asyncio.get_running_loop()
        party = _Held(key, name, future=loop.create_future())
        self.held.setdefault(pos, []).append(party)
        foreign = loop is not self.loop
        if foreign:
            on_hold(1)
            self.loop.call_soon_threadsafe(self._watch_soon_locked)
        else:
            self._watch_soon()
        return party, foreign

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
        try:
            self._park(party, pos)
        except BaseException:
            with self.lock:
                self.waking.discard(party)
                on_hold(-1)
            raise
        with self.lock:
            self.waking.discard(party)  # with the hold let go: the run never looks idle between
            on_hold(-1)
            if party.error is not None:
                raise party.error
            if defer is None:
                self.reach(pos)
            else:
                defer.append(pos)

    async def wait_drained(self, key: str, name: str, on_hold: Callable[[int], None]) -> None:
        """Hold a live outcome until every recorded row has been reached (resume)."""
        with self.lock:
            if self.cursor >= self.size:
                return
            self._refuse_after_stop()
            party, foreign = self._held_task(key, name, self.size, on_hold)
        try:
            await self._turn_of(party, foreign)
        except asyncio.CancelledError:
            with self.lock:
                self._drop(self.size, party)
            raise
        finally:
            if foreign:
                with self.lock:
                    self.waking.discard(party)
                    on_hold(-1)

    def wait_drained_blocking(self, key: str, name: str, on_hold: Callable[[int], None]) -> None:
        with self.lock:
            if self.cursor >= self.size:
                return
            self._refuse_after_stop()
            party = _Held(key, name, event=threading.Event())
            self.held.setdefault(self.size, []).append(party)
            on_hold(1)
            self.loop.call_soon_threadsafe(self._watch_soon_locked)
        try:
            self._park(party, self.size)
        except BaseException:
            with self.lock:
                self.waking.discard(party)
                on_hold(-1)
            raise
        with self.lock:
            self.waking.discard(party)  # with the hold let go: the run never looks idle between
            on_hold(-1)
            if party.error is not None:
                raise party.error

    def _park(self, party: _Held, pos: int) -> None:
        """Block this thread until `party` is given its turn. The turn is given on the loop,
        once the run's tasks have settled; if the loop does not get to it (its thread is
        blocked, waiting for this very thread), the turn is taken as soon as it has come.
        A pool's thread parked here has a stand-in take the pool's queued work, if that is
        the only way on, and goes on once its pool has room for it again (`_pools`)."""
        assert party.event is not None
        seen, since = self.reaches, time.monotonic()
        wait = GLANCE_SECONDS
        with parked(self.waits_on_queued_work) as stand_in_if_held_up:
            while not party.event.wait(wait):
                wait = _PARK_SECONDS
                if stand_in_if_held_up():
                    seen, since = self.reaches, time.monotonic()
                with self.lock:
                    now = time.monotonic()
                    if self.reaches != seen:
                        seen, since = self.reaches, now
                    elif now - since > SETTLE_SECONDS and self.settle_all():
                        since = now  # what other threads held is in place: the loop may be blocked
                    elif (
                        now - since > IDLE_SECONDS
                        and now - self._checked_at > 2 * IDLE_SECONDS
                        and self.widen()
                    ):
                        since = now  # the loop is blocked (no check runs): queued work may start
                    stalled = self._settling and now - self._settle_since > _PARK_SECONDS
                    if stalled and pos == self.cursor and not party.event.is_set():
                        self._drop(pos, party)
                        self.waking.add(party)  # on its way, as one given its turn
                        break
            if party.error is None:  # a stand-in may have its place in the pool
                wait_for_room(lambda: party.error is not None)

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
        self.unsettled.clear()
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
            self._quiet_since = self._idle_since = self._moved_at = self.loop.time()
            self._progress = (-1, -1)
            self._watch = self.loop.call_later(_TICK, self._check)
            engine_handles.add(self._watch)

    def _check(self) -> None:
        """Whether the held parties can still get their turns. Two clocks: the run's progress
        (a row reached), and the loop's idleness. Nothing the loop could still do for anyone
        (no callback, no timer, no socket) for IDLE_SECONDS means stuck; so does no progress
        at all for a minute, with no step or thread of the run at work.

        Before that, a pool holding the run's queued work while its threads all wait for
        turns gets a stand-in from here. Its parked threads start one too, but a thread
        starved of CPU (a loaded machine, many runs sharing one small pool) may not look in
        time, and the run would be called stuck with its work about to start."""
        self._watch = None
        try:
            if self._check_once():
                if self.stand_in():
                    with self.lock:
                        self._quiet_since = self._idle_since = self._moved_at = self.loop.time()
                elif self.pool_moves_on():
                    with self.lock:  # its turn in the pool comes: not idle (not moving either)
                        self._idle_since = self.loop.time()
        finally:  # a look that raised must not end the watch: a stuck run would hang
            with self.lock:
                if self._watch is None and self.held:
                    self._watch = self.loop.call_later(_TICK, self._check)
                    engine_handles.add(self._watch)

    def _check_once(self) -> bool:
        """One look (`_check`); whether a stand-in is worth trying before the next."""
        with self.lock:
            self._checked_at = time.monotonic()
            if not self.held:
                return False
            now = self.loop.time()
            progress = (self.cursor, self.reaches)
            if progress != self._progress:
                self._progress = progress
                self._quiet_since = self._idle_since = self._moved_at = now
            elif now - self._quiet_since >= SETTLE_SECONDS and self.settle_all():
                self._quiet_since = self._idle_since = now  # a thread kept its place: not stuck
                self._moved_at = now
            elif self.busy():
                self._idle_since = self._moved_at = now
                self._quiet_since = now
            else:
                state = loop_state(self.loop)
                if state != "idle" or self.waking:
                    self._idle_since = now  # a party given its turn is on its way: not stuck
                    self._moved_at = now
                idle_for = now - self._idle_since
                if idle_for >= SETTLE_SECONDS and self.widen():
                    self._quiet_since = self._idle_since = now  # queued work may start now
                    self._moved_at = now
                elif idle_for >= IDLE_SECONDS or now - self._quiet_since >= _NO_PROGRESS_SECONDS:
                    if not self._stand_in_tried:  # one last chance, outside the lock
                        self._stand_in_tried = True
                        return True
                    error = self.stuck_error()
                    self.on_stuck(error)
                    self.fail_all(error)
                    return False
                elif idle_for >= SETTLE_SECONDS:
                    return True
            self._stand_in_tried = False
            return False

    def moving(self) -> bool:
        """Whether the check saw the run move or do something within IDLE_SECONDS (read from
        another run's check, without the lock). Not the run's waiting for its turn in a pool
        held up by another: two runs waiting so must not count each other as moving.

        Nor is it standing still while its check does not look (its loop's thread got no CPU,
        or another thread held the GIL): the check last saw it do something, and what it has
        done since is not known until the next look. Nor while a party given its turn is on
        its way. A loop held up for good (a sync call that never returns) leaves the other
        run to the no-progress bound."""
        if self.waking or (self.held and time.monotonic() - self._checked_at > SETTLE_SECONDS):
            return True
        return self.loop.time() - self._moved_at < IDLE_SECONDS

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
        return NonDeterminismError.out_of_order(
            self.run_id, key, recorded, what + self.stuck_hint(), held
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


def run_ready(
    loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]], root: asyncio.Task[Any] | None
) -> bool:
    """Whether a callback ready to run now runs one of the run's `tasks` or settles what one
    waits for (False when the loop's internals cannot be read). Costs the ready callbacks,
    not the run's tasks: a replay of thousands of tasks stays linear."""
    ready = getattr(loop, "_ready", None)
    if not ready:
        return False
    return any(
        not handle.cancelled() and handle not in engine_handles and _wakes(handle, tasks, root)
        for handle in tuple(ready)  # a copy in one step: other threads append to it
    )


def _wakes(
    handle: asyncio.Handle, tasks: set[asyncio.Task[Any]], root: asyncio.Task[Any] | None
) -> bool:
    """Whether `handle` runs one of `tasks` (or `root`), or settles what one of them waits for."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task) and (owner is root or owner in tasks):
        return True  # a task's step or wakeup
    timed = getattr(owner, "_task", None)  # an asyncio.Timeout or a replay.Timeout firing
    if isinstance(timed, asyncio.Task) and (timed is root or timed in tasks):
        return True
    for arg in getattr(handle, "_args", None) or ():
        if isinstance(arg, asyncio.Task) and (arg is root or arg in tasks):
            return True  # a task's done callbacks: asyncio.wait and gather wake their caller
        if isinstance(arg, asyncio.Future):
            for waiter, _ in arg._callbacks or ():
                woken = getattr(waiter, "__self__", None)
                if isinstance(woken, asyncio.Task) and (woken is root or woken in tasks):
                    return True  # settles a future one of the tasks awaits
    return False
