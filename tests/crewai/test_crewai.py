"""crewai (a one-agent crew, crewai's native OpenAI provider on openai 2.x) recorded,
SIGKILLed mid-request, resumed, replayed: the law of tests/frameworks/harness.py, with the
driver tests/frameworks/drivers/drive_crewai.py.

The model asks for the crew's tool twice in one response, which crewai runs in a
ThreadPoolExecutor, each call in a copy of the context (the issue: "Resume pays every call
again ... or diverges (llama-index, crewai with `stream=True`)").
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay


def test_kickoff_async_with_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """Crew.kickoff_async (the sync kickoff in asyncio.to_thread); two tool calls from one
    model response run in crewai's thread pool, Paris's starting 0.2 s after Rome's (Rome's
    after Paris's on resume): killed with one tool answered and the other in flight, resumed
    paying only that one again, replayed with the server gone."""
    crash_resume_replay(
        forks, tmp_path, Pattern("crewai", "kickoff_async", hold=3, late=("Paris", "Rome"))
    )


def test_akickoff_with_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """Crew.akickoff, crewai's native async path, with the same two tool calls: the same
    law."""
    crash_resume_replay(
        forks, tmp_path, Pattern("crewai", "akickoff", hold=3, late=("Paris", "Rome"))
    )


def test_streamed_llm(forks: Drivers, tmp_path: Path) -> None:
    """LLM(stream=True): every model answer is a server-sent event stream, which the sync
    OpenAI client of crewai's provider reads (openai 2.x closes it right after `data:
    [DONE]`). Two rounds (two tools in parallel, then one); killed while the second streamed
    model request is in flight: resumed paying only that one again, replayed with the server
    gone."""
    crash_resume_replay(
        forks, tmp_path, Pattern("crewai", "stream", hold=4, late=("Paris", "Rome"))
    )


def test_streamed_crew(forks: Drivers, tmp_path: Path) -> None:
    """Crew(stream=True): kickoff_async returns a CrewStreamingOutput, which the workflow code
    iterates while the crew runs in a thread and feeds it the chunks of the streamed model
    answers (tool-call arguments and text): killed while the second streamed model request
    is in flight, the same law, with the same chunks on resume and replay."""
    crash_resume_replay(
        forks, tmp_path, Pattern("crewai", "crew_stream", hold=4, late=("Paris", "Rome"))
    )
