"""The journal's records: runs and the events appended to them. Immutable value objects."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


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
    FORK = "fork"


class EventStatus(StrEnum):
    """The life of one step attempt, one row each (the journal is append-only).

    `started` rows carry the canonical arguments; `completed` rows the encoded result;
    `retrying` marks a failed attempt that another attempt follows; `failed` the final failure.
    """

    STARTED = "started"
    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"


class Owner(BaseModel):
    """The process holding a run's lease."""

    model_config = ConfigDict(frozen=True)

    token: str
    host: str
    pid: int
    since: datetime
    lease_expires_at: datetime


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
    resumes: int = 0
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


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
