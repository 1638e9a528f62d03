"""`journal resume / fork / export / verify / gc` and replay's debugging options, end to end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journal import Journal
from replay import run, step
from replay._cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
calls: Counter[str] = Counter()


@step(kind="llm")
async def plan(goal: str) -> list[str]:
    calls["plan"] += 1
    await asyncio.sleep(0)
    return [f"search {goal}", "write"]


@step(kind="tool")
def act(task: str) -> str:
    calls["act"] += 1
    return f"did {task}"


async def planner(goal: str) -> str:
    tasks = await plan(goal)
    return "; ".join([act(task) for task in tasks])


async def planner_interrupted(goal: str) -> str:
    await plan(goal)
    raise KeyboardInterrupt


planner_interrupted.__qualname__ = planner.__qualname__


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        asyncio.run(run(planner, "cats", journal=journal, run_id="p1"))
        asyncio.run(run(planner, "dogs", journal=journal, run_id="p2"))
    calls.clear()
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_resume_finishes_an_interrupted_run(tmp_path: Path) -> None:
    """`journal resume RUN` serves what was recorded and runs the rest live, once."""
    path = tmp_path / "j.db"
    with Journal(path) as journal, pytest.raises(KeyboardInterrupt):
        asyncio.run(run(planner_interrupted, "owls", journal=journal, run_id="cut"))
    calls.clear()
    code, output = invoke("resume", "cut", "--db", str(path))
    assert code == 0, output
    assert "1 served from the journal, 2 executed live" in output
    assert "did search owls; did write" in output
    assert calls == Counter({"act": 2})
    code, output = invoke("resume", "cut", "--db", str(path))
    assert code == 0 and "already finished" in output and calls["act"] == 2


def test_fork_with_override_and_resume(db: Path) -> None:
    """`journal fork --override KEY=JSON --resume` continues the fork live on the new answer."""
    code, output = invoke(
        "fork", "p1", "--as", "what-if", "--override", '0:1=["search owls"]', "--resume",
        "--db", str(db),
    )  # fmt: skip
    assert code == 0, output
    assert "forked p1 at seq 3 as what-if, with 0:1 overridden" in output
    assert "did search owls" in output and calls == Counter({"act": 1})
    code, output = invoke("fork", "p1", "--override", "0:1=not json", "--db", str(db))
    assert code == 2 and "is not JSON" in output
    code, output = invoke("fork", "p1", "--at", "40", "--db", str(db))
    assert code == 1 and "between 1" in output
    code, output = invoke("fork", "p1", "--at", "2", "--as", "f2", "--json", "--db", str(db))
    assert json.loads(output) == {
        "run_id": "f2",
        "parent_run_id": "p1",
        "fork_seq": 2,
        "overrides": [],
    }


def test_replay_allow_live_and_break_at(db: Path) -> None:
    """--allow-live goes past the frontier without recording; --break-at needs a terminal's
    pdb, so here it only must not disturb a run that is not at that key."""
    code, output = invoke("replay", "p1", "--db", str(db), "--allow-live")
    assert code == 0 and "reproduced" in output
    code, output = invoke("replay", "p1", "--db", str(db), "--break-at", "9:9")
    assert code == 0 and "reproduced" in output


def test_break_at_stops_in_pdb_in_the_workflow_frame(db: Path) -> None:
    """A real `journal replay --break-at` process stops in pdb at the step; commands typed at
    its prompt see the workflow's locals; `c` finishes the replay."""
    script = Path(sys.executable).with_name("journal")
    result = subprocess.run(
        [str(script), "replay", "p1", "--db", str(db), "--break-at", "0:1"],
        input="p goal\nc\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "step 0:1" in result.stdout and "served from the journal" in result.stdout
    assert "'cats'" in result.stdout  # `p goal` printed the workflow's argument
    assert "reproduced" in result.stdout


def test_export_then_verify_file_and_tampering_exit_codes(db: Path, tmp_path: Path) -> None:
    """export -> verify --file passes (exit 0); an edit through sqlite3 makes verify exit 3
    and name the run, seq and field."""
    export = tmp_path / "all.jsonl"
    code, output = invoke("export", "--all", "-o", str(export), "--db", str(db))
    assert code == 0 and "exported 12 events of all runs to" in output
    code, output = invoke("verify", "--file", str(export))
    assert code == 0, output
    assert "p1" in output and "intact" in output and "sealed" in output
    code, output = invoke("verify", "--json", "--db", str(db))
    assert [v["verdict"] for v in json.loads(output)] == ["intact", "intact"]

    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute(
        "UPDATE events SET payload = CAST('\"did nothing\"' AS BLOB)"
        " WHERE run_id = 'p2' AND seq = 4"
    )
    conn.commit()
    conn.close()
    code, output = invoke("verify", "--db", str(db))
    assert code == 3
    assert "p2" in output and "broken" in output and "seq 4 · hash" in output
    code, output = invoke("verify", "p1", "--db", str(db))
    assert code == 0
    code, output = invoke("verify", "--file", str(export))
    assert code == 0  # the export was taken before the edit: it still proves the original


def test_export_formats_and_refusals(db: Path, tmp_path: Path) -> None:
    """Each format writes; html needs one run; a bad format or no selection is refused."""
    for fmt in ("json", "csv", "html"):
        target = tmp_path / f"p1.{fmt}"
        code, output = invoke("export", "p1", "-f", fmt, "-o", str(target), "--db", str(db))
        assert code == 0, output
        assert target.stat().st_size > 0
    code, output = invoke("export", "p1", "--db", str(db))
    assert code == 0 and output.startswith('{"type":"export"')  # stdout by default
    assert invoke("export", "--all", "-f", "html", "--db", str(db))[0] == 1
    assert "unknown format" in invoke("export", "p1", "-f", "xml", "--db", str(db))[1]
    assert "or pass --all" in invoke("export", "--db", str(db))[1]
    assert "No run 'nope'" in invoke("export", "nope", "--db", str(db))[1]


def test_gc_dry_run_then_remove(db: Path) -> None:
    """gc lists what a policy removes with --dry-run, then removes exactly that."""
    code, output = invoke("gc", "--keep-last", "1", "--dry-run", "--db", str(db))
    assert code == 0 and "would remove 1 runs" in output and "p1" in output
    code, output = invoke("gc", "--keep-last", "1", "--json", "--db", str(db))
    assert json.loads(output) == {"dry_run": False, "runs": ["p1"]}
    assert "p1" not in invoke("runs", "--db", str(db))[1]
    code, output = invoke("gc", "--db", str(db))
    assert code == 1 and "never removes every run" in output
    code, output = invoke("gc", "--older-than", "soon", "--db", str(db))
    assert code == 1 and "cannot read 'soon'" in output


def test_diff_names_the_first_difference_and_exits_3(db: Path) -> None:
    """Two runs with other inputs differ from the plan on: diff shows the inputs, the first
    differing step with its changed argument, and exits 3; a run against a replica exits 0."""
    code, output = invoke("diff", "p1", "p2", "--db", str(db))
    assert code == 3, output
    assert "inputs:" in output and "first difference: step 0:1" in output
    assert 'goal: "cats" -> "dogs"' in output
    assert "arguments, outcome" in output
    code, output = invoke("fork", "p1", "--as", "copy", "--resume", "--db", str(db))
    assert code == 0
    code, output = invoke("diff", "p1", "copy", "--db", str(db))
    assert code == 0 and "agree on all 3 steps" in output, output
    code, output = invoke("diff", "p1", "p2", "--json", "--db", str(db))
    report = json.loads(output)
    assert code == 3 and not report["identical"]
    assert report["steps"][0]["fields"] == ["arguments", "outcome"]


def test_the_installed_script_runs_the_audit_and_debugging_commands(
    db: Path, tmp_path: Path
) -> None:
    """Each new command through the real `journal` script in its own process: fork and resume,
    diff, export, verify (intact, then 3 after an edit), gc."""
    script = str(Path(sys.executable).with_name("journal"))

    def journal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args, "--db", str(db)], capture_output=True, text=True, cwd=ROOT, timeout=60
        )

    assert journal("fork", "p1", "--at", "3", "--as", "p1-retry").returncode == 0
    resumed = journal("resume", "p1-retry")
    assert resumed.returncode == 0 and "2 executed live" in resumed.stdout, resumed.stderr
    assert journal("diff", "p1", "p1-retry").returncode == 0
    assert journal("diff", "p1", "p2").returncode == 3
    export = tmp_path / "p1.jsonl"
    assert journal("export", "p1", "-o", str(export)).returncode == 0
    checked = subprocess.run(
        [script, "verify", "--file", str(export)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and "intact" in checked.stdout
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute('UPDATE runs SET inputs = CAST(\'{"args":["owls"],"kwargs":{}}\' AS BLOB)')
    conn.commit()
    conn.close()
    broken = journal("verify", "p1")
    assert broken.returncode == 3 and "run header" in broken.stdout, broken.stdout
    removed = journal("gc", "--keep-last", "0", "--json")  # edited runs are evidence: kept
    assert removed.returncode == 0 and json.loads(removed.stdout)["runs"] == [], removed.stdout
