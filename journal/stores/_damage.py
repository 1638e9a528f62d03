"""Rows someone edited by hand into shapes the journal never writes, read without crashing.

SQLite keeps whatever type a statement gives it: `UPDATE events SET payload = replace(...)`
leaves TEXT where the journal wrote a BLOB, and any column may get a value of another type or
an unknown status. Such a row is an edit whatever its text says. Reading it must not crash
`verify`, `show` or `export`: the row is read as well as it can be, and carries a note of what
is wrong with it, which `verify` reports as the break (`damage_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from .._events import (
    KIND_BY_VALUE,
    STATUS_BY_VALUE,
    Event,
    EventKind,
    EventStatus,
    Owner,
    Run,
    RunStatus,
    trusted_event,
)

Damage = tuple[str, str]
"""`(field, what is wrong with it)`."""

_DAMAGE = "damage"


def damage_of(model: BaseModel) -> Damage | None:
    """What is wrong with an event or a run read from edited storage; None if nothing."""
    private = model.__pydantic_private__
    return None if not private else private.get(_DAMAGE)


def mark(model: BaseModel, damage: Damage) -> None:
    object.__setattr__(model, "__pydantic_private__", {_DAMAGE: damage})


class _Reader:
    """Converts one row's values, keeping the first thing found wrong."""

    def __init__(self) -> None:
        self.damage: Damage | None = None

    def note(self, field: str, detail: str) -> None:
        if self.damage is None:
            self.damage = (field, detail)

    def blob(self, field: str, value: Any) -> bytes | None:
        if value is None or type(value) is bytes:
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        self.note(field, f"stored as {_sql_type(value)} where the journal writes bytes (BLOB)")
        return str(value).encode("utf-8", "surrogateescape")

    def text(self, field: str, value: Any, *, optional: bool = False) -> Any:
        if type(value) is str or (optional and value is None):
            return value
        self.note(field, f"stored as {_sql_type(value)} where the journal writes text")
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8", "replace")
        return None if value is None and optional else str(value)

    def integer(self, field: str, value: Any, *, optional: bool = False) -> Any:
        if type(value) is int or (optional and value is None):
            return value
        self.note(field, f"stored as {_sql_type(value)} where the journal writes an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None if optional else -1

    def moment(
        self, field: str, value: Any, convert: Callable[[Any], datetime], *, optional: bool = False
    ) -> Any:
        if value is None and optional:
            return None
        try:
            return convert(value)
        except (TypeError, ValueError, OverflowError, OSError):
            self.note(field, f"{value!r} is not a time the journal writes")
            return datetime(1970, 1, 1, tzinfo=UTC)

    def member(self, field: str, value: Any, members: dict[str, Any], fallback: Any) -> Any:
        found = members.get(value) if isinstance(value, str) else None
        if found is None:
            self.note(field, f"{value!r} is not a {field} the journal writes")
            return fallback
        return found


def _sql_type(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "TEXT"
    if isinstance(value, bool | int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "BLOB"
    return type(value).__name__


def salvage_event(
    run_id: str, row: Sequence[Any], convert_time: Callable[[Any], datetime]
) -> Event:
    """An event from a row of `(seq, key, kind, name, fingerprint, status, attempt, payload,
    created_at, args, prev_hash, hash)` that may have been edited into any shape."""
    seq, key, kind, name, fp, status, attempt, payload, created, args, prev_hash, digest = row
    read = _Reader()
    event = trusted_event(
        run_id,
        read.integer("seq", seq),
        read.text("key", key),
        read.member("kind", kind, KIND_BY_VALUE, EventKind.STEP),
        read.text("name", name),
        read.text("fingerprint", fp),
        read.member("status", status, STATUS_BY_VALUE, EventStatus.STARTED),
        read.integer("attempt", attempt),
        read.blob("payload", payload),
        read.moment("created_at", created, convert_time),
        read.blob("args", args),
        read.text("prev_hash", prev_hash, optional=True),
        read.text("hash", digest, optional=True),
    )
    if read.damage is not None:
        mark(event, read.damage)
    return event


_RUN_STATUS = {status.value: status for status in RunStatus}


def salvage_run(
    row: Sequence[Any], convert_time: Callable[[Any], datetime], strict: Callable[[], Run]
) -> Run:
    """`strict()` (the store's own conversion of `row`, a row of `RUN_COLUMNS`); if it fails on
    an edited value, the run read as well as it can be, marked with what is wrong."""
    try:
        return strict()
    except (TypeError, ValueError, OverflowError, OSError, KeyError):
        pass
    read = _Reader()
    owner = None
    if row[7]:
        try:
            owner = Owner.model_validate_json(row[7])
        except ValueError:
            read.note("owner", "not the owner record the journal writes")
    run = Run.model_construct(
        run_id=read.text("run_id", row[0]),
        workflow=read.text("workflow", row[1], optional=True),
        inputs=read.blob("inputs", row[2]),
        inputs_fingerprint=read.text("inputs_fingerprint", row[3], optional=True),
        status=read.member("status", row[4], _RUN_STATUS, RunStatus.RUNNING),
        result=read.blob("result", row[5]),
        error=read.blob("error", row[6]),
        owner=owner,
        parent_run_id=read.text("parent_run_id", row[8], optional=True),
        fork_seq=read.integer("fork_seq", row[9], optional=True),
        resumes=read.integer("resumes", row[10]),
        created_at=read.moment("created_at", row[11], convert_time),
        updated_at=read.moment("updated_at", row[12], convert_time),
        finished_at=read.moment("finished_at", row[13], convert_time, optional=True),
        chain=read.text("chain", row[14], optional=True),
        seal=read.text("seal", row[15], optional=True),
        wake_at=read.moment("wake_at", row[16], convert_time, optional=True),
        waiting_for=read.text("waiting_for", row[17], optional=True),
        version=read.text("version", row[18], optional=True),
    )
    mark(run, read.damage or ("run", "a value the journal never writes"))
    return run
