"""Long call records stored as content-addressed chunks: a conversation's journal grows with
its new messages, not with its length, and reads back byte for byte.

The agent is the real OpenAI SDK against the local server, journaled by `instrument()`; the
journals are real SQLite files and a real PostgreSQL schema.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any, cast

import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import EventStatus, Journal, JournalDamaged, SQLiteStore, canonical_json
from journal._chunks import MAGIC, SPLIT_FROM, blob_name, expand, node_name, split
from tests.conftest import postgres_store
from tests.factories import run_in_block
from tests.llm_server import requests_logged

SYSTEM = "You are a careful agent. " * 80  # about 2 KB, sent again every turn
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{n}",
            "description": f"Looks up fact number {n} in the reference tables. " * 4,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for n in range(4)
]


def _conversation(base_url: str, turns: int, system: str = SYSTEM, after_turn: Any = None) -> Any:
    async def agent() -> list[str]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        answers = []
        async with openai.AsyncOpenAI(api_key="sk-test-0000", base_url=base_url) as client:
            for turn in range(turns):
                messages.append({"role": "user", "content": f"question {turn}: " + "why? " * 30})
                completion = await client.chat.completions.create(
                    model="gpt-test", messages=cast(Any, messages), tools=cast(Any, TOOLS)
                )
                answer = completion.choices[0].message.content or ""
                messages.append({"role": "assistant", "content": answer})
                answers.append(answer)
                if after_turn is not None:
                    after_turn()
        return answers

    return agent


def _stored_bytes(db: Path) -> int:
    """Bytes the journal holds for events and chunks (the file's pages vary with SQLite)."""
    with sqlite3.connect(db) as conn:
        events = conn.execute(
            "SELECT coalesce(sum(length(payload)), 0) + coalesce(sum(length(args)), 0) FROM events"
        ).fetchone()[0]
        blobs = conn.execute(
            "SELECT coalesce(sum(length(body) + length(name)), 0) FROM chunk_blobs"
        ).fetchone()[0]
        nodes = conn.execute(
            "SELECT coalesce(sum(length(name) + coalesce(length(prev), 0) + length(item)), 0)"
            " FROM chunk_nodes"
        ).fetchone()[0]
    return int(events + blobs + nodes)


def _templates(journal: Journal, request: pytest.FixtureRequest) -> int:
    """How many events the store keeps as templates (read under the store, not through it)."""
    store: Any = journal.store
    if isinstance(store, SQLiteStore):
        sql = "SELECT count(*) FROM events WHERE substr(payload, 1, 1) = x'00'"
        return int(store._conn.execute(sql).fetchone()[0])
    schema = request.getfixturevalue("pg_schema")
    with store._pool.connection() as conn:
        sql = f"SELECT count(*) FROM {schema}.events WHERE substr(payload, 1, 1) = '\\x00'"
        return int(conn.execute(sql).fetchone()[0])


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_long_conversation_replays_byte_for_byte_from_chunks(
    backend: str, server: tuple[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every request of a 12-turn conversation is stored as a template; replay serves every
    answer offline, the events read back as recorded (export, verify), on both stores."""
    base_url, log = server
    if backend == "postgres":
        journal = Journal(store=postgres_store(request.getfixturevalue("pg_schema")))
    else:
        journal = Journal(store=SQLiteStore(tmp_path / "j.db"))
    agent = _conversation(base_url, 12)
    live = run_in_block(journal, "talk", agent)
    assert len(requests_logged(log)) == 12
    assert run_in_block(journal, "talk", agent, mode="replay") == live
    assert len(requests_logged(log)) == 12  # nothing sent again
    started = [e for e in journal.events("talk") if e.status is EventStatus.STARTED]
    assert len(started) == 12
    for number, event in enumerate(started):
        body = orjson.loads(event.payload or b"")["args"]["body"]["json"]
        assert len(body["messages"]) == 2 + 2 * number  # the whole request, put back together
    assert all(v.ok for v in journal.verify("talk"))
    out = io.StringIO()
    journal.export(out, ["talk"])
    exported = out.getvalue()
    assert MAGIC.decode() not in exported and SYSTEM in exported  # self-contained
    path = tmp_path / "talk.jsonl"
    path.write_text(exported)
    assert all(v.ok for v in journal.verify_export(path))
    assert _templates(journal, request) >= 10  # stored as templates, not whole
    journal.close()


@pytest.mark.usefixtures("instrumented")
def test_the_journal_grows_with_new_messages_not_with_the_conversation(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    """Turn 40 costs what turn 10 costs: the two new messages, the answer and a small
    template. Kept whole, turn 40's request alone is ten times turn 10's."""
    base_url, _ = server
    db = tmp_path / "j.db"
    journal = Journal(store=SQLiteStore(db))
    sizes: list[int] = []
    run_in_block(
        journal,
        "talk",
        _conversation(base_url, 41, after_turn=lambda: sizes.append(_stored_bytes(db))),
    )
    tenth, fortieth = sizes[10] - sizes[9], sizes[40] - sizes[39]
    request_40 = [e for e in journal.events("talk") if e.status is EventStatus.STARTED][40]
    assert fortieth < 1.2 * tenth, (tenth, fortieth)
    assert fortieth < len(request_40.payload or b"") / 5, (fortieth, len(request_40.payload or b""))
    journal.close()


def _chunked_run(db: Path, base_url: str) -> Journal:
    journal = Journal(store=SQLiteStore(db))
    run_in_block(journal, "talk", _conversation(base_url, 6))
    return journal


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize(
    ("tamper", "finding"),
    [
        ("UPDATE chunk_blobs SET body = replace(body, 'careful', 'reckless')", "no longer hashes"),
        ("DELETE FROM chunk_blobs WHERE length(body) > 1500", "is missing"),
        ("DELETE FROM chunk_nodes WHERE prev IS NULL", "is missing"),
    ],
)
def test_an_edited_or_removed_chunk_is_reported_and_never_served(
    tamper: str, finding: str, server: tuple[str, Path], tmp_path: Path
) -> None:
    """An adversary who drops the triggers and edits the chunk tables is caught by verify at
    the first event naming the chunk; replay refuses the run rather than serve other bytes."""
    base_url, log = server
    db = tmp_path / "j.db"
    recorded = _chunked_run(db, base_url)
    first = min(e.seq for e in recorded.events("talk") if len(e.payload or b"") >= SPLIT_FROM)
    recorded.close()
    with sqlite3.connect(db) as conn:
        for (trigger,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'chunk%'"
        ).fetchall():
            conn.execute(f"DROP TRIGGER {trigger}")
        assert conn.execute(tamper).rowcount > 0
    journal = Journal(store=SQLiteStore(db))
    [verdict] = journal.verify("talk")
    assert not verdict.ok
    assert verdict.broken is not None and verdict.broken.seq == first
    assert finding in verdict.broken.detail
    with pytest.raises(JournalDamaged, match="journal verify"):
        run_in_block(journal, "talk", _conversation(base_url, 6), mode="replay")
    assert len(requests_logged(log)) == 6
    journal.close()


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_removing_runs_removes_the_chunks_only_they_named(
    backend: str, server: tuple[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Retention removes a run's content with it: chunks no remaining run names go, chunks
    a remaining run shares (the tools) stay, and that run still replays."""
    base_url, _ = server
    if backend == "postgres":
        schema = request.getfixturevalue("pg_schema")
        journal = Journal(store=postgres_store(schema))
    else:
        journal = Journal(store=SQLiteStore(tmp_path / "j.db"))

    def count() -> tuple[int, int]:
        store: Any = journal.store
        if backend == "sqlite":
            conn = store._conn
            return (
                conn.execute("SELECT count(*) FROM chunk_blobs").fetchone()[0],
                conn.execute("SELECT count(*) FROM chunk_nodes").fetchone()[0],
            )
        with store._pool.connection() as conn:
            return (
                conn.execute(f"SELECT count(*) FROM {schema}.chunk_blobs").fetchone()[0],
                conn.execute(f"SELECT count(*) FROM {schema}.chunk_nodes").fetchone()[0],
            )

    other = "Another agent. " * 100
    run_in_block(journal, "short", _conversation(base_url, 4, system=other))
    only_short = count()
    run_in_block(journal, "long", _conversation(base_url, 8))
    assert count()[0] > only_short[0] and count()[1] > only_short[1]
    assert journal.store.delete_runs(["long"]) == 1
    assert count() == only_short  # what only "long" named went; the tools "short" names stay
    assert (
        len(run_in_block(journal, "short", _conversation(base_url, 4, other), mode="replay")) == 4
    )
    assert [r.run_id for r in journal.gc(keep_last=0)] == ["short"]
    assert count() == (0, 0)
    journal.close()


# -- the template itself --------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=1500),
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=8), children, max_size=8)
    ),
    max_leaves=60,
)


@given(tree=_json, padding=st.integers(min_value=0, max_value=6000))
def test_a_template_expands_to_exactly_the_bytes_it_was_made_from(tree: Any, padding: int) -> None:
    """The law: whatever JSON a call record holds, expand(split(record)) is the record."""
    record = canonical_json({"args": {"tree": tree, "pad": "x" * padding, "list": [tree] * 3}})
    parts = split(record)
    if parts is None:  # stored whole: nothing long enough to name
        assert len(record) < SPLIT_FROM or "x" * 1024 not in record.decode() or padding < 1024
        return
    assert parts.stored.startswith(MAGIC) and len(parts.stored) < len(record)
    assert expand(parts.stored, parts.nodes, parts.blobs) == record
    for name, body in parts.blobs.items():
        assert blob_name(body) == name
    for name, (prev, item) in parts.nodes.items():
        assert node_name(prev, item) == name


def test_records_not_written_by_the_journal_are_stored_whole() -> None:
    """A record spelt otherwise (spaces, escapes orjson does not write) is never rewritten."""
    spaced = json.dumps({"args": {"messages": ["m" * 200] * 30}}, indent=1).encode()
    assert len(spaced) > SPLIT_FROM and split(spaced) is None
    escaped = json.dumps({"args": {"messages": ["é" * 200] * 30}}).encode()
    assert split(escaped) is None
    assert split(b"not json" * 1000) is None
    assert split(MAGIC + b"[]" * 3000) is None
