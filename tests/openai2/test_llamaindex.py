"""llama-index (FunctionAgent over llama-index-llms-openai, openai 2.x) recorded, SIGKILLed
mid-request, resumed, replayed: the law of tests/frameworks/harness.py, with the driver
tests/frameworks/drivers/drive_llamaindex.py.

The agent runs as a llama-index workflow: every step is a task of its own, started by the
workflow's control loop as events arrive, and parallel tool calls are `call_tool` steps whose
results `aggregate_tool_results` collects in the order the loop takes them. The engine hands
recorded results out one per loop turn, as they came live
(tests/frameworks/test_reproductions.py, the `one_per_wake` / `held_live` tests); two results
that came live in the same turn are the strict xfail at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay, run_driver
from tests.llm_server import requests_logged, serve


def test_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """One model response asks for two async tools, which the workflow runs as concurrent
    `call_tool` steps, Paris's starting 0.2 s after Rome's (Rome's after Paris's on resume):
    killed with Rome's answered and Paris's in flight, resumed paying only that one again
    (to the clean run's answer), replayed with the server gone."""
    crash_resume_replay(
        forks, tmp_path, Pattern("llamaindex", "parallel", hold=3, late=("Paris", "Rome"))
    )


def test_parallel_sync_tools(forks: Drivers, tmp_path: Path) -> None:
    """The same with plain `def` tools, which FunctionTool runs in executor threads, each in a
    copy of the context: the same law."""
    crash_resume_replay(
        forks, tmp_path, Pattern("llamaindex", "sync_tools", hold=3, late=("Paris", "Rome"))
    )


def test_streamed_agent(forks: Drivers, tmp_path: Path) -> None:
    """streaming=True: every model answer is a server-sent event stream read through
    `astream_chat_with_tools`, and the workflow code reads the AgentStream deltas from
    `handler.stream_events()` as they arrive; one tool per round. Killed while the second
    streamed model request is in flight: resumed paying only that one again, with the same
    deltas; replayed with the server gone."""
    crash_resume_replay(forks, tmp_path, Pattern("llamaindex", "stream", hold=3))


def test_streamed_agent_with_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """The streamed agent whose first model answer asks for two tools at once (Paris's
    starting 0.2 s after Rome's; the other way round on resume), then for one more: killed
    while the second streamed model request is in flight, the same law."""
    crash_resume_replay(
        forks,
        tmp_path,
        Pattern("llamaindex", "stream_parallel", hold=4, late=("Paris", "Rome")),
    )


@pytest.mark.xfail(
    strict=True,
    reason="engine: two tool results that reach the run in the same loop turn are taken by "
    "the workflow's control loop together live (one more aggregate_tool_results worker), but "
    "are handed out one per wake on replay, so the next model request gets another key",
)
def test_parallel_tools_answered_together_replay(forks: Drivers, tmp_path: Path) -> None:
    """Two async tools of one model response whose answers come back at the same moment (the
    server holds both 0.5 s), as two quick tools of a real agent do, with no crash: recorded,
    then replayed with the server gone, three times on fresh journals. Each replay must
    give the recorded answer.

    Fails: every replay raises FrontierReached at the second model request, `0/1/13:1`,
    recorded as `0/1/14:1` (test_parallel_tool_calls starts the two calls 0.2 s apart, so
    their answers reach the loop in different turns, and passes). The same timing fails the
    resume after a kill at the second model request (NonDeterminismError, the recorded run
    asked for `0/1/14:1`)."""
    pattern = Pattern("llamaindex", "parallel", hold=0)
    driver = forks(pattern.driver)
    failed: list[str] = []
    for number in range(3):
        log, db = tmp_path / f"requests{number}.log", tmp_path / f"journal{number}.db"
        server = serve(log, slow={2: 0.5, 3: 0.5})
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        try:
            recorded = run_driver(driver, pattern, db, base_url, "resume")
        finally:
            server.stop()
        sent = len(requests_logged(log))
        try:
            replayed = run_driver(driver, pattern, db, base_url, "replay")
            assert replayed.result == recorded.result
            assert len(requests_logged(log)) == sent
        except AssertionError as exc:
            failed.append(str(exc).strip().splitlines()[-1])
    assert not failed, f"{len(failed)} of 3 replays failed; the first: {failed[0]}"
