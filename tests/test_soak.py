"""SIGKILL at random moments, again and again, then resume: on SQLite and PostgreSQL, with
gathered, sync (in threads), retrying steps and child tasks. The law: the result equals an
uncrashed run's, no step body runs again once its completion was committed, and the journal
verifies. JOURNAL_SOAK=1 runs the long version (300 kills on SQLite, 80 on PostgreSQL); CI
runs a short one on each store."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from journal import Journal

from .conftest import PG_URL, postgres_store

WORKER = Path(__file__).parent / "workers" / "soak_worker.py"
SOAK = bool(os.environ.get("JOURNAL_SOAK"))
KILLS = {"sqlite": 300, "postgres": 80} if SOAK else {"sqlite": 10, "postgres": 6}
ROUNDS = {"sqlite": 240, "postgres": 60} if SOAK else {"sqlite": 4, "postgres": 3}
RUN_ID = "soak"


def _spawn(url: str, effects: Path, rounds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, str(effects), RUN_ID, str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return report


def _effects(path: Path) -> Counter[str]:
    try:
        lines = path.read_text().split("\n")[:-1]  # whole lines only
    except FileNotFoundError:
        return Counter()
    return Counter(line.removeprefix(f"{RUN_ID}:") for line in lines)


Completed = Callable[[], frozenset[str]]


def _soak(url: str, completed: Completed, kills: int, rounds: int, tmp: Path) -> None:
    effects = tmp / "effects.log"
    rng = random.Random(kills * 7919 + rounds)
    snapshots: list[tuple[frozenset[str], Counter[str]]] = []
    report: dict[str, Any] | None = None
    killed = 0
    while killed < kills:
        before = len(completed())
        proc = _spawn(url, effects, rounds)
        deadline = time.monotonic() + 60
        while len(completed()) <= before and proc.poll() is None:
            assert time.monotonic() < deadline, "no progress within 60 s"
            time.sleep(0.003)
        time.sleep(rng.uniform(0.0, 0.04))
        if proc.poll() is not None:
            report = _finish(proc)
            break
        seen = _effects(effects)  # effects first: a completion is never seen before its effect
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        snapshots.append((completed(), seen))
        killed += 1
    if report is None:
        report = _finish(_spawn(url, effects, rounds))
    final = _effects(effects)
    for done, seen in snapshots:
        for key in done:
            assert final[key] == seen[key], f"step {key} ran again after it was committed"
    assert report["result"] == _reference(rounds, tmp)
    with Journal(url, read_only=True) as journal:
        verdicts = journal.verify()
    assert [v.verdict for v in verdicts] == ["intact"] and verdicts[0].sealed, verdicts
    print(f"{killed} SIGKILLs, then resumed to the end: {len(final)} steps, all intact")
    assert killed == kills or not SOAK, f"only {killed} of {kills} kills landed before the end"
    assert killed >= min(kills, 3), f"only {killed} kills landed"


_REFERENCES: dict[int, list[int]] = {}


def _reference(rounds: int, tmp: Path) -> list[int]:
    """The uncrashed run's result, on a journal of its own."""
    if rounds not in _REFERENCES:
        where = tmp / "reference"
        where.mkdir(exist_ok=True)
        report = _finish(_spawn(str(where / "ref.db"), where / "effects.log", rounds))
        _REFERENCES[rounds] = report["result"]
    return _REFERENCES[rounds]


@pytest.mark.slow
def test_sigkill_soak_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "soak.db"

    def completed() -> frozenset[str]:
        if not db.exists():
            return frozenset()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT key FROM events WHERE run_id = ? AND status = 'completed'", (RUN_ID,)
            ).fetchall()
        except sqlite3.OperationalError:
            return frozenset()
        finally:
            conn.close()
        return frozenset(key for (key,) in rows)

    _soak(str(db), completed, KILLS["sqlite"], ROUNDS["sqlite"], tmp_path)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


@pytest.mark.slow
def test_sigkill_soak_on_postgres(pg_schema: str, tmp_path: Path) -> None:
    import psycopg

    postgres_store(pg_schema).close()  # the schema exists (and CI fails if the server is down)
    url = f"{PG_URL}?schema={pg_schema}"

    def completed() -> frozenset[str]:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT key FROM {pg_schema}.events WHERE run_id = %s"  # type: ignore[arg-type]
                " AND status = 'completed'",
                (RUN_ID,),
            ).fetchall()
        return frozenset(key for (key,) in rows)

    _soak(url, completed, KILLS["postgres"], ROUNDS["postgres"], tmp_path)
