"""Rows to commits for one sitting: seqs, buffered rows, the hash chain, the store.

A step's `started` row is buffered and written by a loop callback, so a step that waits on I/O
has its start durable while it is in flight, and a step that finishes without yielding writes
start and outcome as one row, in one transaction. A sync call blocks the loop, so its start is
written at once. A cancelled attempt is written with the next write, and dropped if the sitting
stops first (a resume then finds it in flight, as a crash would have left it).

While other runs have steps in flight on the same store, rows go to the store's group committer
(`replay._group`) instead of being committed on the loop; an async step then awaits its ticket
before its value reaches the workflow, and everything else waits for it where it stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from journal import Event, EventKind, EventStatus, JournalStore, LeaseLost
from journal._chain import Chain
from journal._events import RunStatus, trusted_event

from ._errors import JournalWriteFailed, OwnershipLost, ReplayError
from ._group import Committer, Ticket, committer_of
from ._log import get_logger

if TYPE_CHECKING:
    from ._observe import SittingObserver

log = get_logger("replay")


class Writer:
    """Appends one run's rows for one sitting. Every method expects the session's lock held
    or takes it (the lock is shared, re-entrant)."""

    def __init__(
        self,
        *,
        run_id: str,
        store: JournalStore,
        token: str | None,
        loop: asyncio.AbstractEventLoop,
        lock: threading.RLock,
        next_seq: int,
        chain: Chain | None,
        head: str,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.token = token
        """None: nothing is recorded (replay with live steps allowed)."""
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.lock = lock
        self.next_seq = next_seq
        self.chain = chain
        """How appended events are hashed; None for a run recorded before chaining."""
        self.head = head
        """The hash the next appended event links to."""
        self.on_failure = on_failure
        """Called with the engine error a refused write becomes (the session stops on it)."""
        self.pending: list[Event] = []
        self.cancellations: list[Event] = []
        self.flush_scheduled = False
        self.write_error: BaseException | None = None
        self.written_seq = next_seq - 1
        self.block_task: asyncio.Task[Any] | None = None
        """For a `journaled(...)` block: its task, whose cancellation from outside stops it."""
        self.block_cancelling = 0
        self.unwind_from: int | None = None
        """The first seq appended while `block_task` was being cancelled."""
        self.observer: SittingObserver | None = None
        """Told of every commit once the store took it (`replay._observe`)."""
        self.committer: Committer = committer_of(store)
        self.steps_in_flight = 0
        self.outstanding = 0
        """Tickets queued with the committer and not landed yet (changed under its lock)."""
        self.last_ticket: Ticket | None = None

    def event(
        self,
        key: str,
        kind: EventKind,
        name: str,
        fp: str,
        status: EventStatus,
        attempt: int,
        payload: bytes | None,
        args: bytes | None = None,
        seq: int | None = None,
    ) -> Event:
        """A new row, with the next seq unless `seq` is given (it then replaces a buffered one)."""
        if seq is None:
            seq = self.next_seq
            self.next_seq = seq + 1
            block = self.block_task
            if block is not None:
                if block.cancelling() > self.block_cancelling:
                    if self.unwind_from is None:
                        self.unwind_from = seq
                else:
                    self.unwind_from = None
        return trusted_event(
            self.run_id,
            seq,
            key,
            kind,
            name,
            fp,
            status,
            attempt,
            payload,
            datetime.now(UTC),
            args,
        )

    def start(self, started: Event, *, now: bool) -> Ticket | None:
        """Buffer a `started` row: written now, or by a loop callback before the step's first
        wait (unless the step's outcome takes its place first). While other runs write, it
        goes to the group committer at once, and the ticket returned is what the step awaits
        before its body runs."""
        self.pending.append(started)
        if now or threading.get_ident() != self.loop_thread:
            self.write([])
        elif self.outstanding or self.committer.crowded(self):
            return self.write([], wait=False)
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_pending)
        return None

    def outcome(self, started: Event | None, outcome: Event, *, wait: bool = True) -> Ticket | None:
        """Append an attempt's outcome. If its start is still buffered, the outcome (built with
        the start's seq and arguments) takes its place: one row, one commit. Without `wait`,
        the ticket of rows handed to the group committer, which the caller awaits."""
        if started is not None:
            for index, event in enumerate(self.pending):
                if event is started:
                    self.pending[index] = outcome
                    return self.write([], wait=wait)
        return self.write([outcome], wait=wait)

    def unbuffered(self, started: Event | None) -> bool:
        """Whether `started` is still buffered (not written yet)."""
        return started is not None and any(event is started for event in self.pending)

    def cancellation(self, started: Event | None, cancelled: Event) -> None:
        """Record a cancelled attempt: in its start's place if that is still buffered, else with
        the next write."""
        for index, event in enumerate(self.pending):
            if event is started:
                self.pending[index] = cancelled
                return
        self.cancellations.append(cancelled)

    def _flush_pending(self) -> None:
        with self.lock:
            self.flush_scheduled = False
            if self.write_error is None and (self.pending or self.last_ticket is not None):
                # A failure is kept in write_error; the next step raises it in the workflow.
                # On the spot, and waited for: the step was promised its start before its
                # first wait ends (another step's write may have carried it to the committer).
                with contextlib.suppress(ReplayError):
                    self.write([], group=False)

    def write(self, events: list[Event], *, wait: bool = True, group: bool = True) -> Ticket | None:
        """Append buffered rows plus `events`; raise a `ReplayError` if the store refuses.

        Committed when this returns, unless the rows went to the group committer and `wait`
        is False: the ticket returned then says when they land (the caller waits for it before
        anything it wrote is seen). Without `group`, they commit on the spot unless earlier
        rows of the run are still with the committer."""
        with self.lock:
            if self.write_error is not None:
                self.raise_write_error()
            batch = self.pending + events if self.pending else events
            if self.cancellations:
                batch = sorted(batch + self.cancellations, key=_seq)
            if not batch:
                if wait:
                    self.drain()
                return None
            self.pending = []
            self.cancellations = []
            if self.token is None:  # replay with allow_live: live steps are not recorded
                return None
            if self.chain is not None:
                self.head = self.chain.stamp(self.head, batch)
            if self.outstanding or (group and self.committer.crowded(self)):
                ticket = self.last_ticket = self.committer.submit(self, batch)
                if wait:
                    self.drain()
                    return None
                return ticket
            try:
                self.store.append(self.run_id, self.token, batch)
            except Exception as exc:  # LeaseLost, or the store's own I/O errors
                self.write_error = exc
                self.raise_write_error()
            self.written_seq = batch[-1].seq
            if self.observer is not None:
                self.observer.written(batch)
            return None

    def drain(self) -> None:
        """Wait until every row handed to the group committer has landed; raise if refused."""
        if self._wait_landed() and self.write_error is not None:
            self.raise_write_error()

    def _wait_landed(self) -> bool:
        """Wait for the last ticket handed to the committer (the run's earlier ones land
        before it); whether there was one."""
        ticket = self.last_ticket
        if ticket is None:
            return False
        self.committer.wait(ticket)
        if self.last_ticket is ticket:
            self.last_ticket = None
        return True

    def step_began(self) -> None:
        self.steps_in_flight += 1
        if self.steps_in_flight == 1:
            self.committer.busy(1)

    def step_ended(self) -> None:
        if self.steps_in_flight > 0:
            self.steps_in_flight -= 1
            if self.steps_in_flight == 0:
                self.committer.busy(-1)

    def close(self) -> None:
        """The sitting is over: its steps no longer count as in flight, its rows have landed."""
        with self.lock:
            if self.steps_in_flight:
                self.steps_in_flight = 0
                self.committer.busy(-1)
            self._wait_landed()

    def flush(self, *, cancellations: bool = True) -> None:
        """Write buffered rows now (at the end of a sitting, or before giving up the run).
        Without `cancellations`, cancelled attempts not written yet are dropped (a stop)."""
        with self.lock:
            if not cancellations:
                self.cancellations = []
            unwritten = self.pending or self.cancellations
            if unwritten and self.write_error is None and self.token is not None:
                self.write([])
            else:
                self._wait_landed()

    def seal(self, status: RunStatus, result: bytes | None, error: bytes | None) -> str | None:
        """The seal over the last appended event and the run's outcome (None if unchained)."""
        if self.chain is None:
            return None
        return self.chain.seal(self.next_seq - 1, self.head, status, result, error)

    def supersede_unwinding(self) -> None:
        """A `journaled(...)` block was cancelled from outside: rows appended while it unwound
        (cleanup steps, cancelled attempts) are not part of the run. Cancellations not written
        yet are dropped; written rows are superseded by a marker, so resume sees the run as a
        crash at the moment the stop arrived would have left it."""
        with self.lock:
            start = self.unwind_from
            self.cancellations = []
            if start is None or self.token is None or self.written_seq < start:
                return
            marker = orjson.dumps({"superseded_from_seq": start, "reason": "stopped"})
            event = self.event(
                f"stop@{start}", EventKind.FORK, "replay.stop", "", EventStatus.COMPLETED, 0, marker
            )
            with contextlib.suppress(ReplayError):
                self.write([event])
            log.info("run.unwinding_superseded", run_id=self.run_id, from_seq=start)

    def raise_write_error(self) -> None:
        exc = self.write_error
        if isinstance(exc, LeaseLost):
            error: ReplayError = OwnershipLost(str(exc))
        else:
            error = JournalWriteFailed(
                f"Run {self.run_id!r}: the journal refused a write ({type(exc).__name__}: "
                f"{exc}). The step's result was not returned to the workflow; resume the run "
                "once the store is writable again."
            )
        self.on_failure(error)
        raise error from exc


def _seq(event: Event) -> int:
    return event.seq
