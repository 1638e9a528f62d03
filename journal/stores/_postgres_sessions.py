"""How the PostgreSQL store talks to its server: the settings of each pooled session, and the
three shapes of a call. One statement is sent on its own (the sessions are in autocommit): one
round trip. Several are a transaction. A transaction whose statements need not wait for each
other's results goes in libpq's pipeline mode: a run's end and its head entry in two round
trips where one at a time took six."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ._postgres_schema import STALLED_TRANSACTION_MS

Pipelined = tuple[psycopg.Cursor[Any], psycopg.Cursor[Any], Callable[[], None]]
"""A pipelined transaction's two cursors and its `sync`."""

_IDLE = psycopg.pq.TransactionStatus.IDLE
_IDLE_TIMEOUT = "25P03"
"""SQLSTATE idle_in_transaction_session_timeout: the server ended a transaction left idle."""


def configure(conn: psycopg.Connection[Any], *, read_only: bool = False) -> None:
    """Every connection reads committed data, whatever the database's default: the head's
    next entry is read after the lock that orders appends, never from an older snapshot
    (REPEATABLE READ would have two writers number their entries alike).

    And the server ends a transaction its client left idle for STALLED_TRANSACTION_MS (unless
    the URL, role or database sets a limit of its own): a process paused inside one (a GC pause,
    a frozen VM, a debugger) would otherwise hold the run row's lock, and the journal's head
    lock, for as long as it stays paused, and no other process could take its runs over. Ours
    are a few statements sent back to back; the ended one was never committed and is run again
    (`named_errors`).

    A call of one statement is sent on its own (autocommit): in a transaction of its own, as
    a statement outside BEGIN always is, without the BEGIN and COMMIT round trips. Its
    isolation is the session's, set here to the same READ COMMITTED.

    A store opened to read has read-only sessions: the server refuses whatever it is asked
    to write (a run started on a journal opened to read), as SQLite refuses a file opened
    with mode=ro; `named_errors` says so."""
    conn.autocommit = True
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    mode = ", READ ONLY" if read_only else ""
    conn.execute(f"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED{mode}")
    row = conn.execute(
        "SELECT source FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"
    ).fetchone()
    if row is not None and row[0] == "default":  # nobody chose a limit, not even 0
        conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(STALLED_TRANSACTION_MS),),
        )


@contextmanager
def statement(pool: ConnectionPool) -> Iterator[psycopg.Cursor[Any]]:
    """For a call of one statement: each statement executed is its own transaction (the
    connections are in autocommit), one round trip where BEGIN and COMMIT made three."""
    with pool.connection() as conn, conn.cursor() as cursor:
        yield cursor


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Cursor[Any]]:
    """For a call of several statements, each waiting for the one before."""
    with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
        yield cursor


@contextmanager
def pipelined(pool: ConnectionPool) -> Iterator[Pipelined]:
    """A transaction whose statements are sent together until `sync()` (libpq's pipeline
    mode): a run's end and its head entry in two round trips where they took six. Its
    BEGIN and COMMIT are statements of the pipeline (psycopg's own transaction waits for
    each). Two cursors, each holding the results of what it executed, and `sync`, which
    sends what is queued and waits for its results.

    Results are waited for only after `sync()`, never by fetching first: a fetch sends a
    flush, not a sync, and a server that was never told the batch ended does not count
    its transaction idle. A process paused there (holding the run row's lock and the
    head's) was never ended by `idle_in_transaction_session_timeout`, and no other
    process could create or end a run of the journal until it woke up.

    The server's word that it ended the transaction so reaches libpq as a notice in
    pipeline mode, and the call fails as a lost connection: it is raised as the error it
    is, which `named_errors` answers by making the call again (nothing was committed)."""
    ended: list[psycopg.errors.Diagnostic] = []

    def note(diag: psycopg.errors.Diagnostic) -> None:
        if diag.sqlstate == _IDLE_TIMEOUT:
            ended.append(diag)

    with pool.connection() as conn:
        conn.add_notice_handler(note)
        try:
            with conn.pipeline() as pipeline, conn.cursor() as cursor, conn.cursor() as head:
                cursor.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                yield cursor, head, pipeline.sync
                cursor.execute("COMMIT")
        except BaseException as exc:
            if not conn.closed and conn.info.transaction_status != _IDLE:
                conn.rollback()  # nothing of it stays, the head's lock is let go
            if ended and isinstance(exc, psycopg.OperationalError):
                message = ended[0].message_primary or "idle-in-transaction timeout"
                raise psycopg.errors.IdleInTransactionSessionTimeout(message) from exc
            raise
        finally:
            conn.remove_notice_handler(note)
