"""One sitting of one run: what the journal holds, what is served, what is appended.

The served-vs-live decision lives here (DESIGN.md, "Core semantics"):

* recorded and finished (completed or failed) -> served: the recorded value, or the recorded
  exception re-raised; the step's code does not run;
* recorded but only started, or a retry pending -> in flight at the crash: run again
  (at-least-once) with the same idempotency key;
* not recorded -> the frontier: run live and append.

Live, a step's `started` row is buffered and written by a loop callback, so a step that waits on
I/O has its start durable while it is in flight, and a step that finishes without yielding
writes start and completion in one transaction: one commit per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from journal import (
    Event,
    EventKind,
    EventStatus,
    JournalStore,
    LeaseLost,
    PayloadTooLarge,
    RecordedError,
)
from journal._chain import Chain
from journal._events import KIND_BY_VALUE, STATUS_BY_VALUE, EventRow, RunStatus, trusted_event
from journal._redact import Redactor

from ._errors import (
    CallDescription,
    FrontierReached,
    JournalWriteFailed,
    NonDeterminismError,
    NotJournalable,
    OwnershipLost,
    ReplayError,
    StepFailed,
)
from ._log import get_logger
from ._sites import site_of

if TYPE_CHECKING:
    from ._steps import StepSpec

log = get_logger("replay")

Mode = Literal["resume", "replay"]
OnDivergence = Literal["raise", "fork"]


_COMPLETED, _FAILED = EventStatus.COMPLETED, EventStatus.FAILED
LARGE_PAYLOAD_BYTES = 1024 * 1024
"""Payloads above this are written, with a warning: journals should hold answers, not blobs."""


class Recorded:
    """What the journal holds for one step key, folded from its rows."""

    __slots__ = (
        "args_payload",
        "attempt",
        "fingerprint",
        "first_seq",
        "key",
        "kind",
        "name",
        "payload",
        "rows",
        "status",
    )

    def __init__(self, first: EventRow) -> None:
        self.first_seq, self.key, kind, self.name, self.fingerprint = first[:5]
        self.kind = KIND_BY_VALUE[kind]
        self.args_payload: bytes | None = None
        self.payload: bytes | None = None
        self.rows: list[EventRow] = []
        """The key's rows, carried over when a fork cuts the journal before it."""
        self.apply(first)

    def apply(self, row: EventRow) -> None:
        """Fold the key's next row in: the latest status and attempt, arguments and value."""
        self.rows.append(row)
        self.status = STATUS_BY_VALUE[row[5]]
        self.attempt = row[6]
        if self.status is EventStatus.STARTED:
            self.args_payload = row[7]
        else:
            self.payload = row[7]
            if row[8] is not None:
                self.args_payload = row[8]


def as_recorded(entry: Recorded | EventRow) -> Recorded:
    """The full view of a folded entry (a key with one row is kept as that row)."""
    return Recorded(entry) if isinstance(entry, tuple) else entry


def fold_rows(rows: Sequence[EventRow]) -> dict[str, Recorded | EventRow]:
    """Rows -> per-key state, without fork markers and the ranges a divergence superseded.

    A key with a single row (most keys: a step that never waited is one row) is kept as the
    row itself; serving it then costs no object at all. Keys with more rows become `Recorded`.
    """
    fork = EventKind.FORK.value
    markers = [(seq, payload) for seq, _, kind, _, _, _, _, payload, _ in rows if kind == fork]
    if markers:
        superseded = [
            (start, seq)
            for seq, payload in markers
            if (start := orjson.loads(payload or b"{}").get("superseded_from_seq")) is not None
        ]
        rows = [
            row
            for row in rows
            if row[2] != fork and not any(lo <= row[0] < hi for lo, hi in superseded)
        ]
    recorded: dict[str, Recorded | EventRow] = {}
    get = recorded.get
    for row in rows:
        key = row[1]
        entry = get(key)
        if entry is None:
            recorded[key] = row
        elif isinstance(entry, tuple):
            folded = recorded[key] = Recorded(entry)
            folded.apply(row)
        else:
            entry.apply(row)
    return recorded


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
        frontier_hint: str = "",
        chain: Chain | None = None,
        head: str = "",
        redact: Redactor | None = None,
        max_payload: int = 10 * 1024 * 1024,
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.token = token
        self.mode = mode
        self.on_divergence = on_divergence
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.frontier_hint = frontier_hint
        self.recorded = fold_rows(rows)
        self.next_seq = (rows[-1][0] + 1) if rows else 1
        self.pending: list[Event] = []
        self.flush_scheduled = False
        self.write_error: BaseException | None = None
        self.served_keys: list[Recorded | EventRow] = []
        self.served = 0
        self.executed = 0
        self.reexecuted = 0
        self.forked_at: str | None = None
        self.chain = chain
        """How appended events are hashed; None for a run recorded before chaining."""
        self.head = head
        """The hash the next appended event links to."""
        self.redact = redact
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

    # -- deciding --------------------------------------------------------------------------

    def prepare(
        self, spec: StepSpec, key: str, args_payload: bytes, fp: str, site_depth: int
    ) -> EventRow | LivePlan:
        """Served (the finishing row: completed or failed) or live (a `LivePlan`)."""
        found = self.recorded.get(key)
        if isinstance(found, tuple):
            # The common case on replay, kept short: one row, same call, finished.
            if (
                found[4] == fp
                and found[3] == spec.name
                and (found[5] == "completed" or found[5] == "failed")
            ):
                del self.recorded[key]
                self.served += 1
                self.served_keys.append(found)
                if self.break_at is not None:
                    self._break(key, found, site_depth + 1)
                return found
            found = self.recorded[key] = Recorded(found)
        entry = found
        if entry is not None and (entry.fingerprint != fp or entry.name != spec.name):
            entry = self._diverged(spec, key, entry, args_payload, site_depth + 1)
        if entry is not None and (entry.status is _COMPLETED or entry.status is _FAILED):
            del self.recorded[key]
            self.served += 1
            self.served_keys.append(entry)
            if self.break_at is not None:
                self._break(key, entry.rows[-1], site_depth + 1)
            return entry.rows[-1]
        if self.mode == "replay" and not self.allow_live:
            raise FrontierReached(
                self.run_id,
                key,
                spec.name,
                "the journal has no result for it"
                if entry is None
                else f"its recorded attempt {entry.attempt} never finished (a crash mid-step)",
                self._nearest(key),
            )
        if self.write_error is not None:
            self._raise_write_error()
        if entry is None:
            attempt = 1
            self.executed += 1
        else:
            del self.recorded[key]
            attempt = entry.attempt + 1
            self.reexecuted += 1
        site = site_of(spec, site_depth + 1)
        payload = b'{"args":' + args_payload + b',"site":' + orjson.dumps(site) + b"}"
        self.check_size(key, spec.name, "arguments", payload)
        return LivePlan(key=key, fingerprint=fp, args_payload=payload, attempt=attempt)

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
            return self.frontier_hint
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
            self._event(
                key, EventKind.FORK, "replay.fork", "", EventStatus.COMPLETED, 0, marker_payload
            )
        ]
        for _, old_key, kind, name, fp, status, attempt, payload, args in carried:
            events.append(
                self._event(
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
        self.write(events)
        self.forked_at = key

    # -- writing ---------------------------------------------------------------------------

    def _event(
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
        if seq is None:
            seq = self.next_seq
            self.next_seq = seq + 1
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

    def start(self, spec: StepSpec, plan: LivePlan) -> None:
        """Buffer the `started` row; it is written before the step's first wait, or with its end."""
        plan.started = self._event(
            plan.key,
            spec.kind,
            spec.name,
            plan.fingerprint,
            EventStatus.STARTED,
            plan.attempt,
            plan.args_payload,
        )
        self.pending.append(plan.started)
        if threading.get_ident() != self.loop_thread:
            self.write([])
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_pending)

    def finish(self, spec: StepSpec, plan: LivePlan, status: EventStatus, payload: bytes) -> None:
        """Append the attempt's outcome (with any buffered starts) in one transaction.

        If the attempt's own start is still buffered (it never waited), the outcome takes its
        place and its seq, carrying the arguments: one row, one commit, the same information.
        """
        started, plan.started = plan.started, None
        if started is not None:
            for index, event in enumerate(self.pending):
                if event is started:
                    self.pending[index] = self._event(
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
                    self.write([])
                    return
        self.write(
            [
                self._event(
                    plan.key, spec.kind, spec.name, plan.fingerprint, status, plan.attempt, payload
                )
            ]
        )

    def _flush_pending(self) -> None:
        self.flush_scheduled = False
        if self.pending and self.write_error is None:
            # A failure is kept in write_error; the next step raises it in the workflow.
            with contextlib.suppress(ReplayError):
                self.write([])

    def write(self, events: list[Event]) -> None:
        """Append buffered starts plus `events`; raise a `ReplayError` if the store refuses."""
        if self.write_error is not None:
            self._raise_write_error()
        batch = self.pending + events if self.pending else events
        if not batch:
            return
        if self.token is None:  # replay with allow_live: live steps are not recorded
            self.pending = []
            return
        head = self.head
        if self.chain is not None:
            head = self.chain.stamp(head, batch)
        try:
            self.store.append(self.run_id, self.token, batch)
        except Exception as exc:  # LeaseLost, or the store's own I/O errors
            self.write_error = exc
            self._raise_write_error()
        self.pending = []
        self.head = head

    def seal(self, status: RunStatus, result: bytes | None, error: bytes | None) -> str | None:
        """The seal over the last appended event and the run's outcome (None if unchained)."""
        if self.chain is None:
            return None
        return self.chain.seal(self.next_seq - 1, self.head, status, result, error)

    def flush(self) -> None:
        """Write buffered starts now (at the end of a sitting, or before giving up the run)."""
        if self.pending and self.write_error is None and self.token is not None:
            self.write([])

    def _raise_write_error(self) -> None:
        exc = self.write_error
        if isinstance(exc, LeaseLost):
            raise OwnershipLost(str(exc)) from exc
        raise JournalWriteFailed(
            f"Run {self.run_id!r}: the journal refused a write ({type(exc).__name__}: {exc}). "
            "The step's result was not returned to the workflow; resume the run once the "
            "store is writable again."
        ) from exc

    # -- serving ---------------------------------------------------------------------------

    def summary(self, **extra: Any) -> RunSummary:
        unconsumed = tuple(sorted(self.recorded, key=_key_order))
        return RunSummary(
            run_id=self.run_id,
            mode=self.mode,
            served=self.served,
            executed=self.executed,
            reexecuted=self.reexecuted,
            unconsumed=unconsumed,
            forked_at=self.forked_at,
            **extra,
        )


def _decode_started(payload: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    if not payload:
        return None, None
    started = orjson.loads(payload)
    return started.get("args"), started.get("site")


def _key_order(key: str) -> tuple[list[int], int]:
    path, _, counter = key.rpartition(":")
    return [int(p) for p in path.split("/") if p.isdigit()], int(counter or 0)


def rebuild_error(payload: bytes | None) -> Exception:
    """The exception recorded in `payload`, as its own type or as `StepFailed`."""
    recorded = RecordedError.decode(payload or b"")
    rebuilt = recorded.rebuild()
    if rebuilt is not None:
        return rebuilt
    return StepFailed(recorded.type, recorded.message, recorded.traceback)
