"""Database rows <-> runs, shared by the SQL stores (each converts its own column types)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .._events import Owner, Run, RunStatus
from .._heads import HeadEntry

RUN_COLUMNS = (
    "run_id, workflow, inputs, inputs_fingerprint, status, result, error, owner, parent_run_id,"
    " fork_seq, resumes, created_at, updated_at, finished_at, chain, seal, wake_at, waiting_for,"
    " version"
)
"""The run columns in the order `run_from_row` reads them."""
RUN_COLUMNS_BEFORE_VERSIONS = RUN_COLUMNS.replace(" version", " NULL AS version")
"""The same, read from a journal whose schema predates the `version` column (opened only to
read, so not upgraded): its runs have no version."""
_TEXT = (1, 3, 4, 7, 8, 14, 15, 17, 18)
"""workflow, inputs_fingerprint, status, owner, parent_run_id, chain, seal, waiting_for,
version."""
_BINARY = (2, 5, 6)
"""inputs, result, error: a value of another type was edited in (a driver would convert it)."""


def run_from_row(
    row: Sequence[Any], moment: Callable[[Any], datetime], blob: Callable[[Any], bytes | None]
) -> Run:
    """A `Run` from a row of `RUN_COLUMNS`; `moment` and `blob` convert the store's own
    timestamp and binary values."""

    def maybe(value: Any) -> datetime | None:
        return None if value is None else moment(value)

    for index in _TEXT:
        if row[index] is not None and type(row[index]) is not str:
            raise TypeError(f"run column {index} holds {type(row[index]).__name__}, not text")
    for index in _BINARY:
        if row[index] is not None and not isinstance(row[index], bytes | memoryview):
            raise TypeError(f"run column {index} holds {type(row[index]).__name__}, not bytes")
    if type(row[0]) is not str:
        raise TypeError("a run id that is not text")

    return Run(
        run_id=row[0],
        workflow=row[1],
        inputs=blob(row[2]),
        inputs_fingerprint=row[3],
        status=RunStatus(row[4]),
        result=blob(row[5]),
        error=blob(row[6]),
        owner=Owner.model_validate_json(row[7]) if row[7] else None,
        parent_run_id=row[8],
        fork_seq=row[9],
        resumes=row[10],
        created_at=moment(row[11]),
        updated_at=moment(row[12]),
        finished_at=maybe(row[13]),
        chain=row[14],
        seal=row[15],
        wake_at=maybe(row[16]),
        waiting_for=row[17],
        version=row[18],
    )


def list_runs_query(
    table: str,
    placeholder: str,
    status: RunStatus | None,
    workflow: str | None,
    limit: int | None,
    columns: str = RUN_COLUMNS,
) -> tuple[str, list[Any]]:
    """`(sql, params)` listing runs newest first with the optional filters, for `table` in
    a driver whose parameter placeholder is `placeholder` (`?` or `%s`)."""
    clauses, params = [], []
    if status is not None:
        clauses.append(f"status = {placeholder}")
        params.append(status.value)
    if workflow is not None:
        clauses.append(f"workflow = {placeholder}")
        params.append(workflow)
    sql = f"SELECT {columns} FROM {table}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY created_at DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def head_from_row(row: Sequence[Any], moment: Callable[[Any], datetime]) -> HeadEntry:
    """A head entry from `(n, run_id, reason, status, events, last_hash, seal, run_chain, at,
    scheme, prev, hash)`; one edited into types the journal never writes is read as well as
    it can be, with `damage` saying what is wrong."""
    types: tuple[Any, ...] = (
        int, str, str, str, int, (str, type(None)), (str, type(None)), (str, type(None))
    )  # fmt: skip
    wrong = [i for i, kind in enumerate(types) if not isinstance(row[i], kind)]
    wrong += [i for i in (9, 10, 11) if not isinstance(row[i], str)]
    try:
        at = moment(row[8])
    except (TypeError, ValueError, OverflowError, OSError):
        at, wrong = datetime(1970, 1, 1, tzinfo=UTC), [*wrong, 8]
    if wrong or isinstance(row[0], bool):
        names = ("n", "run_id", "reason", "status", "events", "last_hash", "seal", "run_chain",
                 "at", "scheme", "prev", "hash")  # fmt: skip
        text = [v.hex() if isinstance(v, bytes) else str(v) for v in row]
        return HeadEntry(
            n=row[0] if type(row[0]) is int else -1,
            run_id=text[1],
            reason="adopted",
            status=text[3],
            events=row[4] if type(row[4]) is int else -1,
            last_hash=text[5],
            seal=text[6],
            run_chain=text[7],
            at=at,
            scheme=text[9],
            prev=text[10],
            hash=text[11],
            damage=f"its {names[min(wrong)]} holds a value the journal never writes",
        )
    return HeadEntry(
        n=row[0],
        run_id=row[1],
        reason=row[2],
        status=row[3],
        events=row[4],
        last_hash=row[5],
        seal=row[6],
        run_chain=row[7],
        at=moment(row[8]),
        scheme=row[9],
        prev=row[10],
        hash=row[11],
    )
