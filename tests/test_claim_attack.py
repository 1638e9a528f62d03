"""Attacks on the PostgreSQL claim, the run's head entries and re-runs of a run read earlier
(a worker's look), on a real PostgreSQL server and real processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import replay
from journal import Journal, RunCancelled, RunStatus
from replay import step
from replay._rerun import resume_recorded
from tests.conftest import postgres_store
from tests.workers.effects import append_line

# -- workflows (importable as tests.test_claim_attack: a re-run loads them by that path) ----


def _effect(what: str) -> None:
    path = os.environ.get("CLAIM_ATTACK_EFFECTS")
    if path:
        append_line(path, what)


@step
async def act(i: int) -> int:
    _effect(f"step {i}")
    return i * 3


async def two_acts(n: int) -> int:
    _effect("body")
    return await act(n) + await act(n + 1)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("CLAIM_ATTACK_EFFECTS", str(path))
    return path


@pytest.fixture
def pg(pg_schema: str) -> Iterator[Journal]:
    journal = Journal(store=postgres_store(pg_schema))
    yield journal
    journal.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- 3. a run read earlier, changed before the claim -------------------------------------------


def test_stale_run_cancelled_before_the_claim_runs_nothing(pg: Journal, effects: Path) -> None:
    """A worker's look read the run `running`; it was cancelled before the worker claimed it.
    The worker must not run its steps (a cancelled run does nothing more)."""
    run_id = replay.submit(two_acts, 5, journal=pg, run_id="stale-cancel")
    stale = pg.run(run_id)
    replay.cancel(pg, run_id, "no longer wanted")
    assert pg.run(run_id).status is RunStatus.CANCELLED

    with pytest.raises(RunCancelled):
        asyncio.run(resume_recorded(pg, stale))
    assert [line for line in _lines(effects) if line.startswith("step")] == []
    assert pg.run(run_id).status is RunStatus.CANCELLED
    assert pg.events(run_id) == []


def test_stale_run_completed_before_the_claim_is_not_finished_again(
    pg: Journal, effects: Path
) -> None:
    """The look read the run `running`; another worker completed it before this one claimed it.
    This one returns the recorded result without sitting on it again: no second `finished`
    entry in the head, its owner-less end untouched."""
    run_id = replay.submit(two_acts, 5, journal=pg, run_id="stale-done")
    stale = pg.run(run_id)
    first = asyncio.run(replay.resume_run(pg, run_id))
    done = pg.run(run_id)
    heads_before = _head_count(pg)
    lines_before = _lines(effects)

    again = asyncio.run(resume_recorded(pg, stale))
    assert again.result == first.result == 33
    after = pg.run(run_id)
    assert after.status is RunStatus.COMPLETED
    assert after.finished_at == done.finished_at
    # (its `resumes` still counts the claim let go at once: the store counts claims)
    assert _head_count(pg) == heads_before
    assert _lines(effects) == lines_before
    assert all(v.ok for v in pg.verify())


def _head_count(journal: Journal) -> int:
    head = journal.head()
    return 0 if head is None else head.n
