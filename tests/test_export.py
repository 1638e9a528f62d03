"""Exports stream every run out, verify on their own, keep secrets out; gc keeps what it must."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

import replay
from journal import Event, EventKind, EventStatus, Journal, RunStatus
from journal._export import ExportUnreadable, event_from_record
from tests.factories import make_owner, make_run

SECRET = "sk-export-0123456789abcdef"


@replay.step(kind="llm")
async def draft(topic: str, api_key: str) -> str:
    await asyncio.sleep(0)
    return f"a draft about {topic}"


@replay.step(kind="tool")
def publish(text: str) -> dict[str, str]:
    return {"url": f"https://blog.example/{len(text)}", "cookie": SECRET}


async def blogger(topic: str) -> str:
    text = await draft(topic, SECRET)
    return publish(text)["url"]


def recorded(path: Path, *run_ids: str) -> Journal:
    journal = Journal(path)
    for run_id in run_ids:
        asyncio.run(replay.run(blogger, run_id, journal=journal, run_id=run_id))
    return journal


def exported(journal: Journal, fmt: str = "jsonl", run_ids: list[str] | None = None) -> str:
    out = io.StringIO()
    journal.export(out, run_ids, format=fmt)  # type: ignore[arg-type]
    return out.getvalue()


def test_jsonl_export_verifies_offline_and_round_trips_every_event(tmp_path: Path) -> None:
    """An export holds each run and its events exactly: rebuilt events equal the stored ones,
    and the file verifies with no database at all."""
    journal = recorded(tmp_path / "j.db", "cats", "dogs")
    text = exported(journal)
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines[0]["type"] == "export" and lines[0]["format"] == "journal-replay/export/v2"
    assert [r["run_id"] for r in lines if r["type"] == "run"] == ["dogs", "cats"]
    stored = {e.hash: e for run_id in ("cats", "dogs") for e in journal.events(run_id)}
    rebuilt = [event_from_record(r) for r in lines if r["type"] == "event"]
    assert len(rebuilt) == len(stored) == 8  # the sync step writes its start first
    assert all(stored[e.hash] == e for e in rebuilt)
    journal.close()
    (tmp_path / "j.db").unlink()
    export = tmp_path / "runs.jsonl"
    export.write_text(text)
    verdicts = Journal(store=None, url="memory://").verify_export(export)
    assert [(v.run_id, v.verdict, v.sealed) for v in verdicts] == [
        ("dogs", "intact", True),
        ("cats", "intact", True),
    ]


def test_an_edited_export_fails_verification_at_the_edit(tmp_path: Path) -> None:
    """Changing a payload, dropping a line or changing a result in the file is found."""
    journal = recorded(tmp_path / "j.db", "cats")
    lines = exported(journal).splitlines()
    journal.close()

    def verdict_of(edited: list[str]) -> str:
        path = tmp_path / "edited.jsonl"
        path.write_text("\n".join(edited) + "\n")
        (verdict,) = Journal("memory://").verify_export(path)
        assert not verdict.ok
        return str(verdict)

    payload_edit = [line.replace("a draft about cats", "a draft about dogs") for line in lines]
    assert "BROKEN at seq 2" in verdict_of(payload_edit)
    types = [orjson.loads(line)["type"] for line in lines]
    at_run = types.index("run")  # after the header and the journal's head entries
    second = at_run + 2
    assert orjson.loads(lines[second])["seq"] == 2
    assert "seq 2 missing" in verdict_of([line for i, line in enumerate(lines) if i != second])
    run_line = orjson.loads(lines[at_run])
    run_line["result"] = '"https://evil.example"'
    edited = [*lines[:at_run], orjson.dumps(run_line).decode(), *lines[at_run + 1 :]]
    assert "field seal" in verdict_of(edited)


def test_json_export_is_one_document_that_verifies(tmp_path: Path) -> None:
    """The JSON format nests events in their run and verifies like JSONL."""
    journal = recorded(tmp_path / "j.db", "cats", "dogs")
    document = exported(journal, "json")
    journal.close()
    parsed = orjson.loads(document)
    assert [len(run["events"]) for run in parsed["runs"]] == [4, 4]
    path = tmp_path / "runs.json"
    path.write_text(document)
    assert all(v.sealed for v in Journal("memory://").verify_export(path))


def test_csv_export_has_one_row_per_event(tmp_path: Path) -> None:
    """CSV is for spreadsheets: a header, then one row per event with its hash."""
    with recorded(tmp_path / "j.db", "cats") as journal:
        rows = list(csv.DictReader(io.StringIO(exported(journal, "csv"))))
        assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4]
        assert rows[0]["kind"] == "llm" and rows[2]["hash"] == journal.events("cats")[2].hash


def test_html_export_is_one_runs_timeline(tmp_path: Path) -> None:
    """HTML exports one run, with its verification in the header; several runs are refused."""
    with recorded(tmp_path / "j.db", "cats", "dogs") as journal:
        page = exported(journal, "html", ["cats"])
        assert page.startswith("<!DOCTYPE html>") and "intact (4 events, sealed)" in page
        with pytest.raises(ValueError, match="one run's timeline"):
            exported(journal, "html")


def test_no_export_format_carries_the_secret(tmp_path: Path) -> None:
    """The secret passed to a step and returned under `cookie` is in no export format."""
    with recorded(tmp_path / "j.db", "cats") as journal:
        for fmt in ("jsonl", "json", "csv"):
            assert SECRET not in exported(journal, fmt)
        assert SECRET not in exported(journal, "html", ["cats"])


def test_unreadable_files_are_refused_with_a_fix(tmp_path: Path) -> None:
    """A file that is not an export says so, and which formats verify."""
    path = tmp_path / "x.csv"
    path.write_text("run_id,seq\n")
    with pytest.raises(ExportUnreadable, match="not a journal export"):
        Journal("memory://").verify_export(path)
    path.write_text('{"format": "something else"}')
    with pytest.raises(ExportUnreadable, match="JSONL or JSON export"):
        Journal("memory://").verify_export(path)


def test_export_reads_page_by_page_in_constant_memory(tmp_path: Path) -> None:
    """Exporting 20,000 events holds one page of them at a time, never the whole run."""
    journal = Journal(tmp_path / "big.db")
    run = journal.store.create_run(make_run("big").model_copy(update={"chain": "sha256"}))
    journal.store.claim("big", make_owner(), resuming=False)
    payload = orjson.dumps({"text": "x" * 500})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    head = journal.chain.genesis(run)
    for first in range(1, 20_001, 1000):
        batch = [
            Event(
                run_id="big",
                seq=seq,
                key=f"0:{seq}",
                kind=EventKind.LLM,
                name="ask",
                fingerprint="fp",
                status=EventStatus.COMPLETED,
                attempt=1,
                payload=payload,
                created_at=start + timedelta(milliseconds=seq),
            )
            for seq in range(first, first + 1000)
        ]
        chained, head = journal.chain.extend(head, batch)
        journal.store.append("big", "t1", chained)
    assert [e.seq for e in journal.iter_events("big", page=7)][-3:] == [19998, 19999, 20000]
    target = tmp_path / "big.jsonl"
    tracemalloc.start()
    with target.open("w") as out:
        written = journal.export(out, ["big"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert written == 20_000 and target.stat().st_size > 10_000_000
    # One page of 1,000 events is ~5 MB as objects; all 20,000 would be ~100 MB.
    assert peak < 8_000_000, f"peak {peak} bytes: the export held more than a page"
    (verdict,) = journal.verify_export(target)
    assert verdict.verdict == "intact" and verdict.events == 20_000
    journal.close()


def test_gc_removes_old_finished_runs_and_keeps_the_rest(tmp_path: Path) -> None:
    """keep_last and older_than choose finished runs; running runs, owned runs and newer runs
    stay; dry_run removes nothing; other runs still verify; the removal is logged."""
    journal = recorded(tmp_path / "j.db", "r1", "r2", "r3", "r4")
    journal.store.create_run(make_run("unfinished"))
    assert [r.run_id for r in journal.gc(keep_last=2, dry_run=True)] == ["r2", "r1"]
    assert len(journal.runs()) == 5
    assert journal.gc(keep_last=2, older_than=timedelta(days=1)) == []  # all are new
    seals = {run_id: journal.run(run_id).seal for run_id in ("r1", "r2")}
    assert all(seals.values())
    removed = journal.gc(keep_last=2)
    assert [r.run_id for r in removed] == ["r2", "r1"]
    assert sorted(r.run_id for r in journal.runs()) == ["r3", "r4", "unfinished"]
    assert all(v.ok for v in journal.verify())
    with pytest.raises(ValueError, match="never removes every run"):
        journal.gc()
    removed = journal.gc(keep_last=0, statuses=["running"])
    assert [r.run_id for r in removed] == ["unfinished"]
    journal.close()
    conn = sqlite3.connect(tmp_path / "j.db")
    logged = conn.execute(
        "SELECT run_id, workflow, status, events, seal FROM retention_log"
    ).fetchall()
    workflow = "tests.test_export:blogger"
    assert sorted(logged) == [
        ("r1", workflow, "completed", 4, seals["r1"]),
        ("r2", workflow, "completed", 4, seals["r2"]),
        ("unfinished", "app:wf", "running", 0, None),
    ]
    with pytest.raises(sqlite3.IntegrityError, match="only journal gc removes runs"):
        conn.execute("DELETE FROM events")  # retention's permit ended with its transaction
    conn.close()


def test_gc_never_removes_a_run_that_is_owned(tmp_path: Path) -> None:
    """A run with a live owner is skipped even when the policy selects it."""
    journal = Journal(tmp_path / "j.db")
    journal.store.create_run(make_run("busy"))
    journal.store.claim("busy", make_owner(), resuming=False)
    assert journal.gc(keep_last=0, statuses=[RunStatus.RUNNING]) == []
    assert journal.run("busy").owner is not None
    journal.close()


async def _awaits_approval() -> str:
    value: str = await replay.signal("approval")
    return value


def test_a_new_run_of_a_removed_runs_id_is_not_handed_its_signals(tmp_path: Path) -> None:
    """Run ids that name a business object (an order) come back after `gc` removed the old
    run: the new run waits for its own approval, not the one sent to the removed run."""
    journal = Journal(tmp_path / "j.db")
    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(_awaits_approval, journal=journal, run_id="order-7"))
    journal.signal("order-7", "approval", "approved (the old order)")
    journal.signal("order-7", "approval", "approved twice by mistake")
    old = asyncio.run(replay.run(_awaits_approval, journal=journal, run_id="order-7"))
    assert old == "approved (the old order)"
    assert [r.run_id for r in journal.gc(keep_last=0, statuses=["completed"])] == ["order-7"]
    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(_awaits_approval, journal=journal, run_id="order-7"))
    journal.close()


def test_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    """Run ids, step names and payloads that start with =, +, -, @, a tab or a carriage return
    are written with a leading ' (OWASP), so a spreadsheet shows them instead of running them."""
    from replay import run, step

    @step(kind="tool", name='=HYPERLINK("http://evil.example","click")')
    async def hostile(text: str) -> str:
        return text

    async def workflow() -> list[str]:
        return [await hostile(cell) for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx")]

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(run(workflow, journal=journal, run_id="-2+3"))
        text = exported(journal, "csv")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert rows
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert {row[0] for row in rows} == {"'-2+3"}
    assert {row[4] for row in rows} == {'\'=HYPERLINK("http://evil.example","click")'}
