"""A PostgreSQL journal schema: its tables (created, or upgraded from older versions, by one
process at a time), how a schema opened only to read is checked, and errors that never show the
password."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from .._chain import Chain
from .._errors import JournalUnavailable
from .._log import get_logger
from . import _postgres_heads as _heads

_log = get_logger("journal.postgres")

SCHEMA_VERSION = 4
STALLED_TRANSACTION_MS = 5000
"""How long the server lets a store's transaction wait for its client before ending it."""
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""A schema name we put into SQL: a plain PostgreSQL name."""

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT,
    inputs BYTEA,
    inputs_fingerprint TEXT,
    status TEXT NOT NULL,
    result BYTEA,
    error BYTEA,
    owner TEXT,
    owner_token TEXT,
    parent_run_id TEXT,
    fork_seq INTEGER,
    resumes INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    chain TEXT,
    seal TEXT,
    wake_at TIMESTAMPTZ,
    waiting_for TEXT
);
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS version TEXT;
CREATE TABLE IF NOT EXISTS {s}.signals (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    payload BYTEA NOT NULL,
    sent_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, name, number)
);
CREATE INDEX IF NOT EXISTS runs_by_created ON {s}.runs (created_at);
CREATE TABLE IF NOT EXISTS {s}.events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    payload BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    args BYTEA,
    prev_hash TEXT,
    hash TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS {s}.retention_log (
    removed_at TIMESTAMPTZ NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT,
    status TEXT NOT NULL,
    events INTEGER NOT NULL,
    seal TEXT
);
CREATE OR REPLACE FUNCTION {s}.events_are_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('journal.retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'journal events are append-only (only journal gc removes runs)';
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS events_are_append_only ON {s}.events;
CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.events_are_append_only();
CREATE TABLE IF NOT EXISTS {s}.heads (
    n BIGINT PRIMARY KEY,
    run_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    events INTEGER NOT NULL,
    last_hash TEXT,
    seal TEXT,
    run_chain TEXT,
    at TIMESTAMPTZ NOT NULL,
    scheme TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.chunk_blobs (name TEXT PRIMARY KEY, body BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.chunk_nodes (name TEXT PRIMARY KEY, prev TEXT, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.chunk_refs (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
DROP TRIGGER IF EXISTS chunk_blobs_are_append_only ON {s}.chunk_blobs;
CREATE TRIGGER chunk_blobs_are_append_only BEFORE UPDATE OR DELETE ON {s}.chunk_blobs
    FOR EACH ROW EXECUTE FUNCTION {s}.events_are_append_only();
DROP TRIGGER IF EXISTS chunk_nodes_are_append_only ON {s}.chunk_nodes;
CREATE TRIGGER chunk_nodes_are_append_only BEFORE UPDATE OR DELETE ON {s}.chunk_nodes
    FOR EACH ROW EXECUTE FUNCTION {s}.events_are_append_only();
DROP TRIGGER IF EXISTS chunk_refs_are_append_only ON {s}.chunk_refs;
CREATE TRIGGER chunk_refs_are_append_only BEFORE UPDATE OR DELETE ON {s}.chunk_refs
    FOR EACH ROW EXECUTE FUNCTION {s}.events_are_append_only();
CREATE OR REPLACE FUNCTION {s}.heads_are_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the journal head is append-only';
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS heads_are_append_only ON {s}.heads;
CREATE TRIGGER heads_are_append_only BEFORE UPDATE OR DELETE ON {s}.heads
    FOR EACH ROW EXECUTE FUNCTION {s}.heads_are_append_only();
"""


def open_schema(
    conn: psycopg.Connection[Any], s: str, *, read_only: bool, head_chain: Chain | None = None
) -> tuple[bool, bool]:
    """Make schema `s` a current journal (unless `read_only`, which only checks it holds one);
    whether it has the head table (an old schema read as it is has none), and whether this
    call upgraded a journal from before the head (its runs are adopted by this process only)."""
    if read_only:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (s,),
            )
            tables = {row[0] for row in cur.fetchall()}
        if not {"meta", "runs", "events"} <= tables:
            raise NoJournal(
                f"no journal in schema {s!r}. Fix: check ?schema= (the default is "
                "`journal`) against the schema your workflows write to."
            )
        return "heads" in tables, False
    upgraded = False
    with conn.transaction(), conn.cursor() as cur:
        # One migrator at a time, across processes and hosts.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"journal-schema:{s}",))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        cur.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'meta'",
            (s,),
        )
        version = 0
        if cur.fetchone() is not None:
            cur.execute(f"SELECT value FROM {s}.meta WHERE name = 'schema_version'")
            row = cur.fetchone()
            version = int(bytes(row[0]).decode()) if row else 0
        if version > SCHEMA_VERSION:
            raise JournalUnavailable(
                f"schema {s!r} has journal schema version {version}, newer than this version "
                f"of journal-replay understands ({SCHEMA_VERSION}). Fix: upgrade "
                "journal-replay."
            )
        if version < SCHEMA_VERSION:
            cur.execute(_DDL.format(s=s))
            if 0 < version < 2:  # runs from before the head: adopted when a Journal opens
                upgraded = True
                cur.execute(
                    f"INSERT INTO {s}.meta VALUES ('heads_pending', '\\x01')"
                    " ON CONFLICT (name) DO NOTHING"
                )
            cur.execute(
                f"INSERT INTO {s}.meta VALUES ('schema_version', %s)"
                " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION).encode(),),
            )
            if upgraded and head_chain is not None:  # in the upgrade's own transaction
                _heads.adopt_runs(cur, s, head_chain)
                upgraded = False
    return True, upgraded


def has_versions(conn: psycopg.Connection[Any], s: str) -> bool:
    """Whether schema `s`'s runs have the `version` column (one opened only to read may be
    older)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'runs' AND column_name = 'version'",
            (s,),
        )
        return cur.fetchone() is not None


def named_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store method whose lost or refused connections say so, with the fix (psycopg's own
    error, a server shut down or a backend terminated, would otherwise reach the user raw)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return method(self, *args, **kwargs)
            except psycopg.errors.IdleInTransactionSessionTimeout:
                # This process stalled inside the transaction and the server ended it before
                # the commit was sent: nothing of it was written. Once more, on a new
                # connection; a writer whose run was taken over meanwhile is fenced out there.
                _log.warning("stalled_transaction_ended", method=method.__name__)
                return method(self, *args, **kwargs)
        except psycopg.errors.IdleInTransactionSessionTimeout:
            raise JournalUnavailable(
                f"PostgreSQL at {masked(self.url, self.url)} ended this process's transaction "
                "twice because the process stalled inside it for longer than the server's "
                "idle_in_transaction_session_timeout; nothing of it was written. Fix: find what "
                "pauses the process (CPU starved, swapping, a debugger), then resume the run."
            ) from None
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            why = (
                "it was opened to read (read_only=True)"
                if self.read_only
                else "the server only reads (a standby, default_transaction_read_only)"
            )
            raise JournalUnavailable(
                masked(
                    f"the journal at {self.url} cannot be written: {why} "
                    f"({str(exc).strip()}); nothing was written. Fix: to start or change a "
                    "run, open the journal to write, on a server that takes writes.",
                    self.url,
                )
            ) from None
        except (psycopg.errors.QueryCanceled, psycopg.errors.TransactionRollback) as exc:
            # The server refused this one statement, on a connection that still works.
            if isinstance(exc, psycopg.errors.QueryCanceled):
                why = (
                    "the server cancelled a statement of the journal's (statement_timeout, "
                    "lock_timeout, or a cancel sent to it)"
                )
                fix = (
                    "let the journal's statements take longer (statement_timeout and "
                    "lock_timeout in the URL's options, the role or the database), or find "
                    "what held the journal's tables"
                )
            else:
                why = "the server ended the journal's transaction to undo a deadlock or conflict"
                fix = "resume the run; if it happens again, report it with the server's log"
            raise JournalUnavailable(
                masked(
                    f"PostgreSQL at {self.url}: {why} ({type(exc).__name__}: "
                    f"{str(exc).strip()}); nothing of that call was written. Fix: {fix}, then "
                    "resume the run: what was written before stays.",
                    self.url,
                )
            ) from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise JournalUnavailable(
                masked(
                    f"the connection to PostgreSQL at {self.url} was lost or refused "
                    f"({type(exc).__name__}: {str(exc).strip()}); nothing more was written. "
                    "Fix: check that the server runs and accepts connections, then resume "
                    "the run: what was written before stays.",
                    self.url,
                )
            ) from None
        except (psycopg.errors.ProgrammingError, psycopg.errors.DataError) as exc:
            # Only an altered schema makes our own statements fail this way (a column's type
            # changed, a column dropped): the journal was edited, say so plainly.
            raise JournalUnavailable(
                f"the journal's tables in schema {self.schema!r} are not the ones journal-replay "
                f"created ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}): they were "
                "altered by hand, so the journal cannot be read or trusted as it is. Fix: treat "
                "it as tampered; restore it from a backup or an export, and verify that."
            ) from None

    return wrapper


class NoJournal(Exception):
    """A schema opened to read holds no journal."""


def masked(text: str, url: str) -> str:
    """`text` with the password of `url` hidden, however it was given: `user:pass@`,
    `?password=`, `password=` in a keyword/value string, or quoted back by the server."""
    text = re.sub(r"(//[^:/@\s]+):[^@\s]*@", r"\1:***@", text)
    text = re.sub(r"((?:[?&\s]|^)password=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password and len(str(password)) >= 3:
        text = text.replace(str(password), "***")
    return text
