"""The journal's head in a PostgreSQL schema: entries appended inside a store's transaction
(serialised across processes and hosts by an advisory lock), the runs adopted once after the
upgrade that added the head, and reading the entries back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from .._chain import Chain
from .._heads import HeadEntry, Reason, entry_row, genesis_of, next_entry
from ._rows import RUN_COLUMNS, head_from_row, run_from_row

_COLUMNS = "n, run_id, reason, status, events, last_hash, seal, run_chain, at, scheme, prev, hash"

Cursor = psycopg.Cursor[Any]


def _moment(value: Any) -> datetime:
    """psycopg returns timezone-aware datetimes for our columns; anything else was altered."""
    if type(value) is not datetime or value.tzinfo is None:
        raise TypeError(f"{value!r} is not a time with a zone")
    return value


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def append_head(cur: Cursor, s: str, chain: Chain, run_id: str, reason: Reason) -> None:
    """Append the run's state now to the head of schema `s` (inside the caller's
    transaction)."""
    read_for_head(cur, s, run_id)
    insert_head(cur, s, chain, run_id, reason)


def read_for_head(cur: Cursor, s: str, run_id: str) -> None:
    """The first half of `append_head`: take the head's lock and read what the entry is made
    of (not fetched yet: in a pipeline, sent with the statements before it)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"journal-heads:{s}",))
    # Read after the lock, in a statement of its own: under READ COMMITTED its snapshot then
    # holds every entry appended before the lock was ours. One statement, one round trip.
    cur.execute(
        f"SELECT {RUN_COLUMNS}, e.seq, e.hash, h.n, h.hash FROM {s}.runs"
        f" LEFT JOIN LATERAL (SELECT seq, hash FROM {s}.events WHERE run_id = %s"
        " ORDER BY seq DESC LIMIT 1) e ON true"
        f" LEFT JOIN LATERAL (SELECT n, hash FROM {s}.heads ORDER BY n DESC LIMIT 1) h ON true"
        " WHERE run_id = %s",
        (run_id, run_id),
    )


def insert_head(cur: Cursor, s: str, chain: Chain, run_id: str, reason: Reason) -> None:
    """The second half of `append_head`, on the cursor `read_for_head` used."""
    found = cur.fetchone()
    assert found is not None
    row, (seq, last_hash, n, top_hash) = found[:-4], found[-4:]
    last = None if seq is None else (seq, last_hash)
    top = None if n is None else (n, top_hash)
    genesis = None
    if last is None:  # no event binds the run's header yet: the entry does
        genesis = genesis_of(chain, run_from_row(row, _moment, _blob))
    entry = next_entry(chain, run_id, reason, (row[4], row[15], row[14]), last, top, genesis)
    cur.execute(
        f"INSERT INTO {s}.heads ({_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        entry_row(entry, entry.at),
    )


def adoption_pending(cur: Cursor, s: str) -> bool:
    cur.execute(f"SELECT 1 FROM {s}.meta WHERE name = 'heads_pending'")
    return cur.fetchone() is not None


def adopt_runs(cur: Cursor, s: str, chain: Chain) -> int:
    """Inside the caller's transaction: if the upgrade's marker is still there, take it away
    and give every run an `adopted` entry, its state now. How many."""
    cur.execute(f"DELETE FROM {s}.meta WHERE name = 'heads_pending'")
    if cur.rowcount == 0:
        return 0  # another process adopted them meanwhile
    cur.execute(f"SELECT 1 FROM {s}.heads LIMIT 1")
    if cur.fetchone() is not None:
        return 0  # the head exists: runs it lacks were added by hand, never adopted
    cur.execute(
        f"SELECT run_id FROM {s}.runs WHERE run_id NOT IN (SELECT run_id FROM {s}.heads)"
        " ORDER BY created_at"
    )
    unknown = [row[0] for row in cur.fetchall()]
    for run_id in unknown:
        append_head(cur, s, chain, run_id, "adopted")
    return len(unknown)


def read_heads(cur: Cursor, s: str, after_n: int, limit: int | None) -> list[HeadEntry]:
    cur.execute(
        f"SELECT {_COLUMNS} FROM {s}.heads WHERE n > %s ORDER BY n LIMIT %s", (after_n, limit)
    )
    return [head_from_row(row, _moment) for row in cur.fetchall()]


def last_head(cur: Cursor, s: str) -> HeadEntry | None:
    cur.execute(f"SELECT {_COLUMNS} FROM {s}.heads ORDER BY n DESC LIMIT 1")
    row = cur.fetchone()
    return None if row is None else head_from_row(row, _moment)
