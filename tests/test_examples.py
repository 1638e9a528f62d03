"""The examples run as shipped and show what they claim, each in a subprocess as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_kills_resumes_and_replays(tmp_path: Path) -> None:
    """`make demo`: after SIGKILL the resume serves completed steps; replay runs nothing live."""
    db = tmp_path / "demo" / "journal.db"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    resume = re.search(
        r"resume: (\d+) steps served from the journal, (\d+) re-executed .*, (\d+) executed live",
        out,
    )
    assert resume, out
    served, reexecuted, executed = map(int, resume.groups())
    assert served >= 6  # the kill came after 6 completed steps
    assert served + reexecuted + executed == 10  # every step answered exactly once
    assert "replay offline: 10 steps served, 0 executed; same report: True" in out
    paid = int(re.search(r"calls paid in all: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert 8 <= paid <= 8 + reexecuted  # only a step in flight at the kill may be paid twice
