"""SQLiteStore: the default journal, one embedded file in WAL mode.

A committed event survives `kill -9` (synchronous=NORMAL) or power loss (synchronous=FULL).
Events are append-only: triggers reject UPDATE and DELETE on them.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from .._chain import Chain
from .._errors import JournalUnavailable, LeaseLost, RunNotFound
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
from .._heads import HeadEntry, Reason, entry_row, next_entry
from ._damage import salvage_event, salvage_run
from ._ownership import check_claim
from ._rows import RUN_COLUMNS, head_from_row, list_runs_query, run_from_row

SCHEMA_VERSION = 4
Durability = Literal["normal", "full"]

# Deleting events is the retention policy's job alone (`Journal.gc`): it removes whole runs,
# inside a transaction that holds a permit row, and logs what it removed.
_RETENTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS retention_permit (granted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retention_log (
    removed_at REAL NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT,
    status TEXT NOT NULL,
    events INTEGER NOT NULL,
    seal TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signals (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    payload BLOB NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (run_id, name, number)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_are_append_only_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM retention_permit)
BEGIN SELECT RAISE(ABORT, 'journal events are append-only (only journal gc removes runs)'); END;
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT,
    inputs BLOB,
    inputs_fingerprint TEXT,
    status TEXT NOT NULL,
    result BLOB,
    error BLOB,
    owner TEXT,
    owner_token TEXT,
    parent_run_id TEXT,
    fork_seq INTEGER,
    resumes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    chain TEXT,
    seal TEXT,
    wake_at REAL,
    waiting_for TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    payload BLOB,
    created_at REAL NOT NULL,
    args BLOB,
    prev_hash TEXT,
    hash TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_are_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;
"""
_HEADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS heads (
    n INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    events INTEGER NOT NULL,
    last_hash TEXT,
    seal TEXT,
    run_chain TEXT,
    at REAL NOT NULL,
    scheme TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS heads_are_append_only_update BEFORE UPDATE ON heads
BEGIN SELECT RAISE(ABORT, 'the journal head is append-only'); END;
CREATE TRIGGER IF NOT EXISTS heads_are_append_only_delete BEFORE DELETE ON heads
BEGIN SELECT RAISE(ABORT, 'the journal head is append-only'); END;
"""
_SCHEMA += _RETENTION_SCHEMA + _HEADS_SCHEMA

# Each schema version's upgrade from the one before; applied in order inside one transaction.
_MIGRATIONS = {
    2: ["ALTER TABLE events ADD COLUMN args BLOB"],
    3: [
        "ALTER TABLE events ADD COLUMN prev_hash TEXT",
        "ALTER TABLE events ADD COLUMN hash TEXT",
        "ALTER TABLE runs ADD COLUMN chain TEXT",
        "ALTER TABLE runs ADD COLUMN seal TEXT",
        "ALTER TABLE runs ADD COLUMN wake_at REAL",
        "ALTER TABLE runs ADD COLUMN waiting_for TEXT",
        "DROP TRIGGER IF EXISTS events_are_append_only_delete",
        *_RETENTION_SCHEMA.split(";\n"),
    ],
    4: [
        *_HEADS_SCHEMA.split(";\n"),
        # The runs already here get `adopted` entries when a Journal next opens the file (the
        # entries are signed with its key, which the store does not hold).
        "INSERT OR IGNORE INTO meta VALUES ('heads_pending', x'01')",
    ],
}

_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, key, kind, name, fingerprint, status, attempt, payload,"
    " created_at, args, prev_hash, hash) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE (SELECT owner_token FROM runs WHERE run_id = ?) = ?"
)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _switch_to_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """`PRAGMA journal_mode = WAL`, waiting out other processes opening the same new file.

    Changing the journal mode needs the database to itself, and SQLite's busy handler does
    not cover it: two processes creating one journal at once would otherwise see "locked".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


_SOUND = (
    "(typeof(payload) IN ('blob', 'null') AND typeof(args) IN ('blob', 'null')"
    " AND typeof(key) = 'text' AND typeof(kind) = 'text' AND typeof(name) = 'text'"
    " AND typeof(fingerprint) = 'text' AND typeof(status) = 'text' AND typeof(seq) = 'integer'"
    " AND typeof(attempt) = 'integer' AND typeof(prev_hash) IN ('text', 'null')"
    " AND typeof(hash) IN ('text', 'null'))"
)
"""Whether an event row holds the types the journal writes (SQLite keeps whatever it is given:
`replace()` on a payload leaves TEXT)."""


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends some itself (a full disk), and a
    second error from ROLLBACK must never hide the first."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _named(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store method whose SQLite errors say what happened and how to fix it: a full disk,
    a read-only file, a lock held past the busy timeout."""

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise _cause(self.path, exc) from exc

    return wrapper


def _cause(path: Path, exc: sqlite3.OperationalError) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "disk is full" in text:
        return JournalUnavailable(
            f"the disk holding {path} is full ({text}); nothing more could be written, and "
            "what was written before stays. Fix: free space on that disk, then resume the run."
        )
    if code == sqlite3.SQLITE_READONLY or "readonly" in text:
        return JournalUnavailable(
            f"{path} is read-only ({text}). Fix: make the file, its -wal and -shm files and "
            "their folder writable by this user, or open it with Journal(..., read_only=True) "
            "to read."
        )
    if code == sqlite3.SQLITE_BUSY or "locked" in text:
        return JournalUnavailable(
            f"{path} stayed locked by another process past the busy timeout of 30 s ({text}). "
            "Fix: find the process holding a write transaction open on it (a sqlite3 shell, "
            "a stuck script) and end it, then try again."
        )
    return exc


def _unsound() -> bool:
    raise TypeError("an event row holds a type the journal never writes")


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _owner_json(owner: Owner | None) -> str | None:
    return None if owner is None else owner.model_dump_json()


class SQLiteStore:
    """A journal in one SQLite file. Safe across processes; one connection per store."""

    def __init__(
        self, path: str | Path, *, durability: Durability = "normal", read_only: bool = False
    ) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(
                f"durability must be 'normal' (survives a process crash) or 'full' "
                f"(survives power loss), not {durability!r}"
            )
        self.path = Path(path)
        self.durability = durability
        self.head_chain: Chain | None = None
        """The MAC of the journal's head entries; None writes none (set by `Journal`)."""
        self.read_only = read_only
        """Opened to read: nothing is ever written, not even the schema (`journal show`...)."""
        self._lock = threading.Lock()
        if read_only and not self.path.is_file():
            raise JournalUnavailable(
                f"no journal at {self.path}. Fix: pass the path of the journal your workflows "
                "write to (--db PATH, or JOURNAL_URL)."
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:
                self._conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=30.0,
                )
            else:
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30.0
                )
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise JournalUnavailable(
                f"{self.path} cannot be opened as a journal: {exc}. Fix: point the journal at "
                "a new file or an existing journal database."
            ) from exc

    def _open_schema(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalUnavailable(
                f"{self.path} has journal schema version {version}, newer than this version of "
                f"journal-replay understands ({SCHEMA_VERSION}). Fix: upgrade journal-replay."
            )
        tables = set(sqlite_utils.Database(conn).table_names())
        if version == 0 and tables and not {"runs", "events"} <= tables:
            raise JournalUnavailable(
                f"{self.path} is an SQLite database but not a journal (it has tables "
                f"{sorted(tables)}). Fix: use a separate file for the journal."
            )
        self._heads_table = "heads" in tables or version < 4
        if self.read_only:
            if not {"runs", "events"} <= tables:
                raise JournalUnavailable(
                    f"no journal at {self.path}: the file holds no journal yet. Fix: pass the "
                    "path of the journal your workflows write to."
                )
            self._heads_table = "heads" in tables  # an old journal is read as it is
            return
        _switch_to_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.durability.upper()}")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                else:
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in _MIGRATIONS[step]:
                            if statement.strip():
                                conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    # -- runs ---------------------------------------------------------------------------------

    def _run_from_row(self, row: Sequence[Any]) -> Run:
        return salvage_run(row, _dt, lambda: run_from_row(row, _dt, _blob))

    def _select_run(self, run_id: str) -> Run | None:
        row = self._conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else self._run_from_row(row)

    @_named
    def create_run(self, run: Run) -> Run:
        with self._lock, self._transaction() as conn:
            created = conn.execute(
                f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}, owner_token)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    None if run.owner is None else run.owner.token,
                ),
            ).rowcount
            if created:
                self._append_head(run.run_id, "created")
            stored = self._select_run(run.run_id)
        assert stored is not None
        return stored

    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._select_run(run_id)

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        sql, params = list_runs_query("runs", "?", status, workflow, limit)
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
                _rollback(conn)
                raise
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
            return cursor.rowcount == 1

    @_named
    def release(self, run_id: str, token: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE runs SET owner = NULL, owner_token = NULL WHERE run_id = ?"
                " AND owner_token = ?",
                (run_id, token),
            )

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
        with self._lock, self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, result = ?, error = ?, seal = ?, owner = NULL,"
                " owner_token = NULL, updated_at = ?, finished_at = ?"
                " WHERE run_id = ? AND owner_token = ?",
                (status.value, result, error, seal, now, now, run_id, token),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(run_id)
            self._append_head(run_id, "finished")
            finished = self._select_run(run_id)
        assert finished is not None
        return finished

    # -- events -------------------------------------------------------------------------------

    @_named
    def append(self, run_id: str, token: str, events: Sequence[Event]) -> None:
        rows = [
            (
                run_id,
                event.seq,
                event.key,
                event.kind.value,
                event.name,
                event.fingerprint,
                event.status.value,
                event.attempt,
                event.payload,
                event.created_at.timestamp(),
                event.args,
                event.prev_hash,
                event.hash,
                run_id,
                token,
            )
            for event in events
        ]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                inserted = conn.executemany(_INSERT_EVENT, rows).rowcount
                if inserted != len(rows):
                    raise LeaseLost(run_id)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, created_at,"
                f" args, prev_hash, hash, {_SOUND} FROM events WHERE run_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (run_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        try:
            return self._events(run_id, rows)
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            return [salvage_event(run_id, row[:12], _dt) for row in rows]  # edited by hand

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

    def read_rows(self, run_id: str) -> list[EventRow]:
        with self._lock:
            rows: list[EventRow] = self._conn.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, args"
                " FROM events WHERE run_id = ? ORDER BY seq",
                (run_id,),
            ).fetchall()
        return rows

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
            self._append_head(run_id, "suspended")
            suspended = self._select_run(run_id)
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
                _rollback(conn)
                raise
        signal_number: int = number
        return signal_number

    def read_signal(self, run_id: str, name: str, number: int) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT payload FROM signals WHERE run_id = ? AND name = ? AND number = ?",
                (run_id, name, number),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def list_due(self, now: datetime) -> list[Run]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'waiting' AND wake_at <= ?"
                " ORDER BY wake_at",
                (_ts(now),),
            ).fetchall()
        return [self._run_from_row(row) for row in rows]

    def count_events(self, run_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
        count: int = row[0]
        return count

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
                    conn.execute(
                        "INSERT INTO retention_log VALUES (?, ?, ?, ?, ?, ?)",
                        (now, run_id, row[0], row[1], events, row[2]),
                    )
                    removed += 1
                conn.execute("DELETE FROM retention_permit")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
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
            _rollback(conn)
            raise

    def _append_head(self, run_id: str, reason: Reason) -> None:
        """Append the run's state now to the journal's head (inside the caller's transaction)."""
        chain = self.head_chain
        if chain is None:
            return
        conn = self._conn
        run = conn.execute(
            "SELECT status, seal, chain FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        last = conn.execute(
            "SELECT seq, hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
        ).fetchone()
        top = conn.execute("SELECT n, hash FROM heads ORDER BY n DESC LIMIT 1").fetchone()
        entry = next_entry(chain, run_id, reason, run, last, top)
        conn.execute(
            "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entry_row(entry, _ts(entry.at)),
        )

    @_named
    def adopt_runs(self) -> int:
        """Once, after the upgrade that added the head: every run already in the journal gets
        an `adopted` entry, its state at that moment. How many."""
        if self.head_chain is None or self.read_only:
            return 0
        with self._lock:
            pending = self._conn.execute("SELECT 1 FROM meta WHERE name = 'heads_pending'")
            if pending.fetchone() is None:
                return 0
        with self._lock, self._transaction() as conn:
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
                self._append_head(run_id, "adopted")
        return len(unknown)

    def last_head(self) -> HeadEntry | None:
        if not self._heads_table:
            return None  # a journal from before the head, opened to read
        with self._lock:
            row = self._conn.execute(
                "SELECT n, run_id, reason, status, events, last_hash, seal, run_chain, at,"
                " scheme, prev, hash FROM heads ORDER BY n DESC LIMIT 1"
            ).fetchone()
        return None if row is None else head_from_row(row, _dt)

    def read_heads(self, *, after_n: int = 0, limit: int | None = None) -> list[HeadEntry]:
        if not self._heads_table:
            return []  # a journal from before the head, opened to read
        with self._lock:
            rows = self._conn.execute(
                "SELECT n, run_id, reason, status, events, last_hash, seal, run_chain, at,"
                " scheme, prev, hash FROM heads WHERE n > ? ORDER BY n LIMIT ?",
                (after_n, -1 if limit is None else limit),
            ).fetchall()
        return [head_from_row(row, _dt) for row in rows]

    @_named
    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            conn = self._conn
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            if row is None and self.read_only:
                return make()  # nothing was ever redacted with it: nothing to match
            if row is None:  # read first: a journal opened to read is never written
                conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, make()))
                row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        value: bytes = row[0]
        return value

    def close(self) -> None:
        with self._lock:
            self._conn.close()
