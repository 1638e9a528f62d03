"""One sitting of one run: what is served, what runs live, what is appended, when it stops.

The served-vs-live decision lives here (DESIGN.md, "Core semantics"):

* recorded and finished (completed, failed or cancelled) -> served: the recorded value, or the
  recorded exception re-raised, handed out in the order the run received it live (`_history`);
  the step's code does not run;
* recorded but only started, or a retry pending -> in flight at the crash: run again
  (at-least-once) with the same idempotency key;
* not recorded -> the frontier: run live and append.

Live, a step's `started` row is buffered and written by a loop callback, so a step that waits on
I/O has its start durable while it is in flight, and a step that finishes without yielding
writes start and completion in one transaction: one commit per step. A sync step writes its
start before it runs (it blocks the loop, so no callback would). A step cancelled by the
workflow records `cancelled` with the next write.

Once the sitting stops (the run suspends, the engine raises through the workflow, the run is
cancelled from outside, or it ends), nothing more is run or journaled: a step call raises the
stop again. Everything the session mutates is guarded by one lock, so steps may run in threads.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from journal import (
    Event,
    EventKind,
    EventStatus,
    JournalStore,
    PayloadTooLarge,
    RecordedError,
    RunCancelled,
)
from journal._chain import Chain
from journal._events import KIND_BY_VALUE, STATUS_BY_VALUE, EventRow
from journal._redact import Redactor

from ._context import TaskScope, ThreadWork, thread_work_scope
from ._errors import (
    CallDescription,
    FrontierReached,
    NonDeterminismError,
    NotJournalable,
    StepFailed,
)
from ._group import Ticket
from ._history import History, Turn
from ._log import get_logger
from ._pools import (
    current_frames,
    note_held,
    parked_for,
    pool_at_work,
    stand_in_if_held_up,
    waits_on_the_process,
    widen_starved,
)
from ._recorded import Recorded, as_recorded, fold_rows
from ._sites import site_of
from ._writer import Writer

if TYPE_CHECKING:
    from ._observe import SittingObserver
    from ._steps import StepSpec

log = get_logger("replay")

Mode = Literal["resume", "replay"]
OnDivergence = Literal["raise", "fork"]

_FINISHED = ("completed", "failed", "cancelled")
_GONE = object()
RAISED_KEPT = 256
"""How many step failures a sitting remembers (a workflow that catches many keeps going)."""
LARGE_PAYLOAD_BYTES = 1024 * 1024
"""Payloads above this are written, with a warning: journals should hold answers, not blobs."""


@dataclass(frozen=True)
class RunSummary:
    """How a sitting of a run went: what the journal served and what ran live."""

    run_id: str
    mode: Mode
    served: int = 0
    """Steps answered from the journal without running."""
    executed: int = 0
    """Steps run live for the first time (past the frontier)."""
    reexecuted: int = 0
    """Steps that were in flight when an earlier sitting crashed, run again."""
    unconsumed: tuple[str, ...] = ()
    """Recorded step keys this sitting never asked for (the code took a shorter path)."""
    already_finished: bool = False
    """The run had finished before; its recorded outcome was returned without running code."""
    forked_at: str | None = None
    """Key where a divergence forked the journal (`on_divergence="fork"`)."""
    result_matches_recorded: bool | None = None
    """For a run with a recorded result: whether this sitting's result encodes identically."""
    unfinished: tuple[str, ...] = ()
    """Steps still in flight when the run finished (a stream never read to its end, a thread
    still running): the run was sealed with only their `started` rows."""

    def __str__(self) -> str:
        if self.already_finished:
            return f"run {self.run_id}: already finished; recorded outcome returned, nothing ran"
        text = (
            f"run {self.run_id} ({self.mode}): {self.served} served from the journal, "
            f"{self.executed} executed live, {self.reexecuted} re-executed after a crash"
        )
        if self.unconsumed:
            text += f", {len(self.unconsumed)} recorded steps never reached"
        if self.forked_at:
            text += f", journal forked at step {self.forked_at}"
        if self.unfinished:
            text += f", {len(self.unfinished)} steps unfinished when it ended"
        return text


@dataclass(slots=True)
class LivePlan:
    """A step that must run: where it is journaled and with which attempt number."""

    key: str
    fingerprint: str
    args_payload: bytes
    attempt: int
    started: Event | None = None
    """The buffered `started` row, until it is written."""


class Session:
    """The engine's state for one sitting of one run."""

    def __init__(
        self,
        *,
        run_id: str,
        store: JournalStore,
        token: str | None,
        mode: Mode,
        on_divergence: OnDivergence,
        rows: Sequence[EventRow],
        loop: asyncio.AbstractEventLoop,
        chain: Chain | None = None,
        head: str = "",
        redact: Redactor | None = None,
        max_payload: int = 10 * 1024 * 1024,
        run_finished: bool = False,
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.token = token
        self.mode = mode
        self.on_divergence = on_divergence
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.lock = threading.RLock()
        self.run_finished = run_finished
        """The run had finished (completed or failed) before this sitting: no crash cut it."""
        kept, self.recorded, self.retried_keys = fold_rows(rows)
        self.history = History(run_id, kept, loop, self.lock)
        self.history.busy = self._busy
        self.history.tasks = self.run_tasks
        self.history.settle_all = self.settle_all
        self.history.on_stuck = self._stuck
        self.history.widen = self._widen
        self.history.stand_in = self._stand_in
        self.history.pool_moves_on = self._pool_moves_on
        self.history.waits_on_queued_work = self._waits_on_queued_work
        self.history.stuck_hint = self._stuck_hint
        self.on_interrupt: Callable[[], None] = lambda: None
        """Called when Ctrl+C or an exit raised in the run's code stops it on the loop's thread."""
        self.history.stopped = lambda: None if self.stopping is None else self.stop_signal()
        self.writer = Writer(
            run_id=run_id,
            store=store,
            token=token,
            loop=loop,
            lock=self.lock,
            next_seq=(rows[-1][0] + 1) if rows else 1,
            chain=chain,
            head=head,
            on_failure=self.stop,
        )
        self.served_keys: list[Recorded | EventRow] = []
        self.served = 0
        self.executed = 0
        self.reexecuted = 0
        self.forked_at: str | None = None
        self.redact = redact
        self.secrets: set[str] = set()
        """Secrets redacted in this sitting (from step arguments, requests, the inputs), held
        in memory only: scrubbed from the run's own error and result, and from step errors,
        wherever their text appears."""
        """Replaces secrets in JSON bytes before they are fingerprinted or written."""
        self.max_payload = max_payload
        self.suspend_after = 60.0
        """A durable sleep with more than this many seconds left suspends the run."""
        self.signals_asked: dict[str, int] = {}
        """How many times this sitting asked for each signal: the n-th ask takes the n-th value."""
        self.allow_live = False
        """Replay mode only: past the frontier, run steps live without recording them."""
        self.break_at: str | None = None
        """Replay debugging: the step key at which `on_break` is called when it is served."""
        self.on_break: Callable[[FrameType, str, EventRow], None] | None = None
        self.raised: dict[int, tuple[BaseException, str]] = {}
        """The last step failures raised into the workflow (id -> the exception, its key): the
        run's own failure names the steps it came from, for a retry (`_retry`)."""
        self.cut_short: list[str] = []
        """Steps cancelled because the workflow ended while they ran (also for a retry)."""
        self.patches: dict[str, bool] = {}
        """`replay.patched` answers of this sitting, by change id: asked again, the same."""
        self.cancelled_run: RunCancelled | None = None
        """Replaying a run that was cancelled: where the journal ends, the cancellation hit."""
        self.stopping: BaseException | None = None
        """Why the sitting stops; from then on a step call raises it again."""
        self.closed = False
        """The sitting is over (its outcome written or its lease released): a step that ends
        now (a stream read after the run returned, a thread still running) is not journaled."""
        self.ending_normally = False
        """The workflow returned or failed: tasks it left running are cancelled, and recorded so."""
        self.in_flight: dict[str, bool] = {}
        """Live attempts started and not finished: key -> whether it only waits on the workflow."""
        self.threads_running = 0
        self.threads_held = 0
        self.untaken = 0
        """Thread work whose outcome is journaled but whose result the loop has not taken yet."""
        self.run_threads: dict[int, int] = {}
        """Threads running the run's handed-over work now (ident -> how many pieces deep)."""
        self.held_threads: dict[int, int] = {}
        """Threads waiting for a recorded turn (ident -> how many waits)."""
        self.thread_work: ThreadWork | None = None
        """What the run handed to threads (`threads()`); None until it hands something: most
        runs never do, and its weak containers were a fifth of a run's objects in flight,
        all of which a full garbage collection walks."""
        self.tasks: set[asyncio.Task[Any]] = set()
        """Tasks the workflow created in this run: cancelled if still pending when it ends."""
        self.root_task: asyncio.Task[Any] | None = None
        """The task running the workflow (for a `journaled(...)` block, the caller's task)."""
        self.cancelled_root = False
        """The engine cancelled `root_task` to stop it; its CancelledError stands for `stopping`."""
        self.observer: SittingObserver | None = None
        """Told of each step served from the journal (`replay._observe`)."""

    @property
    def write_error(self) -> BaseException | None:
        """Why the store refused a write (or the lease was lost): the next step raises it."""
        return self.writer.write_error

    @write_error.setter
    def write_error(self, error: BaseException | None) -> None:
        self.writer.write_error = error

    # -- deciding --------------------------------------------------------------------------

    def prepare(
        self,
        spec: StepSpec,
        key: str | TaskScope,
        args_payload: bytes,
        fp: str,
        site_depth: int,
        defer: list[int] | None = None,
    ) -> EventRow | Turn | LivePlan:
        """Served now (the finishing row), served in its turn (a `Turn`), or live (a plan).

        `key` is the step's key, or the scope whose next key it is (allocated under the lock,
        the hot path). `defer`: the asking scope's list of outcomes handed out but not yet in
        place (work in a thread pool): a row served now goes there instead of being reached."""
        with self.lock:
            if self.stopping is not None:
                raise self.stop_signal()
            if not isinstance(key, str):
                scope = key
                if scope.deferred:
                    self.settle(scope)
                scope.steps += 1
                key = f"{scope.path}:{scope.steps}"
            found = self.recorded.get(key)
            if isinstance(found, tuple):
                # The common case on replay, kept short: one row, same call, finished.
                if found[4] == fp and found[3] == spec.name and found[5] in _FINISHED:
                    del self.recorded[key]
                    self.served += 1
                    self.served_keys.append(found)
                    if self.break_at is not None:
                        self._break(key, found, site_depth + 1)
                    if self.observer is not None:
                        self.observer.served(found, found[8])
                    history = self.history
                    pos = history.pos_of[found[0]]
                    if pos == history.cursor and found[5] != "cancelled":
                        if defer is not None:
                            defer.append(pos)
                        elif not (history.held or history.timers):
                            # History.reach inlined: nothing waits, so only the cursor moves.
                            reached = history.reached
                            reached[pos] = 1
                            history.reaches += 1
                            size, pos = history.size, pos + 1
                            while pos < size and reached[pos]:
                                pos += 1
                            history.cursor = pos
                        else:
                            history.reach(pos)
                        return found
                    history.asked.add(key)
                    return Turn(found, pos)
                found = self.recorded[key] = Recorded(found)
            entry = found
            if entry is not None and (entry.fingerprint != fp or entry.name != spec.name):
                entry = self._diverged(spec, key, entry, args_payload, site_depth + 1)
            if entry is not None and entry.finished:
                del self.recorded[key]
                self.served += 1
                self.served_keys.append(entry)
                last = entry.rows[-1]
                if self.break_at is not None:
                    self._break(key, last, site_depth + 1)
                if self.observer is not None:
                    self.observer.served(last, entry.args_payload)
                history = self.history
                history.ask(key, entry.rows[:-1])
                pos = history.pos_of[last[0]]
                if pos == history.cursor and last[5] != "cancelled":
                    if defer is None:
                        if len(entry.rows) > 1 and spec.is_async and history.others_ready():
                            # It waited live (its start was written first): what was ready
                            # then ran before its result came, and it runs first here too.
                            return Turn(last, pos, settle=True)
                        history.reach(pos)
                    else:
                        defer.append(pos)
                    return last
                return Turn(last, pos)
            if self.mode == "replay" and entry is not None and self.run_finished:
                # In flight when the run ended (a thread or a stream the workflow let go, a
                # task a timeout abandoned): live it never finished, and it never does here.
                del self.recorded[key]
                self.history.ask(key, entry.rows)
                self.served += 1
                return Turn(entry.rows[-1], -1)
            if self.mode == "replay" and self.cancelled_run is not None:
                # Live, the run was cancelled here: the replay stops the same way.
                self.stop(self.cancelled_run)
                raise asyncio.CancelledError()
            if self.mode == "replay" and not self.allow_live:
                error = FrontierReached(
                    self.run_id, key, spec.name, self._unfinished(entry), self._nearest(key)
                )
                self.stop(error)
                raise error
            if self.writer.write_error is not None:
                self.writer.raise_write_error()
            if entry is None:
                attempt = 1
                self.executed += 1
            else:
                del self.recorded[key]
                self.history.ask(key, entry.rows)
                attempt = entry.attempt + 1
                self.reexecuted += 1
        site = site_of(spec, site_depth + 1)
        payload = b'{"args":' + args_payload + b',"site":' + orjson.dumps(site) + b"}"
        self.check_size(key, spec.name, "arguments", payload)
        return LivePlan(key=key, fingerprint=fp, args_payload=payload, attempt=attempt)

    def _unfinished(self, entry: Recorded | None) -> str:
        if entry is None:
            return "the journal has no result for it"
        return (
            f"its recorded attempt {entry.attempt} never finished: the sitting that recorded "
            "it was interrupted mid-step (a crash, a kill or a stop)"
        )

    def _break(self, key: str, row: EventRow, site_depth: int) -> None:
        if key != self.break_at or self.on_break is None:
            return
        try:
            frame = sys._getframe(site_depth + 1)
        except ValueError:
            return
        self.on_break(frame, key, row)

    def check_size(self, key: str, name: str, what: str, payload: bytes) -> None:
        """Refuse a payload over the limit before anything of it is written; warn on big ones."""
        size = len(payload)
        if size > self.max_payload:
            reason = str(PayloadTooLarge(f"its {what}", size, self.max_payload))
            raise NotJournalable(self.run_id, key, name, reason)
        if size > LARGE_PAYLOAD_BYTES:
            log.warning("payload.large", run_id=self.run_id, key=key, step=name, bytes=size)

    def _nearest(self, key: str) -> str:
        if not self.recorded:
            return ""
        path = key.rpartition(":")[0]
        same_task = sorted(k for k in self.recorded if k.rpartition(":")[0] == path)
        candidates = same_task or sorted(self.recorded)
        nearest = as_recorded(self.recorded[candidates[0]])
        return (
            f"The nearest unconsumed recorded step is {nearest.key} ({nearest.name}, "
            f"{nearest.status.value}). "
        )

    def _diverged(
        self, spec: StepSpec, key: str, entry: Recorded, args_payload: bytes, site_depth: int
    ) -> Recorded | None:
        recorded_args, recorded_site = _decode_started(entry.args_payload)
        error = NonDeterminismError(
            self.run_id,
            key,
            CallDescription(entry.name, recorded_args, recorded_site),
            CallDescription(spec.name, orjson.loads(args_payload), site_of(spec, site_depth + 1)),
        )
        forking = self.on_divergence == "fork" and self.mode == "resume"
        log.warning(
            "run.diverged",
            run_id=self.run_id,
            key=key,
            recorded=entry.name,
            now=spec.name,
            changed=error.changed_arguments,
            action="fork" if forking else "raise",
        )
        if not forking:
            self.stop(error)
            raise error
        self._fork(key, entry)
        return None

    def _fork(self, key: str, entry: Recorded) -> None:
        """Supersede every recorded row from the diverging step on; keep what was served, and
        every step begun before it (its rows from the cut on are carried past the marker: under
        concurrency a step started before the change may have completed after it)."""
        cut = entry.first_seq
        kept = {k: as_recorded(r) for k, r in self.recorded.items()}
        self.recorded = {k: r for k, r in kept.items() if r.first_seq < cut}
        served = [as_recorded(r) for r in self.served_keys]
        survivors = [*served, *map(as_recorded, self.recorded.values())]
        carried = sorted(
            (row for r in survivors for row in r.rows if row[0] >= cut), key=lambda row: row[0]
        )
        marker_payload = orjson.dumps({"superseded_from_seq": cut, "key": key})
        events = [
            self.writer.event(
                key, EventKind.FORK, "replay.fork", "", EventStatus.COMPLETED, 0, marker_payload
            )
        ]
        for _, old_key, kind, name, fp, status, attempt, payload, args in carried:
            events.append(
                self.writer.event(
                    old_key,
                    KIND_BY_VALUE[kind],
                    name,
                    fp,
                    STATUS_BY_VALUE[status],
                    attempt,
                    payload,
                    args,
                )
            )
        self.writer.write(events)
        self.history.forget_from(cut)
        self.forked_at = key

    # -- taking turns -----------------------------------------------------------------------

    async def take_turn(self, turn: Turn) -> None:
        """Wait until `turn`'s outcome may be handed out (async callers). A turn that can
        never come raises the `NonDeterminismError` that stopped the sitting (`_stuck`)."""
        await self.history.wait_turn(turn, self._hold_thread)

    def take_turn_sync(self, turn: Turn, defer: list[int] | None = None) -> None:
        """`take_turn` for sync callers: a thread waits; the loop's own thread cannot, so its
        outcome is handed out at once. `defer` as for `prepare`."""
        if threading.get_ident() == self.loop_thread:
            with self.lock:
                self.history.reach(turn.pos)
            return
        self.history.wait_turn_blocking(turn, self._hold_thread, defer)

    def settle(self, scope: Any) -> None:
        """Outcomes handed out to thread work take their place now (it ended, or asks again)."""
        with self.lock:
            deferred = list(scope.deferred)
            scope.deferred.clear()  # in place: a caller may hold this very list to append to
            for pos in deferred:
                self.history.reach(pos)

    def threads(self) -> ThreadWork:
        """The run's thread work, made on first use (the caller holds the lock)."""
        work = self.thread_work
        if work is None:
            work = self.thread_work = ThreadWork()
        return work

    def settle_all(self) -> bool:
        """Every thread's outcomes take their place (the run has stood still a while: a thread
        waits for something of the run's without asking the engine); whether any did."""
        with self.lock:
            work = self.thread_work
            if work is None:
                return False
            waiting = [scope for scope in work.scopes if scope.deferred]
            for scope in waiting:
                self.settle(scope)
            return bool(waiting)

    async def hold_live(self, key: str, name: str) -> None:
        """A live outcome on resume came after everything recorded: wait until that is reached."""
        if self.history.drained:
            return
        await self.history.wait_drained(key, name, self._hold_thread)

    def hold_live_sync(self, key: str, name: str) -> None:
        if self.history.drained or threading.get_ident() == self.loop_thread:
            return
        self.history.wait_drained_blocking(key, name, self._hold_thread)

    def _hold_thread(self, delta: int) -> None:
        self.threads_held += delta
        ident = threading.get_ident()
        count = self.held_threads.get(ident, 0) + delta
        if count > 0:
            self.held_threads[ident] = count
        else:
            self.held_threads.pop(ident, None)
        if count <= 1:  # it began or ended holding: pools the thread serves see it
            note_held(ident, count > 0)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """A task of the run ended. Ctrl+C or an exit raised in one stops the sitting before
        the loop unwinds the others."""
        self.tasks.discard(task)
        if not task.cancelled():
            failure = task.exception()
            if isinstance(failure, KeyboardInterrupt | SystemExit):
                self.stop(failure)

    def run_tasks(self) -> tuple[set[asyncio.Task[Any]], asyncio.Task[Any] | None]:
        """The tasks the workflow started (no copy: read under the lock) and the workflow's own."""
        return self.tasks, self.root_task

    def _busy(self) -> bool:
        """Whether a step or a thread of the run is at work, or a pool holding its queued work
        is (then a standstill is not stuck).
        A thread that waits, with no timeout, on another thread of this process (an event, a
        future's result, a queue, a join) is not: only the run's own progress can wake it."""
        if any(not passive for passive in self.in_flight.values()):
            return True
        work = self.thread_work
        if work is not None and any(
            work.queued.get(pool, 0) > 0 and pool_at_work(pool) for pool in work.pools
        ):
            return True  # its work waits its turn in a pool that gets through work
        if self.threads_running <= self.threads_held:
            return False
        frames = current_frames()
        for ident in self.run_threads:
            if ident in self.held_threads:
                continue
            frame = frames.get(ident)
            if frame is None or not waits_on_the_process(frame):
                return True
        return False

    def _stuck(self, error: BaseException) -> None:
        """The run cannot go on in its recorded order: say so at once (a thread the workflow
        blocked forever may keep the process from ending), and stop the sitting."""
        log.error("replay.stuck", run_id=self.run_id, error=str(error))
        self.stop(error)

    def _waits_on_queued_work(self) -> bool:
        """Whether the outcome due next belongs to work the run handed to a thread pool that
        has not started it (its key lies under that work's scope)."""
        with self.lock:
            work, history = self.thread_work, self.history
            if work is None or history.cursor >= history.size:
                return False
            path = history.rows[history.cursor][1].rpartition(":")[0]
            for scope in work.scopes:
                if scope.queued_in is not None and (
                    path == scope.path or path.startswith(scope.path + "/")
                ):
                    return True
            return False

    def _widen(self) -> bool:
        """On replay, a starved pool may start one more thread (no real call can happen)."""
        work = self.thread_work
        if self.mode != "replay" or work is None:
            return False
        return widen_starved(work.pools, work.queued, work.widened)

    def _stand_in(self) -> bool:
        """A stand-in for a pool holding the run's queued work while every thread it has
        waits for a turn (`replay._pools.stand_in_if_held_up`); whether one started."""
        work = self.thread_work
        if work is None:
            return False
        with self.lock:  # a thread of the run may hand work to a new pool meanwhile
            pools = [pool for pool in work.pools if work.queued.get(pool, 0) > 0]
        return any(stand_in_if_held_up(pool) for pool in pools)

    def _pool_moves_on(self) -> bool:
        """Whether a pool holding the run's queued work has a thread held for the turn of
        another run that is moving (`History.moving`): that run will free the thread, and
        the work will start. Called with no lock held: it looks at the other runs."""
        work = self.thread_work
        if work is None:
            return False
        with self.lock:
            pools = [pool for pool in work.pools if work.queued.get(pool, 0) > 0]
        for pool in pools:
            for asks in parked_for(pool):
                other = getattr(asks, "__self__", None)
                if isinstance(other, Session) and other is not self and other.history.moving():
                    return True
        return False

    def _stuck_hint(self) -> str:
        work = self.thread_work
        if work is None or self.mode == "replay":
            return ""
        starved = [
            pool
            for pool in work.pools
            if not getattr(pool, "_shutdown", True) and work.queued.get(pool, 0) > 0
        ]
        if not starved:
            return ""
        sizes = ", ".join(str(pool._max_workers) for pool in starved)
        return (
            f"; work waits in the queue of a thread pool ({sizes} threads) whose threads all "
            "wait for later turns: the pool has fewer threads than when the run was recorded. "
            "Fix: give the pool more threads (max_workers) to resume this run"
        )

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, reason: BaseException) -> None:
        """The sitting stops: steps called from now on raise `reason` again, nothing more is
        journaled, and whatever waits for a turn is released with it."""
        with self.lock:
            if self.stopping is not None:
                return
            self.stopping = reason
            self.history.fail_all(self.stop_signal())
            if isinstance(reason, KeyboardInterrupt | SystemExit) and (
                threading.get_ident() == self.loop_thread
            ):
                self.on_interrupt()  # it leaves the loop now: cleanup may never run
            root = self.root_task
            if root is None or isinstance(reason, asyncio.CancelledError) or root.done():
                return
            if threading.get_ident() != self.loop_thread:
                self.loop.call_soon_threadsafe(self._cancel_root, root)
            elif asyncio.current_task() is not root:
                self._cancel_root(root)  # it may wait on something that will never come

    def _cancel_root(self, root: asyncio.Task[Any]) -> None:
        """The workflow's task learns of a stop raised elsewhere (another task, a check of the
        order, a thread): it is cancelled, and the stop is raised in its place."""
        if not root.done():
            self.cancelled_root = True
            root.cancel()

    def raising(self, error: BaseException, key: str) -> BaseException:
        """`error`, about to be raised into the workflow as step `key`'s failure, noted."""
        raised = self.raised
        raised[id(error)] = (error, key)
        if len(raised) > RAISED_KEPT:
            del raised[next(iter(raised))]
        return error

    def stop_signal(self) -> BaseException:
        """What a step called after the stop raises: the stop itself (a fresh CancelledError)."""
        reason = self.stopping
        if reason is None or isinstance(reason, asyncio.CancelledError | RunCancelled):
            return asyncio.CancelledError()  # a cancelled run: its code sees a cancellation
        return reason

    async def close_tasks(self, *, normally: bool) -> None:
        """Cancel the tasks the workflow left running and wait for them to unwind.

        `normally`: the workflow returned or failed, and their cancellation is recorded so
        replay cancels them the same way. Otherwise the sitting stopped, and nothing is.
        """
        with self.lock:
            if normally:
                self.ending_normally = True
            if self.stopping is None:
                self.stopping = asyncio.CancelledError()
        for _ in range(20):
            leftovers = [task for task in self.tasks if not task.done()]
            if not leftovers:
                return
            for task in leftovers:
                task.cancel()
            await asyncio.wait(leftovers)
            for task in leftovers:
                if not task.cancelled():
                    task.exception()  # retrieved: asyncio would log it when collected
        log.warning("run.tasks_left_running", run_id=self.run_id, count=len(self.tasks))

    # -- writing ---------------------------------------------------------------------------

    def start(self, spec: StepSpec, plan: LivePlan, *, sync: bool = False) -> Ticket | None:
        """Buffer the attempt's `started` row: written before the step's first wait, or with
        its end. A sync call blocks the loop, so its start is written before it runs. While
        other runs write, the row goes to the group committer: the step awaits the ticket
        returned (`started(ticket)`) before its body runs."""
        with self.lock:
            if self.stopping is not None:
                raise self.stop_signal()
            plan.started = self.writer.event(
                plan.key,
                spec.kind,
                spec.name,
                plan.fingerprint,
                EventStatus.STARTED,
                plan.attempt,
                plan.args_payload,
            )
            if plan.key not in self.in_flight:
                self.writer.step_began()
            self.in_flight[plan.key] = getattr(spec, "passive", False)
            return self.writer.start(plan.started, now=sync)

    def finish(
        self,
        spec: StepSpec,
        plan: LivePlan,
        status: EventStatus,
        payload: bytes,
        *,
        wait: bool = True,
    ) -> Ticket | None:
        """Append the attempt's outcome (with any buffered starts) in one transaction; if its
        own start is still buffered (it never waited), the outcome takes its place and seq,
        carrying the arguments: one row, one commit, the same information.

        Without `wait`, rows handed to the group committer may still be on their way: the
        ticket returned says when, and the caller awaits `landed(ticket)` before the value
        reaches the workflow."""
        with self.lock:
            self._landed_step(plan.key)
            if self.closed:
                log.warning(
                    "step.finished_after_its_run",
                    run_id=self.run_id,
                    key=plan.key,
                    step=spec.name,
                    reason="the run had ended: its outcome is not journaled",
                )
                return None
            if self.stopping is not None and not self.ending_normally:
                raise self.stop_signal()
            ticket = self.writer.outcome(*self._ending(spec, plan, status, payload), wait=wait)
            if threading.get_ident() != self.loop_thread:
                work = thread_work_scope()
                if work is not None and work.session is self and not work.untaken:
                    work.untaken = True  # until the loop takes the work's result
                    self.untaken += 1
            return ticket

    async def started(self, ticket: Ticket | None) -> None:
        """Wait until a step's `started` row handed to the group committer is committed: its
        body (and its I/O) begins only then, as it would after a commit on the spot."""
        if ticket is None:
            return
        if not ticket.landed:
            await self.writer.committer.awaitable(ticket, asyncio.get_running_loop())
        if ticket.error is not None:
            self.writer.raise_write_error()

    async def landed(self, ticket: Ticket | None) -> None:
        """Wait until the rows of `ticket` (from `finish(wait=False)`) are committed.

        Their step's outcome is in the journal from then on, so the workflow must see it. A
        cancellation that arrives meanwhile is handled as if the commit had been done on the
        spot, where no timer can fire and no other task run before the workflow's next wait:
        it is delivered one loop turn later, unless whoever asked for it has taken it back by
        then (a timeout whose block ended, `uncancel()`), or the task has ended."""
        if ticket is None:
            return
        if not ticket.landed:
            task = asyncio.current_task()
            # Requests already held back for a later turn are not asked before this wait.
            asked_before = 0 if task is None else task.cancelling() - _held.get(task, 0)
            landing = self.writer.committer.awaitable(ticket, asyncio.get_running_loop())
            stops: list[asyncio.CancelledError] = []
            while not landing.done():
                try:
                    await asyncio.shield(landing)
                except asyncio.CancelledError as cancelled:
                    stops.append(cancelled)
            if stops and task is not None:
                message = stops[-1].args[0] if stops[-1].args else None
                _held[task] = _held.get(task, 0) + len(stops)
                asyncio.get_running_loop().call_soon(
                    _cancel_again, task, asked_before, len(stops), message
                )
        if ticket.error is not None:
            self.writer.raise_write_error()

    def _landed_step(self, key: str) -> None:
        if self.in_flight.pop(key, _GONE) is not _GONE:
            self.writer.step_ended()

    def cancelled(self, spec: StepSpec, plan: LivePlan) -> None:
        """The workflow cancelled a live attempt: record `cancelled` with the next write (a
        stop that cancels it records nothing; the attempt stays in flight for resume)."""
        with self.lock:
            self._landed_step(plan.key)
            if self.closed or self.writer.token is None:
                return
            if self.stopping is not None and not self.ending_normally:
                return
            if self.ending_normally:
                self.cut_short.append(plan.key)
            started, cancelled = self._ending(spec, plan, EventStatus.CANCELLED, None)
            if started is None and cancelled.args is None:
                # Never started (cancelled while waiting to retry): the row says with what.
                cancelled = cancelled.model_copy(update={"args": plan.args_payload})
            self.writer.cancellation(started, cancelled)

    def _ending(
        self, spec: StepSpec, plan: LivePlan, status: EventStatus, payload: bytes | None
    ) -> tuple[Any, Any]:
        """(the attempt's buffered start or None, its outcome row)."""
        started, plan.started = plan.started, None
        writer = self.writer
        if writer.unbuffered(started):
            assert started is not None
            outcome = writer.event(
                plan.key,
                spec.kind,
                spec.name,
                plan.fingerprint,
                status,
                plan.attempt,
                payload,
                args=plan.args_payload,
                seq=started.seq,
            )
            return started, outcome
        outcome = writer.event(
            plan.key, spec.kind, spec.name, plan.fingerprint, status, plan.attempt, payload
        )
        return (None if started is None else started), outcome

    def abandoned(self, plan: LivePlan) -> None:
        """A live attempt ended by the sitting's stop: it stays in flight in the journal."""
        with self.lock:
            self._landed_step(plan.key)

    # -- reporting --------------------------------------------------------------------------

    def summary(self, **extra: Any) -> RunSummary:
        with self.lock:
            unconsumed = tuple(sorted(self.recorded, key=_key_order))
            unfinished = tuple(sorted(self.in_flight, key=_key_order))
        return RunSummary(
            run_id=self.run_id,
            mode=self.mode,
            served=self.served,
            executed=self.executed,
            reexecuted=self.reexecuted,
            unconsumed=unconsumed,
            forked_at=self.forked_at,
            unfinished=unfinished,
            **extra,
        )


_held: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
"""Per task: cancellation requests held back while a step's row was landing, not delivered yet."""


def _cancel_again(task: asyncio.Task[Any], asked_before: int, held: int, message: Any) -> None:
    """Deliver a cancellation that arrived while the task's step row was being committed,
    if it is still asked for."""
    left = _held.get(task, 0) - held
    if left > 0:
        _held[task] = left
    else:
        _held.pop(task, None)
    if not task.done() and task.cancelling() > asked_before:
        task.uncancel()  # cancel() counts the request again
        task.cancel(message)


def _decode_started(payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    if not payload:
        return None, None
    started = orjson.loads(payload)
    return started.get("args"), started.get("site")


def _key_order(key: str) -> tuple[list[int], int]:
    path, _, counter = key.rpartition(":")
    return [int(p) for p in path.split("/") if p.isdigit()], int(
        counter
    ) if counter.isdigit() else 0


def rebuild_error(payload: bytes | None) -> Exception:
    """The exception recorded in `payload`, as its own type or as `StepFailed`."""
    recorded = RecordedError.decode(payload or b"")
    rebuilt = recorded.rebuild()
    if rebuilt is not None:
        return rebuilt
    return StepFailed(recorded.type, recorded.message, recorded.traceback)
