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

import psycopg
import pytest

import replay
from journal import Journal, JournalUnavailable
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


def _worker(url: str, effects: Path, lease: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, "zombie-1", str(lease), str(effects)],
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
    assert zombie.stdout is not None
    for line in zombie.stdout:
        if line.strip() == "step 2":
            break
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # the lease (1 s) runs out while the owner is paused
        taker = _worker(url, effects, lease=30.0)
        out, err = taker.communicate(timeout=60)
        assert taker.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["result"] == 6
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    zombie_out, _ = zombie.communicate(timeout=60)
    assert zombie.returncode == 4 and "ownership lost" in zombie_out
    with Journal(url) as journal:
        events = journal.events("zombie-1")
        (verdict,) = journal.verify("zombie-1")
        run = journal.run("zombie-1")
    outcomes = Counter(e.key for e in events if e.status.value == "completed")
    assert sorted(outcomes) == [f"0:{n}" for n in range(1, 7)]
    assert set(outcomes.values()) == {1}  # no step completed twice in the journal
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert verdict.sealed and run.status.value == "completed" and run.result == b"6"


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
