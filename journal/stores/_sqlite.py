"""SQLiteStore: the default journal, one embedded file in WAL mode.

A committed event survives `kill -9` (synchronous=NORMAL) or power loss (synchronous=FULL).
Events are append-only: triggers reject UPDATE and DELETE on them.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .._chain import Chain
from .._chunks import ChunkDamaged
from .._errors import LeaseLost, RunNotFailed, RunNotFound
from .._events import (
    KIND_BY_VALUE,
    STATUS_BY_VALUE,
    Event,
    EventRow,
    Owner,
    Run,
    RunStatus,
    trusted_event,
)
from .._heads import HeadEntry, Reason
from . import _sqlite_heads as _heads
from ._chunked import Loaded, Pending, expand_events, expand_rows, stored_fields
from ._damage import salvage_event, salvage_run
from ._ownership import check_claim
from ._rows import RUN_COLUMNS, RUN_COLUMNS_BEFORE_VERSIONS, list_runs_query, run_from_row
from ._sqlite_checkpoint import Checkpointer
from ._sqlite_file import (
    SCHEMA_VERSION,
    SOUND_EVENT,
    Durability,
    connect,
    lenient_text,
    rollback,
)
from ._sqlite_file import named_errors as _named

__all__ = ["SCHEMA_VERSION", "Durability", "SQLiteStore"]

_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, key, kind, name, fingerprint, status, attempt, payload,"
    " created_at, args, prev_hash, hash) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE (SELECT owner_token FROM runs WHERE run_id = ?) = ?"
)


_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
"""INSERT ... RETURNING (SQLite 3.35): which runs' rows a group's one statement kept."""
_ROWS_PER_INSERT = 64
"""Rows per multi-row INSERT (15 parameters each, under SQLite's oldest limit of 999)."""
_IDS_PER_SELECT = 500
"""Run ids per `get_runs` statement (one parameter each)."""


@functools.cache
def _insert_events(rows: int) -> str:
    """One INSERT of `rows` rows of `_event_row` parameters, each kept only while its token
    owns its run: one statement, where executemany steps (and hands over the GIL) per row."""
    values = ", ".join(["(" + ", ".join(["?"] * 15) + ")"] * rows)
    return (
        "INSERT INTO events (run_id, seq, key, kind, name, fingerprint, status, attempt, payload,"
        " created_at, args, prev_hash, hash) SELECT column1, column2, column3, column4, column5,"
        " column6, column7, column8, column9, column10, column11, column12, column13"
        f" FROM (VALUES {values}) WHERE (SELECT owner_token FROM runs WHERE run_id = column14)"
        " = column15"
    )


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert `_event_row` rows a chunk at a time, in the caller's transaction; how many were
    kept."""
    inserted = 0
    for first in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[first : first + _ROWS_PER_INSERT]
        params = [value for row in chunk for value in row]
        inserted += conn.execute(_insert_events(len(chunk)), params).rowcount
    return inserted


def _event_row(run_id: str, token: str, event: Event, pending: Pending) -> tuple[Any, ...]:
    """`_INSERT_EVENT`'s parameters: the event, inserted only while `token` owns the run. A
    long call record is stored as a template, its chunks added to `pending`."""
    payload, args = stored_fields(event, pending)
    return (
        run_id,
        event.seq,
        event.key,
        event.kind.value,
        event.name,
        event.fingerprint,
        event.status.value,
        event.attempt,
        payload,
        event.created_at.timestamp(),
        args,
        event.prev_hash,
        event.hash,
        run_id,
        token,
    )


def _written(rows: list[tuple[Any, ...]], pendings: Sequence[Pending]) -> int:
    """Bytes of results and arguments `_event_row` rows and their chunks write (what makes a
    commit large, for the checkpoint thread)."""
    size = sum(len(row[8] or b"") + len(row[10] or b"") for row in rows)
    return size + sum(len(blob) for pending in pendings for blob in pending.blobs.values())


def _write_chunks(conn: sqlite3.Connection, run_id: str, pending: Pending) -> None:
    """`run_id`'s chunks, in the transaction that writes the events naming them."""
    conn.executemany("INSERT OR IGNORE INTO chunk_blobs VALUES (?, ?)", pending.blobs.items())
    conn.executemany(
        "INSERT OR IGNORE INTO chunk_nodes VALUES (?, ?, ?)",
        [(name, prev, item) for name, (prev, item) in pending.nodes.items()],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO chunk_refs VALUES (?, ?)", [(run_id, name) for name in pending.refs]
    )


NODES_FROM = (  # every node reachable from the JSON array of names given
    "WITH RECURSIVE walk(name) AS (SELECT value FROM json_each(?) UNION"
    " SELECT n.prev FROM chunk_nodes n JOIN walk w ON n.name = w.name WHERE n.prev IS NOT NULL)"
    " SELECT n.name, n.prev, n.item FROM chunk_nodes n JOIN walk w ON n.name = w.name"
)
_SWEEP = (
    # Chunks no remaining run names, after runs were removed (under the retention permit).
    "DELETE FROM chunk_nodes WHERE name NOT IN (WITH RECURSIVE live(name) AS"
    " (SELECT name FROM chunk_refs UNION SELECT n.prev FROM chunk_nodes n JOIN live l"
    " ON n.name = l.name WHERE n.prev IS NOT NULL) SELECT name FROM live)",
    "DELETE FROM chunk_blobs WHERE name NOT IN"
    " (SELECT name FROM chunk_refs UNION SELECT item FROM chunk_nodes)",
)


def _load_chunks(conn: sqlite3.Connection, names: list[str]) -> Loaded:
    """Every node reachable from `names`, and the blobs they and `names` refer to."""
    nodes = {
        name: (prev, item) for name, prev, item in conn.execute(NODES_FROM, (orjson.dumps(names),))
    }
    wanted = {item for _, item in nodes.values()}.union(names)
    blobs = dict(
        conn.execute(
            "SELECT name, body FROM chunk_blobs WHERE name IN (SELECT value FROM json_each(?))",
            (orjson.dumps(sorted(wanted)),),
        )
    )
    return nodes, blobs


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _unsound() -> bool:
    raise TypeError("an event row holds a type the journal never writes")


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _owner_json(owner: Owner | None) -> str | None:
    return None if owner is None else owner.model_dump_json()


class SQLiteStore:
    """A journal in one SQLite file. Safe across processes; one connection per store."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "normal",
        read_only: bool = False,
        head_chain: Chain | None = None,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(
                f"durability must be 'normal' (survives a process crash) or 'full' "
                f"(survives power loss), not {durability!r}"
            )
        self.path = Path(path)
        self.durability = durability
        self.head_chain: Chain | None = head_chain
        """The MAC of the journal's head entries; None writes none (set by `Journal`)."""
        self.read_only = read_only
        """Opened to read: nothing is ever written, not even the schema (`journal show`...)."""
        self._lock = threading.Lock()
        self._conn, self._heads_table, self._upgraded = connect(
            self.path, durability, read_only=read_only, head_chain=head_chain
        )
        self._checkpointer = None if read_only else Checkpointer(self.path, self._lock)
        """Copies the WAL back into the file off the commit path (`_sqlite_checkpoint`)."""
        if self._checkpointer is not None:
            self._checkpointer.ask_if_long()
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        self._run_columns = RUN_COLUMNS if "version" in columns else RUN_COLUMNS_BEFORE_VERSIONS
        self._variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        """What reads a run: an old journal opened to read has no `version` column."""
        self._chunked = (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunk_refs'"
            ).fetchone()
            is not None
        )
        """Whether the file has chunk tables (an old journal opened to read has none)."""

    # -- runs ---------------------------------------------------------------------------------

    def _run_from_row(self, row: Sequence[Any]) -> Run:
        return salvage_run(row, _dt, lambda: run_from_row(row, _dt, _blob))

    def _select_run(self, run_id: str) -> Run | None:
        row = self._conn.execute(
            f"SELECT {self._run_columns} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else self._run_from_row(row)

    @_named
    def create_run(self, run: Run) -> Run:
        insert = (
            f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}, owner_token)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._lock, self._transaction() as conn:
            cursor = conn.execute(
                f"{insert} RETURNING {RUN_COLUMNS}" if _RETURNING else insert,
                (
                    run.run_id,
                    run.workflow,
                    run.inputs,
                    run.inputs_fingerprint,
                    run.status.value,
                    run.result,
                    run.error,
                    _owner_json(run.owner),
                    run.parent_run_id,
                    run.fork_seq,
                    run.resumes,
                    _ts(run.created_at),
                    _ts(run.updated_at),
                    None if run.finished_at is None else _ts(run.finished_at),
                    run.chain,
                    run.seal,
                    None if run.wake_at is None else _ts(run.wake_at),
                    run.waiting_for,
                    run.version,
                    None if run.owner is None else run.owner.token,
                ),
            )
            # The row as inserted (none if the run was there already: it is read below).
            returned = cursor.fetchall() if _RETURNING else []
            created = bool(returned) if _RETURNING else cursor.rowcount == 1
            stored = None
            if created:
                stored = self._append_head(run.run_id, "created", *returned)
            if stored is None:
                stored = self._select_run(run.run_id)
        assert stored is not None
        return stored

    @_named
    @lenient_text
    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._select_run(run_id)

    @_named
    @lenient_text
    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        wanted = list(dict.fromkeys(run_ids))
        rows = []
        with self._lock:
            for first in range(0, len(wanted), _IDS_PER_SELECT):
                ids = wanted[first : first + _IDS_PER_SELECT]
                marks = ", ".join("?" * len(ids))
                rows += self._conn.execute(
                    f"SELECT {self._run_columns} FROM runs WHERE run_id IN ({marks})", ids
                ).fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    @lenient_text
    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        sql, params = list_runs_query("runs", "?", status, workflow, limit, self._run_columns)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    def claim(self, run_id: str, owner: Owner, *, resuming: bool) -> Run:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                run = self._select_run(run_id)
                if run is None:
                    raise RunNotFound(run_id)
                now = datetime.now(UTC)
                check_claim(run_id, run.owner, owner, now)
                conn.execute(
                    "UPDATE runs SET owner = ?, owner_token = ?, resumes = resumes + ?,"
                    " updated_at = ?, status = CASE status WHEN 'waiting' THEN 'running'"
                    " ELSE status END, wake_at = CASE status WHEN 'waiting' THEN NULL"
                    " ELSE wake_at END, waiting_for = CASE status WHEN 'waiting' THEN NULL"
                    " ELSE waiting_for END WHERE run_id = ?",
                    (owner.model_dump_json(), owner.token, int(resuming), _ts(now), run_id),
                )
                claimed = self._select_run(run_id)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._committed()
        assert claimed is not None
        return claimed

    @_named
    def heartbeat(self, run_id: str, token: str, lease_expires_at: datetime) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT owner FROM runs WHERE run_id = ? AND owner_token = ?", (run_id, token)
            ).fetchone()
            if row is None:
                return False
            owner = Owner.model_validate_json(row[0]).model_copy(
                update={"lease_expires_at": lease_expires_at}
            )
            cursor = self._conn.execute(
                "UPDATE runs SET owner = ? WHERE run_id = ? AND owner_token = ?",
                (owner.model_dump_json(), run_id, token),
            )
            self._committed()
            return cursor.rowcount == 1

    @_named
    def release(self, run_id: str, token: str, *, head: Reason | None = None) -> None:
        release = (
            "UPDATE runs SET owner = NULL, owner_token = NULL WHERE run_id = ? AND owner_token = ?"
        )
        if head is None:
            with self._lock:
                self._conn.execute(release, (run_id, token))
                self._committed()
            return
        with self._lock, self._transaction() as conn:
            if conn.execute(release, (run_id, token)).rowcount:
                self._append_head(run_id, head)

    @_named
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
        now = _ts(datetime.now(UTC))
        update = (
            "UPDATE runs SET status = ?, result = ?, error = ?, seal = ?, owner = NULL,"
            " owner_token = NULL, updated_at = ?, finished_at = ?"
            " WHERE run_id = ? AND owner_token = ?"
        )
        params = (status.value, result, error, seal, now, now, run_id, token)
        with self._lock, self._transaction() as conn:
            if _RETURNING:  # the run as updated, in the same statement
                returned = conn.execute(f"{update} RETURNING {RUN_COLUMNS}", params).fetchall()
                if len(returned) != 1:
                    raise LeaseLost(run_id)
            else:
                returned = []
                if conn.execute(update, params).rowcount != 1:
                    raise LeaseLost(run_id)
            finished = self._append_head(run_id, "finished", *returned) or self._select_run(run_id)
        assert finished is not None
        return finished

    @_named
    def reopen(self, run_id: str, token: str, events: Sequence[Event]) -> Run:
        with self._lock, self._transaction() as conn:
            run = self._select_run(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if run.owner is None or run.owner.token != token:
                raise LeaseLost(run_id)
            if run.status is not RunStatus.FAILED:
                raise RunNotFailed(run_id, run.status.value)
            pending = Pending()
            inserted = conn.executemany(
                _INSERT_EVENT, [_event_row(run_id, token, event, pending) for event in events]
            ).rowcount
            if inserted != len(events):
                raise LeaseLost(run_id)
            if pending:
                _write_chunks(conn, run_id, pending)
            conn.execute(
                "UPDATE runs SET status = 'running', result = NULL, error = NULL, seal = NULL,"
                " finished_at = NULL, updated_at = ? WHERE run_id = ?",
                (_ts(datetime.now(UTC)), run_id),
            )
            reopened = self._append_head(run_id, "reopened") or self._select_run(run_id)
        assert reopened is not None
        return reopened

    # -- events -------------------------------------------------------------------------------

    @_named
    def append(self, run_id: str, token: str, events: Sequence[Event]) -> None:
        pending = Pending()
        rows = [_event_row(run_id, token, event, pending) for event in events]
        if len(rows) == 1 and not pending:
            # One row, one statement: its own transaction, without a BEGIN and a COMMIT each
            # going through the driver (the sequential step's hot path). It is kept only while
            # the token owns the run, as below.
            with self._lock:
                if self._conn.execute(_INSERT_EVENT, rows[0]).rowcount != 1:
                    raise LeaseLost(run_id)
                self._committed(_written(rows, [pending]))
            return
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                inserted = conn.executemany(_INSERT_EVENT, rows).rowcount
                if inserted != len(rows):
                    raise LeaseLost(run_id)
                if pending:
                    _write_chunks(conn, run_id, pending)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._committed(_written(rows, [pending]))

    @_named
    def append_many(self, batches: Sequence[tuple[str, str, Sequence[Event]]]) -> list[str]:
        pendings = [Pending() for _ in batches]
        by_run = [
            [_event_row(run_id, token, e, pending) for e in events]
            for (run_id, token, events), pending in zip(batches, pendings, strict=True)
        ]
        rows = [row for ours in by_run for row in ours]
        chunked = any(pendings)
        one_statement = not chunked and _RETURNING and len(rows) * 15 <= self._variables
        if one_statement:  # built before the lock: the loop may be waiting for the store
            params = [value for row in rows for value in row]
            sql = _insert_events(len(rows)) + " RETURNING run_id"
        with self._lock:
            conn = self._conn
            if one_statement:
                # One statement is its own transaction: one step, where a BEGIN, inserts and a
                # COMMIT each hand the GIL over and wait to get it back from the event loop.
                # A run that lost its lease has none of its rows in: they pass or fail together.
                accepted = {row[0] for row in conn.execute(sql, params).fetchall()}
                self._committed(_written(rows, pendings))
                return [run_id for run_id, _, _ in batches if run_id not in accepted]
            conn.execute("BEGIN")
            try:
                refused = []
                for (run_id, _, _), ours, pending in zip(batches, by_run, pendings, strict=True):
                    inserted = _insert_rows(conn, ours)
                    if inserted == 0:
                        refused.append(run_id)
                    elif inserted != len(ours):
                        raise LeaseLost(run_id)
                    elif pending:
                        _write_chunks(conn, run_id, pending)
                conn.execute("COMMIT")
                self._committed(_written(rows, pendings))
                return refused
            except BaseException:
                rollback(conn)
                raise

    @_named
    @lenient_text
    def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, created_at,"
                f" args, prev_hash, hash, {SOUND_EVENT} FROM events WHERE run_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (run_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        try:
            events = self._events(run_id, rows)
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            events = [salvage_event(run_id, row[:12], _dt) for row in rows]  # edited by hand
        return expand_events(events, self._load_chunks)

    def _load_chunks(self, names: list[str]) -> Loaded:
        with self._lock:
            try:
                return _load_chunks(self._conn, names)
            except sqlite3.OperationalError as exc:  # a template in a journal with no chunks
                raise ChunkDamaged("template", missing=True) from exc

    @staticmethod
    def _events(run_id: str, rows: list[Any]) -> list[Event]:
        kinds, statuses, moment = KIND_BY_VALUE, STATUS_BY_VALUE, datetime.fromtimestamp
        return [
            trusted_event(
                run_id,
                seq,
                key,
                kinds[kind],
                name,
                fp,
                statuses[status],
                attempt,
                payload,
                moment(created, UTC),
                args,
                prev_hash,
                digest,
            )
            for (
                seq,
                key,
                kind,
                name,
                fp,
                status,
                attempt,
                payload,
                created,
                args,
                prev_hash,
                digest,
                sound,
            ) in rows
            if sound or _unsound()  # a row edited by hand: read it the careful way
        ]

    @_named
    @lenient_text
    def read_rows(self, run_id: str) -> list[EventRow]:
        with self._lock:
            rows: list[EventRow] = self._conn.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, args"
                " FROM events WHERE run_id = ? AND seq > 0 ORDER BY seq",
                (run_id,),
            ).fetchall()
            # Runs that name no chunks skip the look at every row (10 ms at 100,000 rows).
            chunked = self._chunked and (
                self._conn.execute(
                    "SELECT 1 FROM chunk_refs WHERE run_id = ? LIMIT 1", (run_id,)
                ).fetchone()
                is not None
            )
        return expand_rows(run_id, rows, (7, 8), self._load_chunks) if chunked else rows

    @_named
    def suspend(
        self, run_id: str, token: str, *, wake_at: datetime | None, waiting_for: str | None
    ) -> Run:
        now = _ts(datetime.now(UTC))
        with self._lock, self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = 'waiting', owner = NULL, owner_token = NULL,"
                " wake_at = ?, waiting_for = ?, updated_at = ?"
                " WHERE run_id = ? AND owner_token = ?",
                (None if wake_at is None else _ts(wake_at), waiting_for, now, run_id, token),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(run_id)
            suspended = self._append_head(run_id, "suspended") or self._select_run(run_id)
        assert suspended is not None
        return suspended

    @_named
    def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        now = _ts(datetime.now(UTC))
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._select_run(run_id) is None:
                    raise RunNotFound(run_id)
                (number,) = conn.execute(
                    "SELECT coalesce(max(number), 0) + 1 FROM signals"
                    " WHERE run_id = ? AND name = ?",
                    (run_id, name),
                ).fetchone()
                conn.execute(
                    "INSERT INTO signals VALUES (?, ?, ?, ?, ?)",
                    (run_id, name, number, payload, now),
                )
                conn.execute(
                    "UPDATE runs SET wake_at = ? WHERE run_id = ? AND status = 'waiting'"
                    " AND waiting_for = ?",
                    (now, run_id, name),
                )
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._committed(len(payload))
        signal_number: int = number
        return signal_number

    @_named
    def read_signal(self, run_id: str, name: str, number: int) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT payload FROM signals WHERE run_id = ? AND name = ? AND number = ?",
                (run_id, name, number),
            ).fetchone()
        return None if row is None else bytes(row[0])

    @_named
    @lenient_text
    def list_due(self, now: datetime) -> list[Run]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {self._run_columns} FROM runs WHERE status = 'waiting' AND wake_at <= ?"
                " ORDER BY wake_at",
                (_ts(now),),
            ).fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    @lenient_text
    def sample_resumable(self, now: datetime, host: str, limit: int) -> list[Run]:
        # An owner's record that is not JSON, or whose lease is not a moment, counts as
        # ownerless here (the worker's own check then reads it as the run's model does).
        # Only a lease written as the journal writes it (RFC 3339 with its offset) is read as a
        # moment: SQLite reads more (a Julian day, an offset after a space) than the model does,
        # and a run it read as owned could be one the worker reads as ownerless, never sampled.
        # Nor is one the model cannot read at all (a field missing, of another type).
        def moment_at(path: str) -> str:
            field = f"json_extract(owner, '{path}')"
            return (
                f"json_type(owner, '{path}') = 'text'"
                f" AND {field} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:*'"
                f" AND {field} NOT GLOB '*[^0-9:.TZ+-]*'"
                f" AND ({field} GLOB '*Z' OR {field} GLOB '*[+-][0-9][0-9]:[0-9][0-9]')"
            )

        lease_over = (
            "CASE WHEN json_valid(owner) AND json_type(owner, '$.token') = 'text'"
            " AND json_type(owner, '$.host') = 'text' AND json_type(owner, '$.pid') = 'integer'"
            f" AND {moment_at('$.since')} AND {moment_at('$.lease_expires_at')}"
            " THEN coalesce(julianday(json_extract(owner, '$.lease_expires_at'))"
            " <= julianday(?), 1) ELSE 1 END"
        )
        moment = now.isoformat()
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM (SELECT {self._run_columns} FROM runs WHERE status = 'running'"
                f" AND (owner_token IS NULL OR {lease_over}) ORDER BY random() LIMIT ?)"
                f" UNION ALL SELECT {self._run_columns} FROM runs WHERE status = 'running'"
                f" AND owner_token IS NOT NULL AND NOT {lease_over}"
                " AND CASE WHEN json_valid(owner) THEN json_extract(owner, '$.host') END = ?",
                (moment, int(limit), moment, host),
            ).fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    def count_events(self, run_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
        count: int = row[0]
        return count

    @_named
    def last_hash(self, run_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone()
        return None if row is None else row[0]

    @_named
    def delete_runs(self, run_ids: Sequence[str]) -> int:
        removed = 0
        now = _ts(datetime.now(UTC))
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO retention_permit VALUES (1)")
                for run_id in run_ids:
                    row = conn.execute(
                        "SELECT workflow, status, seal, owner_token FROM runs WHERE run_id = ?",
                        (run_id,),
                    ).fetchone()
                    if row is None or row[3] is not None:
                        continue  # gone already, or owned right now: never remove a live run
                    self._append_head(run_id, "removed")
                    events = conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,)).rowcount
                    conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                    conn.execute("DELETE FROM chunk_refs WHERE run_id = ?", (run_id,))
                    # Its signals too: a new run of its id must not be handed them.
                    conn.execute("DELETE FROM signals WHERE run_id = ?", (run_id,))
                    conn.execute(
                        "INSERT INTO retention_log VALUES (?, ?, ?, ?, ?, ?)",
                        (now, run_id, row[0], row[1], events, row[2]),
                    )
                    removed += 1
                if removed:
                    for statement in _SWEEP:
                        conn.execute(statement)
                conn.execute("DELETE FROM retention_permit")
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            self._committed()
        return removed

    # -- the journal's head -------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the caller holds the store's lock)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self._committed()

    def _committed(self, written: int = 0) -> None:
        """A write transaction committed, `written` bytes of results among what it wrote (the
        caller holds the store's lock)."""
        if self._checkpointer is not None:
            self._checkpointer.commit(written)

    def _append_head(
        self, run_id: str, reason: Reason, row: tuple[Any, ...] | None = None
    ) -> Run | None:
        """Append the run's state now to the journal's head (inside the caller's transaction);
        the run as the entry read it (None without a head): what the caller returns, not
        read again. `row`: the run's `RUN_COLUMNS` as the caller's write returned them."""
        if self.head_chain is None:
            return None if row is None else self._run_from_row(row)
        row, run = _heads.append_head(self._conn, self.head_chain, run_id, reason, row)
        if self._run_columns is not RUN_COLUMNS:
            return None
        return run or self._run_from_row(row)

    @_named
    def adopt_runs(self) -> int:
        """Once, after the upgrade that added the head: every run already in the journal gets
        an `adopted` entry, its state at that moment, written by the process that upgraded
        the file and by no other (a marker in the file alone could be set again by hand, to
        have a head rebuilt over edited runs and signed). How many."""
        if self.head_chain is None or self.read_only or not self._upgraded:
            return 0
        self._upgraded = False
        with self._lock:
            if not _heads.adoption_pending(self._conn):
                return 0
        with self._lock, self._transaction() as conn:
            return _heads.adopt_runs(conn, self.head_chain)

    @property
    def has_head(self) -> bool:
        """Whether the journal keeps a head: False only for a journal from before the head,
        opened to read (a writer upgrades it and adopts its runs)."""
        return self._heads_table

    @_named
    @lenient_text
    def last_head(self) -> HeadEntry | None:
        if not self._heads_table:
            return None  # a journal from before the head, opened to read
        with self._lock:
            return _heads.last_head(self._conn)

    @_named
    @lenient_text
    def read_heads(self, *, after_n: int = 0, limit: int | None = None) -> list[HeadEntry]:
        if not self._heads_table:
            return []  # a journal from before the head, opened to read
        with self._lock:
            return _heads.read_heads(self._conn, after_n, limit)

    @_named
    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            conn = self._conn
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            if row is None and self.read_only:
                return make()  # nothing was ever redacted with it: nothing to match
            if row is None:  # read first: a journal opened to read is never written
                conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, make()))
                self._committed()
                row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        value: bytes = row[0]
        return value

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._conn.close()  # the last connection to the file checkpoints what is left
