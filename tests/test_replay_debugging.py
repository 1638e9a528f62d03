"""Replay as a debugger: go past the frontier without recording, break at a step, progress."""

from __future__ import annotations

import asyncio
from types import FrameType

import pytest

import replay
from journal import Journal
from journal._events import EventRow

LIVE_CALLS: list[str] = []


@replay.step(kind="tool")
async def lookup(city: str) -> int:
    LIVE_CALLS.append(city)
    await asyncio.sleep(0)
    return len(city) * 10


async def trip(cities: list[str]) -> int:
    total = 0
    for city in cities:
        total += await lookup(city)
    return total


async def longer_trip(cities: list[str]) -> int:
    """The same workflow after an edit: one more city than was recorded."""
    return await trip([*cities, "Oslo"])


@pytest.fixture(autouse=True)
def _reset() -> None:
    LIVE_CALLS.clear()


def test_allow_live_runs_past_the_frontier_without_recording(journal: Journal) -> None:
    """Replay with allow_live serves what is recorded, runs the rest live, writes nothing."""
    asyncio.run(replay.run(trip, ["Rome", "Lima"], journal=journal, run_id="r"))
    before = journal.events("r")
    LIVE_CALLS.clear()
    with pytest.raises(replay.FrontierReached):
        asyncio.run(replay.replay_run(journal, "r", entry=f"{__name__}:longer_trip"))
    trip_entry = f"{__name__}:longer_trip"
    outcome = asyncio.run(replay.replay_run(journal, "r", entry=trip_entry, allow_live=True))
    assert outcome.result == 40 + 40 + 40
    assert LIVE_CALLS == ["Oslo"]
    assert outcome.summary.served == 2 and outcome.summary.executed == 1
    assert outcome.summary.result_matches_recorded is False
    assert journal.events("r") == before
    assert journal.verify("r")[0].sealed


def test_break_at_calls_the_debugger_in_the_workflow_frame(journal: Journal) -> None:
    """break_at stops when that step is served, in the frame that called it, with its row."""
    asyncio.run(replay.run(trip, ["Rome", "Lima", "Kyiv"], journal=journal, run_id="r"))
    stops: list[tuple[str, int, str, bytes | None]] = []

    def on_break(frame: FrameType, key: str, row: EventRow) -> None:
        stops.append((key, frame.f_locals["total"], frame.f_code.co_name, row[7]))

    outcome = asyncio.run(replay.replay_run(journal, "r", break_at="0:2", on_break=on_break))
    assert outcome.result == 120 and LIVE_CALLS == ["Rome", "Lima", "Kyiv"]
    assert stops == [("0:2", 40, "trip", b"40")]


def test_progress_reports_served_steps_out_of_recorded(journal: Journal) -> None:
    """progress(served, total) ends at (n, n) for a run that reproduces."""
    asyncio.run(replay.run(trip, ["A"] * 30, journal=journal, run_id="r"))
    seen: list[tuple[int, int]] = []
    asyncio.run(
        replay.replay_run(journal, "r", progress=lambda done, total: seen.append((done, total)))
    )
    assert seen[-1] == (30, 30)
    assert all(done <= total for done, total in seen)
