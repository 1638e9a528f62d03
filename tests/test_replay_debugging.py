"""Replay as a debugger: go past the frontier without recording, break at a step, progress."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from types import FrameType, FunctionType

import pytest

import replay
from journal import Journal
from journal._events import EventRow
from replay._rerun import load_workflow

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


_ORDERS_FLOW = """
from pydantic import BaseModel, field_validator


class Order(BaseModel):
    sku: str

    @field_validator("sku")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


async def place(order: Order) -> str:
    return order.sku
"""


def _copies_of(path: Path) -> int:
    """Functions alive whose code came from the file at `path`."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, FunctionType)
        and obj.__name__ == "place"
        and obj.__code__.co_filename == str(path)
    )


def test_replays_from_a_file_let_each_loaded_copy_of_it_go(
    sqlite_journal: Journal, tmp_path: Path
) -> None:
    """`entry="path/to/file.py:function"` imports the file afresh for each replay; what was
    learnt of its workflow's parameters (validators of the file's own models, whose methods
    hold the file's globals, hence the workflow) must not keep every copy alive."""
    path = tmp_path / "orders_flow_for_replays.py"
    path.write_text(_ORDERS_FLOW)
    entry = f"{path}:place"
    place = load_workflow(entry)  # its module stays in sys.modules, as the first import's
    try:
        order = place.__globals__["Order"](sku="a")
        asyncio.run(replay.run(place, order, journal=sqlite_journal, run_id="r"))
        del place, order
        alive = _copies_of(path)
        for _ in range(3):
            outcome = asyncio.run(replay.replay_run(sqlite_journal, "r", entry=entry))
            assert outcome.result == "A"
        assert _copies_of(path) == alive
    finally:
        sys.modules.pop(path.stem, None)
