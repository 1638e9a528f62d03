"""The structured events an operator watches: ownership, recovery, suspension, divergence."""

from __future__ import annotations

import asyncio
import logging

import pytest

import replay
from journal import Journal
from tests.fleet_workflows import approve_refund


@replay.step
async def ask(question: str) -> str:
    return question.upper()


def test_ownership_suspension_recovery_and_divergence_are_logged(
    sqlite_journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """Each event names its run (and its key where there is one) on the `replay` loggers."""
    caplog.set_level(logging.INFO, logger="replay")
    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(approve_refund, 5, journal=sqlite_journal, run_id="r1"))
    sqlite_journal.signal("r1", "approval", {"approved": True})
    asyncio.run(replay.Worker(sqlite_journal).run_once())

    prompt = {"text": "a"}

    async def agent() -> str:
        return await ask(prompt["text"])

    asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r2"))
    prompt["text"] = "b"
    with pytest.raises(replay.NonDeterminismError):
        asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r2", mode="replay"))
    lines = [record.getMessage() for record in caplog.records]

    def first(event: str) -> str:
        return next(line for line in lines if line.startswith(f"event='{event}'"))

    assert "run_id='r1'" in first("run.claimed") and "pid=" in first("run.claimed")
    assert "waiting_for='approval'" in first("run.suspended")
    assert "run_id='r1'" in first("worker.recovered")
    assert "run_id='r2'" in first("run.diverged") and "key='0:1'" in first("run.diverged")
