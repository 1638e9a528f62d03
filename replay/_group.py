"""Group commit: rows of concurrent runs that share a store, committed together off the loop.

One run alone commits inline, as it always did: a commit on the loop costs less than a hand-off
to a thread and back. When steps of other runs are in flight on the same store at the moment a
run writes, its rows go to the store's committer instead: one thread that takes everything
queued while its last commit ran and writes it in one transaction. A step waits for its own
ticket before its value reaches the workflow, so "committed before seen" holds; batching only
changes how many commits that costs. A run's rows land in the order it queued them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from journal import Event, JournalStore, LeaseLost
from journal.stores._protocol import provided

from ._log import get_logger


class Writer(Protocol):
    """What the committer reads and sets on a run's writer (`replay._writer.Writer`)."""

    run_id: str
    token: str | None
    steps_in_flight: int
    outstanding: int
    write_error: BaseException | None
    written_seq: int
    observer: Any


log = get_logger("replay")

IDLE_SECONDS = 2.0
"""A committer's thread ends after this long without work (a new one starts on demand)."""
ROWS_PER_COMMIT = 256
"""At most this many rows (or one ticket, if larger) go in one commit: the store is held that
long, and a run's own calls to it on the loop (its end, its heartbeat) wait at most that."""


class Ticket:
    """One run's rows queued for the next group commit."""

    __slots__ = ("batch", "error", "future", "landed", "loop", "writer")

    def __init__(self, writer: Writer, batch: list[Event]) -> None:
        self.writer = writer
        self.batch = batch
        self.landed = False
        self.error: BaseException | None = None
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class Committer:
    """The group committer of one store."""

    def __init__(self, store: JournalStore) -> None:
        try:
            self.store: Callable[[], JournalStore | None] = weakref.ref(store)
            """Weak: a journal dropped by its user closes (its writers hold it while they
            write)."""
        except TypeError:  # a store that cannot be weakly referenced
            self.store = lambda: store
        self.lock = threading.Condition(threading.Lock())
        self.queue: list[Ticket] = []
        self.thread: threading.Thread | None = None
        self.active = 0
        """Writers of this store with a step in flight (their runs are busy)."""
        self.landing = threading.Condition(threading.Lock())
        """Notified when tickets land, if anyone waits on one where it stands."""
        self.waiting = 0

    def crowded(self, writer: Writer) -> bool:
        """Whether another run has a step in flight on this store."""
        return self.active - (writer.steps_in_flight > 0) > 0

    def busy(self, delta: int) -> None:
        with self.lock:
            self.active += delta

    def submit(self, writer: Writer, batch: list[Event]) -> Ticket:
        ticket = Ticket(writer, batch)
        with self.lock:
            self.queue.append(ticket)
            writer.outstanding += 1
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._work, name="journal-group-commit", daemon=True
                )
                # Started outside the run's context: the engine's threads are not the run's
                # work, which would have them take the run's lock (the writer holds it).
                contextvars.Context().run(self.thread.start)
            else:
                self.lock.notify()
        return ticket

    def wait(self, ticket: Ticket) -> None:
        """Block until `ticket` has landed (a write that must be durable before it returns)."""
        if ticket.landed:
            return
        with self.landing:
            self.waiting += 1
            try:
                while not ticket.landed:
                    self.landing.wait()
            finally:
                self.waiting -= 1

    def awaitable(self, ticket: Ticket, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of `loop` that is done once the ticket has landed."""
        future = loop.create_future()
        with self.landing:
            if ticket.landed:
                future.set_result(None)
            else:
                ticket.future, ticket.loop = future, loop
        return future

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.lock.wait(IDLE_SECONDS)
                    if not self.queue:
                        self.thread = None
                        return
                tickets = _take(self.queue)
            try:
                errors = self._commit(tickets)
            except BaseException as exc:  # never leave a ticket unlanded: its step waits
                errors = {ticket.writer.run_id: exc for ticket in tickets}
            self._land(tickets, errors)

    def _commit(self, tickets: list[Ticket]) -> dict[str, BaseException]:
        """Commit every ticket's rows in one transaction; {run_id: why its rows were refused}.
        A run whose earlier rows were refused has none of its later ones written: they would
        leave a gap in its seqs and its hash chain."""
        runs: dict[str, tuple[str, list[Event]]] = {}
        errors: dict[str, BaseException] = {}
        for ticket in tickets:
            writer = ticket.writer
            assert writer.token is not None
            if writer.write_error is not None:
                errors[writer.run_id] = writer.write_error
                continue
            token, rows = runs.setdefault(writer.run_id, (writer.token, []))
            rows.extend(ticket.batch)
        for run_id in errors:
            runs.pop(run_id, None)
        store = self.store()
        if store is None:  # nobody holds the journal any more: nobody waits on these rows
            gone = RuntimeError("the journal was closed and let go of")
            return {**errors, **{run_id: gone for run_id in runs}}
        batches = [(run_id, token, rows) for run_id, (token, rows) in runs.items()]
        append_many = provided(store, "append_many")
        if append_many is not None and len(batches) > 1:
            try:
                refused: Sequence[str] = append_many(batches)
            except Exception as exc:  # one run's rows broke the transaction: find whose
                log.debug("group_commit.split", runs=len(batches), error=repr(exc))
            else:
                return {**errors, **{run_id: LeaseLost(run_id) for run_id in refused}}
        for run_id, token, rows in batches:
            try:
                store.append(run_id, token, rows)
            except Exception as exc:  # LeaseLost, or the store's own I/O errors
                errors[run_id] = exc
        return errors

    def _land(self, tickets: list[Ticket], errors: dict[str, BaseException]) -> None:
        for ticket in tickets:
            writer = ticket.writer
            error = errors.get(writer.run_id)
            if error is not None:
                ticket.error = error
                if writer.write_error is None:
                    writer.write_error = error
            else:
                writer.written_seq = ticket.batch[-1].seq
                if writer.observer is not None:
                    with contextlib.suppress(Exception):  # observers log their own failures
                        writer.observer.written(ticket.batch)
        with self.lock:
            for ticket in tickets:
                ticket.writer.outstanding -= 1
        awaited: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        with self.landing:
            for ticket in tickets:
                ticket.landed = True
                future, loop = ticket.future, ticket.loop
                if future is not None and loop is not None:
                    awaited.setdefault(loop, []).append(future)
            if self.waiting:
                self.landing.notify_all()
        for loop, futures in awaited.items():  # one wake-up per loop, not one per ticket
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
                loop.call_soon_threadsafe(_done, futures)


def _take(queue: list[Ticket]) -> list[Ticket]:
    """The first tickets of `queue`, up to `ROWS_PER_COMMIT` rows (at least one ticket)."""
    rows = 0
    for count, ticket in enumerate(queue):
        rows += len(ticket.batch)
        if rows > ROWS_PER_COMMIT and count:
            taken = queue[:count]
            del queue[:count]
            return taken
    taken = queue[:]
    queue.clear()
    return taken


def _done(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


_committers: weakref.WeakKeyDictionary[Any, Committer] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


def committer_of(store: JournalStore) -> Committer:
    """The store's committer, shared by every run of this process that writes to it."""
    with _committers_lock:
        try:
            committer = _committers.get(store)
            if committer is None:
                committer = _committers[store] = Committer(store)
        except TypeError:  # a store that cannot be weakly referenced: no sharing, no leak
            committer = Committer(store)
        return committer
