"""The journal's records: runs and the events appended to them. Immutable value objects."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, field_validator


class RunStatus(StrEnum):
    """Where a run stands. A `running` run with no live owner was interrupted and can resume."""

    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventKind(StrEnum):
    """What kind of outside-world result an event holds."""

    STEP = "step"
    LLM = "llm"
    TOOL = "tool"
    CLOCK = "clock"
    UUID = "uuid"
    RANDOM = "random"
    SLEEP = "sleep"
    SIGNAL = "signal"
    TIMER = "timer"
    """A journaled timeout (`replay.timeout`, `replay.wait_for`): whether and when it expired."""
    RUN = "run"
    """A child run started inside a workflow: its outcome, served to the parent on replay."""
    PATCH = "patch"
    """A code change's marker (`replay.patched`): this run took the new branch here."""
    FORK = "fork"


class EventStatus(StrEnum):
    """The life of one step attempt, one row each (the journal is append-only).

    `started` rows carry the canonical arguments; `completed` rows the encoded result;
    `retrying` marks a failed attempt that another attempt follows; `failed` the final failure;
    `cancelled` an attempt the workflow cancelled (a timeout, `task.cancel()`, a failing
    TaskGroup sibling): it has no value, and replay cancels it again the same way.
    An attempt that ends before its start was written (it never waited) is one outcome row
    whose `args` carry what the `started` row would have held.
    """

    STARTED = "started"
    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Owner(BaseModel):
    """The process holding a run's lease."""

    model_config = ConfigDict(frozen=True)

    token: str
    host: str
    pid: int
    since: datetime
    lease_expires_at: datetime

    @field_validator("since", "lease_expires_at")
    @classmethod
    def _in_utc(cls, moment: datetime) -> datetime:
        """A moment without an offset (a record edited by hand) is UTC, as the journal writes
        and as SQLite's sample reads it: never compared naive with the aware `now`."""
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Run(BaseModel):
    """One execution of a workflow, named by the caller's `run_id`."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    workflow: str | None
    """Import path `module:qualname` of the workflow, None for a `journaled(...)` block."""
    inputs: bytes | None
    """Canonical JSON of the workflow's arguments: `{"args": [...], "kwargs": {...}}`."""
    inputs_fingerprint: str | None
    status: RunStatus
    result: bytes | None = None
    """JSON of the workflow's return value once completed."""
    error: bytes | None = None
    """JSON of the workflow's exception once failed."""
    owner: Owner | None = None
    parent_run_id: str | None = None
    fork_seq: int | None = None
    """For a fork: the parent's events before this seq were copied into this run."""
    resumes: int = 0
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    chain: str | None = None
    """How the run's events are hashed: `sha256`, `hmac-sha256:<key id>`, or None for a run
    recorded before journals were chained."""
    seal: str | None = None
    """Hash over the last event's hash and the outcome, written when the run finishes."""
    wake_at: datetime | None = None
    """For a `waiting` run: when it is due again (a durable sleep's end, a signal's deadline,
    or the moment an awaited signal arrived)."""
    waiting_for: str | None = None
    """For a `waiting` run: the name of the signal it waits for, if any."""
    version: str | None = None
    """The version of the code that started the run: the configured one (`JOURNAL_VERSION`,
    `version` in journal.toml or `[tool.journal]`), else `src:` and a hash of the workflow's
    module source (for a `journaled(...)` block, of the file of the function holding it, if
    that function can be called again). None for a fork (made to be continued by new code),
    for a block with no such function and no configured version, and for runs recorded
    before versions were kept. Workers and `journal resume` continue only versions they
    accept."""


class Event(BaseModel):
    """One journaled await: a row appended at `(run_id, seq)`, never changed afterwards."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    seq: int
    key: str
    """Scheduling-independent step identity: task path and per-task counter, e.g. `0/2:1`."""
    kind: EventKind
    name: str
    fingerprint: str
    """Hash of the step name and its canonical arguments."""
    status: EventStatus
    attempt: int
    payload: bytes | None
    """orjson bytes: arguments on `started`, the result on `completed`, the error on failure."""
    created_at: datetime
    args: bytes | None = None
    """On an outcome row with no `started` row before it: the call's arguments and site."""
    prev_hash: str | None = None
    """The previous event's `hash` (the run's genesis hash for seq 1)."""
    hash: str | None = None
    """Hash over `prev_hash` and this event's fields: see `journal._chain`."""

    def as_row(self) -> EventRow:
        """The event as the plain tuple `JournalStore.read_rows` returns."""
        return (
            self.seq,
            self.key,
            self.kind.value,
            self.name,
            self.fingerprint,
            self.status.value,
            self.attempt,
            self.payload,
            self.args,
        )

    def call_arguments(self) -> dict[str, Any] | None:
        """The call's canonical arguments, if this row records the start of its attempt."""
        recorded = self.payload if self.status is EventStatus.STARTED else self.args
        if not recorded:
            return None
        try:
            call = orjson.loads(recorded)
        except orjson.JSONDecodeError:
            return None  # edited by hand: `journal verify` says where
        arguments = call.get("args") if isinstance(call, dict) else None
        return arguments if isinstance(arguments, dict) else None


EventRow = tuple[int, str, str, str, str, str, int, bytes | None, bytes | None]
"""An event as the replay engine reads it, straight from the store: `(seq, key, kind, name,
fingerprint, status, attempt, payload, args)`, kind and status as their string values.

Replaying a long run reads every row; plain tuples keep that at the cost of the query itself.
"""

KIND_BY_VALUE = {kind.value: kind for kind in EventKind}
STATUS_BY_VALUE = {status.value: status for status in EventStatus}
"""Row text back to enum members: a dict lookup is ~20x cheaper than calling the enum."""

_EVENT_FIELDS = set(Event.model_fields)
_new = object.__new__
_set = object.__setattr__


def trusted_event(
    run_id: str,
    seq: int,
    key: str,
    kind: EventKind,
    name: str,
    fingerprint: str,
    status: EventStatus,
    attempt: int,
    payload: bytes | None,
    created_at: datetime,
    args: bytes | None = None,
    prev_hash: str | None = None,
    hash: str | None = None,
) -> Event:
    """An `Event` from values the engine or a store already knows are valid, without validation.

    The hot path: about 0.6 us against 3 us for `Event.model_construct`. A test pins that the
    two build equal events, so a pydantic upgrade that changes model internals is caught.
    """
    event = _new(Event)
    _set(
        event,
        "__dict__",
        {
            "run_id": run_id,
            "seq": seq,
            "key": key,
            "kind": kind,
            "name": name,
            "fingerprint": fingerprint,
            "status": status,
            "attempt": attempt,
            "payload": payload,
            "created_at": created_at,
            "args": args,
            "prev_hash": prev_hash,
            "hash": hash,
        },
    )
    _set(event, "__pydantic_fields_set__", _EVENT_FIELDS.copy())
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def replaced(event: Event, **changes: Any) -> Event:
    """A copy of `event` with `changes` (field name -> value), without validation: a copy of
    valid fields stays valid, and the values given are the caller's to vouch for."""
    copy = _new(Event)
    _set(copy, "__dict__", {**event.__dict__, **changes})
    _set(copy, "__pydantic_fields_set__", _EVENT_FIELDS.copy())
    _set(copy, "__pydantic_extra__", None)
    _set(copy, "__pydantic_private__", None)
    return copy
