"""Attacks on long call records stored as content-addressed chunks (`journal._chunks`): what
retention, concurrent writers, hand edits and odd shapes of JSON do to them.

Every journal is a real SQLite file or a real PostgreSQL schema; the workflows are real
journaled runs whose step is called with a whole conversation, as an agent calls its model.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import replay
from journal import EventStatus, Journal, SQLiteStore, canonical_json
from journal._chunks import blob_name
from tests.conftest import PG_URL, postgres_store
from tests.factories import make_event, make_owner, make_run, run_in_block

SYSTEM = "You are a careful agent. " * 200  # 5 KB: every request is long from its first turn


@replay.step
async def ask(messages: list[dict[str, str]], model: str) -> str:
    return f"answer {len(messages)} from {model}"


def _user(run: str, turn: int) -> dict[str, str]:
    return {"role": "user", "content": f"{run} question {turn}: " + "why? " * 30}


def _agent(run: str, turns: int, system: str = SYSTEM) -> Any:
    async def agent() -> list[str]:
        messages = [{"role": "system", "content": system}]
        answers = []
        for turn in range(turns):
            messages.append(_user(run, turn))
            answer = await ask(list(messages), "m")
            messages.append({"role": "assistant", "content": answer})
            answers.append(answer)
        return answers

    return agent


def _ok(journal: Journal, run_id: str) -> bool:
    return all(verdict.ok for verdict in journal.verify(run_id))


def _pg(schema: str, sql: str, *params: Any) -> list[Any]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        cur = conn.execute(sql.format(s=schema), params or None)
        return cur.fetchall() if cur.description else []


# -- the table that says which runs name which chunks -----------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_chunk_refs_are_as_append_only_as_the_chunks_they_keep(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`chunk_refs` decides what retention keeps. A plain DELETE of its rows (no trigger
    dropped, as events and chunks need) made the next `gc` of an unrelated run remove the
    chunks of a run that stays: its content was gone for good, and `verify` had said nothing
    before the gc."""
    if backend == "postgres":
        schema = request.getfixturevalue("pg_schema")
        journal = Journal(store=postgres_store(schema))
    else:
        db = tmp_path / "j.db"
        journal = Journal(store=SQLiteStore(db))
    run_in_block(journal, "kept", _agent("kept", 4))
    run_in_block(journal, "old", _agent("old", 2, system="Another agent. " * 300))
    try:
        if backend == "postgres":
            _pg(schema, "DELETE FROM {s}.chunk_refs WHERE run_id = 'kept'")
            _pg(schema, "UPDATE {s}.chunk_refs SET run_id = 'old'")
        else:
            with sqlite3.connect(db) as conn:
                conn.execute("DELETE FROM chunk_refs WHERE run_id = 'kept'")
                conn.execute("UPDATE chunk_refs SET run_id = 'old'")
    except (sqlite3.DatabaseError, psycopg.Error) as exc:
        assert "append-only" in str(exc)
    assert _ok(journal, "kept")  # verify does not read chunk_refs: nothing to see yet
    assert journal.store.delete_runs(["old"]) == 1
    assert _ok(journal, "kept")
    assert len(run_in_block(journal, "kept", _agent("kept", 4), mode="replay")) == 4
    journal.close()


# -- retention beside a writer ----------------------------------------------------------------


def test_postgres_retention_sweep_and_a_writer_lock_the_chunk_tables_in_one_order(
    pg_schema: str,
) -> None:
    """A writer inserts a run's blobs, then its nodes; the sweep locked the nodes, then the
    blobs. A writer between its two inserts (its blob insert waiting on a neighbour writing
    the same message) and a sweep that had taken the nodes waited on each other, and
    PostgreSQL ended one with 'deadlock detected': a step's write failed, or the gc did."""
    journal = Journal(store=postgres_store(pg_schema))
    run_in_block(journal, "old", _agent("old", 3))  # shares the system message with "live"
    # A neighbour is writing, uncommitted, the very message "live" sends at its second turn.
    neighbour = psycopg.connect(PG_URL)
    message = blob_name(canonical_json(_user("live", 1)))
    neighbour.execute(
        f"INSERT INTO {pg_schema}.chunk_blobs VALUES (%s, %s)",
        (message, canonical_json(_user("live", 1))),
    )
    errors: list[BaseException] = []
    answers: list[str] = []

    def live() -> None:
        try:
            answers.extend(run_in_block(journal, "live", _agent("live", 3)))
        except BaseException as exc:
            errors.append(exc)

    gc_store = postgres_store(pg_schema)
    removed: list[int] = []

    def sweep() -> None:
        try:
            removed.append(gc_store.delete_runs(["old"]))
        except BaseException as exc:
            errors.append(exc)

    def waiting(prefix: str) -> bool:
        rows = _pg(
            pg_schema,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            prefix + "%",
        )
        return bool(rows[0][0])

    def until(prefix: str) -> None:
        deadline = time.monotonic() + 20
        while not waiting(prefix):
            assert time.monotonic() < deadline, f"nobody waits on {prefix!r}"
            time.sleep(0.02)

    writer = threading.Thread(target=live)
    writer.start()
    until(f"INSERT INTO {pg_schema}.chunk_blobs")  # its blobs insert waits on the neighbour
    gc = threading.Thread(target=sweep)
    gc.start()
    until("LOCK TABLE")  # the sweep holds the nodes and waits for the blobs
    neighbour.rollback()
    neighbour.close()
    writer.join(30)
    gc.join(30)
    gc_store.close()
    assert not errors, errors
    assert removed == [1] and len(answers) == 3
    assert _ok(journal, "live")
    assert len(run_in_block(journal, "live", _agent("live", 3), mode="replay")) == 3
    journal.close()


# -- shapes of JSON -------------------------------------------------------------------------


def _stored_bytes(db: Path) -> int:
    """What events and chunks hold, in bytes (names included: they are what a node costs)."""
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(
                "SELECT (SELECT coalesce(sum(length(payload)), 0) + coalesce(sum(length(args)), 0)"
                " FROM events) + (SELECT coalesce(sum(length(name) + length(body)), 0)"
                " FROM chunk_blobs) + (SELECT coalesce(sum(length(name) + coalesce(length(prev),"
                " 0) + length(item)), 0) FROM chunk_nodes)"
            ).fetchone()[0]
        )


@replay.step
async def embed(input: list[Any], model: str) -> int:
    return len(input)


def test_a_long_list_of_small_items_is_not_stored_as_a_node_per_item(tmp_path: Path) -> None:
    """An embedding request (1536 floats) or a prompt as token ids (8000 ints): each item
    became a node and a blob, three 64-character names for a number of a few bytes. Ten such
    requests took 30 times the bytes they take whole (a 12 MB file for 0.3 MB of requests),
    writes 15 times longer, and reading the run back went from nothing to half a second."""

    async def agent() -> None:
        for k in range(5):
            await embed([i / 7 + k for i in range(1536)], "e")
            await embed(list(range(k, 8000 + k)), "e")

    async def go() -> None:
        async with replay.journaled(journal, "vectors"):
            await agent()

    db = tmp_path / "j.db"
    journal = Journal(store=SQLiteStore(db))
    asyncio.run(go())
    recorded = sum(len(e.payload or b"") + len(e.args or b"") for e in journal.events("vectors"))
    assert _stored_bytes(db) < 1.2 * recorded, (_stored_bytes(db), recorded)
    assert _ok(journal, "vectors")
    journal.close()


def test_a_record_nested_deeper_than_the_encoder_goes_is_stored_whole(tmp_path: Path) -> None:
    """JSON 300 levels deep is JSON (the parser takes 1024), but orjson writes 255: splitting
    it raised TypeError out of `append`, where it must store the record whole (as it does
    anything else it cannot spell back byte for byte). Such a record comes from a journal
    written before, or by hand through the store's API; it was stored whole before chunks."""
    deep = b'{"a":' + b"[" * 300 + b'"' + b"x" * 5000 + b'"' + b"]" * 300 + b"}"
    store = SQLiteStore(tmp_path / "j.db")
    store.create_run(make_run("r"))
    token = store.claim("r", make_owner(), resuming=False).owner.token  # type: ignore[union-attr]
    store.append("r", token, [make_event(1, run_id="r", status=EventStatus.STARTED, payload=deep)])
    [event] = store.read_events("r")
    assert event.payload == deep
    store.close()


def test_postgres_writers_insert_shared_chunks_in_one_order(pg_schema: str) -> None:
    """Two writers recording the same new content, listed in another order (two tools, or
    two agents' prompts in two processes' group commits), inserted the blobs in the order of
    each record: each held one the other needed, and PostgreSQL ended one with 'deadlock
    detected', failing a step's write. Chunks go in by name, whatever the record's order."""
    prompts = [
        {"role": "system", "content": "First tool. " * 300},
        {"role": "system", "content": "Second tool. " * 300},
    ]
    body = {blob_name(canonical_json(p)): canonical_json(p) for p in prompts}
    prompts.sort(key=lambda p: blob_name(canonical_json(p)))  # the writer's record: by name
    low, high = sorted(body)
    journal = Journal(store=postgres_store(pg_schema))
    # A neighbour writes, uncommitted, the blob the writer's record names first (in the
    # reverse order): the writer inserts the other, then waits on this one.
    neighbour = psycopg.connect(PG_URL)
    neighbour.execute(f"INSERT INTO {pg_schema}.chunk_blobs VALUES (%s, %s)", (low, body[low]))
    errors: list[BaseException] = []

    async def agent() -> str:
        return await ask(prompts[::-1], "m")  # high first, then low

    def live() -> None:
        try:
            run_in_block(journal, "live", agent)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=live)
    writer.start()
    deadline = time.monotonic() + 20
    while not _pg(
        pg_schema,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        f"INSERT INTO {pg_schema}.chunk_blobs%",
    )[0][0]:
        if time.monotonic() > deadline or not writer.is_alive():
            break  # inserted in name order: the writer waits on the neighbour from the start
        time.sleep(0.02)
    # The neighbour, writing its record in its order, now wants the writer's first blob.
    try:
        neighbour.execute(
            f"INSERT INTO {pg_schema}.chunk_blobs VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (high, body[high]),
        )
        neighbour.commit()
    except psycopg.errors.DeadlockDetected:
        neighbour.rollback()
    neighbour.close()
    writer.join(30)
    assert not errors, errors
    assert _ok(journal, "live")
    journal.close()
