"""PostgresStore: the journal in PostgreSQL, for runs that span processes and machines.

The same promises as the SQLite store, kept by the database: events are append-only (triggers
refuse UPDATE and DELETE, except retention's own, marked by a transaction-local setting), and an
append is fenced by the owner's token under a row lock on the run, so a writer whose lease was
taken over cannot interleave with the new owner. Connections come from a psycopg pool.
"""

from __future__ import annotations

import functools
from base64 import b64encode
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from .._chain import Chain
from .._errors import JournalUnavailable, LeaseLost, RunNotFailed, RunNotFound
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
from ._chunked import Loaded, Pending, expand_events, expand_rows, stored_fields
from ._damage import salvage_event, salvage_run
from ._ownership import check_claim
from ._rows import RUN_COLUMNS, RUN_COLUMNS_BEFORE_VERSIONS, list_runs_query, run_from_row

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"The PostgreSQL store needs psycopg 3 and psycopg-pool ({exc}). Fix: pip install "
        "'journal-replay[postgres]'."
    ) from exc

from . import _postgres_heads as _heads
from ._postgres_schema import (
    NAME,
    NoJournal,
    has_versions,
    masked,
    open_schema,
)
from ._postgres_schema import named_errors as _named
from ._postgres_sessions import Pipelined, configure, pipelined, statement, transaction


def _rows_json(
    batches: Sequence[tuple[str, str, Sequence[Event]]], pendings: Sequence[Pending]
) -> bytes:
    """The group's rows as the one JSON document `_append_many_sql` takes (a long call record
    as a template, its chunks added to the run's `Pending`). orjson writes it in C, where
    psycopg dumped 14 arrays an element at a time in Python (a sixth of a busy worker's time);
    bytes go as base64, moments as RFC 3339 with microseconds, read back exactly."""
    rows = []
    for (run_id, token, events), pending in zip(batches, pendings, strict=True):
        for e in events:
            payload, args = stored_fields(e, pending)
            rows.append({
                "r": run_id, "t": token, "s": e.seq, "k": e.key, "d": e.kind.value,
                "n": e.name, "f": e.fingerprint, "u": e.status.value, "a": e.attempt,
                "p": None if payload is None else b64encode(payload).decode(),
                "c": e.created_at, "g": None if args is None else b64encode(args).decode(),
                "h": e.prev_hash, "x": e.hash,
            })  # fmt: skip
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC)


_EVENT_VALUES = (
    "(%s::integer, %s::text, %s::text, %s::text, %s::text, %s::text, %s::integer, %s::bytea,"
    " %s::timestamptz, %s::bytea, %s::text, %s::text)"
)
"""One event row's values in `_insert_events`' statement, typed (a NULL has no type)."""
_ROWS_PER_STATEMENT = 4000
"""12 parameters a row: PostgreSQL takes at most 65,535 in one statement."""


def _stored(events: Sequence[Event]) -> tuple[list[tuple[bytes | None, bytes | None]], Pending]:
    """Each event's `(payload, args)` as stored, and the chunks the long ones were split into."""
    pending = Pending()
    return [stored_fields(e, pending) for e in events], pending


def _sound(seq: Any, attempt: Any, payload: Any, created: Any, args: Any) -> bool:
    """Whether an event row holds the types the journal writes (a column's type can be
    changed with ALTER TABLE: text payloads, naive timestamps, numeric attempts)."""
    return (
        type(seq) is int
        and type(attempt) is int
        and (payload is None or type(payload) is bytes)
        and (args is None or type(args) is bytes)
        and (created is None or (type(created) is datetime and created.tzinfo is not None))
    )


def _unsound() -> bool:
    raise TypeError("an event row holds a type the journal never writes")


def _aware(value: Any) -> datetime:
    if type(value) is not datetime or value.tzinfo is None:
        raise TypeError(f"{value!r} is not a time with a zone")
    return value


def _blob_of(value: Any) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class PostgresStore:
    """A journal in a PostgreSQL schema (default `journal`). Safe across processes and hosts.

    >>> store = PostgresStore("postgresql://user@db.internal/app", schema="agents")
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "journal",
        min_size: int = 1,
        max_size: int = 8,
        read_only: bool = False,
        head_chain: Chain | None = None,
    ) -> None:
        if not NAME.match(schema):
            raise ValueError(
                f"schema must be a plain PostgreSQL name (lower case, digits, _), not {schema!r}"
            )
        self.url = url
        self.schema = schema
        self.read_only = read_only
        """Opened to read: no schema or table is created, nothing is written."""
        self.head_chain: Chain | None = head_chain
        """The MAC of the journal's head entries; None writes none (set by `Journal`)."""
        try:
            # One plain connection first: an unreachable server fails now, with its reason.
            with psycopg.connect(url, connect_timeout=10) as conn:
                self._heads_table, self._upgraded = open_schema(
                    conn, schema, read_only=read_only, head_chain=head_chain
                )
                self._run_columns = (
                    RUN_COLUMNS if has_versions(conn, schema) else RUN_COLUMNS_BEFORE_VERSIONS
                )
            self._pool = ConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                open=True,
                timeout=30,
                configure=functools.partial(configure, read_only=read_only),
            )
        except NoJournal as exc:
            raise JournalUnavailable(masked(f"{exc} (at {url})", url)) from None
        except psycopg.Error as exc:
            raise JournalUnavailable(
                masked(
                    f"cannot use PostgreSQL at {url} as a journal: {str(exc).strip()}. Fix: "
                    "check the URL, that the server runs and that the user may create tables.",
                    url,
                )
            ) from None  # psycopg's own error may quote the connection string

    @classmethod
    def from_url(
        cls, url: str, *, read_only: bool = False, head_chain: Chain | None = None
    ) -> PostgresStore:
        """`postgresql://user@host/db?schema=agents`: the `schema` parameter (default
        `journal`) is ours; everything else goes to libpq as written."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((value for name, value in query if name == "schema"), "journal")
        # The other parameters as written (re-encoding would turn `%20` into `+`, which
        # libpq does not read as a space in `options=-c%20...`).
        rest = "&".join(p for p in parts.query.split("&") if p and p.split("=")[0] != "schema")
        return cls(
            urlunsplit(parts._replace(query=rest)),
            schema=schema,
            read_only=read_only,
            head_chain=head_chain,
        )

    def _transaction(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        return transaction(self._pool)

    def _pipelined(self) -> AbstractContextManager[Pipelined]:
        return pipelined(self._pool)

    def _statement(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        return statement(self._pool)

    # -- runs ---------------------------------------------------------------------------------

    @staticmethod
    def _run_from_row(row: Sequence[Any]) -> Run:
        return salvage_run(row, _aware, lambda: run_from_row(row, _aware, _bytes))

    def _select_run(
        self,
        cur: psycopg.Cursor[Any],
        run_id: str,
        lock: str = "",
        sync: Callable[[], None] | None = None,
    ) -> Run | None:
        """The run, read on `cur`; in a pipeline, its `sync` sends the read before the wait."""
        cur.execute(
            f"SELECT {self._run_columns} FROM {self.schema}.runs WHERE run_id = %s{lock}",
            (run_id,),
        )
        if sync is not None:
            sync()
        row = cur.fetchone()
        return None if row is None else self._run_from_row(row)

    @_named
    def create_run(self, run: Run) -> Run:
        with self._pipelined() as (cur, head, sync):
            cur.execute(
                f"INSERT INTO {self.schema}.runs ({RUN_COLUMNS}, owner_token) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (run_id) DO NOTHING RETURNING {self._run_columns}",
                (
                    run.run_id,
                    run.workflow,
                    run.inputs,
                    run.inputs_fingerprint,
                    run.status.value,
                    run.result,
                    run.error,
                    None if run.owner is None else run.owner.model_dump_json(),
                    run.parent_run_id,
                    run.fork_seq,
                    run.resumes,
                    run.created_at,
                    run.updated_at,
                    run.finished_at,
                    run.chain,
                    run.seal,
                    run.wake_at,
                    run.waiting_for,
                    run.version,
                    None if run.owner is None else run.owner.token,
                ),
            )
            if self.head_chain is not None:  # sent with the insert (a run there already:
                _heads.read_for_head(head, self.schema, run.run_id)  # read, nothing written)
            sync()
            inserted = cur.fetchone()
            if inserted is None:  # there already: the stored run (each wait after a sync)
                stored = self._select_run(cur, run.run_id, sync=sync)
                assert stored is not None
                return stored
            if self.head_chain is not None:
                _heads.insert_head(head, self.schema, self.head_chain, run.run_id, "created")
        return self._run_from_row(inserted)  # the entry and COMMIT went in the second trip

    @_named
    def get_run(self, run_id: str) -> Run | None:
        with self._statement() as cur:
            return self._select_run(cur, run_id)

    @_named
    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        with self._statement() as cur:
            cur.execute(
                f"SELECT {self._run_columns} FROM {self.schema}.runs WHERE run_id = ANY(%s)",
                (list(dict.fromkeys(run_ids)),),
            )
            rows = cur.fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        sql, params = list_runs_query(
            f"{self.schema}.runs", "%s", status, workflow, limit, self._run_columns
        )
        with self._statement() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    def claim(self, run_id: str, owner: Owner, *, resuming: bool) -> Run:
        claim_sql = (
            f"UPDATE {self.schema}.runs SET owner = %s, owner_token = %s,"
            " resumes = resumes + %s, updated_at = %s,"
            " wake_at = CASE status WHEN 'waiting' THEN NULL ELSE wake_at END,"
            " waiting_for = CASE status WHEN 'waiting' THEN NULL ELSE waiting_for END,"
            " status = CASE status WHEN 'waiting' THEN 'running' ELSE status END"
            " WHERE run_id = %s"
        )
        now = datetime.now(UTC)
        params = (owner.model_dump_json(), owner.token, int(resuming), now, run_id)
        with self._statement() as cur:
            # An unowned run (what workers take) in one statement; a claimer that waited for
            # another's lock sees its owner and falls through to the rule below.
            cur.execute(
                f"{claim_sql} AND owner_token IS NULL RETURNING {self._run_columns}", params
            )
            claimed = cur.fetchone()
        if claimed is None:  # owned (or gone): the rule decides, under the row's lock
            with self._transaction() as cur:
                run = self._select_run(cur, run_id, " FOR UPDATE")
                if run is None:
                    raise RunNotFound(run_id)
                check_claim(run_id, run.owner, owner, datetime.now(UTC))
                cur.execute(f"{claim_sql} RETURNING {self._run_columns}", params)
                claimed = cur.fetchone()
        assert claimed is not None
        return self._run_from_row(claimed)

    @_named
    def heartbeat(self, run_id: str, token: str, lease_expires_at: datetime) -> bool:
        with self._transaction() as cur:
            cur.execute(
                f"SELECT owner FROM {self.schema}.runs WHERE run_id = %s AND owner_token = %s"
                " FOR UPDATE",
                (run_id, token),
            )
            row = cur.fetchone()
            if row is None:
                return False
            owner = Owner.model_validate_json(row[0]).model_copy(
                update={"lease_expires_at": lease_expires_at}
            )
            cur.execute(
                f"UPDATE {self.schema}.runs SET owner = %s WHERE run_id = %s AND owner_token = %s",
                (owner.model_dump_json(), run_id, token),
            )
            return cur.rowcount == 1

    @_named
    def release(self, run_id: str, token: str, *, head: Reason | None = None) -> None:
        with self._transaction() as cur:
            cur.execute(
                f"UPDATE {self.schema}.runs SET owner = NULL, owner_token = NULL"
                " WHERE run_id = %s AND owner_token = %s",
                (run_id, token),
            )
            if cur.rowcount and head is not None:
                self._append_head(cur, run_id, head)

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
        now = datetime.now(UTC)
        with self._pipelined() as (cur, head, sync):
            cur.execute(
                f"UPDATE {self.schema}.runs SET status = %s, result = %s, error = %s, seal = %s,"
                " owner = NULL, owner_token = NULL, updated_at = %s, finished_at = %s"
                f" WHERE run_id = %s AND owner_token = %s RETURNING {self._run_columns}",
                (status.value, result, error, seal, now, now, run_id, token),
            )
            if self.head_chain is not None:
                _heads.read_for_head(head, self.schema, run_id)
            sync()  # BEGIN, the update, the head's lock and read: one trip
            finished = cur.fetchone()
            if finished is None:
                raise LeaseLost(run_id)  # the lock is let go with the rollback
            if self.head_chain is not None:
                _heads.insert_head(head, self.schema, self.head_chain, run_id, "finished")
        return self._run_from_row(finished)  # the entry and COMMIT went in the second trip

    @_named
    def reopen(self, run_id: str, token: str, events: Sequence[Event]) -> Run:
        with self._transaction() as cur:
            run = self._select_run(cur, run_id, " FOR UPDATE")
            if run is None:
                raise RunNotFound(run_id)
            if run.owner is None or run.owner.token != token:
                raise LeaseLost(run_id)
            if run.status is not RunStatus.FAILED:
                raise RunNotFailed(run_id, run.status.value)
            self._insert_events(cur, run_id, token, events, *_stored(events))
            cur.execute(
                f"UPDATE {self.schema}.runs SET status = 'running', result = NULL, error = NULL,"
                " seal = NULL, finished_at = NULL, updated_at = %s WHERE run_id = %s",
                (datetime.now(UTC), run_id),
            )
            self._append_head(cur, run_id, "reopened")
            reopened = self._select_run(cur, run_id)
        assert reopened is not None
        return reopened

    # -- events -------------------------------------------------------------------------------

    @_named
    def append(self, run_id: str, token: str, events: Sequence[Event]) -> None:
        stored, pending = _stored(events)
        # One statement unless there are more rows than one takes, or chunks to write with
        # them: those need the rows and the chunks in one transaction.
        one = len(events) <= _ROWS_PER_STATEMENT and not pending
        with self._statement() if one else self._transaction() as cur:
            self._insert_events(cur, run_id, token, events, stored, pending)

    @_named
    def append_many(self, batches: Sequence[tuple[str, str, Sequence[Event]]]) -> list[str]:
        if not any(events for _, _, events in batches):
            return []
        pendings = [Pending() for _ in batches]
        rows = _rows_json(batches, pendings)
        # One statement for every run of the group, the same text whatever its size (so the
        # server prepares it once): a run's rows go in only while its token owns it, under a
        # share lock on its run row, as in `append`.
        # With chunks to write, the rows and their chunks go in one transaction.
        with self._transaction() if any(pendings) else self._statement() as cur:
            cur.execute(
                self._append_many_sql, (rows.decode(), [run_id for run_id, _, _ in batches])
            )
            accepted = {row[0] for row in cur.fetchall()}
            chunked = [
                (run_id, pending)
                for (run_id, _, _), pending in zip(batches, pendings, strict=True)
                if pending and run_id in accepted
            ]
            if chunked:
                self._write_chunks(cur, chunked)
        return [run_id for run_id, _, _ in batches if run_id not in accepted]

    def _write_chunks(self, cur: psycopg.Cursor[Any], chunked: list[tuple[str, Pending]]) -> None:
        """The runs' chunks, in the transaction that writes the events naming them, after
        them (the order retention's sweep locks in: it never waits on a writer that waits).
        Every writer inserts chunks in the order of their names, all runs of a group at once:
        two writers inserting the same new chunks in their records' orders each held one the
        other needed, and PostgreSQL ended one of them (deadlock detected)."""
        s = self.schema
        blobs: dict[str, bytes] = {}
        nodes: dict[str, tuple[str | None, str]] = {}
        for _, pending in chunked:
            blobs.update(pending.blobs)
            nodes.update(pending.nodes)
        names = sorted(blobs)
        cur.execute(
            f"INSERT INTO {s}.chunk_blobs SELECT * FROM unnest(%s::text[], %s::bytea[])"
            " ORDER BY 1 ON CONFLICT DO NOTHING",
            (names, [blobs[name] for name in names]),
        )
        names = sorted(nodes)
        cur.execute(
            f"INSERT INTO {s}.chunk_nodes SELECT * FROM unnest(%s::text[], %s::text[],"
            " %s::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
            (names, [nodes[name][0] for name in names], [nodes[name][1] for name in names]),
        )
        refs = sorted((run_id, name) for run_id, pending in chunked for name in pending.refs)
        cur.execute(
            f"INSERT INTO {s}.chunk_refs SELECT * FROM unnest(%s::text[], %s::text[])"
            " ORDER BY 1, 2 ON CONFLICT DO NOTHING",
            ([run_id for run_id, _ in refs], [name for _, name in refs]),
        )

    def _load_chunks(self, cur: psycopg.Cursor[Any], names: list[str]) -> Loaded:
        """Every node reachable from `names`, and the blobs they and `names` refer to."""
        s = self.schema
        cur.execute(
            "WITH RECURSIVE walk(name) AS (SELECT unnest(%s::text[]) UNION"
            f" SELECT n.prev FROM {s}.chunk_nodes n JOIN walk w ON n.name = w.name"
            " WHERE n.prev IS NOT NULL)"
            f" SELECT n.name, n.prev, n.item FROM {s}.chunk_nodes n"
            " JOIN walk w ON n.name = w.name",
            (names,),
        )
        nodes = {name: (prev, item) for name, prev, item in cur.fetchall()}
        wanted = sorted({item for _, item in nodes.values()}.union(names))
        cur.execute(
            f"SELECT name, body FROM {s}.chunk_blobs WHERE name = ANY(%s::text[])",
            (wanted,),
        )
        return nodes, {name: bytes(body) for name, body in cur.fetchall()}

    @functools.cached_property
    def _append_many_sql(self) -> str:
        return (
            "WITH v AS (SELECT * FROM json_to_recordset(%s::json) AS v (r text, t text,"
            " s integer, k text, d text, n text, f text, u text, a integer, p text,"
            " c timestamptz, g text, h text, x text)),"
            f" fence AS (SELECT r.run_id, r.owner_token FROM {self.schema}.runs r"
            " JOIN (SELECT DISTINCT v.r, v.t FROM v) t"
            " ON r.run_id = t.r AND r.owner_token = t.t"
            " WHERE r.run_id = ANY(%s::text[]) FOR SHARE OF r)"
            f" INSERT INTO {self.schema}.events (run_id, seq, key, kind, name, fingerprint,"
            " status, attempt, payload, created_at, args, prev_hash, hash)"
            " SELECT v.r, v.s, v.k, v.d, v.n, v.f, v.u, v.a, decode(v.p, 'base64'), v.c,"
            " decode(v.g, 'base64'), v.h, v.x"
            " FROM v JOIN fence ON fence.run_id = v.r AND fence.owner_token = v.t"
            " RETURNING run_id"
        )

    def _insert_events(
        self,
        cur: psycopg.Cursor[Any],
        run_id: str,
        token: str,
        events: Sequence[Event],
        stored: list[tuple[bytes | None, bytes | None]],
        pending: Pending,
    ) -> None:
        # The rows are inserted only while `token` owns the run, checked under a share lock on
        # the run row: a claim (FOR UPDATE) waits for this transaction, or this one sees the
        # new owner and inserts nothing. A statement per 4,000 rows: psycopg's executemany
        # pipeline ends in a way that leaves the server's idle-in-transaction timer off
        # (PostgreSQL 15), so a process paused before its commit held the lock for good.
        inserted = 0
        for first in range(0, len(events), _ROWS_PER_STATEMENT):
            chunk = events[first : first + _ROWS_PER_STATEMENT]
            fields = stored[first : first + _ROWS_PER_STATEMENT]
            cur.execute(
                f"WITH fence AS (SELECT 1 FROM {self.schema}.runs"
                " WHERE run_id = %s AND owner_token = %s FOR SHARE)"
                f" INSERT INTO {self.schema}.events (run_id, seq, key, kind, name, fingerprint,"
                " status, attempt, payload, created_at, args, prev_hash, hash)"
                " SELECT %s, v.* FROM fence, (VALUES " + ", ".join([_EVENT_VALUES] * len(chunk))
                + ") AS v",
                [run_id, token, run_id, *(value for e, (payload, args) in zip(
                    chunk, fields, strict=True) for value in (
                    e.seq, e.key, e.kind.value, e.name, e.fingerprint, e.status.value, e.attempt,
                    payload, e.created_at, args, e.prev_hash, e.hash,
                ))],
            )  # fmt: skip
            inserted += cur.rowcount
        if inserted != len(events):
            raise LeaseLost(run_id)  # the transaction rolls back: nothing half-written
        if pending:
            self._write_chunks(cur, [(run_id, pending)])

    @_named
    def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        with self._statement() as cur:
            cur.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, created_at,"
                f" args, prev_hash, hash FROM {self.schema}.events WHERE run_id = %s AND seq > %s"
                " ORDER BY seq LIMIT %s",
                (run_id, after_seq, limit),
            )
            rows = cur.fetchall()
            try:
                events = self._events(run_id, rows)
            except (KeyError, TypeError):  # a value or a column's type edited by hand
                events = [salvage_event(run_id, row, _aware) for row in rows]
            return expand_events(events, functools.partial(self._load_chunks, cur))

    @staticmethod
    def _events(run_id: str, rows: list[Any]) -> list[Event]:
        kinds, statuses = KIND_BY_VALUE, STATUS_BY_VALUE
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
                _bytes(payload),
                created,
                _bytes(args),
                prev_hash,
                digest,
            )
            for (seq, key, kind, name, fp, status, attempt, payload, created, args, prev_hash,
                 digest) in rows
            if _sound(seq, attempt, payload, created, args) or _unsound()
        ]  # fmt: skip

    @_named
    def read_rows(self, run_id: str) -> list[EventRow]:
        with self._statement() as cur:
            cur.execute(
                "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, args"
                f" FROM {self.schema}.events WHERE run_id = %s AND seq > 0 ORDER BY seq",
                (run_id,),
            )
            rows = cur.fetchall()
            try:
                read = [
                    (seq, key, kind, name, fp, status, attempt, _bytes(payload), _bytes(args))
                    for seq, key, kind, name, fp, status, attempt, payload, args in rows
                    if _sound(seq, attempt, payload, None, args) or _unsound()
                ]
            except TypeError:  # a column's type edited by hand: replay refuses it as changed
                read = [
                    (seq, key, kind, name, fp, status, attempt, _blob_of(payload), _blob_of(args))
                    for seq, key, kind, name, fp, status, attempt, payload, args in rows
                ]
            return expand_rows(run_id, read, (7, 8), functools.partial(self._load_chunks, cur))

    @_named
    def suspend(
        self, run_id: str, token: str, *, wake_at: datetime | None, waiting_for: str | None
    ) -> Run:
        with self._transaction() as cur:
            cur.execute(
                f"UPDATE {self.schema}.runs SET status = 'waiting', owner = NULL,"
                " owner_token = NULL, wake_at = %s, waiting_for = %s, updated_at = now()"
                " WHERE run_id = %s AND owner_token = %s",
                (wake_at, waiting_for, run_id, token),
            )
            if cur.rowcount != 1:
                raise LeaseLost(run_id)
            self._append_head(cur, run_id, "suspended")
            suspended = self._select_run(cur, run_id)
        assert suspended is not None
        return suspended

    @_named
    def send_signal(self, run_id: str, name: str, payload: bytes) -> int:
        s = self.schema
        with self._transaction() as cur:
            if self._select_run(cur, run_id, " FOR UPDATE") is None:
                raise RunNotFound(run_id)  # the row lock also orders concurrent senders
            cur.execute(
                f"INSERT INTO {s}.signals SELECT %s, %s, coalesce(max(number), 0) + 1, %s, now()"
                f" FROM {s}.signals WHERE run_id = %s AND name = %s RETURNING number",
                (run_id, name, payload, run_id, name),
            )
            row = cur.fetchone()
            cur.execute(
                f"UPDATE {s}.runs SET wake_at = now() WHERE run_id = %s AND status = 'waiting'"
                " AND waiting_for = %s",
                (run_id, name),
            )
        assert row is not None
        return int(row[0])

    @_named
    def read_signal(self, run_id: str, name: str, number: int) -> bytes | None:
        with self._statement() as cur:
            cur.execute(
                f"SELECT payload FROM {self.schema}.signals WHERE run_id = %s AND name = %s"
                " AND number = %s",
                (run_id, name, number),
            )
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    @_named
    def list_due(self, now: datetime) -> list[Run]:
        with self._statement() as cur:
            cur.execute(
                f"SELECT {self._run_columns} FROM {self.schema}.runs WHERE status = 'waiting'"
                " AND wake_at <= %s ORDER BY wake_at",
                (now,),
            )
            rows = cur.fetchall()
        return [self._run_from_row(row) for row in rows]

    @_named
    def sample_resumable(self, now: datetime, host: str, limit: int) -> list[Run]:
        # A record without a lease (JSON of another shape) reads as ownerless, as get_run
        # reads it: true here, not NULL, which would leave the run out of both branches.
        # Only a lease written as the journal writes it (RFC 3339 with its offset) is read as a
        # moment: PostgreSQL reads more (tomorrow, infinity, words) than the model does.
        # Nor is one the model cannot read at all (a field missing, of another type).
        lease = "(owner::json->>'lease_expires_at')"
        moment = "'^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d(:\\d\\d(\\.\\d+)?)?(Z|[+-]\\d\\d:\\d\\d)$'"
        lease_over = (
            "CASE WHEN json_typeof(owner::json->'token') = 'string'"
            " AND json_typeof(owner::json->'host') = 'string'"
            " AND json_typeof(owner::json->'pid') = 'number'"
            f" AND owner::json->>'since' ~ {moment} AND {lease} ~ {moment}"
            f" THEN coalesce({lease}::timestamptz <= %s, true) ELSE true END"
        )
        runs = f"{self.schema}.runs"
        sql = (
            f"(SELECT {self._run_columns} FROM {runs} WHERE status = 'running'"
            f" AND (owner_token IS NULL OR owner IS NULL OR {lease_over})"
            " ORDER BY random() LIMIT %s)"
            f" UNION ALL (SELECT {self._run_columns} FROM {runs} WHERE status = 'running'"
            f" AND owner_token IS NOT NULL AND owner::json->>'host' = %s AND NOT {lease_over})"
        )
        try:
            with self._statement() as cur:
                cur.execute(sql, (now, int(limit), host, now))
                rows = cur.fetchall()
        except psycopg.errors.DataError:
            # An owner's record that is not JSON, or whose lease is not a moment (edited by
            # hand): every running run, as a store without this method would be read.
            every: list[Run] = self.list_runs(status=RunStatus.RUNNING)
            return every
        return [self._run_from_row(row) for row in rows]

    @_named
    def count_events(self, run_id: str) -> int:
        with self._statement() as cur:
            cur.execute(f"SELECT count(*) FROM {self.schema}.events WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
        assert row is not None
        return int(row[0])

    @_named
    def last_hash(self, run_id: str) -> str | None:
        with self._statement() as cur:
            cur.execute(
                f"SELECT hash FROM {self.schema}.events WHERE run_id = %s ORDER BY seq DESC"
                " LIMIT 1",
                (run_id,),
            )
            row = cur.fetchone()
        return None if row is None else row[0]

    @_named
    def delete_runs(self, run_ids: Sequence[str]) -> int:
        removed = 0
        s = self.schema
        with self._transaction() as cur:
            cur.execute("SELECT set_config('journal.retention', 'on', true)")
            # Every run's row is locked first, in one order, and only then the head's lock:
            # taken between rows, the head's lock was held while waiting for the next row,
            # held by a run's end that waited for the head's lock (a deadlock PostgreSQL
            # ended, failing the end as a lost connection).
            cur.execute(
                f"SELECT run_id, workflow, status, seal, owner_token FROM {s}.runs"
                " WHERE run_id = ANY(%s::text[]) ORDER BY run_id FOR UPDATE",
                (list(run_ids),),
            )
            locked = {each[0]: each[1:] for each in cur.fetchall()}
            for run_id in run_ids:
                row = locked.pop(run_id, None)
                if row is None or row[3] is not None:
                    continue  # gone already, or owned right now: never remove a live run
                self._append_head(cur, run_id, "removed")
                cur.execute(f"DELETE FROM {s}.events WHERE run_id = %s", (run_id,))
                events = cur.rowcount
                cur.execute(f"DELETE FROM {s}.runs WHERE run_id = %s", (run_id,))
                cur.execute(
                    f"INSERT INTO {s}.retention_log VALUES (now(), %s, %s, %s, %s, %s)",
                    (run_id, row[0], row[1], events, row[2]),
                )
                cur.execute(f"DELETE FROM {s}.chunk_refs WHERE run_id = %s", (run_id,))
                # Its signals too: a new run of its id must not be handed them.
                cur.execute(f"DELETE FROM {s}.signals WHERE run_id = %s", (run_id,))
                removed += 1
            if removed:
                # Chunks no remaining run names. The lock waits for writers still adding
                # chunks (and the refs naming them), and holds new ones back until the commit.
                # Its tables are taken in the order writers insert into them (`_write_chunks`):
                # a writer between its blobs and its nodes would otherwise wait on the sweep
                # while the sweep waits on it.
                cur.execute(
                    f"LOCK TABLE {s}.chunk_blobs, {s}.chunk_nodes IN SHARE ROW EXCLUSIVE MODE"
                )
                cur.execute(
                    f"DELETE FROM {s}.chunk_nodes WHERE name NOT IN (WITH RECURSIVE live(name)"
                    f" AS (SELECT name FROM {s}.chunk_refs UNION SELECT n.prev FROM"
                    f" {s}.chunk_nodes n JOIN live l ON n.name = l.name WHERE n.prev IS NOT"
                    " NULL) SELECT name FROM live)"
                )
                cur.execute(
                    f"DELETE FROM {s}.chunk_blobs WHERE name NOT IN (SELECT name FROM"
                    f" {s}.chunk_refs UNION SELECT item FROM {s}.chunk_nodes)"
                )
        return removed

    # -- the journal's head -------------------------------------------------------------------

    def _append_head(self, cur: psycopg.Cursor[Any], run_id: str, reason: Reason) -> None:
        """Append the run's state now to the journal's head (inside the caller's transaction)."""
        if self.head_chain is not None:
            _heads.append_head(cur, self.schema, self.head_chain, run_id, reason)

    @_named
    def adopt_runs(self) -> int:
        """Once, after the upgrade that added the head: every run already in the journal gets
        an `adopted` entry, its state at that moment, written by the process that upgraded
        the schema and by no other (see `SQLiteStore.adopt_runs`). How many."""
        if self.head_chain is None or self.read_only or not self._upgraded:
            return 0
        with self._transaction() as cur:
            if not _heads.adoption_pending(cur, self.schema):
                self._upgraded = False
                return 0
        with self._transaction() as cur:
            adopted = _heads.adopt_runs(cur, self.schema, self.head_chain)
        self._upgraded = False  # only once it is done: a transaction ended by a stall runs again
        return adopted

    @_named
    def read_heads(self, *, after_n: int = 0, limit: int | None = None) -> list[HeadEntry]:
        if not self._heads_table:
            return []  # a schema from before the head, opened to read
        with self._transaction() as cur:
            return _heads.read_heads(cur, self.schema, after_n, limit)

    @property
    def has_head(self) -> bool:
        """Whether the journal keeps a head: False only for a journal from before the head,
        opened to read (a writer upgrades it and adopts its runs)."""
        return self._heads_table

    @_named
    def last_head(self) -> HeadEntry | None:
        if not self._heads_table:
            return None
        with self._transaction() as cur:
            return _heads.last_head(cur, self.schema)

    @_named
    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        with self._transaction() as cur:
            query = f"SELECT value FROM {self.schema}.meta WHERE name = %s"
            cur.execute(query, (f"secret:{name}",))
            row = cur.fetchone()
            if row is None and self.read_only:
                return make()  # nothing was ever redacted with it: nothing to match
            if row is None:  # read first: a journal opened to read is never written
                cur.execute(
                    f"INSERT INTO {self.schema}.meta VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                    (f"secret:{name}", make()),
                )
                cur.execute(query, (f"secret:{name}",))
                row = cur.fetchone()
        assert row is not None
        return bytes(row[0])

    def close(self) -> None:
        self._pool.close()
