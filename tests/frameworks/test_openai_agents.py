"""openai-agents (the OpenAI Agents SDK) recorded, SIGKILLed mid-request, resumed, replayed.

The SDK builds its own AsyncOpenAI client; only `instrument()` and the journaled run make it
durable. The law each test holds is in harness.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.frameworks.harness import (
    Drivers,
    Pattern,
    crash_resume_replay,
    record_then_replay,
    soak,
)


def test_runner_run_with_one_tool(forks: Drivers, tmp_path: Path) -> None:
    """Runner.run, one async tool call per round (two rounds), killed while the second tool
    call is in flight: resumed paying only that call again, replayed with the server gone."""
    crash_resume_replay(forks, tmp_path, Pattern("openai_agents", "run", hold=4))


def test_run_streamed(forks: Drivers, tmp_path: Path) -> None:
    """Runner.run_streamed with its events consumed to the end, killed while the second
    (streamed) model request is in flight: the same answer on resume and on replay."""
    crash_resume_replay(forks, tmp_path, Pattern("openai_agents", "streamed", hold=3))


def test_parallel_async_tools(forks: Drivers, tmp_path: Path) -> None:
    """Two async tool calls in one model response, run by the SDK as concurrent tasks,
    killed with one answered and the other in flight: only the open one is paid again."""
    crash_resume_replay(
        forks, tmp_path, Pattern("openai_agents", "parallel", hold=3, late=("Paris", "Rome"))
    )


def test_parallel_sync_tools_in_threads(forks: Drivers, tmp_path: Path) -> None:
    """Two plain `def` tools called in one model response, which the SDK runs concurrently
    with asyncio.to_thread, one starting 0.2 s after the other (the other one on resume): the
    same law as the async tools. Started at the same moment they hit the threads race of
    test_reproductions in about half the runs (test_parallel_sync_tools_started_at_once)."""
    crash_resume_replay(
        forks, tmp_path, Pattern("openai_agents", "parallel_sync", hold=3, late=("Paris", "Rome"))
    )


def test_runner_run_under_wait_for_times_out_mid_tool(forks: Drivers, tmp_path: Path) -> None:
    """Runner.run under asyncio.wait_for, whose timeout expires while both tool calls are in
    flight (the server holds them open): the run answers "timed out". Replayed with the
    server gone it answers the same, running and sending nothing."""
    pattern = Pattern("openai_agents", "timeout", hold=2)
    recorded = record_then_replay(forks, tmp_path, pattern, held=(2, 3))
    assert recorded.result == "timed out"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("JOURNAL_SOAK"), reason="soak test: JOURNAL_SOAK=1")
def test_parallel_sync_tools_started_at_once(forks: Drivers, tmp_path: Path) -> None:
    """Two `def` tools of one model response started at the same moment, as the SDK starts
    them: 30 runs each record and replay. (The short version, started 0.2 s apart, is
    test_parallel_sync_tools_in_threads.)"""
    soak(forks, tmp_path, Pattern("openai_agents", "parallel_sync", hold=0), runs=30, together=2)
