"""MemoryStore: the whole journal in a dict. A public test double, and the reference store."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from .._chain import Chain
from .._errors import LeaseLost, RunNotFailed, RunNotFound
from .._events import Event, EventRow, Owner, Run, RunStatus
from .._heads import HeadEntry, Reason, genesis_of, next_entry
from ._ownership import check_claim


class MemoryStore:
    """Keeps runs and events in memory, with the same promises as the durable stores.

    Nothing survives the process. Share one instance between `Journal`s to share runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._events: dict[str, list[Event]] = {}
        self._secrets: dict[str, bytes] = {}
        self._signals: dict[tuple[str, str], list[bytes]] = {}
        self._heads: list[HeadEntry] = []
        self.head_chain: Chain | None = None
        """The MAC of the journal's head entries; None writes none (set by `Journal`)."""

    def create_run(self, run: Run) -> Run:
        with self._lock:
            existing = self._runs.get(run.run_id)
            if existing is not None:
                return existing
            self._runs[run.run_id] = run
            self._events[run.run_id] = []
            self._append_head(run.run_id, "created")
            return run

    def get_run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        return [self._runs[run_id] for run_id in dict.fromkeys(run_ids) if run_id in self._runs]

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        runs = [
            run
            for run in self._runs.values()
            if (status is None or run.status == status)
            and (workflow is None or run.workflow == workflow)
        ]
        runs.sort(key=lambda run: run.created_at, reverse=True)
        return runs[:limit] if limit is not None else runs

    def _require(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def claim(self, run_id: str, owner: Owner, *, resuming: bool) -> Run:
        with self._lock:
            run = self._require(run_id)
            now = datetime.now(UTC)
            check_claim(run_id, run.owner, owner, now)
            waking = run.status is RunStatus.WAITING
            updated = run.model_copy(
                update={
                    "owner": owner,
                    "resumes": run.resumes + (1 if resuming else 0),
                    "updated_at": now,
                    "status": RunStatus.RUNNING if waking else run.status,
                    "wake_at": None if waking else run.wake_at,
                    "waiting_for": None if waking else run.waiting_for,
                }
            )
            self._runs[run_id] = updated
            return updated

    def _owned(self, run_id: str, token: str) -> Run:
        run = self._require(run_id)
        if run.owner is None or run.owner.token != token:
            raise LeaseLost(run_id)
        return run

    def heartbeat(self, run_id: str, token: str, lease_expires_at: datetime) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.owner is None or run.owner.token != token:
                return False
            owner = run.owner.model_copy(update={"lease_expires_at": lease_expires_at})
            self._runs[run_id] = run.model_copy(update={"owner": owner})
            return True

    def release(self, run_id: str, token: str, *, head: Reason | None = None) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.owner is not None and run.owner.token == token:
                self._runs[run_id] = run.model_copy(update={"owner": None})
                if head is not None:
                    self._append_head(run_id, head)

    def append(self, run_id: str, token: str, events: Sequence[Event]) -> None:
        with self._lock:
            self._owned(run_id, token)
            self._append_owned(run_id, events)

    def append_many(self, batches: Sequence[tuple[str, str, Sequence[Event]]]) -> list[str]:
        with self._lock:
            refused = []
            for run_id, token, _ in batches:
                try:
                    self._owned(run_id, token)
                except LeaseLost:
                    refused.append(run_id)
            kept = {run_id: list(self._events[run_id]) for run_id, _, _ in batches}
            try:
                for run_id, _, events in batches:
                    if run_id not in refused:
                        self._append_owned(run_id, events)
            except BaseException:
                self._events.update(kept)  # all or nothing, as one transaction
                raise
            return refused

    def _append_owned(self, run_id: str, events: Sequence[Event]) -> None:
        log = self._events[run_id]
        next_seq = log[-1].seq + 1 if log else 1
        for offset, event in enumerate(events):
            if event.seq != next_seq + offset:
                raise ValueError(
                    f"run {run_id!r}: event seq {event.seq} appended where "
                    f"{next_seq + offset} was expected"
                )
        log.extend(events)

    def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        events = [e for e in self._events.get(run_id, ()) if e.seq > after_seq]
        return events if limit is None else events[:limit]

    def read_rows(self, run_id: str) -> list[EventRow]:
        return [event.as_row() for event in self._events.get(run_id, ())]

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
        with self._lock:
            run = self._owned(run_id, token)
            now = datetime.now(UTC)
            finished = run.model_copy(
                update={
                    "status": status,
                    "result": result,
                    "error": error,
                    "seal": seal,
                    "owner": None,
                    "updated_at": now,
                    "finished_at": now,
                }
            )
            self._runs[run_id] = finished
            self._append_head(run_id, "finished")
            return finished

    def reopen(self, run_id: str, token: str, events: Sequence[Event]) -> Run:
        with self._lock:
            run = self._owned(run_id, token)
            if run.status is not RunStatus.FAILED:
                raise RunNotFailed(run_id, run.status.value)
            self._append_owned(run_id, events)
            reopened = run.model_copy(
                update={
                    "status": RunStatus.RUNNING,
                    "result": None,
                    "error": None,
                    "seal": None,
                    "finished_at": None,
                    "updated_at": datetime.now(UTC),
                }
            )
            self._runs[run_id] = reopened
            self._append_head(run_id, "reopened")
            return reopened

    def count_events(self, run_id: str) -> int:
        return len(self._events.get(run_id, ()))

    def suspend(
        self, run_id: str, token: str, *, wake_at: datetime | None, waiting_for: str | None
    ) -> Run:
        with self._lock:
            run = self._owned(run_id, token)
            suspended = run.model_copy(
                update={
                    "status": RunStatus.WAITING,
                    "owner": None,
                    "wake_at": wake_at,
                    "waiting_for": waiting_for,
                    "updated_at": datetime.now(UTC),
                }
            )
            self._runs[run_id] = suspended
            self._append_head(run_id, "suspended")
            return suspended

    def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        with self._lock:
            run = self._require(run_id)
            values = self._signals.setdefault((run_id, name), [])
            values.append(payload)
            if run.status is RunStatus.WAITING and run.waiting_for == name:
                self._runs[run_id] = run.model_copy(update={"wake_at": datetime.now(UTC)})
            return len(values)

    def read_signal(self, run_id: str, name: str, number: int) -> bytes | None:
        values = self._signals.get((run_id, name), [])
        return values[number - 1] if 0 < number <= len(values) else None

    def list_due(self, now: datetime) -> list[Run]:
        due = [
            run
            for run in self._runs.values()
            if run.status is RunStatus.WAITING and run.wake_at is not None and run.wake_at <= now
        ]
        return sorted(due, key=lambda run: run.wake_at or now)

    def sample_resumable(self, now: datetime, host: str, limit: int) -> list[Run]:
        running = [run for run in self._runs.values() if run.status is RunStatus.RUNNING]
        free = [run for run in running if run.owner is None or run.owner.lease_expires_at <= now]
        local = [
            run
            for run in running
            if run.owner is not None and run.owner.lease_expires_at > now and run.owner.host == host
        ]
        return random.sample(free, min(limit, len(free))) + local

    def last_hash(self, run_id: str) -> str | None:
        log = self._events.get(run_id)
        return log[-1].hash if log else None

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        removed = 0
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is None or run.owner is not None:
                    continue
                self._append_head(run_id, "removed")
                del self._runs[run_id]
                self._events.pop(run_id, None)
                for key in [key for key in self._signals if key[0] == run_id]:
                    del self._signals[key]  # a new run of its id must not be handed them
                removed += 1
        return removed

    def _append_head(self, run_id: str, reason: Reason) -> None:
        if self.head_chain is None:
            return
        run, events = self._runs[run_id], self._events.get(run_id, [])
        top = self._heads[-1] if self._heads else None
        entry = next_entry(
            self.head_chain,
            run_id,
            reason,
            (run.status.value, run.seal, run.chain),
            (events[-1].seq, events[-1].hash) if events else None,
            (top.n, top.hash) if top else None,
            None if events else genesis_of(self.head_chain, run),
        )
        self._heads.append(entry)

    def adopt_runs(self) -> int:
        return 0  # a memory journal is born with its head

    has_head = True

    def read_heads(self, *, after_n: int = 0, limit: int | None = None) -> list[HeadEntry]:
        with self._lock:
            chosen = self._heads[after_n:]
        return chosen if limit is None else chosen[:limit]

    def last_head(self) -> HeadEntry | None:
        with self._lock:
            return self._heads[-1] if self._heads else None

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            return self._secrets.setdefault(name, make())

    def close(self) -> None:
        pass
