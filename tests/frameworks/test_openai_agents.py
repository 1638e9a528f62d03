"""openai-agents (the OpenAI Agents SDK) recorded, SIGKILLed mid-request, resumed, replayed.

The SDK builds its own AsyncOpenAI client; only `instrument()` and the journaled run make it
durable. The law each test holds is in harness.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay


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
    with asyncio.to_thread: the same law as the async tools."""
    crash_resume_replay(
        forks, tmp_path, Pattern("openai_agents", "parallel_sync", hold=3, late=("Paris", "Rome"))
    )
