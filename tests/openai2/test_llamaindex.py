"""llama-index (FunctionAgent over llama-index-llms-openai, openai 2.x) recorded, SIGKILLed
mid-request, resumed, replayed: the law of tests/frameworks/harness.py, with the driver
tests/frameworks/drivers/drive_llamaindex.py.

The agent runs as a llama-index workflow: every step is a task of its own, started by the
workflow's control loop as events arrive, and parallel tool calls are `call_tool` steps whose
results `aggregate_tool_results` collects in the order the loop takes them (the issue:
"llama-index parallel tool calls paid two completed tool calls again on resume and raised
NonDeterminismError"). Those fail on an engine bug reproduced in plain asyncio by
tests/frameworks/test_reproductions.py (the two `one_per_wake` / `held_live` tests).
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay

BACK_TO_BACK = (
    "engine: outcomes handed out in the same loop turn (a served one and the next served or "
    "held live one), so the workflow's control loop takes them together where live it took "
    "them one at a time; see test_reproductions.py, "
    "test_outcomes_taken_one_per_wake_replay_in_their_live_order and "
    "test_a_held_live_outcome_comes_after_the_served_one_it_waited_for"
)


def test_parallel_tool_calls(forks: Drivers, tmp_path: Path) -> None:
    """One model response asks for two async tools, which the workflow runs as concurrent
    `call_tool` steps, Paris's starting 0.2 s after Rome's (Rome's after Paris's on resume):
    killed with Rome's answered and Paris's in flight, resumed paying only that one again
    (to the clean run's answer), replayed with the server gone.

    Fails: the resume answers 'final: [[lookup:Paris]] [[lookup:Rome]]', the clean run
    'final: [[lookup:Rome]] [[lookup:Paris]]' (Paris's re-executed answer is handed out in
    the same turn as Rome's served one, and the control loop takes Paris's first)."""
    crash_resume_replay(
        forks, tmp_path, Pattern("llamaindex", "parallel", hold=3, late=("Paris", "Rome"))
    )


def test_parallel_sync_tools(forks: Drivers, tmp_path: Path) -> None:
    """The same with plain `def` tools, which FunctionTool runs in executor threads, each in a
    copy of the context: the same law.

    Fails in about half the runs: the resume records the two tool results taken together
    (one more `aggregate_tool_results` worker), the replay takes them apart and raises
    FrontierReached at the second model request (`0/1/13:1`, recorded as `0/1/14:1`)."""
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
    while the second streamed model request is in flight, the same law.

    Fails: on resume the two served tool results are handed out together, the control loop
    starts one `aggregate_tool_results` worker more than live, and the second model request
    gets another key: NonDeterminismError, "the recorded run asked for step 0/1/13:1 at this
    point (event seq 7), and the code does not ask for it now"."""
    crash_resume_replay(
        forks,
        tmp_path,
        Pattern("llamaindex", "stream_parallel", hold=4, late=("Paris", "Rome")),
    )
