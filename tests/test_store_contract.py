"""The store contract: every JournalStore keeps these promises. A new store runs this suite."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

import replay
from journal import (
    Event,
    EventKind,
    EventStatus,
    Journal,
    JournalStore,
    JournalUnavailable,
    LeaseLost,
    MemoryStore,
    RunLocked,
    RunNotFound,
    RunStatus,
    SQLiteStore,
)
from journal._events import replaced, trusted_event
from journal.stores._ownership import HOSTNAME, give_up, new_owner
from journal.stores._sqlite import SCHEMA_VERSION
from tests.conftest import postgres_store
from tests.factories import dead_pid, edit_owner, make_event, make_owner, make_run


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalStore]:
    """Every store keeps every promise: one contract, run on each."""
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        s: JournalStore = postgres_store(schema)
    elif request.param == "memory":
        s = MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalStore]:
    """A store whose database can be edited by hand (the memory store keeps models)."""
    if request.param == "postgres":
        s: JournalStore = postgres_store(request.getfixturevalue("pg_schema"))
    else:
        s = SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


def test_create_run_is_idempotent(store: JournalStore) -> None:
    """Creating an existing run returns the stored one and changes nothing."""
    first = store.create_run(make_run("r"))
    second = store.create_run(make_run("r").model_copy(update={"workflow": "other:wf"}))
    assert second.workflow == first.workflow == "app:wf"
    assert store.get_run("r") == first
    assert store.get_run("missing") is None


def test_a_run_created_with_an_owner_is_owned_by_it_from_its_creation(
    store: JournalStore,
) -> None:
    """`run()` creates a new run with its owner in it and, given that owner back, never claims
    it: the owner must be stored as a claim would store it. Its token writes and renews, any
    other is fenced out, a rival claim is refused, and a second creation changes nothing."""
    creator = make_owner("creator")
    created = store.create_run(make_run("r").model_copy(update={"owner": creator}))
    assert created.owner == creator and created.resumes == 0
    assert store.get_run("r") == created
    store.append("r", "creator", [make_event(1)])
    with pytest.raises(LeaseLost):
        store.append("r", "other", [make_event(2)])
    assert store.append_many([("r", "other", [make_event(2)])]) == ["r"]
    with pytest.raises(RunLocked) as info:
        store.claim("r", make_owner("rival"), resuming=False)
    assert info.value.owner.token == "creator"
    later = datetime.now(UTC) + timedelta(hours=1)
    assert store.heartbeat("r", "creator", later) and not store.heartbeat("r", "other", later)
    late = store.create_run(make_run("r").model_copy(update={"owner": make_owner("late")}))
    assert late.owner is not None and late.owner.token == "creator"
    done = store.finish("r", "creator", RunStatus.COMPLETED, result=b"1")
    assert done.owner is None and store.get_run("r") == done
    assert [e.seq for e in store.read_events("r")] == [1]


def test_get_runs_reads_several_runs_at_once(store: JournalStore) -> None:
    """get_runs returns each existing run asked for once, as get_run would, and nothing for
    ids that name no run; more ids than one statement takes are read too."""
    for i in range(3):
        store.create_run(make_run(f"r{i}"))
    store.claim("r1", make_owner(), resuming=False)
    got = store.get_runs(["r1", "missing", "r0", "r1"])
    assert sorted(run.run_id for run in got) == ["r0", "r1"]
    assert {run.run_id: run for run in got}["r1"] == store.get_run("r1")
    assert store.get_runs([]) == []
    many = [f"x{i}" for i in range(1200)] + ["r2"]
    assert [run.run_id for run in store.get_runs(many)] == ["r2"]


def test_list_runs_newest_first_with_filters(store: JournalStore) -> None:
    """Runs list newest first, filter by status and workflow, honour the limit."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):
        store.create_run(make_run(f"r{i}", base + timedelta(minutes=i)))
    store.claim("r1", make_owner(), resuming=False)
    store.finish("r1", "t1", RunStatus.COMPLETED, result=b"1")
    assert [r.run_id for r in store.list_runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["r1"]
    assert [r.run_id for r in store.list_runs(workflow="app:wf", limit=2)] == ["r2", "r1"]
    assert store.list_runs(workflow="nope") == []


def test_a_sample_of_resumable_runs_is_bounded_random_and_has_every_local_one(
    store: JournalStore,
) -> None:
    """A worker's look: running runs that are unowned or whose lease ran out, at most `limit`
    of them and a different pick each time; every run owned from the asking host (whether its
    process lives is the caller's check); never one a live owner elsewhere holds, nor one that
    is not running."""
    free = {f"free{i}" for i in range(12)} | {"expired0", "expired1"}
    local = {"local", "local-dead"}
    for run_id in sorted(free | local | {"far0", "far1", "done"}):
        store.create_run(make_run(run_id))
    for n in range(2):
        store.claim(f"expired{n}", make_owner(f"e{n}", host="elsewhere", ttl=-1), resuming=False)
        store.claim(f"far{n}", make_owner(f"f{n}", host="elsewhere", ttl=60), resuming=False)
    store.claim("local", make_owner("l"), resuming=False)
    store.claim("local-dead", make_owner("ld", pid=dead_pid()), resuming=False)
    store.claim("done", make_owner("d"), resuming=False)
    store.finish("done", "d", RunStatus.COMPLETED, result=b"1")
    now = datetime.now(UTC)

    picks = []
    for _ in range(20):
        ids = [run.run_id for run in store.sample_resumable(now, HOSTNAME, 5)]
        assert len(ids) == len(set(ids)) == 7
        assert set(ids) >= local and len(set(ids) & free) == 5
        picks.append(frozenset(ids))
    assert len(set(picks)) > 1  # 20 equal picks of 5 among 14: about 1 in 10^60

    whole = store.sample_resumable(now, HOSTNAME, 100)
    assert {run.run_id for run in whole} == free | local
    assert all(run == store.get_run(run.run_id) for run in whole)
    assert {run.run_id for run in store.sample_resumable(now, "another-host", 100)} == free
    later = store.sample_resumable(now + timedelta(seconds=120), "another-host", 100)
    assert {run.run_id for run in later} == free | local | {"far0", "far1"}
    assert {run.run_id for run in store.sample_resumable(now, HOSTNAME, 0)} == local


def test_a_sample_counts_a_run_whose_owner_record_was_edited_as_ownerless(
    durable_store: JournalStore,
) -> None:
    """An owner's record edited by hand (not JSON, or a lease that is not a moment) neither
    fails a worker's look nor hides the run from it: the run reads as ownerless, as
    `get_run` reads it, so a worker takes it over."""
    store = durable_store
    store.create_run(make_run("far"))
    store.claim("far", make_owner("f", host="elsewhere", ttl=60), resuming=False)
    edited: dict[str, str | None] = {
        "no-record": None,  # its token left
        "garbage": "not json",
        "odd-lease": '{"host": "h", "lease_expires_at": "soon"}',
    }
    for run_id, owner in edited.items():
        store.create_run(make_run(run_id))
        store.claim(run_id, make_owner(run_id, host="elsewhere"), resuming=False)
        edit_owner(store, run_id, owner)
        assert store.get_run(run_id).owner is None  # type: ignore[union-attr]
        found = store.sample_resumable(datetime.now(UTC), HOSTNAME, 10)
        assert run_id in {run.run_id for run in found}, run_id  # each edit alone, then with others
    found = store.sample_resumable(datetime.now(UTC), HOSTNAME, 10)
    assert {run.run_id for run in found} >= set(edited)
    assert all(run.owner is None for run in found if run.run_id in edited)


def test_append_and_read_round_trip(store: JournalStore) -> None:
    """Appended events read back equal, in seq order, in one call."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    events = [
        make_event(1, status=EventStatus.STARTED, payload=b'{"args":{}}'),
        make_event(2),
        make_event(3, key="0/1:1", payload=None),
        make_event(4, key="0/1:2").model_copy(update={"args": b'{"args":{"q":1},"site":null}'}),
    ]
    store.append("r", "t1", events[:2])
    store.append("r", "t1", events[2:])
    assert store.read_events("r") == events
    assert store.read_events("r")[3].call_arguments() == {"q": 1}
    assert store.read_rows("r") == [
        (
            e.seq,
            e.key,
            e.kind.value,
            e.name,
            e.fingerprint,
            e.status.value,
            e.attempt,
            e.payload,
            e.args,
        )
        for e in events
    ]
    assert store.read_rows("unknown") == []
    assert store.read_events("unknown") == []


def test_append_requires_ownership(store: JournalStore) -> None:
    """Only the live owner appends; a stale token is refused with nothing written."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("old", pid=dead_pid()), resuming=False)
    store.append("r", "old", [make_event(1)])
    store.claim("r", make_owner("new"), resuming=True)  # the old owner's pid is dead: taken over
    with pytest.raises(LeaseLost, match="no longer owns"):
        store.append("r", "old", [make_event(2)])
    assert [e.seq for e in store.read_events("r")] == [1]
    store.append("r", "new", [make_event(2)])
    assert [e.seq for e in store.read_events("r")] == [1, 2]


def test_append_is_atomic(store: JournalStore) -> None:
    """A batch that cannot be appended whole leaves nothing behind (duplicate seq here)."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    store.append("r", "t1", [make_event(1)])
    with pytest.raises(Exception):  # noqa: B017 - each store reports a duplicate its own way
        store.append("r", "t1", [make_event(2), make_event(1)])
    assert [e.seq for e in store.read_events("r")] == [1]


def test_append_many_commits_several_runs_and_refuses_a_lost_one(store: JournalStore) -> None:
    """The group commit's write: several runs' events in one call. A run whose token lost
    the run gets nothing written and its id back; the others' events are all in."""
    for run_id in ("a", "b", "c"):
        store.create_run(make_run(run_id))
    store.claim("a", make_owner("ta"), resuming=False)
    store.claim("b", make_owner("old", pid=dead_pid()), resuming=False)
    store.claim("b", make_owner("tb"), resuming=True)  # "old" no longer owns b
    store.claim("c", make_owner("tc"), resuming=False)
    refused = store.append_many(
        [
            ("a", "ta", [make_event(1), make_event(2, key="0:2")]),
            ("b", "old", [make_event(1)]),
            ("c", "tc", [make_event(1)]),
        ]
    )
    assert list(refused) == ["b"]
    assert [e.seq for e in store.read_events("a")] == [1, 2]
    assert store.read_events("b") == []
    assert [e.seq for e in store.read_events("c")] == [1]
    assert list(store.append_many([("a", "ta", [make_event(3, key="0:3")])])) == []
    assert [e.seq for e in store.read_events("a")] == [1, 2, 3]


def test_append_many_refuses_a_lost_run_whose_new_owner_wrote_the_same_seq(
    store: JournalStore,
) -> None:
    """Run b was taken over: its new owner resumed it and wrote seq 1 itself. The old owner's
    group commit then brings its own seq 1 for b. Its rows are not written (the token check
    filters them), but SQLite's `append_many` found refused runs by whether a row with the
    run's first seq existed, and the new owner's row is there: b is not reported
    refused, so the old owner's step believes its row committed and hands its value to the
    workflow ("committed before seen" broken; the journal holds someone else's row)."""
    for run_id in ("a", "b"):
        store.create_run(make_run(run_id))
    store.claim("a", make_owner("ta"), resuming=False)
    store.claim("b", make_owner("old", pid=dead_pid()), resuming=False)
    store.claim("b", make_owner("new"), resuming=True)
    store.append("b", "new", [make_event(1, run_id="b", payload=b'"new owner"')])
    refused = store.append_many(
        [
            ("a", "ta", [make_event(1, run_id="a")]),
            ("b", "old", [make_event(1, run_id="b", payload=b'"old owner"')]),
        ]
    )
    assert list(refused) == ["b"]
    assert [e.payload for e in store.read_events("b")] == [b'"new owner"']
    assert [e.seq for e in store.read_events("a")] == [1]


def test_append_many_is_atomic(store: JournalStore) -> None:
    """An error other than a lost lease (a duplicate seq here) writes nothing of any run."""
    for run_id in ("a", "b"):
        store.create_run(make_run(run_id))
        store.claim(run_id, make_owner(f"t{run_id}"), resuming=False)
    store.append("b", "tb", [make_event(1)])
    with pytest.raises(Exception):  # noqa: B017 - each store reports a duplicate its own way
        store.append_many([("a", "ta", [make_event(1)]), ("b", "tb", [make_event(1)])])
    assert store.read_events("a") == []
    assert [e.seq for e in store.read_events("b")] == [1]


def test_claim_refuses_a_live_owner_and_names_it(store: JournalStore) -> None:
    """A live owner (this process, unexpired lease) keeps the run: RunLocked names it."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("a"), resuming=False)
    with pytest.raises(RunLocked) as info:
        store.claim("r", make_owner("b"), resuming=True)
    assert f"pid {os.getpid()}" in str(info.value) and HOSTNAME in str(info.value)
    assert info.value.owner.token == "a"


def test_claim_takes_over_dead_or_expired_owners(store: JournalStore) -> None:
    """A dead pid on this host, or an expired lease anywhere, is taken over; resumes counted."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("dead", pid=dead_pid()), resuming=False)
    assert store.claim("r", make_owner("b"), resuming=True).owner.token == "b"  # type: ignore[union-attr]
    store.release("r", "b")
    store.claim("r", make_owner("far", host="elsewhere", ttl=-1), resuming=True)
    claimed = store.claim("r", make_owner("c"), resuming=True)
    assert claimed.owner is not None and claimed.owner.token == "c"
    assert claimed.resumes == 3
    store.release("r", "c")
    store.claim("r", make_owner("far2", host="elsewhere", ttl=60), resuming=True)
    with pytest.raises(RunLocked):
        store.claim("r", make_owner("d"), resuming=True)


def test_heartbeat_and_release(store: JournalStore) -> None:
    """Heartbeats extend only the owner's lease; release frees the run for anyone."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("a"), resuming=False)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert store.heartbeat("r", "a", later)
    owner = store.get_run("r").owner  # type: ignore[union-attr]
    assert owner is not None and abs((owner.lease_expires_at - later).total_seconds()) < 0.01
    assert not store.heartbeat("r", "zzz", later)
    store.release("r", "zzz")  # not the owner: no effect
    assert store.get_run("r").owner is not None  # type: ignore[union-attr]
    store.release("r", "a")
    assert store.get_run("r").owner is None  # type: ignore[union-attr]
    store.claim("r", make_owner("b"), resuming=True)


def test_finish_records_outcome_and_releases(store: JournalStore) -> None:
    """finish() stores status and result, clears the owner; a non-owner gets LeaseLost."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("a"), resuming=False)
    with pytest.raises(LeaseLost):
        store.finish("r", "b", RunStatus.COMPLETED, result=b"1")
    done = store.finish("r", "a", RunStatus.COMPLETED, result=b'{"x":1}')
    assert (done.status, done.result, done.owner) == (RunStatus.COMPLETED, b'{"x":1}', None)
    assert done.finished_at is not None
    assert store.get_run("r") == done


def test_sqlite_events_are_append_only(tmp_path: Path) -> None:
    """Editing or deleting an event through sqlite3 directly is rejected by triggers."""
    s = SQLiteStore(tmp_path / "a.db")
    s.create_run(make_run("r"))
    s.claim("r", make_owner(), resuming=False)
    s.append("r", "t1", [make_event(1)])
    s.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET payload = x'00'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()


def test_sqlite_wal_and_durability_levels(tmp_path: Path) -> None:
    """WAL journal mode; synchronous NORMAL (1) by default, FULL (2) on request."""
    for durability, level in (("normal", 1), ("full", 2)):
        s = SQLiteStore(tmp_path / f"{durability}.db", durability=durability)  # type: ignore[arg-type]
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        s.close()
    with pytest.raises(ValueError, match="'normal'.*'full'"):
        SQLiteStore(tmp_path / "x.db", durability="fast")  # type: ignore[arg-type]


def test_sqlite_refuses_newer_schema_and_foreign_databases(tmp_path: Path) -> None:
    """A journal from a newer version, or an unrelated database, is a clear error."""
    newer = tmp_path / "newer.db"
    SQLiteStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalUnavailable, match="schema version 99.*upgrade"):
        SQLiteStore(newer)
    foreign = tmp_path / "app.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(JournalUnavailable, match="not a journal"):
        SQLiteStore(foreign)


def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    """Runs and events survive closing and reopening the file."""
    s = SQLiteStore(tmp_path / "k.db")
    s.create_run(make_run("r"))
    s.claim("r", make_owner(), resuming=False)
    s.append("r", "t1", [make_event(1), make_event(2)])
    s.close()
    s = SQLiteStore(tmp_path / "k.db")
    assert [e.seq for e in s.read_events("r")] == [1, 2]
    assert s.get_run("r") is not None
    s.close()


def test_trusted_events_equal_validated_ones() -> None:
    """The hot-path constructor builds exactly what pydantic validation builds (pins internals)."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    fields = {
        "run_id": "r",
        "seq": 3,
        "key": "0/1:2",
        "kind": EventKind.LLM,
        "name": "ask",
        "fingerprint": "ab",
        "status": EventStatus.COMPLETED,
        "attempt": 2,
        "payload": b'"x"',
        "created_at": moment,
        "args": b'{"args":{}}',
        "prev_hash": "a" * 64,
        "hash": "b" * 64,
    }
    trusted = trusted_event(**fields)
    validated = Event(**fields)
    assert trusted == validated and hash(trusted) == hash(validated)
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.model_copy(update={"seq": 4}).seq == 4  # its fields set is its own
    with pytest.raises(ValidationError):
        trusted.seq = 4  # frozen like any Event
    copy = replaced(validated, payload=b'"y"', hash=None)
    assert copy == Event(**{**fields, "payload": b'"y"', "hash": None})
    assert validated.payload == b'"x"' and copy.model_fields_set == validated.model_fields_set


def test_sqlite_migrates_a_version_1_journal(tmp_path: Path) -> None:
    """A journal written by schema 1 (no `args` column) opens, keeps its rows and takes new ones."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow TEXT, inputs BLOB,
            inputs_fingerprint TEXT, status TEXT NOT NULL, result BLOB, error BLOB, owner TEXT,
            owner_token TEXT, parent_run_id TEXT, fork_seq INTEGER,
            resumes INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, finished_at REAL);
        CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
            kind TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL,
            status TEXT NOT NULL, attempt INTEGER NOT NULL, payload BLOB,
            created_at REAL NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
        INSERT INTO runs (run_id, status, created_at, updated_at) VALUES ('old', 'running', 1, 1);
        INSERT INTO events VALUES ('old', 1, '0:1', 'step', 'f', 'ab', 'completed', 1, X'31', 1);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = SQLiteStore(path)
    (old,) = store.read_events("old")
    assert old.payload == b"1" and old.args is None
    store.claim("old", make_owner(), resuming=True)
    store.append("old", "t1", [make_event(2).model_copy(update={"run_id": "old", "args": b"{}"})])
    assert [e.args for e in store.read_events("old")] == [None, b"{}"]
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_sqlite_keeps_events_in_arrival_order_from_schema_7(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema-6 journal (events clustered by run, WITHOUT ROWID) opens as schema 7: its
    events table rebuilt as a rowid table (rows of runs in flight then share pages, so a group
    commit of many runs writes few), every row the same, still append-only, and it verifies."""
    golden = Path(__file__).parent / "data" / "golden" / "v0.1.0-schema6-chunks" / "unsigned.db"
    path = tmp_path / "old.db"
    path.write_bytes(golden.read_bytes())
    select = "SELECT * FROM events ORDER BY run_id, seq"
    before = sqlite3.connect(path)
    assert before.execute("PRAGMA user_version").fetchone() == (6,)
    rows = before.execute(select).fetchall()
    before.close()
    assert rows

    caplog.set_level(logging.INFO, logger="journal")
    with Journal(path) as journal:
        verdicts = journal.verify()
        assert verdicts and all(v.ok for v in verdicts), [v for v in verdicts if not v.ok]
    assert "journal.schema_upgraded" in caplog.text  # a rebuild that takes seconds is said
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    assert "WITHOUT ROWID" not in sql
    assert conn.execute(select).fetchall() == rows
    run_id, seq = rows[0][:2]
    for statement in (
        f"UPDATE events SET payload = X'00' WHERE run_id = '{run_id}' AND seq = {seq}",
        f"DELETE FROM events WHERE run_id = '{run_id}'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(f"INSERT INTO events SELECT * FROM events WHERE run_id = '{run_id}'")
    conn.close()


@replay.step
async def _answer() -> int:
    return 42


async def _one_step() -> int:
    return await _answer()


def test_sqlite_rebuilds_events_around_what_the_user_added_to_the_file(tmp_path: Path) -> None:
    """A journal is an ordinary SQLite file: a user's view over the events (for Datasette),
    index on them and trigger on them do not stop the schema-7 rebuild (a view once made the
    journal impossible to open to write, "no such table: main.events"), and are still there
    and still work after it."""
    golden = Path(__file__).parent / "data" / "golden" / "v0.1.0-schema6-chunks" / "unsigned.db"
    path = tmp_path / "old.db"
    path.write_bytes(golden.read_bytes())
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE VIEW llm_events AS SELECT run_id, seq FROM events WHERE kind = 'llm';
        CREATE INDEX my_events_by_kind ON events (kind);
        CREATE TABLE my_counts (n INTEGER);
        CREATE TRIGGER my_count AFTER INSERT ON events BEGIN INSERT INTO my_counts VALUES (1); END;
        """
    )
    llm = conn.execute("SELECT * FROM llm_events ORDER BY run_id, seq").fetchall()
    conn.close()
    assert llm

    with Journal(path) as journal:
        asyncio.run(replay.run(_one_step, journal=journal, run_id="after-upgrade"))
        assert all(v.ok for v in journal.verify())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (7,)
    assert conn.execute("SELECT * FROM llm_events ORDER BY run_id, seq").fetchall() == llm
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"my_events_by_kind", "my_count"} <= names
    assert conn.execute("SELECT count(*) FROM my_counts").fetchone()[0] > 0
    conn.close()


OPENER = """
import sys, time
from journal import Journal
start = float(sys.argv[2])
while time.time() < start:
    pass
Journal(sys.argv[1]).close()
"""


def test_sqlite_many_processes_can_create_one_new_journal_at_once(tmp_path: Path) -> None:
    """Workers started together on a fresh file all open it (switching to WAL waits its turn)."""
    import time

    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    for trial in range(3):
        path = tmp_path / f"fresh-{trial}.db"
        start = time.time() + 0.8
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(path), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 4, errors


def test_events_keep_their_hashes_and_the_seal_is_stored(store: JournalStore) -> None:
    """prev_hash/hash are stored as given, last_hash names the head, finish keeps the seal."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    assert store.last_hash("r") is None
    events = [
        make_event(seq).model_copy(update={"prev_hash": f"{seq - 1:064x}", "hash": f"{seq:064x}"})
        for seq in (1, 2)
    ]
    store.append("r", "t1", events)
    assert store.read_events("r") == events
    assert store.read_events("r", after_seq=1) == events[1:]
    assert store.read_events("r", limit=1) == events[:1]
    assert store.count_events("r") == 2 and store.count_events("missing") == 0
    assert store.last_hash("r") == f"{2:064x}"
    finished = store.finish("r", "t1", RunStatus.COMPLETED, result=b"1", seal="5" * 64)
    assert finished.seal == "5" * 64 and store.get_run("r") == finished


def test_delete_runs_removes_whole_runs_but_never_an_owned_one(store: JournalStore) -> None:
    """Retention removes a run with all its events; a run owned right now, or gone already,
    is skipped, and the runs after it are still removed."""
    for run_id in ("done", "live", "later"):
        store.create_run(make_run(run_id))
        store.claim(run_id, make_owner(f"t-{run_id}"), resuming=False)
        store.append(run_id, f"t-{run_id}", [make_event(1, run_id=run_id)])
    store.finish("done", "t-done", RunStatus.COMPLETED, result=b"1")
    store.finish("later", "t-later", RunStatus.FAILED, error=b"{}")
    assert store.delete_runs(["done", "live", "missing", "later"]) == 2
    assert store.get_run("done") is None and store.read_events("done") == []
    assert store.get_run("later") is None and store.read_events("later") == []
    assert [e.seq for e in store.read_events("live")] == [1]


def test_a_removed_runs_signals_go_with_it_and_never_reach_a_new_run_of_its_id(
    store: JournalStore,
) -> None:
    """Retention removes a run's signals with it: a new run later created with the same id (an
    order number, a ticket) must not be handed the removed run's values when it asks, nor a
    cancellation that was asked of the removed one (the engine signal `replay.cancel`)."""
    store.create_run(make_run("order-7"))
    store.send_signal("order-7", "approval", b'"yes, for the old order"')
    store.send_signal("order-7", "replay.cancel", b'{"reason": "old"}')
    store.claim("order-7", make_owner("t"), resuming=False)
    store.finish("order-7", "t", RunStatus.COMPLETED, result=b"1")
    assert store.delete_runs(["order-7"]) == 1
    store.create_run(make_run("order-7"))
    assert store.read_signal("order-7", "approval", 1) is None
    assert store.read_signal("order-7", "replay.cancel", 1) is None
    assert store.send_signal("order-7", "approval", b'"new"') == 1


def test_secret_is_made_once_and_kept(store: JournalStore) -> None:
    """A journal secret is created by the first caller and returned unchanged afterwards."""
    first = store.secret("salt", lambda: b"first")
    assert store.secret("salt", lambda: b"second") == first == b"first"


def test_sqlite_events_cannot_be_updated_or_deleted_outside_retention(tmp_path: Path) -> None:
    """Triggers reject UPDATE and DELETE on events, even through sqlite3 directly."""
    store = SQLiteStore(tmp_path / "t.db")
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    store.append("r", "t1", [make_event(1)])
    store.close()
    conn = sqlite3.connect(tmp_path / "t.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET payload = X'32'")
    with pytest.raises(sqlite3.IntegrityError, match="only journal gc removes runs"):
        conn.execute("DELETE FROM events")
    conn.close()


def test_suspend_waits_and_a_claim_wakes_the_run(store: JournalStore) -> None:
    """suspend() marks the run waiting and releases it; list_due shows it once its time has
    come; claiming it makes it running again with no wake time."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = store.suspend("r", "t1", wake_at=later, waiting_for=None)
    assert (waiting.status, waiting.owner, waiting.wake_at) == (RunStatus.WAITING, None, later)
    assert store.list_due(datetime.now(UTC)) == []
    assert [r.run_id for r in store.list_due(later + timedelta(seconds=1))] == ["r"]
    with pytest.raises(LeaseLost):
        store.suspend("r", "t1", wake_at=None, waiting_for=None)  # no longer its owner
    woken = store.claim("r", make_owner("t2"), resuming=True)
    assert (woken.status, woken.wake_at, woken.waiting_for) == (RunStatus.RUNNING, None, None)


def test_signals_are_kept_in_order_and_wake_a_waiting_run(store: JournalStore) -> None:
    """Signals sent before anyone waits are kept, numbered per name; one sent to a run that
    waits for that name makes it due at once; an unknown run is refused."""
    store.create_run(make_run("r"))
    assert store.send_signal("r", "approval", b'"early"') == 1
    store.claim("r", make_owner(), resuming=False)
    store.suspend("r", "t1", wake_at=None, waiting_for="approval")
    assert store.list_due(datetime.now(UTC) + timedelta(minutes=1)) == []
    assert store.send_signal("r", "other", b"1") == 1
    assert store.list_due(datetime.now(UTC) + timedelta(minutes=1)) == []
    assert store.send_signal("r", "approval", b'"late"') == 2
    assert [r.run_id for r in store.list_due(datetime.now(UTC) + timedelta(seconds=1))] == ["r"]
    assert store.read_signal("r", "approval", 1) == b'"early"'
    assert store.read_signal("r", "approval", 2) == b'"late"'
    assert store.read_signal("r", "approval", 3) is None
    with pytest.raises(RunNotFound):
        store.send_signal("missing", "approval", b"1")
    if isinstance(store, SQLiteStore):  # the refusal left no write transaction open
        other = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
    assert store.send_signal("r", "approval", b'"next"') == 3


def test_a_lease_this_process_gave_up_is_taken_over_at_once(store: JournalStore) -> None:
    """A sitting whose release failed (a full disk) gives its lease up: the run stays owned
    by this live process in the store, and a new claim from this process takes it at once
    (another live process's lease would hold it until it expired). The old token is fenced."""
    store.create_run(make_run("r"))
    first, second = new_owner(60), new_owner(60)
    store.claim("r", first, resuming=False)
    with pytest.raises(RunLocked):
        store.claim("r", second, resuming=True)
    give_up(first.token)
    assert store.claim("r", second, resuming=True).owner == second
    with pytest.raises(LeaseLost):
        store.append("r", first.token, [make_event(1)])


def test_append_many_reads_back_every_field_exactly(store: JournalStore) -> None:
    """The group's write carries every field as `append` does, byte for byte and to the
    microsecond: payloads and args that are not text (a NUL, bytes no UTF-8 reader takes),
    None, hashes, moments with microseconds. The chain hashes all of them."""
    store.create_run(make_run("r"))
    store.claim("r", make_owner("t"), resuming=False)
    written = [
        make_event(1, status=EventStatus.STARTED, payload=b'{"args":{"q":"\\u00e9"}}'),
        make_event(2, key="0:2", payload=b"\x00\xff\xfe raw \x00").model_copy(
            update={
                "args": b"\x80not utf-8",
                "created_at": datetime(2026, 5, 17, 3, 4, 5, 678901, tzinfo=UTC),
                "prev_hash": "p" * 64,
                "hash": "h" * 64,
            }
        ),
        make_event(3, key="0:3", payload=None).model_copy(
            update={"created_at": datetime(2026, 5, 17, 3, 4, 5, 1, tzinfo=UTC)}
        ),
    ]
    assert list(store.append_many([("r", "t", written)])) == []
    assert store.read_events("r") == written
    assert [row[7:] for row in store.read_rows("r")] == [(e.payload, e.args) for e in written]


@pytest.mark.parametrize(
    "lease",
    ["tomorrow", "infinity", "Dec 31 2099", "2099-01-01T00:00:00 +00:00", "3000000", 3000000],
)
def test_a_sample_never_hides_a_run_a_worker_reads_as_needing_it(
    durable_store: JournalStore, lease: object
) -> None:
    """A lease edited by hand into text the database reads as a moment to come but the
    journal's model does not (PostgreSQL's `tomorrow`, SQLite's Julian day number, an offset
    after a space) reads as ownerless or long past through `get_run`: the sample holds the
    run too, or a worker that goes on never sees it (`interrupted()` lists it)."""
    store = durable_store
    owner = json.dumps(
        {"token": "t", "host": "elsewhere", "pid": 1, "since": "2020-01-01T00:00:00Z",
         "lease_expires_at": lease}
    )  # fmt: skip
    store.create_run(make_run("edited"))
    store.claim("edited", make_owner("t", host="elsewhere", ttl=60), resuming=False)
    edit_owner(store, "edited", owner)
    now = datetime.now(UTC)
    run = store.get_run("edited")
    assert run is not None
    assert run.owner is None or run.owner.lease_expires_at <= now
    assert "edited" in {run.run_id for run in store.sample_resumable(now, HOSTNAME, 10)}


def test_a_sample_reads_an_owner_record_as_the_run_model_reads_it(
    durable_store: JournalStore,
) -> None:
    """Every run the journal counts as interrupted (`Journal.interrupted()`: no owner as the
    model reads the record, or a lease the model reads as over) is in a look's sample, however
    the record was written: the SQL must not read a lease as live that the model reads as
    over or unreadable, or a worker never finds that run (it is owned from another host)."""
    store = durable_store
    journal = Journal(store=store)
    future = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
    whole = {"token": "x", "host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00Z"}

    def record(**fields: object) -> str:
        return json.dumps({key: value for key, value in {**whole, **fields}.items() if value})

    edited = {
        # a whole record but for one field: the model reads no owner, the SQL a live lease
        "no-pid": record(pid=None, lease_expires_at=future),
        "no-token": record(token=None, lease_expires_at=future),
        # a lease as a number: seconds since 1970 to the model, a Julian day to SQLite
        "lease-number": record(lease_expires_at=2500000),
        "lease-digits": record(lease_expires_at="2500000"),
        # no lease at all: the model reads no owner
        "no-lease": record(lease_expires_at=None),
        # words a database reads as moments, the model as none
        "lease-now": record(lease_expires_at="now"),
        "lease-infinity": record(lease_expires_at="infinity"),
    }
    hidden: list[str] = []
    for run_id, owner in edited.items():
        store.create_run(make_run(run_id))
        store.claim(run_id, make_owner(run_id, host="elsewhere"), resuming=False)
        edit_owner(store, run_id, owner)
        # each edit alone (one the database cannot read at all makes it read every run)
        assert run_id in {run.run_id for run in journal.interrupted()}
        found = store.sample_resumable(datetime.now(UTC), HOSTNAME, 100)
        if run_id not in {run.run_id for run in found}:
            hidden.append(run_id)
        store.finish(run_id, run_id, RunStatus.CANCELLED)  # out of the next edit's way
    assert hidden == [], hidden
