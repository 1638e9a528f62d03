"""The narrow seam between the journal and where it is kept.

Replay logic talks only to this protocol and never learns which store it has. A new store
(PostgreSQL, a third-party one) implements these methods and passes `tests/test_store_contract.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .._chain import Chain
from .._events import Event, EventRow, Owner, Run, RunStatus
from .._heads import HeadEntry, Reason


@runtime_checkable
class JournalStore(Protocol):
    """Append-only storage of runs and their events, with one live owner per run."""

    head_chain: Chain | None
    """The MAC for the journal's head (`journal._heads`), set by `Journal`. With it, creating,
    suspending, finishing and removing a run each append an entry, in the same transaction."""

    def create_run(self, run: Run) -> Run:
        """Insert `run` unless a run with its id exists; return the stored run either way.

        A `run.owner` is stored as `claim` stores one, in the same write: `run()` creates a
        new run owned, and never claims a run that comes back with its own owner's token."""
        ...

    def get_run(self, run_id: str) -> Run | None:
        """The run, or None."""
        ...

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally filtered."""
        ...

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """The runs of `run_ids` that exist, in one read, in no particular order (a worker
        reads again what its last look found before it takes any)."""
        ...

    def claim(self, run_id: str, owner: Owner, *, resuming: bool) -> Run:
        """Make `owner` the run's live owner; `RunLocked` if another live owner holds it.

        A lease held by a dead process on this host, or expired, is taken over. `resuming`
        counts one more resume on the run.
        """
        ...

    def heartbeat(self, run_id: str, token: str, lease_expires_at: datetime) -> bool:
        """Extend the lease; False if `token` no longer owns the run."""
        ...

    def release(self, run_id: str, token: str, *, head: Reason | None = None) -> None:
        """Give up ownership (no error if already lost); with `head`, append the run's state
        to the journal's head in the same transaction (a fork, once its events are in)."""
        ...

    def append(self, run_id: str, token: str, events: Sequence[Event]) -> None:
        """Append `events` atomically, only while `token` owns the run, else `LeaseLost`.

        Durable when this returns, at the store's durability level.
        """
        ...

    def append_many(self, batches: Sequence[tuple[str, str, Sequence[Event]]]) -> list[str]:
        """Append several runs' `(run_id, token, events)` in one transaction and one commit
        (the group commit of concurrent runs). A run whose `token` no longer owns it has none
        of its events written and its id returned; the others are. Any other failure raises,
        and nothing is written."""
        ...

    def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The run's events in `seq` order, in one read: all of them, or a page of at most
        `limit` events after `after_seq` (exports read long runs page by page)."""
        ...

    def read_rows(self, run_id: str) -> list[EventRow]:
        """The same events as plain `EventRow` tuples: the replay engine's fast path."""
        ...

    def finish(
        self,
        run_id: str,
        token: str,
        status: RunStatus,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
        seal: str | None = None,
    ) -> Run:
        """Record the run's outcome and its `seal`, and release ownership; `LeaseLost` if
        not the owner."""
        ...

    def reopen(self, run_id: str, token: str, events: Sequence[Event]) -> Run:
        """Retry a failed run in place: append `events` (the retry's marker, and rows it
        carries past the marker) and make the run `running` again, its outcome cleared, in one
        transaction with a `reopened` head entry. `LeaseLost` if `token` does not own it,
        `RunNotFailed` if it is not failed. The failure stays in the journal: the marker holds
        it, chained."""
        ...

    def count_events(self, run_id: str) -> int:
        """How many events the run has, without reading them (progress bars, listings)."""
        ...

    def suspend(
        self, run_id: str, token: str, *, wake_at: datetime | None, waiting_for: str | None
    ) -> Run:
        """Mark the run `waiting` (until `wake_at`, or for signal `waiting_for`) and release
        ownership; `LeaseLost` if `token` is not the owner. Claiming it sets it running again."""
        ...

    def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        """Keep the next value of signal `name` for the run; its number (1, 2, ...). A run
        waiting for that signal becomes due now. `RunNotFound` for an unknown run."""
        ...

    def read_signal(self, run_id: str, name: str, number: int) -> bytes | None:
        """The `number`-th value sent as signal `name` to the run, or None (not sent yet)."""
        ...

    def list_due(self, now: datetime) -> list[Run]:
        """`waiting` runs whose `wake_at` has come, oldest due first."""
        ...

    def sample_resumable(self, now: datetime, host: str, limit: int) -> list[Run]:
        """For a worker's look, read in time bounded by `limit`, not by the journal: `running`
        runs that are unowned or whose lease ran out by `now` (one whose owner's record cannot
        be read counts as ownerless), at most `limit` of them picked at random, and every
        `running` run owned from `host`, whose processes the caller checks. Optional: a worker
        lists every running run instead where a store lacks it."""
        ...

    def last_hash(self, run_id: str) -> str | None:
        """The `hash` of the run's last event (None if it has none): where its chain goes on."""
        ...

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Remove whole runs with their events (retention); skip runs owned right now.

        The only way events ever leave a store. Returns how many runs were removed.
        """
        ...

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The journal's own secret `name`, created once with `make()` and kept with the journal
        (e.g. the key that hashes redacted values)."""
        ...

    def adopt_runs(self) -> int:
        """Once, after an upgrade that added the head: an `adopted` entry for every run already
        there. How many."""
        ...

    def read_heads(self, *, after_n: int = 0, limit: int | None = None) -> list[HeadEntry]:
        """The head's entries after `after_n`, in order."""
        ...

    def last_head(self) -> HeadEntry | None:
        """The head's last entry, or None."""
        ...

    def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...


def provided(store: Any, name: str) -> Callable[..., Any] | None:
    """The store's method `name`, or None if it has none of its own: a store of another
    package written before the method was added lacks it, or, subclassing `JournalStore`,
    inherits the protocol's stub, which returns None."""
    method = getattr(store, name, None)
    if method is None or getattr(type(store), name, None) is getattr(JournalStore, name, None):
        return None
    return method  # type: ignore[no-any-return]
