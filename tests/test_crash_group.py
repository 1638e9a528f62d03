"""`kill -9` under group commit: 100 runs at once, killed at random moments, then resumed.

A real process (tests/workers/group_worker.py) runs 100 journaled runs concurrently on one
SQLite file, so their rows are committed by the group committer. Outside the journal it notes
each step body's effect and, separately, each value the workflow saw. The law: no step whose
value a workflow saw is executed again, however the kills fall; every run ends with the result
of an uncrashed run, and every run's hash chain verifies.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from journal import Journal, RunStatus

WORKER = Path(__file__).parent / "workers" / "group_worker.py"
RUNS = 100
STEPS = 10
DEADLINE = 30.0


def _lines(path: Path) -> Counter[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Counter()
    return Counter(text.split("\n")[:-1])  # the last piece has no newline yet: not a line


def _spawn(db: Path, effects: Path, seen: Path) -> subprocess.Popen[bytes]:
    args = [str(db), str(effects), str(seen), str(RUNS), str(STEPS)]
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _expected() -> dict[str, int]:
    return {f"g{k}": sum(i * 3 + len(f"g{k}") for i in range(STEPS)) for k in range(RUNS)}


@pytest.mark.parametrize("seed", [1, 2])
def test_no_step_whose_value_was_seen_runs_again(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db, effects, seen = tmp_path / "j.db", tmp_path / "effects.log", tmp_path / "seen.log"
    total = RUNS * STEPS
    kills: list[tuple[Counter[str], Counter[str]]] = []
    for low, high in ((0.05, 0.3), (0.35, 0.6), (0.65, 0.9)):
        wanted = int(total * rng.uniform(low, high))
        proc = _spawn(db, effects, seen)
        deadline = time.monotonic() + DEADLINE
        while sum(_lines(seen).values()) < wanted:
            if proc.poll() is not None:
                _, stderr = proc.communicate()
                pytest.fail(f"worker exited ({proc.returncode}) before the kill: {stderr!r}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                pytest.fail(f"fewer than {wanted} values seen within {DEADLINE} s")
            time.sleep(rng.uniform(0, 0.004))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=DEADLINE)
        assert proc.returncode == -signal.SIGKILL
        kills.append((_lines(seen), _lines(effects)))

    proc = _spawn(db, effects, seen)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout.decode().strip().splitlines()[-1]) == _expected()

    final = _lines(effects)
    for number, (seen_then, effects_then) in enumerate(kills):
        assert seen_then, f"kill {number} came before any value was seen"
        again = {key for key in seen_then if final[key] != effects_then[key]}
        assert again == set(), f"kill {number}: seen, then executed again: {sorted(again)[:10]}"
    assert set(final) == {f"g{k}:{i}" for k in range(RUNS) for i in range(STEPS)}
    assert max(final.values()) <= 1 + len(kills)  # once, plus once per kill that cut it short
    with Journal(db) as journal:
        assert {r.status for r in journal.runs()} == {RunStatus.COMPLETED}
        verdicts = journal.verify()
        assert len(verdicts) == RUNS and all(v.ok for v in verdicts)
