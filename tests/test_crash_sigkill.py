"""`kill -9` at varied moments, several times, then resume: nothing committed is lost or redone.

Real processes (tests/workers/crash_worker.py) run a multi-step workflow with gathered steps
and child tasks on an SQLite journal. Each step body appends its idempotency key to an effects
file (O_APPEND + fsync) outside the journal, so the test counts how often each body ran. After
each SIGKILL the test reads, post mortem, which keys the journal holds as started / completed
and which effects exist, then resumes in a new process. The in-process version of this law
(crashes raised as exceptions, hypothesis-chosen) is tests/test_crash_resume_property.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from journal import EventStatus, Journal, RunStatus

WORKER = Path(__file__).parent / "workers" / "crash_worker.py"
RUN_ID = "crash"
SEED = 5
ROUNDS = 8
STEPS = 5 * ROUNDS  # per round: one step, two gathered steps, one child task with two steps
DEADLINE = 10.0


@dataclass(frozen=True)
class Snapshot:
    """What survived at one moment: journal rows by key, and body executions by key."""

    started: frozenset[str]
    completed: frozenset[str]
    effects: Counter[str]

    @property
    def in_flight(self) -> frozenset[str]:
        """Keys whose start (or effect) is recorded but whose completion is not."""
        return (self.started | frozenset(self.effects)) - self.completed

    @property
    def effect_not_committed(self) -> frozenset[str]:
        """Keys whose body had its side effect but whose completion was not committed."""
        return frozenset(self.effects) - self.completed


def _read_effects(path: Path) -> Counter[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Counter()
    prefix = f"{RUN_ID}:"
    lines = text.split("\n")[:-1]  # only whole lines: the last piece has no newline yet
    assert all(line.startswith(prefix) for line in lines), lines
    return Counter(line.removeprefix(prefix) for line in lines)


def _snapshot(db: Path, effects: Path) -> Snapshot:
    """Effects first, then the journal: a key's completion is never seen before its effect."""
    counts = _read_effects(effects)
    rows: list[tuple[str, str]] = []
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT key, status FROM events WHERE run_id = ? ORDER BY seq", (RUN_ID,)
            ).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            rows = []
        finally:
            conn.close()
    started = frozenset(k for k, s in rows if s == EventStatus.STARTED.value)
    completed = frozenset(k for k, s in rows if s == EventStatus.COMPLETED.value)
    return Snapshot(started, completed, counts)


def _spawn(db: Path, effects: Path, durability: str) -> subprocess.Popen[bytes]:
    args = [str(db), str(effects), RUN_ID, durability, str(SEED), str(ROUNDS)]
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    report: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Counter[str]]:
    """An uncrashed run of the same workflow in a clean process, on its own journal."""
    where = tmp_path_factory.mktemp("reference")
    effects = where / "effects.log"
    report = _finish(_spawn(where / "ref.db", effects, "normal"))
    counts = _read_effects(effects)
    assert len(counts) == STEPS and set(counts.values()) == {1}
    assert (report["served"], report["executed"], report["reexecuted"]) == (0, STEPS, 0)
    return report, counts


Trigger = Callable[[Snapshot, Snapshot], bool]


def after(steps: int, *, mid_effect: bool = False) -> Trigger:
    """Kill once `steps` more steps completed than at the previous kill, and every step in
    flight at the previous kill has completed since (so no body can run three times);
    with `mid_effect`, also wait for a body whose effect happened but whose completion is
    not yet committed (the at-least-once window)."""

    def ready(previous: Snapshot, now: Snapshot) -> bool:
        if len(now.completed) < len(previous.completed) + steps:
            return False
        if not previous.in_flight <= now.completed:
            return False
        return not mid_effect or bool(now.effect_not_committed)

    return ready


def _kill_when(
    proc: subprocess.Popen[bytes], db: Path, effects: Path, previous: Snapshot, ready: Trigger
) -> Snapshot:
    deadline = time.monotonic() + DEADLINE
    while not ready(previous, _snapshot(db, effects)):
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            pytest.fail(f"worker exited ({proc.returncode}) before the kill: {stderr.decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no kill moment within {DEADLINE}s: {_snapshot(db, effects)}")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)  # reaps it: its pid is dead, not a zombie
    assert proc.returncode == -signal.SIGKILL
    return _snapshot(db, effects)


def _crash_and_resume(
    tmp_path: Path,
    durability: str,
    triggers: list[Trigger],
    reference: tuple[dict[str, Any], Counter[str]],
) -> None:
    db = tmp_path / "journal.db"
    effects = tmp_path / "effects.log"
    reference_report, reference_effects = reference
    kills: list[Snapshot] = []
    previous = Snapshot(frozenset(), frozenset(), Counter())
    for ready in triggers:
        proc = _spawn(db, effects, durability)
        snap = _kill_when(proc, db, effects, previous, ready)

        # Nothing committed before this kill was lost, or executed again in this sitting.
        assert previous.completed <= snap.completed
        for earlier in kills:
            for key in earlier.completed:
                assert snap.effects[key] == earlier.effects[key], (key, earlier, snap)
        # A completion is recorded only after its body ran; a body's effect happens only
        # after its `started` row is durable (written before the step's first wait).
        assert snap.completed <= frozenset(snap.effects)
        assert snap.effect_not_committed <= snap.started
        assert set(snap.effects) <= set(reference_effects)
        # SIGKILL leaves the lease behind, held by the dead pid (taken over on resume).
        with Journal(db) as j:
            killed_run = j.run(RUN_ID)
        assert killed_run.status is RunStatus.RUNNING
        assert killed_run.owner is not None and killed_run.owner.pid == proc.pid
        kills.append(snap)
        previous = snap

    report = _finish(_spawn(db, effects, durability))
    final = _snapshot(db, effects)
    last = kills[-1]

    assert report["result"] == reference_report["result"]
    assert report["synchronous"] == {"normal": 1, "full": 2}[durability]
    # The final sitting served every step completed before the last kill, re-ran the ones
    # in flight (their `started` row was durable) and ran the rest for the first time.
    assert report["served"] == len(last.completed) > 0
    assert report["reexecuted"] == len(last.started - last.completed)
    assert report["served"] + report["executed"] + report["reexecuted"] == STEPS
    assert report["unconsumed"] == []

    # Each body ran once, plus once more for each kill that caught it between its effect and
    # its completion; so at most twice, and a completed step never ran again.
    assert set(final.effects) == set(reference_effects)
    for key, count in final.effects.items():
        caught = sum(key in k.effect_not_committed for k in kills)
        assert count == 1 + caught, (key, count, caught)
        assert count <= 2
    for snap in kills:
        for key in snap.completed:
            assert final.effects[key] == snap.effects[key], key
    assert sum(len(k.effect_not_committed) for k in kills) >= 1, "no kill hit a step mid-body"
    assert any("/" in key for key in final.effects), "keys of gathered child tasks"

    with Journal(db) as j:
        finished = j.run(RUN_ID)
        events = j.events(RUN_ID)
    assert finished.status is RunStatus.COMPLETED and finished.owner is None
    assert finished.resumes == len(triggers)
    completions = [e for e in events if e.status is EventStatus.COMPLETED]
    assert sorted(e.key for e in completions) == sorted(reference_effects)  # each key once
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for event in completions:
        # Attempt n+1 after n kills that caught the step in flight with its start recorded.
        in_flight_at = sum(event.key in k.started - k.completed for k in kills)
        assert event.attempt == 1 + in_flight_at, event.key

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_sigkill_repeatedly_then_resume_equals_uncrashed_run(
    tmp_path: Path, reference: tuple[dict[str, Any], Counter[str]]
) -> None:
    """Four SIGKILLs at different moments (early, mid-body twice, between bodies), then a
    clean finish: the result equals an uncrashed run's, each committed step is served and
    never runs again, only bodies caught in flight run a second time, the journal file
    passes integrity_check (default durability, synchronous=NORMAL)."""
    triggers = [after(3), after(4, mid_effect=True), after(6, mid_effect=True), after(5)]
    _crash_and_resume(tmp_path, "normal", triggers, reference)


def test_sigkill_with_full_durability(
    tmp_path: Path, reference: tuple[dict[str, Any], Counter[str]]
) -> None:
    """The same law with durability="full" (synchronous=FULL): three kills, then resume."""
    triggers = [after(2, mid_effect=True), after(7), after(5, mid_effect=True)]
    _crash_and_resume(tmp_path, "full", triggers, reference)
