"""Edits an adversary makes with sqlite3, psql or a text editor: `journal verify` exits 3 and
names the spot; `show` and `export` read the edited journal without crashing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import replay
from journal import Journal
from replay._cli import app

from . import test_verify as verify_cases
from .conftest import PG_URL, postgres_store

runner = CliRunner()


@replay.step(kind="tool")
async def refund(order: str, amount: float) -> dict[str, float]:
    await asyncio.sleep(0)
    return {"refunded": amount}


async def support(order: str) -> str:
    done = await refund(order, 250.0)
    return f"refunded {done['refunded']}"


def record(path: Path, run_id: str = "T-1", **options: str) -> None:
    with Journal(path, **options) as journal:  # type: ignore[arg-type]
        asyncio.run(replay.run(support, "A-1", journal=journal, run_id=run_id))


def edit_sqlite(path: Path, *statements: str) -> None:
    """As an attacker with sqlite3: the append-only triggers dropped first."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS events_are_append_only_update")
    conn.execute("DROP TRIGGER IF EXISTS events_are_append_only_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure of its own
    return result.exit_code, result.output


# Each: the statements, then where verify must point: (seq or None for the run, field).
STORAGE_EDITS: dict[str, tuple[tuple[str, ...], int | None, str]] = {
    "replace() leaves a payload as TEXT": (
        ("UPDATE events SET payload = replace(payload, '250.0', '150.0') WHERE seq = 2",),
        2,
        "payload",
    ),
    "a payload re-typed as TEXT, same text": (
        ("UPDATE events SET payload = CAST(payload AS TEXT) WHERE seq = 1",),
        1,
        "payload",
    ),
    "an unknown event status": (
        ("UPDATE events SET status = 'approved' WHERE seq = 2",),
        2,
        "status",
    ),
    "an unknown event kind": (("UPDATE events SET kind = 'human' WHERE seq = 2",), 2, "kind"),
    "a time that is no time": (
        ("UPDATE events SET created_at = 'yesterday' WHERE seq = 2",),
        2,
        "created_at",
    ),
    "a key as bytes": (("UPDATE events SET key = CAST(key AS BLOB) WHERE seq = 1",), 1, "key"),
    "a started payload that is not an object": (
        ("UPDATE events SET payload = CAST('[1, 2]' AS BLOB) WHERE seq = 1",),
        1,
        "payload",
    ),
    "the run's result as TEXT": (
        ("UPDATE runs SET result = replace(result, '250.0', '150.0')",),
        None,
        "result",
    ),
    "the run's inputs as TEXT": (
        ("UPDATE runs SET inputs = CAST(inputs AS TEXT)",),
        None,
        "inputs",
    ),
    "an unknown run status": (("UPDATE runs SET status = 'approved'",), None, "status"),
}


@pytest.mark.parametrize("edit", sorted(STORAGE_EDITS))
def test_storage_edits_are_found_not_crashed_on(db_path: Path, edit: str) -> None:
    """Values of a type the journal never writes are edits: verify exits 3 at the right seq and
    field; show, export and verify of the export run to the end."""
    record(db_path)
    statements, seq, field = STORAGE_EDITS[edit]
    edit_sqlite(db_path, *statements)
    with Journal(db_path) as journal:
        (verdict,) = journal.verify("T-1")
    assert verdict.verdict == "broken" and verdict.broken is not None, verdict
    assert (verdict.broken.seq, verdict.broken.field) == (seq, field), verdict

    code, output = cli("verify", "T-1", "--db", str(db_path))
    assert code == 3, output
    code, output = cli("show", "T-1", "--db", str(db_path), "--payloads")
    assert code == 0, output
    exported = db_path.with_name("export.jsonl")
    for fmt in ("jsonl", "json", "csv", "html"):
        code, output = cli("export", "T-1", "--db", str(db_path), "-f", fmt, "-o", str(exported))
        assert code == 0, output
    cli("export", "T-1", "--db", str(db_path), "-f", "jsonl", "-o", str(exported))
    code, output = cli("verify", "--file", str(exported))
    assert code == (0 if edit in SAME_CONTENT else 3), output


SAME_CONTENT = {
    "a payload re-typed as TEXT, same text",
    "a key as bytes",
    "the run's inputs as TEXT",
    "an unknown run status",  # exported as running: the journal-wide head binds the status
}
"""Edits of the storage type only: an export holds the same bytes, and verifies."""


@pytest.fixture
def pg_journal(pg_schema: str) -> Iterator[tuple[Journal, str]]:
    journal = Journal(store=postgres_store(pg_schema))
    asyncio.run(replay.run(support, "A-1", journal=journal, run_id="T-1"))
    yield journal, pg_schema
    journal.close()


@pytest.mark.parametrize(
    ("statement", "seq", "field"),
    [
        ("UPDATE {s}.events SET status = 'approved' WHERE seq = 2", 2, "status"),
        ("UPDATE {s}.events SET kind = 'human' WHERE seq = 2", 2, "kind"),
        ("UPDATE {s}.runs SET status = 'approved'", None, "status"),
    ],
)
def test_postgres_values_the_journal_never_writes_are_edits(
    pg_journal: tuple[Journal, str], statement: str, seq: int | None, field: str
) -> None:
    import psycopg

    journal, schema = pg_journal
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.events DISABLE TRIGGER USER")
        conn.execute(statement.format(s=schema))  # type: ignore[arg-type]
    (verdict,) = journal.verify("T-1")
    assert verdict.verdict == "broken" and verdict.broken is not None, verdict
    assert (verdict.broken.seq, verdict.broken.field) == (seq, field), verdict
    assert journal.events("T-1")  # reading does not crash


@pytest.mark.parametrize("edit", sorted(verify_cases.TAMPERING))
def test_show_and_export_read_every_edited_journal(db_path: Path, edit: str) -> None:
    """Every content edit of the chain suite: show and every export format still work, verify
    exits 3, and so does verify of the JSONL export."""
    verify_cases.record(db_path).close()
    verify_cases.tamper(db_path, *verify_cases.TAMPERING[edit][0])
    assert cli("verify", "r1", "--db", str(db_path))[0] == 3
    assert cli("show", "r1", "--db", str(db_path), "--payloads")[0] == 0
    exported = db_path.with_name("export")
    for fmt in ("json", "csv", "html", "jsonl"):
        assert cli("export", "r1", "--db", str(db_path), "-f", fmt, "-o", str(exported))[0] == 0
    assert cli("verify", "--file", str(exported))[0] == 3
