"""Reading never writes: reading commands and read-only journals leave the storage as it was,
serve finished runs and replays, and say "no journal here" where there is none."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal, JournalUnavailable
from replay._cli import app

from .conftest import PG_URL, postgres_store

runner = CliRunner()


@replay.step(kind="tool")
async def look_up(order: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"order": order, "state": "shipped"}


async def agent(order: str) -> str:
    found = await look_up(order)
    return f"{found['order']} is {found['state']}"


def fingerprint_of(path: Path) -> dict[str, str]:
    """The journal's bytes: the database and what its WAL holds (the -shm index, and an empty
    WAL a reader's connection may leave, are SQLite's own bookkeeping, not the journal)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.parent.iterdir())
        if p.name in (path.name, path.name + "-wal") and p.stat().st_size
    }


def test_reading_commands_and_read_only_journals_write_nothing(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        asyncio.run(replay.run(agent, "A-1", journal=journal, run_id="r1"))
        asyncio.run(replay.run(agent, "A-2", journal=journal, run_id="r2"))
    before = fingerprint_of(db)
    out = tmp_path / "out"
    reading = [
        ["runs"],
        ["show", "r1", "--payloads"],
        ["diff", "r1", "r2"],
        ["verify"],
        ["head"],
        *(["export", "r1", "-f", fmt, "-o", str(out)] for fmt in ("jsonl", "json", "csv", "html")),
        ["replay", "r1", "--entry", "tests.test_read_only:agent"],
    ]
    for args in reading:
        result = runner.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code in (0, 3), (args, result.output)  # diff: the runs differ
        assert fingerprint_of(db) == before, args
    with Journal(db, read_only=True) as journal:
        # A finished run is served, and replayed, from a journal opened to read.
        assert (
            asyncio.run(replay.run(agent, "A-1", journal=journal, run_id="r1")) == "A-1 is shipped"
        )
        again = asyncio.run(replay.run(agent, "A-2", journal=journal, run_id="r2", mode="replay"))
        assert again == "A-2 is shipped"
        assert all(v.ok for v in journal.verify())
    assert fingerprint_of(db) == before


def test_a_missing_journal_is_no_journal_here(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "j.db"
    for args in (["runs"], ["verify"], ["head"], ["show", "r1"]):
        result = runner.invoke(app, [*args, "--db", str(missing)])
        assert result.exit_code == 1 and "no journal at" in result.output, result.output
    assert not missing.parent.exists()
    with pytest.raises(JournalUnavailable, match="no journal at"):
        Journal(missing, read_only=True)


def test_a_mistyped_postgres_schema_is_no_journal_here(pg_schema: str) -> None:
    """A reading command on a schema that holds no journal creates nothing and says so."""
    postgres_store(pg_schema).close()  # the real journal exists, under another name
    typo = pg_schema + "x"
    url = f"{PG_URL}?schema={typo}"
    for args in (["runs"], ["verify"], ["head"]):
        result = runner.invoke(app, [*args, "--db", url])
        assert result.exit_code == 1, result.output
        assert "no journal in schema" in result.output and "Traceback" not in result.output
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (typo,)
        ).fetchone()
    assert found is None
    result = runner.invoke(app, ["runs", "--db", f"{PG_URL}?schema={pg_schema}"])
    assert result.exit_code == 0, result.output


def test_a_postgres_journal_opened_to_read_writes_nothing(pg_schema: str) -> None:
    """As a SQLite file opened to read: finished runs are served and replayed, and a run the
    journal is asked to start is refused with a clear error, nothing of it written (it was
    created, claimed, journaled and finished, head entries and all)."""
    postgres_store(pg_schema).close()
    url = f"{PG_URL}?schema={pg_schema}"
    with Journal(url) as journal:
        asyncio.run(replay.run(agent, "A-1", journal=journal, run_id="r1"))

    def rows() -> list[int]:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            return [
                conn.execute(f"SELECT count(*) FROM {pg_schema}.{table}").fetchone()[0]  # type: ignore[index]
                for table in ("runs", "events", "heads", "meta")
            ]

    before = rows()
    with Journal(url, read_only=True) as journal:
        assert (
            asyncio.run(replay.run(agent, "A-1", journal=journal, run_id="r1")) == "A-1 is shipped"
        )
        again = asyncio.run(replay.run(agent, "A-1", journal=journal, run_id="r1", mode="replay"))
        assert again == "A-1 is shipped"
        with pytest.raises(JournalUnavailable, match="opened to read") as err:
            asyncio.run(replay.run(agent, "A-2", journal=journal, run_id="r2"))
        assert "Fix:" in str(err.value)
        assert journal.store.get_run("r2") is None
        assert all(v.ok for v in journal.verify())
    assert rows() == before
