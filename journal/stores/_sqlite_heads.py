"""The journal's head in an SQLite file: entries appended inside a store's write transaction,
the runs adopted once after the upgrade that added the head, and reading the entries back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from .._chain import Chain
from .._events import Run
from .._heads import HeadEntry, Reason, entry_row, genesis_of, next_entry
from ._rows import RUN_COLUMNS, head_from_row, run_from_row

_COLUMNS = "n, run_id, reason, status, events, last_hash, seal, run_chain, at, scheme, prev, hash"


def _moment(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def append_head(
    conn: sqlite3.Connection,
    chain: Chain,
    run_id: str,
    reason: Reason,
    row: tuple[Any, ...] | None = None,
) -> tuple[tuple[Any, ...], Run | None]:
    """Append the run's state now to the journal's head (inside the caller's transaction).
    The run's row as read for it (`RUN_COLUMNS`; `row` if the caller has just read it), which
    the caller may return as the run, and that row as a `Run` if the entry needed one (a run
    with no events)."""
    if row is None:
        row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    last = conn.execute(
        "SELECT seq, hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
    ).fetchone()
    top = conn.execute("SELECT n, hash FROM heads ORDER BY n DESC LIMIT 1").fetchone()
    genesis = run = None
    if last is None:  # no event binds the run's header yet: the entry does
        run = run_from_row(row, _moment, _blob)
        genesis = genesis_of(chain, run)
    entry = next_entry(chain, run_id, reason, (row[4], row[15], row[14]), last, top, genesis)
    conn.execute(
        f"INSERT INTO heads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        entry_row(entry, entry.at.timestamp()),
    )
    return tuple(row), run


def adopt_runs(conn: sqlite3.Connection, chain: Chain) -> int:
    """Inside the caller's transaction: if the upgrade's marker is still there, take it away
    and give every run an `adopted` entry, its state now. How many."""
    if conn.execute("DELETE FROM meta WHERE name = 'heads_pending'").rowcount == 0:
        return 0  # another process adopted them meanwhile
    if conn.execute("SELECT 1 FROM heads LIMIT 1").fetchone() is not None:
        return 0  # the head exists: runs it lacks were added by hand, never adopted
    unknown = [
        row[0]
        for row in conn.execute(
            "SELECT run_id FROM runs WHERE run_id NOT IN (SELECT run_id FROM heads)"
            " ORDER BY created_at"
        ).fetchall()
    ]
    for run_id in unknown:
        append_head(conn, chain, run_id, "adopted")
    return len(unknown)


def adoption_pending(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM meta WHERE name = 'heads_pending'").fetchone() is not None


def last_head(conn: sqlite3.Connection) -> HeadEntry | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM heads ORDER BY n DESC LIMIT 1").fetchone()
    return None if row is None else head_from_row(row, _moment)


def read_heads(conn: sqlite3.Connection, after_n: int, limit: int | None) -> list[HeadEntry]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM heads WHERE n > ? ORDER BY n LIMIT ?",
        (after_n, -1 if limit is None else limit),
    ).fetchall()
    return [head_from_row(row, _moment) for row in rows]
