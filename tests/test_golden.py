"""Golden journals: the journals and exports written by earlier versions still open, verify
with the same verdicts, replay offline to the same results, resume, and export to the same
bytes.

Each folder under tests/data/golden/ is one version's set, recorded by tests/golden/record.py
with the frozen workflows of tests/golden/workflows.py, and never rewritten. A change that
makes one of these tests fail changes the journal format or the engine's behaviour on recorded
runs: see docs/format.md for what to do instead of editing the set.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import sqlite3
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal, RunCancelled, RunStatus, ValueCodec
from replay._cli import app
from replay._rerun import load_workflow as replay_workflow
from tests.golden import workflows
from tests.golden.record import EXPORTS, JOURNALS

SETS = sorted(p for p in (Path(__file__).parent / "data" / "golden").iterdir() if p.is_dir())
CASES = [(s, name) for s in SETS for name in JOURNALS]


def _ids(case: tuple[Path, str]) -> str:
    return f"{case[0].name}-{case[1]}"


@pytest.fixture(params=CASES, ids=_ids)
def golden(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, dict[str, Any]]:
    """A copy of one golden journal (never the committed file), its name and expectations."""
    folder, name = request.param
    copy = tmp_path / f"{name}.db"
    shutil.copy(folder / f"{name}.db", copy)
    expected = orjson.loads((folder / "expected.json").read_bytes())
    workflows.live_calls.clear()
    return copy, name, expected["journals"][name]


def test_there_is_a_golden_set() -> None:
    assert SETS, "tests/data/golden/ holds no golden set"


def test_a_golden_set_holds_records_kept_as_chunks() -> None:
    """The contract covers chunks: some golden journal keeps long call records as templates
    (schema 6 on), and each reads back as the whole record its export holds."""
    templated = 0
    for folder, name in CASES:
        with sqlite3.connect(folder / f"{name}.db") as conn:
            stored = [
                (run_id, seq, column, value)
                for column in ("payload", "args")
                for run_id, seq, value in conn.execute(
                    f"SELECT run_id, seq, {column} FROM events WHERE substr({column}, 1, 1) = x'00'"
                ).fetchall()
            ]
        if not stored:
            continue
        exported = {
            (record["run_id"], record["seq"]): record
            for record in map(orjson.loads, (folder / f"{name}.jsonl").read_bytes().splitlines())
            if record.get("type") == "event"
        }
        with Journal(folder / f"{name}.db", read_only=True, hmac_key=JOURNALS[name]) as journal:
            for run_id, seq, column, template in stored:
                [event] = [e for e in journal.events(run_id) if e.seq == seq]
                whole = getattr(event, column)
                assert template.startswith(b"\x00journal-replay/chunks/v1")
                assert whole is not None and len(whole) > len(template)
                assert whole.decode() == exported[(run_id, seq)][column]
                templated += 1
    assert templated, "no golden journal keeps a record as chunks"


def test_verify_gives_the_recorded_verdicts(golden: tuple[Path, str, dict[str, Any]]) -> None:
    path, name, expected = golden
    with Journal(path, read_only=True, hmac_key=JOURNALS[name]) as journal:
        verdicts = journal.verify(since=expected["head"])
        got = [
            {
                "run_id": v.run_id,
                "verdict": v.verdict,
                "sealed": v.sealed,
                "events": v.events,
                "broken": v.broken,
            }
            for v in verdicts
            if v.run_id != "(journal head)"
        ]
        want = [
            {
                "run_id": run["run_id"],
                "verdict": run["verdict"],
                "sealed": run["sealed"],
                "events": run["events"],
                "broken": None,
            }
            for run in expected["runs"]
        ]
        assert got == want
        assert all(v.ok for v in verdicts), verdicts
        runs = {run.run_id: run for run in journal.runs()}
        for run in expected["runs"]:
            stored = runs[run["run_id"]]
            assert stored.status.value == run["status"]
            assert (stored.workflow, stored.parent_run_id, stored.fork_seq) == (
                run["workflow"],
                run["parent_run_id"],
                run["fork_seq"],
            )
            assert stored.version == run.get("version")  # none before versions were kept


@pytest.mark.parametrize("folder", SETS, ids=lambda p: p.name)
def test_a_signed_journal_without_its_key_says_which_key(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "signed.db"
    shutil.copy(folder / "signed.db", copy)
    with Journal(copy, read_only=True, hmac_key=None) as journal:
        verdicts = [v for v in journal.verify() if v.run_id != "(journal head)"]
    assert verdicts and {v.verdict for v in verdicts} == {"key_needed"}
    assert all("JOURNAL_HMAC_KEY" in v.note for v in verdicts)


def test_finished_runs_replay_offline_to_their_recorded_results(
    golden: tuple[Path, str, dict[str, Any]],
) -> None:
    path, name, expected = golden
    with Journal(path, read_only=True, hmac_key=JOURNALS[name]) as journal:
        for run in expected["runs"]:
            if run["status"] == "completed":
                outcome = asyncio.run(replay.replay_run(journal, run["run_id"]))
                assert outcome.summary.result_matches_recorded, run["run_id"]
                returns = typing.get_type_hints(replay_workflow(run["workflow"]))["return"]
                assert orjson.loads(ValueCodec(returns).encode(outcome.result)) == run["result"]
            elif run["status"] == "cancelled":  # replay stops where it was cancelled
                with pytest.raises(RunCancelled, match="no longer needed"):
                    asyncio.run(replay.replay_run(journal, run["run_id"]))
            elif run["status"] == "failed":
                with pytest.raises(workflows.NoSuchTopic) as failure:
                    asyncio.run(replay.replay_run(journal, run["run_id"]))
                assert (failure.value.topic, failure.value.code) == ("dodos", 404)
            else:  # waiting for its signal: replay stops where the recording did
                with pytest.raises(replay.FrontierReached):
                    asyncio.run(replay.replay_run(journal, run["run_id"]))
    assert workflows.live_calls == []


def test_the_waiting_run_resumes_on_its_signal(golden: tuple[Path, str, dict[str, Any]]) -> None:
    """Only the rest of the run executes: every recorded step is served, nothing is paid for
    twice, and the journal still verifies with the run finished."""
    path, name, expected = golden
    (waiting,) = [run["run_id"] for run in expected["runs"] if run["status"] == "waiting"]
    with Journal(path, hmac_key=JOURNALS[name]) as journal:
        journal.signal(waiting, "approval", {"by": "bo"})
        outcome = asyncio.run(replay.resume_run(journal, waiting))
        assert outcome.result.approved_by == "bo" and workflows.live_calls == []
        assert journal.run(waiting).status is RunStatus.COMPLETED
        assert all(v.ok for v in journal.verify(since=expected["head"]))


def _without_export_time(text: str) -> str:
    return re.sub(r'"exported_at":"[^"]*"', '"exported_at":""', text, count=1)


@pytest.mark.parametrize("folder", SETS, ids=lambda p: p.name)
def test_exports_are_the_same_bytes(folder: Path, tmp_path: Path) -> None:
    """Exporting the golden journal again writes the stored export, byte for byte (but for
    the moment of export); and the stored export verifies on its own, against the head."""
    expected = orjson.loads((folder / "expected.json").read_bytes())
    for name, key in JOURNALS.items():
        copy = tmp_path / f"{name}.db"
        shutil.copy(folder / f"{name}.db", copy)
        with Journal(copy, read_only=True, hmac_key=key) as journal:
            for fmt in EXPORTS[name]:
                out = io.StringIO()
                journal.export(out, format=fmt)  # type: ignore[arg-type]
                stored = (folder / f"{name}.{fmt}").read_bytes().decode()
                assert _without_export_time(out.getvalue()) == _without_export_time(stored)
                if fmt in ("json", "jsonl"):
                    head = expected["journals"][name]["head"]
                    verdicts = journal.verify_export(folder / f"{name}.{fmt}", since=head)
                    assert verdicts and all(v.ok for v in verdicts), verdicts


def test_an_edit_to_a_golden_journal_is_found_where_it_was_made(
    golden: tuple[Path, str, dict[str, Any]],
) -> None:
    path, name, _expected = golden
    with sqlite3.connect(path) as conn:  # as an attacker would: triggers dropped first
        conn.execute("DROP TRIGGER events_are_append_only_update")
        (seq,) = conn.execute(
            "SELECT seq FROM events WHERE run_id = 'research-done' AND instr(payload, 'cats 1')"
        ).fetchone()
        conn.execute(
            "UPDATE events SET payload = CAST(REPLACE(payload, 'cats 1', 'dogs 1') AS BLOB)"
            " WHERE run_id = 'research-done' AND seq = ?",
            (seq,),
        )
    with Journal(path, read_only=True, hmac_key=JOURNALS[name]) as journal:
        (verdict,) = journal.verify("research-done")
    assert verdict.broken is not None and (verdict.broken.seq, verdict.broken.field) == (
        seq,
        "hash",
    )


def test_the_cli_verifies_a_golden_journal_against_its_kept_head(
    golden: tuple[Path, str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, name, expected = golden
    if JOURNALS[name] is not None:
        monkeypatch.setenv("JOURNAL_HMAC_KEY", JOURNALS[name])
    result = CliRunner().invoke(app, ["verify", "--db", str(path), "--since", expected["head"]])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["head", "--db", str(path)])
    assert result.exit_code == 0 and expected["head"] in result.output, result.output
