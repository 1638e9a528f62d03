"""What only the PostgreSQL store has to prove: its schema, its triggers, its URL, its chain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

import replay
from journal import Journal, JournalUnavailable, LeaseLost, RunStatus
from tests.conftest import PG_URL, drop_schema, postgres_store
from tests.factories import make_event, make_owner, make_run


def test_events_are_append_only_in_the_database_itself(pg_schema: str) -> None:
    """UPDATE and DELETE on events are refused by a trigger, even through psycopg directly."""
    store = postgres_store(pg_schema)
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    store.append("r", "t1", [make_event(1)])
    store.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for statement in (
            f"UPDATE {pg_schema}.events SET payload = 'x'",
            f"DELETE FROM {pg_schema}.events",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_a_newer_schema_is_a_clear_error(pg_schema: str) -> None:
    """A schema written by a newer journal-replay is refused, naming both versions."""
    postgres_store(pg_schema).close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {pg_schema}.meta SET value = %s WHERE name = 'schema_version'", (b"99",)
        )
    from journal.stores import PostgresStore

    with pytest.raises(JournalUnavailable, match="version 99, newer than"):
        PostgresStore(PG_URL, schema=pg_schema)


def test_a_postgresql_url_opens_the_store_and_runs_verify() -> None:
    """Journal("postgresql://...") runs workflows; their hash chains verify after a round trip
    through TIMESTAMPTZ and BYTEA."""
    postgres_store("journal").close()  # skips (or fails under CI) when there is no server

    @replay.step(kind="llm")
    async def ask(prompt: str) -> str:
        await asyncio.sleep(0)
        return prompt.upper()

    async def agent(topic: str) -> list[str]:
        return list(await asyncio.gather(ask(topic), ask(topic + "!")))

    try:
        with Journal(PG_URL) as journal:
            assert asyncio.run(replay.run(agent, "pg", journal=journal, run_id="pg-1")) == [
                "PG",
                "PG!",
            ]
            (verdict,) = journal.verify("pg-1")
            assert verdict.sealed and verdict.events == 4
            replayed = asyncio.run(
                replay.run_with_summary(agent, "pg", journal=journal, run_id="pg-1", mode="replay")
            )
            assert replayed.summary.served == 2
    finally:
        drop_schema("journal")


def test_an_unreachable_server_says_so() -> None:
    """A URL nobody answers is a JournalUnavailable naming the host, without the password."""
    with pytest.raises(JournalUnavailable, match=r"127\.0\.0\.1:1/.*\*\*\*|cannot") as err:
        Journal("postgresql://someone:hunter2@127.0.0.1:1/nothing?connect_timeout=1")
    assert "hunter2" not in str(err.value)


WORKER = Path(__file__).parent / "workers" / "zombie_worker.py"


def _worker(url: str, effects: Path, lease: float, *mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, "zombie-1", str(lease), str(effects), *mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def test_a_paused_owner_that_wakes_after_a_takeover_cannot_append(
    pg_schema: str, tmp_path: Path
) -> None:
    """SIGSTOP the owner, let its lease expire, let a second process take the run over and
    finish it, SIGCONT the first: its writes are rejected (it exits with ownership lost), the
    journal holds one outcome per step and verifies."""
    postgres_store(pg_schema).close()  # skips (or fails under CI) when there is no server
    url = f"{PG_URL}?schema={pg_schema}"
    effects = tmp_path / "effects"
    zombie = _worker(url, effects, lease=1.0)
    taker = None
    assert zombie.stdout is not None
    for line in zombie.stdout:
        if line.strip() == "step 2":
            break
    # Paused inside step 3's 0.1 s wait, not inside the transaction that writes its start:
    # paused there for longer than the server's idle-in-transaction timeout (5 s, as a loaded
    # machine makes it), the server ends the connection, and the owner then stops on that.
    time.sleep(0.05)
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # the lease (1 s) runs out while the owner is paused
        taker = _worker(url, effects, lease=30.0)
        out, err = taker.communicate(timeout=60)
        assert taker.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["result"] == 6
        os.kill(zombie.pid, signal.SIGCONT)
        zombie_out, zombie_err = zombie.communicate(timeout=60)
        assert zombie.returncode == 4 and "ownership lost" in zombie_out, zombie_err[-2000:]
    finally:
        for process in (zombie, taker):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.communicate()
    with Journal(url) as journal:
        events = journal.events("zombie-1")
        (verdict,) = journal.verify("zombie-1")
        run = journal.run("zombie-1")
    outcomes = Counter(e.key for e in events if e.status.value == "completed")
    assert sorted(outcomes) == [f"0:{n}" for n in range(1, 7)]
    assert set(outcomes.values()) == {1}  # no step completed twice in the journal
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert verdict.sealed and run.status.value == "completed" and run.result == b"6"


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def test_an_owner_paused_inside_its_transaction_does_not_block_the_takeover(
    pg_schema: str, tmp_path: Path
) -> None:
    """The owner stops while its append transaction holds the run row's lock (the insert made,
    the commit not sent). Its lease runs out; a second process must still take the run over and
    finish it: the server ends the stalled transaction, which is then never committed. Resumed,
    the first process learns it lost the run."""
    postgres_store(pg_schema).close()
    url = f"{PG_URL}?schema={pg_schema}"
    effects = tmp_path / "effects"
    zombie = _worker(url, effects, 1.0, "stop-in-transaction")
    taker = None
    try:
        assert zombie.stdout is not None
        for line in zombie.stdout:
            if line.strip() == "stopping in the transaction":
                break
        deadline = time.monotonic() + 10
        while not _stopped(zombie.pid):
            assert time.monotonic() < deadline, "the worker did not stop itself"
            time.sleep(0.01)
        time.sleep(1.5)  # the lease (1 s) runs out while the owner is paused
        taker = _worker(url, effects, 30.0)
        out, err = taker.communicate(timeout=60)
        assert taker.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["result"] == 6
        os.kill(zombie.pid, signal.SIGCONT)
        zombie_out, zombie_err = zombie.communicate(timeout=60)
        assert zombie.returncode == 4 and "ownership lost" in zombie_out, zombie_err
    finally:
        for process in (zombie, taker):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    with Journal(url) as journal:
        events = journal.events("zombie-1")
        (verdict,) = journal.verify("zombie-1")
    outcomes = Counter(e.key for e in events if e.status.value == "completed")
    assert sorted(outcomes) == [f"0:{n}" for n in range(1, 7)] and set(outcomes.values()) == {1}
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and verdict.sealed


def _wait_stopped(process: subprocess.Popen[str]) -> None:
    """Read the worker's output up to its announced stop, then wait until it is stopped."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == "stopping in the transaction":
            break
    deadline = time.monotonic() + 10
    while not _stopped(process.pid):
        assert time.monotonic() < deadline, "the worker did not stop itself"
        time.sleep(0.01)


SHORT_IDLE_LIMIT = "options=-c%20idle_in_transaction_session_timeout%3D300"
"""A limit of the user's own, in the URL: the store keeps it rather than setting its own."""


def test_an_owner_paused_inside_its_transaction_writes_it_again_when_it_still_owns_the_run(
    pg_schema: str, tmp_path: Path
) -> None:
    """Paused in its transaction for longer than the server allows, with its lease still
    valid: the ended transaction is run again on a new connection and the run finishes, each
    step done and recorded once."""
    postgres_store(pg_schema).close()
    url = f"{PG_URL}?schema={pg_schema}&{SHORT_IDLE_LIMIT}"
    effects = tmp_path / "effects"
    owner = _worker(url, effects, 30.0, "stop-in-transaction", "1")
    try:
        _wait_stopped(owner)
        time.sleep(1.0)  # past the URL's 300 ms limit
        os.kill(owner.pid, signal.SIGCONT)
        out, err = owner.communicate(timeout=60)
        assert owner.returncode == 0, err
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.communicate()
    assert json.loads(out.strip().splitlines()[-1])["result"] == 6
    keys = [line.split()[1] for line in effects.read_text().splitlines()]
    assert sorted(keys) == [f"zombie-1:0:{n}" for n in range(1, 7)]  # no body ran twice
    with Journal(url) as journal:
        events = journal.events("zombie-1")
        (verdict,) = journal.verify("zombie-1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and verdict.sealed
    assert Counter(e.key for e in events if e.status.value == "started")["0:3"] == 1


def test_an_owner_that_stalls_in_its_transaction_twice_is_told_why(
    pg_schema: str, tmp_path: Path
) -> None:
    """Ended twice: the error says the process stalled in a transaction, that nothing of it
    was written, and what to look for."""
    postgres_store(pg_schema).close()
    url = f"{PG_URL}?schema={pg_schema}&{SHORT_IDLE_LIMIT}"
    owner = _worker(url, tmp_path / "effects", 30.0, "stop-in-transaction", "2")
    try:
        for _ in range(2):
            _wait_stopped(owner)
            time.sleep(1.0)
            os.kill(owner.pid, signal.SIGCONT)
        _, err = owner.communicate(timeout=60)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.communicate()
    assert owner.returncode != 0
    assert "JournalUnavailable" in err and "stalled inside it" in err, err
    assert "nothing of it was written" in err and "resume the run" in err
    with Journal(url) as journal:
        events = journal.events("zombie-1")
    assert "0:3" not in {e.key for e in events}  # neither ended transaction was committed


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/test?password=Sekr3tPw",
        "postgresql://nosuchuser@127.0.0.1:5432/test?sslmode=disable&password=Sekr3tPw",
        "postgresql://postgres:Sekr3tPw@127.0.0.1:1/test",
        "host=127.0.0.1 port=1 password=Sekr3tPw dbname=test",
    ],
)
def test_a_password_never_shows_in_an_error(url: str) -> None:
    """However the password is given, the error (and what the CLI prints) hides it."""
    from typer.testing import CliRunner

    from journal.stores import PostgresStore
    from replay._cli import app

    with pytest.raises(JournalUnavailable) as err:
        PostgresStore(url)
    assert "Sekr3tPw" not in str(err.value) and "***" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    if url.startswith("postgresql://"):
        result = CliRunner().invoke(app, ["runs", "--db", url])
        assert result.exit_code == 1 and "Sekr3tPw" not in result.output, result.output


def test_an_append_of_more_rows_than_one_statement_takes_is_whole(pg_schema: str) -> None:
    """9,000 events in one append (a gather of thousands of steps starting at once, a fork of
    a long run): more parameters than one PostgreSQL statement takes, so several statements
    in one transaction; all of it is written, and a lost lease still writes none of it."""
    store = postgres_store(pg_schema)
    store.create_run(make_run("wide"))
    store.claim("wide", make_owner(), resuming=False)
    events = [make_event(n).model_copy(update={"run_id": "wide"}) for n in range(1, 9001)]
    store.append("wide", "t1", events)
    assert [e.seq for e in store.read_events("wide")] == list(range(1, 9001))
    store.create_run(make_run("lost"))
    store.claim("lost", make_owner(), resuming=False)
    with pytest.raises(LeaseLost):
        store.append(
            "lost", "not-the-owner", [e.model_copy(update={"run_id": "lost"}) for e in events]
        )
    assert store.read_events("lost") == []
    store.close()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("", "5s"),  # nobody chose: the store's own limit
        (f"&{SHORT_IDLE_LIMIT}", "300ms"),
        ("&options=-c%20idle_in_transaction_session_timeout%3D0", "0"),  # chosen: no limit
    ],
)
def test_the_stalled_transaction_limit_is_the_stores_only_when_nobody_chose_one(
    pg_schema: str, options: str, expected: str
) -> None:
    from journal.stores import PostgresStore

    postgres_store(pg_schema).close()
    store = PostgresStore.from_url(f"{PG_URL}?schema={pg_schema}{options}")
    with store._pool.connection() as conn:
        row = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    store.close()
    assert row is not None and row[0] == expected


def _messages(store: object, call: object) -> tuple[list[str], int]:
    """The protocol messages the store's one connection sends for `call()` (libpq's trace:
    `Query "BEGIN..."`, `Parse ...`, `Sync`), and how many times it sent something after
    waiting for the server's answer (its round trips)."""
    import tempfile

    pool = store._pool  # type: ignore[attr-defined]
    with tempfile.TemporaryFile("w+") as trace:
        with pool.connection() as conn:
            conn.pgconn.trace(trace.fileno())
        try:
            call()  # type: ignore[operator]
        finally:
            with pool.connection() as conn:
                conn.pgconn.untrace()
        trace.seek(0)
        lines = [line.split("\t") for line in trace.read().splitlines()]
    sent = [" ".join(fields[3:5]).strip()[:50] for fields in lines if fields[1] == "F"]
    directions = [fields[1] for fields in lines]
    trips = sum(
        1 for i, d in enumerate(directions) if d == "F" and (i == 0 or directions[i - 1] == "B")
    )
    return sent, trips


def test_a_call_of_one_statement_is_one_round_trip(pg_schema: str) -> None:
    """A store call that is one statement is sent on its own, without BEGIN and COMMIT around
    it (each its own round trip to the server: a worker made three for every read)."""
    from journal.stores import PostgresStore

    store = PostgresStore(PG_URL, schema=pg_schema, min_size=1, max_size=1)
    try:
        store.create_run(make_run("r"))
        owner = make_owner()
        single = {
            "get_run": lambda: store.get_run("r"),
            "list_runs": lambda: store.list_runs(),
            "claim": lambda: store.claim("r", owner, resuming=False),
            "append": lambda: store.append("r", owner.token, [make_event(1)]),
            "append_many": lambda: store.append_many([("r", owner.token, [make_event(2)])]),
            "read_signal": lambda: store.read_signal("r", "s", 1),
            "read_rows": lambda: store.read_rows("r"),
            "read_events": lambda: store.read_events("r"),
            "list_due": lambda: store.list_due(make_run("x").created_at),
        }
        for name, call in single.items():
            sent, trips = _messages(store, call)
            assert trips == 1, (name, sent)
            assert not [m for m in sent if "BEGIN" in m or "COMMIT" in m], (name, sent)
            assert len([m for m in sent if m.startswith(("Query", "Parse"))]) == 1, (name, sent)
    finally:
        store.close()


def _scans(plan: dict[str, object]) -> list[tuple[object, object]]:
    """Every (node type, relation) of a JSON plan."""
    found = [(plan.get("Node Type"), plan.get("Relation Name"))]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += _scans(child)
    return found


def test_a_group_commit_reads_only_the_runs_it_writes_for(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's statement checks each run's owner under a share lock. It found those
    runs by reading every run of the journal (a sequential scan: 0.5-0.8 ms a commit with
    1,600 runs, growing with the journal); it reads them by their key."""
    from journal.stores import PostgresStore

    store = PostgresStore(PG_URL, schema=pg_schema, min_size=1, max_size=1)
    try:
        owner = make_owner()
        for run_id in ("a", "b"):
            store.create_run(make_run(run_id))
            store.claim(run_id, owner, resuming=False)
        with psycopg.connect(PG_URL, autocommit=True) as conn:  # a journal of 3,000 runs
            conn.execute(
                f"INSERT INTO {pg_schema}.runs SELECT (jsonb_populate_record(r,"
                " jsonb_build_object('run_id', 'other' || g))).*"
                f" FROM {pg_schema}.runs r, generate_series(1, 3000) g WHERE r.run_id = 'a'"
            )
            conn.execute(f"ANALYZE {pg_schema}.runs")
        sent: list[tuple[str, Any]] = []
        execute = psycopg.Cursor.execute

        def recording(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if "INSERT INTO" in str(query):
                sent.append((str(query), params))
            return execute(cursor, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", recording)
        refused = store.append_many(
            [("a", owner.token, [make_event(1, run_id="a")]),
             ("b", owner.token, [make_event(1, run_id="b")])]
        )  # fmt: skip
        monkeypatch.undo()
        assert refused == [] and len(store.read_rows("b")) == 1
        assert len(sent) == 1, sent
        with psycopg.connect(PG_URL) as conn:  # EXPLAIN alone runs nothing; rolled back anyway
            plan = conn.execute(f"EXPLAIN (FORMAT JSON) {sent[0][0]}", sent[0][1]).fetchone()
            conn.rollback()
        assert plan is not None
        scans = _scans(plan[0][0]["Plan"])
        assert ("Seq Scan", "runs") not in scans, scans
        assert any(relation == "runs" for _, relation in scans), scans
    finally:
        store.close()


def test_a_groups_rows_under_a_token_that_does_not_own_their_run_are_not_written(
    pg_schema: str,
) -> None:
    """`append_many` writes a run's rows only while their token owns it: rows of a run under
    a stale token are refused even beside rows of the same run under its owner's token in
    the same group (the owner check matched the run, the rows went in by run id alone)."""
    store = postgres_store(pg_schema)
    try:
        owner = make_owner()
        for run_id in ("a", "b"):
            store.create_run(make_run(run_id))
            store.claim(run_id, owner, resuming=False)
        store.append_many(
            [("a", owner.token, [make_event(1, run_id="a")]),
             ("a", "stale", [make_event(2, key="0:2", run_id="a")]),
             ("b", owner.token, [make_event(1, run_id="b")])]
        )  # fmt: skip
        assert [e.seq for e in store.read_events("a")] == [1]
        assert [e.seq for e in store.read_events("b")] == [1]
    finally:
        store.close()


def test_a_runs_end_and_its_head_entry_take_two_round_trips(pg_schema: str) -> None:
    """`finish` sends BEGIN, its update, the head's lock and read together, then the entry
    and COMMIT: two waits for the server where each statement was one (six)."""
    from journal.stores import PostgresStore

    store = PostgresStore(PG_URL, schema=pg_schema, min_size=1, max_size=1)
    store.head_chain = Journal(store=store).store.head_chain  # as a journal sets it
    try:
        assert store.head_chain is not None
        store.create_run(make_run("r"))
        owner = make_owner()
        store.claim("r", owner, resuming=False)
        store.append("r", owner.token, [make_event(1)])
        with pytest.raises(LeaseLost):  # rolled back: the head's lock is let go, no entry
            store.finish("r", "not-the-owner", RunStatus.COMPLETED)
        sent, trips = _messages(store, lambda: store.finish("r", owner.token, RunStatus.COMPLETED))
        assert any("pg_advisory_xact_lock" in m for m in sent), sent
        assert trips == 2, sent
        assert store.get_run("r").status is RunStatus.COMPLETED  # type: ignore[union-attr]
        assert len(store.read_heads()) == 2  # created, finished
    finally:
        store.close()


@pytest.mark.parametrize("call", ["finish", "create_run"])
def test_a_call_paused_between_its_round_trips_does_not_hold_the_head_for_good(
    pg_schema: str, call: str
) -> None:
    """`finish` and `create_run` wait for the server once while they hold the journal-wide
    head's lock (and the run row's). A process paused right there (a GC pause, a frozen VM, a
    debugger) must be ended by the server's idle-in-transaction limit like any transaction:
    sent with a flush and no sync, the server was never idle by its own account and no other
    process could create or end any run of the journal until the paused one woke up. Woken,
    the ended call is made again and the head stays whole."""
    import threading

    from journal.stores import PostgresStore
    from journal.stores import _postgres_heads as heads

    url = f"{PG_URL}?schema={pg_schema}&{SHORT_IDLE_LIMIT}"
    paused_store = PostgresStore.from_url(url)
    journal = Journal(store=paused_store)
    other = PostgresStore.from_url(url, head_chain=paused_store.head_chain)
    owner = make_owner()
    paused_store.create_run(make_run("r"))
    paused_store.claim("r", owner, resuming=False)
    paused_store.append("r", owner.token, [make_event(1)])
    wake, insert_head, outcome = threading.Event(), heads.insert_head, []

    def pause_once(*args: object) -> None:
        if threading.current_thread().name == "paused" and not wake.is_set():
            wake.wait(10)  # paused after the first round trip: the head's lock is held
        insert_head(*args)  # type: ignore[arg-type]

    def paused() -> None:
        try:
            if call == "finish":
                outcome.append(paused_store.finish("r", owner.token, RunStatus.COMPLETED))
            else:
                outcome.append(paused_store.create_run(make_run("new")))
        except BaseException as exc:
            outcome.append(exc)

    heads.insert_head = pause_once  # type: ignore[assignment]
    thread = threading.Thread(target=paused, name="paused")
    try:
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        other.create_run(make_run("other"))  # waits for the head's lock
        waited = time.monotonic() - started
    finally:
        wake.set()
        thread.join()
        heads.insert_head = insert_head  # type: ignore[assignment]
    try:
        assert waited < 5, f"another process waited {waited:.1f} s for the head's lock"
        (result,) = outcome
        assert not isinstance(result, BaseException), result
        expected = {"finish": ("r", RunStatus.COMPLETED), "create_run": ("new", RunStatus.RUNNING)}
        assert (result.run_id, result.status) == expected[call]
        assert [e.reason for e in paused_store.read_heads()] == (
            ["created", "created", "finished"] if call == "finish" else ["created"] * 3
        )
        assert all(v.ok for v in journal.verify())
    finally:
        other.close()
        paused_store.close()


def test_removing_runs_while_one_of_them_ends_is_no_deadlock(pg_schema: str) -> None:
    """`delete_runs` held the journal's head lock from its first run on and then waited for
    the next run's row; a run ending meanwhile (a failed run reopened and finished again)
    held that row and waited for the head lock: PostgreSQL ended one of them, and the end
    failed as a lost connection. The rows are now locked first, before the head's lock."""
    import threading

    from journal.stores import PostgresStore

    store = PostgresStore(PG_URL, schema=pg_schema)
    journal = Journal(store=store)
    owner = make_owner()
    for run_id in ("done", "ending"):
        store.create_run(make_run(run_id))
        store.claim(run_id, owner, resuming=False)
    store.finish("done", owner.token, RunStatus.COMPLETED)
    append_head = store._append_head

    def slow_removal(cur: object, run_id: str, reason: str) -> None:
        append_head(cur, run_id, reason)  # type: ignore[arg-type]
        if reason == "removed":
            time.sleep(1.0)  # the head's lock held: the end below takes its row meanwhile

    store._append_head = slow_removal  # type: ignore[method-assign]
    outcome: dict[str, object] = {}

    def remove() -> None:
        try:
            outcome["removed"] = store.delete_runs(["done", "ending"])
        except Exception as exc:
            outcome["removed"] = exc

    def end() -> None:
        try:
            outcome["ended"] = store.finish("ending", owner.token, RunStatus.COMPLETED).status
        except Exception as exc:
            outcome["ended"] = exc

    remover = threading.Thread(target=remove)
    remover.start()
    time.sleep(0.3)
    ender = threading.Thread(target=end)
    ender.start()
    remover.join()
    ender.join()
    try:
        assert outcome == {"removed": 1, "ended": RunStatus.COMPLETED}, outcome
        assert store.get_run("done") is None
        assert all(v.ok for v in journal.verify())
    finally:
        store.close()


def test_a_statement_the_server_cancels_is_not_called_a_lost_connection(pg_schema: str) -> None:
    """A statement the server cancels (statement_timeout, here while another session holds a
    lock on the runs) is a JournalUnavailable that says so and what to do, not "the
    connection was lost or refused", which sends the user to check a server that runs."""
    from journal.stores import PostgresStore

    postgres_store(pg_schema).close()
    url = f"{PG_URL}?schema={pg_schema}&options=-c%20statement_timeout%3D200"
    store = PostgresStore.from_url(url)
    try:
        with psycopg.connect(PG_URL) as holder:
            holder.execute(f"LOCK TABLE {pg_schema}.runs IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(JournalUnavailable) as err:
                store.get_run("r")
        message = str(err.value)
        assert "lost or refused" not in message, message
        assert "cancelled" in message and "statement_timeout" in message, message
    finally:
        store.close()
