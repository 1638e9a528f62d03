"""An SQLite journal file: opening it (to write, or only to read), its schema and the
upgrades from older versions, WAL mode, and what SQLite's errors mean for the user."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .._chain import Chain
from .._errors import JournalUnavailable
from .._log import get_logger
from . import _sqlite_checkpoint as _checkpoint
from . import _sqlite_heads as _heads

log = get_logger("journal")

SCHEMA_VERSION = 7
Durability = Literal["normal", "full"]

# Events are kept in the order they arrive (SQLite's rowid), their key an index beside them.
# Clustered by run (WITHOUT ROWID, up to schema 6), every run in flight had a leaf page of its
# own: a group commit of 40 rows of 40 runs rewrote some 40 pages, as 40 one-row commits did.
_EVENTS_COLUMNS = """
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
"""
_EVENT_FIELDS = (
    "run_id, seq, key, kind, name, fingerprint, status, attempt, payload, created_at, args,"
    " prev_hash, hash"
)
_EVENTS_UPDATE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS events_are_append_only_update
BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END"""
_EVENTS_DELETE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS events_are_append_only_delete
BEFORE DELETE ON events WHEN NOT EXISTS (SELECT 1 FROM retention_permit)
BEGIN SELECT RAISE(ABORT, 'journal events are append-only (only journal gc removes runs)'); END"""

# Deleting events is the retention policy's job alone (`Journal.gc`): it removes whole runs,
# inside a transaction that holds a permit row, and logs what it removed.
_RETENTION_SCHEMA = (
    """
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
"""
    + _EVENTS_DELETE_TRIGGER
    + ";\n"
)

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
    waiting_for TEXT,
    version TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
"""
_SCHEMA += f"CREATE TABLE IF NOT EXISTS events ({_EVENTS_COLUMNS});\n{_EVENTS_UPDATE_TRIGGER};\n"
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
# Long call records' repeated content, stored once (`journal._chunks`). A chunk is named by
# the hash of what it holds; `chunk_refs` says which runs name which chunks, so that removing
# runs (retention, under its permit) can remove the chunks no run names any more: a reference
# removed by hand would have the next removal take a remaining run's chunks with it.
_CHUNKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_blobs (name TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunk_nodes (
    name TEXT PRIMARY KEY,
    prev TEXT,
    item TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_refs (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS chunk_blobs_are_append_only_update BEFORE UPDATE ON chunk_blobs
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only'); END;
CREATE TRIGGER IF NOT EXISTS chunk_nodes_are_append_only_update BEFORE UPDATE ON chunk_nodes
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only'); END;
CREATE TRIGGER IF NOT EXISTS chunk_blobs_are_append_only_delete BEFORE DELETE ON chunk_blobs
WHEN NOT EXISTS (SELECT 1 FROM retention_permit)
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only (only journal gc removes runs)'); END;
CREATE TRIGGER IF NOT EXISTS chunk_nodes_are_append_only_delete BEFORE DELETE ON chunk_nodes
WHEN NOT EXISTS (SELECT 1 FROM retention_permit)
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only (only journal gc removes runs)'); END;
CREATE TRIGGER IF NOT EXISTS chunk_refs_are_append_only_update BEFORE UPDATE ON chunk_refs
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only'); END;
CREATE TRIGGER IF NOT EXISTS chunk_refs_are_append_only_delete BEFORE DELETE ON chunk_refs
WHEN NOT EXISTS (SELECT 1 FROM retention_permit)
BEGIN SELECT RAISE(ABORT, 'journal chunks are append-only (only journal gc removes runs)'); END;
"""
_SCHEMA += _RETENTION_SCHEMA + _HEADS_SCHEMA + _CHUNKS_SCHEMA

# Indexes and triggers on `events` other than the journal's own: a user's, which the schema-7
# rebuild drops with the table and then makes again.
_USERS_ON_EVENTS = (
    "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND type IN ('index', 'trigger')"
    " AND sql IS NOT NULL AND name NOT IN"
    " ('events_are_append_only_update', 'events_are_append_only_delete')"
)


def _rebuilt_events(conn: sqlite3.Connection) -> list[str]:
    """Schema 7: the events table rebuilt in arrival order, each run's rows together as they
    were, with what a user added on it (indexes, triggers) made again."""
    users = [row[0] for row in conn.execute(_USERS_ON_EVENTS)]
    return [
        f"CREATE TABLE events_in_arrival_order ({_EVENTS_COLUMNS})",
        f"INSERT INTO events_in_arrival_order ({_EVENT_FIELDS})"
        f" SELECT {_EVENT_FIELDS} FROM events ORDER BY run_id, seq",
        "DROP TABLE events",  # its triggers with it (a drop fires none)
        # Legacy: views and triggers a user wrote against `events` are neither checked against
        # the schema mid-rebuild (where they would fail the rename) nor rewritten.
        "PRAGMA legacy_alter_table = ON",
        "ALTER TABLE events_in_arrival_order RENAME TO events",
        "PRAGMA legacy_alter_table = OFF",
        _EVENTS_UPDATE_TRIGGER,
        _EVENTS_DELETE_TRIGGER,
        *users,
    ]


# Each schema version's upgrade from the one before; applied in order inside one transaction.
_MIGRATIONS: dict[int, list[str] | Callable[[sqlite3.Connection], list[str]]] = {
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
    5: ["ALTER TABLE runs ADD COLUMN version TEXT"],
    6: _CHUNKS_SCHEMA.split(";\n"),
    7: _rebuilt_events,
}


SOUND_EVENT = (
    "(typeof(payload) IN ('blob', 'null') AND typeof(args) IN ('blob', 'null')"
    " AND typeof(key) = 'text' AND typeof(kind) = 'text' AND typeof(name) = 'text'"
    " AND typeof(fingerprint) = 'text' AND typeof(status) = 'text' AND typeof(seq) = 'integer'"
    " AND typeof(attempt) = 'integer' AND typeof(prev_hash) IN ('text', 'null')"
    " AND typeof(hash) IN ('text', 'null'))"
)
"""Whether an event row holds the types the journal writes (SQLite keeps whatever it is given:
`replace()` on a payload leaves TEXT)."""


def connect(
    path: Path, durability: Durability, *, read_only: bool, head_chain: Chain | None = None
) -> tuple[sqlite3.Connection, bool, bool]:
    """A connection to the journal at `path`, its schema current (created or upgraded) unless
    `read_only`; whether the file has the head table (an old journal read as it is has none);
    and whether this call upgraded a journal from before the head and its runs are still to be
    adopted (by this process only). With `head_chain`, they are adopted in the upgrade's own
    transaction: a crash cannot leave them upgraded but never adopted."""
    if read_only and not path.is_file():
        raise JournalUnavailable(
            f"no journal at {path}. Fix: pass the path of the journal your workflows "
            "write to (--db PATH, or JOURNAL_URL)."
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if read_only:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
        else:
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn, *_open_schema(conn, path, durability, read_only, head_chain)
    except sqlite3.DatabaseError as exc:
        raise JournalUnavailable(
            f"{path} cannot be opened as a journal: {exc}. Fix: point the journal at "
            "a new file or an existing journal database."
        ) from exc


def _open_schema(
    conn: sqlite3.Connection,
    path: Path,
    durability: Durability,
    read_only: bool,
    head_chain: Chain | None,
) -> tuple[bool, bool]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalUnavailable(
            f"{path} has journal schema version {version}, newer than this version of "
            f"journal-replay understands ({SCHEMA_VERSION}). Fix: upgrade journal-replay."
        )
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and tables and not {"runs", "events"} <= tables:
        raise JournalUnavailable(
            f"{path} is an SQLite database but not a journal (it has tables "
            f"{sorted(tables)}). Fix: use a separate file for the journal."
        )
    if read_only:
        if not {"runs", "events"} <= tables:
            raise JournalUnavailable(
                f"no journal at {path}: the file holds no journal yet. Fix: pass the "
                "path of the journal your workflows write to."
            )
        return "heads" in tables, False  # an old journal is read as it is (no chunks either)
    _switch_to_wal(conn)
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the store's thread does it (_sqlite_checkpoint)
    conn.execute(f"PRAGMA journal_size_limit = {_checkpoint.WAL_SIZE_LIMIT}")
    upgraded = False
    if version < SCHEMA_VERSION:
        started = time.monotonic()
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
                    migration = _MIGRATIONS[step]
                    for statement in migration(conn) if callable(migration) else migration:
                        if statement.strip():
                            conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            upgraded = 0 < version < 4
            if upgraded and head_chain is not None:
                _heads.adopt_runs(conn, head_chain)
                upgraded = False
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            rollback(conn)
            if version == 0 or not _disk_full(exc):
                raise
            raise JournalUnavailable(
                f"the disk holding {path} is full ({exc}): upgrading the journal from schema "
                f"{version} to {SCHEMA_VERSION} rebuilds its events table, which needs room "
                "for a second copy of its events; the journal is left as it was. Fix: free "
                "that much space on that disk (about the file's size), then open it again "
                "(Journal(..., read_only=True) reads it meanwhile)."
            ) from exc
        except BaseException:
            rollback(conn)
            raise
        if 0 < version < SCHEMA_VERSION:  # an older journal: a rebuild can take seconds
            log.info(
                "journal.schema_upgraded",
                path=str(path),
                from_version=version,
                to_version=SCHEMA_VERSION,
                seconds=round(time.monotonic() - started, 3),
            )
    return True, upgraded


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


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends some itself (a full disk), and a
    second error from ROLLBACK must never hide the first."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def named_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store method whose SQLite errors say what happened and how to fix it: a full disk,
    a read-only file, a lock held past the busy timeout (the store has a `path`)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise _cause(self.path, exc) from exc

    return wrapper


def lenient_text(method: Callable[..., Any]) -> Callable[..., Any]:
    """A reading store method that reads text which is not UTF-8 (bytes cast to TEXT by hand)
    with U+FFFD where it does not decode, instead of failing: the edit then shows where it
    was made (a hash no longer matches), and show and export read to the end."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
        conn = self._conn
        conn.text_factory = _replacing
        try:
            return method(self, *args, **kwargs)
        finally:
            conn.text_factory = str

    return wrapper


def _replacing(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _cause(path: Path, exc: sqlite3.OperationalError) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if _disk_full(exc):
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
