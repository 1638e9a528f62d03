"""smolagents (synchronous, a sync OpenAI client) recorded, SIGKILLed mid-request, resumed,
replayed. The law each test holds is in harness.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay


def test_tool_calling_agent_inline(forks: Drivers, tmp_path: Path) -> None:
    """ToolCallingAgent.run called straight from the async workflow (blocking the event
    loop's thread), killed while the second tool call is in flight."""
    crash_resume_replay(forks, tmp_path, Pattern("smolagents", "inline", hold=4))


def test_tool_calling_agent_to_thread(forks: Drivers, tmp_path: Path) -> None:
    """The same agent run in asyncio.to_thread, killed while the second tool call is in
    flight."""
    crash_resume_replay(forks, tmp_path, Pattern("smolagents", "to_thread", hold=4))


def test_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """Two tool calls in one model response, which smolagents runs in a ThreadPoolExecutor
    with copy_context() per call, killed with one answered and the other in flight."""
    crash_resume_replay(
        forks, tmp_path, Pattern("smolagents", "parallel", hold=3, late=("Paris", "Rome"))
    )


def test_stream_outputs(forks: Drivers, tmp_path: Path) -> None:
    """stream_outputs=True: every model answer is a server-sent event stream read by the
    sync OpenAI client; killed while the second model request is in flight."""
    crash_resume_replay(forks, tmp_path, Pattern("smolagents", "stream", hold=3))
