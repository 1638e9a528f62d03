"""What a journal's SQLite tables hold, said for people browsing them (Datasette's metadata).

One description per table and per column of the schema in `stores/_sqlite_file.py`; a test
fails when the schema gains a column this module does not describe. Plain data: nothing here
imports Datasette, so `journal datasette --metadata-only` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PLUGIN = "journal-replay"
"""The name under which the metadata marks a database as a journal for the rendering plugin."""


@dataclass(frozen=True)
class Table:
    """One table of the journal, as a reader sees it."""

    title: str
    description: str
    columns: dict[str, str]
    """Every column, in schema order, with what it holds."""
    facets: tuple[str, ...] = ()
    sort_desc: str | None = None
    label_column: str | None = None
    hidden: bool = False
    json_columns: frozenset[str] = field(default_factory=frozenset)
    """Columns holding JSON (orjson bytes in BLOBs, or JSON text): shown pretty-printed."""
    time_columns: frozenset[str] = field(default_factory=frozenset)
    """Columns holding moments as REAL Unix seconds (UTC): shown as dates."""


_TIMES = "Unix seconds, UTC (shown as a date; the JSON API gives the number)"
_TEMPLATES = (
    "A record of 4 KB or more is kept as a template naming chunks (chunk_blobs, chunk_nodes); "
    "pages show it put back together, the JSON API gives the template."
)

TABLES: dict[str, Table] = {
    "runs": Table(
        title="Runs",
        description="One row per run: one execution of a workflow, named by its run id.",
        columns={
            "run_id": "The run's id, given by the caller (its idempotency key).",
            "workflow": "Import path module:qualname of the workflow; empty for a "
            "journaled(...) block.",
            "inputs": 'JSON of the workflow\'s arguments: {"args": [...], "kwargs": {...}}.',
            "inputs_fingerprint": "Hash of the inputs: a run id reused with other inputs "
            "is refused.",
            "status": "running, waiting, completed, failed or cancelled. A running run "
            "with no live owner was interrupted and can resume.",
            "result": "JSON of the workflow's return value, once completed.",
            "error": "JSON of the workflow's exception, once failed (or the reason it was "
            "cancelled).",
            "owner": "JSON of the process holding the run's lease (host, pid, lease expiry); "
            "empty when nobody runs it.",
            "owner_token": "The owner's lease token: only that process may append to the run.",
            "parent_run_id": "For a fork or a child run: the run it came from.",
            "fork_seq": "For a fork: the parent's events before this seq were copied into "
            "this run.",
            "resumes": "How many times the run was resumed after its first sitting.",
            "created_at": f"When the run was started. {_TIMES}.",
            "updated_at": f"When the run's row last changed. {_TIMES}.",
            "finished_at": f"When the run completed, failed or was cancelled. {_TIMES}.",
            "chain": "How the run's events are hashed: sha256, or hmac-sha256:<key id>.",
            "seal": "Hash over the last event's hash and the outcome, written when the "
            "run finishes (journal verify checks it).",
            "wake_at": f"For a waiting run: when it is due again. {_TIMES}.",
            "waiting_for": "For a waiting run: the signal it waits for.",
            "version": "The version of the code that started the run (workers continue only "
            "versions they accept).",
        },
        facets=("status", "workflow"),
        sort_desc="created_at",
        label_column="run_id",
        json_columns=frozenset({"inputs", "result", "error", "owner"}),
        time_columns=frozenset({"created_at", "updated_at", "finished_at", "wake_at"}),
    ),
    "events": Table(
        title="Events",
        description="One row per journaled await, append-only: each step attempt has a "
        "started row (its arguments) and an outcome row (its result or error).",
        columns={
            "run_id": "The run the event belongs to.",
            "seq": "Position in the run's journal, from 1.",
            "key": "Step identity, independent of scheduling: task path and per-task "
            "counter, e.g. 0/2:1.",
            "kind": "step, llm, tool, clock, uuid, random, sleep, signal, timer, run, patch "
            "or fork.",
            "name": "The step's name: a function's qualname, METHOD host/path for an HTTP request.",
            "fingerprint": "Hash of the name and the canonical arguments: a replay that asks "
            "something else here is a divergence.",
            "status": "started, completed, retrying, failed or cancelled.",
            "attempt": "Which attempt of the step this row belongs to, from 1.",
            "payload": "JSON: the arguments and call site on a started row, the result on a "
            f"completed one, the error on a failed one. {_TEMPLATES}",
            "created_at": f"When the row was appended. {_TIMES}.",
            "args": "JSON: on an outcome row with no started row before it, the call's "
            f"arguments and site. {_TEMPLATES}",
            "prev_hash": "The previous event's hash (the run's genesis hash for seq 1).",
            "hash": "Hash over prev_hash and this event's fields (journal verify checks "
            "the chain).",
        },
        facets=("kind", "status", "run_id"),
        label_column="name",
        json_columns=frozenset({"payload", "args"}),
        time_columns=frozenset({"created_at"}),
    ),
    "signals": Table(
        title="Signals",
        description="Input sent to runs (journal signal, Journal.signal): a run waiting "
        "for the name takes the next number.",
        columns={
            "run_id": "The run the signal was sent to.",
            "name": "The signal's name, as the run asks for it with replay.signal(name).",
            "number": "Its number among that run's signals of that name, from 1.",
            "payload": "JSON of the value sent.",
            "sent_at": f"When it was sent. {_TIMES}.",
        },
        facets=("run_id", "name"),
        json_columns=frozenset({"payload"}),
        time_columns=frozenset({"sent_at"}),
    ),
    "heads": Table(
        title="Journal head",
        description="The journal-wide hash chain of run states: each entry binds one run's "
        "state at one moment, so a removed or rewritten run is found (journal head, "
        "journal verify).",
        columns={
            "n": "Entry number, from 1.",
            "run_id": "The run whose state the entry holds.",
            "reason": "Why it was written: created, suspended, finished, removed, adopted, "
            "forked or reopened.",
            "status": "The run's status then.",
            "events": "How many events the run had then.",
            "last_hash": "The hash of the run's last event then (its genesis hash before it "
            "had any).",
            "seal": "The run's seal then, if it had finished.",
            "run_chain": "The run's chain scheme: sha256 or hmac-sha256:<key id>.",
            "at": f"When the entry was written. {_TIMES}.",
            "scheme": "The scheme of this entry's own hash (the writing process's chain).",
            "prev": "The previous entry's hash.",
            "hash": "Hash over prev and this entry's fields.",
        },
        facets=("reason", "status"),
        time_columns=frozenset({"at"}),
    ),
    "retention_log": Table(
        title="Retention log",
        description="Runs removed by journal gc, one row each: what was removed and when.",
        columns={
            "removed_at": f"When the run was removed. {_TIMES}.",
            "run_id": "The removed run.",
            "workflow": "Its workflow.",
            "status": "Its status when removed.",
            "events": "How many events it had.",
            "seal": "Its seal, if it had finished.",
        },
        time_columns=frozenset({"removed_at"}),
    ),
    "meta": Table(
        title="Journal settings",
        description="The journal's own secrets and markers (the redaction salt). Values "
        "are not shown.",
        columns={
            "name": "The setting's name.",
            "value": "Its value (hidden: the redaction salt would let a reader test guesses "
            "of redacted secrets).",
        },
        hidden=True,
    ),
    "chunk_blobs": Table(
        title="Chunks: content",
        description="Content of long call records stored once (an LLM request's messages, "
        "tool definitions, a long system prompt), named by its hash.",
        columns={
            "name": "SHA-256 of the body, hex.",
            "body": "JSON text of one list item or one long string.",
        },
        json_columns=frozenset({"body"}),
    ),
    "chunk_nodes": Table(
        title="Chunks: lists",
        description="Long lists of call records, one node per item: a conversation one turn "
        "longer names the node its previous turn ended with and adds its new messages.",
        columns={
            "name": "Hash over prev and item (journal verify and every read check it).",
            "prev": "The node of the item before, none for the first item.",
            "item": "The item's content, a chunk_blobs name.",
        },
    ),
    "chunk_refs": Table(
        title="Chunks: runs naming them",
        description="Which runs name which chunks, so that journal gc removes the chunks "
        "only removed runs named.",
        columns={"run_id": "The run.", "name": "A chunk its records name."},
        hidden=True,
    ),
    "retention_permit": Table(
        title="Retention permit",
        description="Empty but while journal gc removes runs: events may be deleted only "
        "while it holds a row.",
        columns={"granted": "A row exists only inside gc's transaction."},
        hidden=True,
    ),
}

SECRET_COLUMNS = {("meta", "value")}
"""Columns a browser must not read."""

_RUN_DATES = (
    "datetime(created_at, 'unixepoch') AS started, datetime(finished_at, 'unixepoch') AS finished"
)

QUERIES: dict[str, dict[str, str]] = {
    "run_events": {
        "title": "A run's events, payloads as text",
        "description": "Every event of one run in order, with its JSON as text: what the "
        "run asked and what came back. Works with a plain `datasette` too.",
        "sql": "SELECT seq, key, kind, name, status, attempt,"
        " datetime(created_at, 'unixepoch') AS at, CAST(payload AS TEXT) AS payload"
        " FROM events WHERE run_id = :run_id ORDER BY seq",
    },
    "runs_readable": {
        "title": "Runs, dates and values as text",
        "description": "Every run, newest first, with its inputs, result and error as text.",
        "sql": f"SELECT run_id, workflow, status, {_RUN_DATES}, resumes,"
        " CAST(inputs AS TEXT) AS inputs, CAST(result AS TEXT) AS result,"
        " CAST(error AS TEXT) AS error FROM runs ORDER BY created_at DESC",
    },
    "llm_calls": {
        "title": "LLM calls",
        "description": "Completed model requests (kind llm) of every run, newest first.",
        "sql": "SELECT run_id, seq, key, name, attempt, datetime(created_at, 'unixepoch') AS at,"
        " CAST(payload AS TEXT) AS payload FROM events"
        " WHERE kind = 'llm' AND status = 'completed' ORDER BY created_at DESC",
    },
}


def json_column(table: str | None, column: str) -> bool:
    """Whether `column` holds JSON: in `table`, or (a query's column, `table` None) in any."""
    if table is not None:
        known = TABLES.get(table)
        return known is not None and column in known.json_columns
    return any(column in t.json_columns for t in TABLES.values())


def time_column(table: str | None, column: str) -> bool:
    """Whether `column` of `table` holds REAL Unix seconds."""
    known = TABLES.get(table or "")
    return known is not None and column in known.time_columns


def datasette_metadata(database: str, *, title: str | None = None) -> dict[str, Any]:
    """Datasette metadata (`-m`) describing the journal served under the name `database`
    (Datasette names a file's database after its stem: `runs.db` is `runs`)."""
    tables: dict[str, Any] = {}
    for name, table in TABLES.items():
        entry: dict[str, Any] = {
            "title": table.title,
            "description": table.description,
            "columns": dict(table.columns),
        }
        if table.facets:
            entry["facets"] = list(table.facets)
        if table.sort_desc:
            entry["sort_desc"] = table.sort_desc
        if table.label_column:
            entry["label_column"] = table.label_column
        if table.hidden:
            entry["hidden"] = True
        tables[name] = entry
    return {
        "title": title or f"journal-replay journal: {database}",
        "description": "Runs and events of journal-replay workflows, opened read-only.",
        "databases": {
            database: {
                "description": "A journal-replay journal: every awaited result of each run, "
                "in order.",
                "tables": tables,
                "queries": {name: dict(query) for name, query in QUERIES.items()},
                "plugins": {PLUGIN: {"journal": True}},
            }
        },
    }
