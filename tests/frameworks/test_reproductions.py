"""The engine bugs the framework tests ran into, each reduced to plain asyncio code.

Each test names the framework code path that hits the bug in its docstring, and is marked
`xfail(strict=True)` with the engine point in its reason: it starts passing (and so fails the
suite until the mark is removed) once the engine is fixed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import openai
import pytest

import replay
from journal import EventStatus, Journal
from replay.integrations import JournalTransport

CITIES = ("Paris", "Rome")


@replay.step(name="lookup", kind="tool")
def lookup(city: str) -> str:
    return f"sunny in {city}"


def test_two_threads_starting_steps_while_the_journal_is_busy(tmp_path: Path) -> None:
    """Two threads of one run each start a sync step while another connection holds the
    journal file's write lock (as another process appending to the same file would): each
    step is journaled once, with consecutive seqs, and the run completes.

    Framework paths: openai-agents runs each plain `def` tool of a parallel tool call with
    `asyncio.to_thread` (agents/tool.py, `_on_invoke_tool_impl`); LangGraph's ToolNode under
    `ainvoke` runs `def` tools through `StructuredTool.ainvoke`, which hands them to
    `run_in_executor` (langchain_core/tools/structured.py, langchain_core/runnables/config.py)
    with a copy of the context; smolagents runs
    parallel tool calls in a ThreadPoolExecutor (smolagents/agents.py,
    `ToolCallingAgent.process_tool_calls`). Without the lock the same collision happens
    whenever two threads start within one commit of each other: 26 of 30 plain runs of two
    threads released by a barrier failed so, and 7 to 13 of 20 openai-agents runs (2 to 41
    of 80 LangGraph runs) with two parallel `def` tools (the JOURNAL_SOAK tests).
    """
    db = tmp_path / "journal.db"

    def hold_the_write_lock(taken: threading.Event) -> None:
        """Another writer of the same file, busy for 0.6 s (whatever the run is doing)."""
        busy = sqlite3.connect(db, isolation_level=None)
        try:
            busy.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(0.6)
            busy.execute("COMMIT")
        finally:
            busy.close()

    async def agent() -> list[str]:
        taken = threading.Event()
        other = threading.Thread(target=hold_the_write_lock, args=(taken,))
        other.start()
        assert taken.wait(5)
        paris = asyncio.ensure_future(asyncio.to_thread(lookup, "Paris"))
        await asyncio.sleep(0.2)  # Paris's `started` row is being written: blocked
        rome = asyncio.ensure_future(asyncio.to_thread(lookup, "Rome"))
        results = [await paris, await rome]  # Rome's start came while Paris's was blocked
        await asyncio.to_thread(other.join)
        return results

    with Journal(db) as journal:
        result = asyncio.run(replay.run(agent, journal=journal, run_id="busy"))
        events = journal.events("busy")
    assert result == ["sunny in Paris", "sunny in Rome"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completed = [e for e in events if e.status is EventStatus.COMPLETED]
    assert len(completed) == len({e.key for e in completed}) == 2


def _parallel_tools(order: tuple[str, ...], wait_for_each: bool) -> list[str]:
    """smolagents' parallel tool calls: one pool thread per call, each running in a copy of
    the caller's context. The threads reach their step in `order`, 0.2 s apart, or each
    only once the one before has finished (`wait_for_each`)."""
    turn = {city: threading.Event() for city in CITIES}
    done = {city: threading.Event() for city in CITIES}

    def call(city: str) -> str:
        assert turn[city].wait(10)
        try:
            return lookup(city)
        finally:
            done[city].set()

    with ThreadPoolExecutor(len(CITIES)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call, c) for c in CITIES]
        for city in order:
            turn[city].set()
            if wait_for_each:
                assert done[city].wait(10)
            else:
                time.sleep(0.2)
        return [future.result(timeout=10) for future in futures]


def test_threads_sharing_a_context_replay_whichever_asks_first(tmp_path: Path) -> None:
    """Two calls submitted to a thread pool with copy_context(), Paris first: recorded while
    Rome's thread reached its step (and finished it) first, replayed while Paris's reached
    it first. Replay serves each call its own recorded result.

    Framework paths: smolagents `ToolCallingAgent.process_tool_calls` (smolagents/agents.py)
    submits `ctx.run(process_single_tool_call, tool_call)` with `ctx = copy_context()` for
    each tool call of one model response to a ThreadPoolExecutor; LangGraph's sync
    `ToolNode._func` (langgraph/prebuilt/tool_node.py) maps the tool calls over
    `get_executor_for_config`, a ContextThreadPoolExecutor that submits
    `copy_context().run` (langchain_core/runnables/config.py). Every thread carries the same
    journaling scope. The framework tests (test_smolagents parallel tool calls,
    test_langgraph sync graph) fail with `NonDeterminismError ... at step 0:2`: recorded
    lookup(Rome), now lookup(Paris).
    """
    with Journal(tmp_path / "journal.db") as journal:

        async def agent(order: tuple[str, ...], mode: replay._session.Mode) -> list[str]:
            async with replay.journaled(journal, "pool", mode=mode):
                return await asyncio.to_thread(_parallel_tools, order, mode == "resume")

        recorded = asyncio.run(agent(("Rome", "Paris"), "resume"))
        replayed = asyncio.run(agent(("Paris", "Rome"), "replay"))
    assert recorded == replayed == ["sunny in Paris", "sunny in Rome"]


def _mapped_tools(order: tuple[str, ...], wait_for_each: bool) -> list[str]:
    """LangChain's ContextThreadPoolExecutor.map: one context copied per call *before* the
    calls are submitted, each call run in one of them (`contexts.pop().run(fn, ...)`) inside
    work that `submit` wraps in yet another `copy_context().run`."""
    turn = {city: threading.Event() for city in CITIES}
    done = {city: threading.Event() for city in CITIES}
    contexts = [contextvars.copy_context() for _ in CITIES]

    def call(city: str) -> str:
        assert turn[city].wait(10)
        try:
            return contexts.pop().run(lookup, city)
        finally:
            done[city].set()

    with ThreadPoolExecutor(len(CITIES)) as pool:
        futures = [
            pool.submit(functools.partial(contextvars.copy_context().run, call, city))
            for city in CITIES
        ]
        for city in order:
            turn[city].set()
            if wait_for_each:
                assert done[city].wait(10)
            else:
                time.sleep(0.2)
        return [future.result(timeout=10) for future in futures]


def test_contexts_copied_before_submission_replay_whichever_asks_first(tmp_path: Path) -> None:
    """The same two calls, submitted the way LangChain's ContextThreadPoolExecutor.map does:
    each runs in a context copied before any call was submitted. Recorded while Rome's call
    reached its step first, replayed while Paris's did: each call gets its own result.

    Framework path: LangGraph's sync ToolNode (`ToolNode._func`,
    langgraph/prebuilt/tool_node.py) runs the tool calls of one model response with
    `executor.map(self._run_one, ...)` on `get_executor_for_config`'s
    ContextThreadPoolExecutor (langchain_core/runnables/config.py), whose `map` copies the
    contexts up front and whose `submit` wraps each call in `copy_context().run`. An engine
    that gives `ThreadPoolExecutor.submit` work its own key scope by setting it in the context
    that work carries still loses here: the call switches to the context copied earlier. The
    framework test (test_langgraph, sync graph invoked from async code) fails with
    `NonDeterminismError ... at step 0:2`.
    """
    with Journal(tmp_path / "journal.db") as journal:

        async def agent(order: tuple[str, ...], mode: replay._session.Mode) -> list[str]:
            async with replay.journaled(journal, "map", mode=mode):
                return await asyncio.to_thread(_mapped_tools, order, mode == "resume")

        recorded = asyncio.run(agent(("Rome", "Paris"), "resume"))
        replayed = asyncio.run(agent(("Paris", "Rome"), "replay"))
    assert recorded == replayed == ["sunny in Paris", "sunny in Rome"]


def test_a_step_blocking_the_loop_thread_is_journaled_as_started_while_it_runs(
    tmp_path: Path,
) -> None:
    """A sync step called straight from workflow code (no thread) looks, from another
    connection, at the journal while its body runs: its `started` row is there, so a crash
    mid-body leaves the step in flight (re-executed on resume, shown by `journal show`).

    Framework path: smolagents is synchronous; `agent.run(task)` called from async code
    runs `OpenAIServerModel.generate` (smolagents/models.py) and the tools' sync HTTP on the
    loop thread, through the journaling `JournalTransport.handle_request`. The framework test
    (test_smolagents, inline) killed mid-request resumes with `reexecuted=0, executed=2`:
    the request in flight was never journaled as started.
    """
    db = tmp_path / "journal.db"
    seen: list[list[tuple[str, str]]] = []

    @replay.step(name="slow_lookup", kind="tool")
    def slow_lookup(city: str) -> str:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            seen.append(conn.execute("SELECT key, status FROM events ORDER BY seq").fetchall())
        finally:
            conn.close()
        return f"sunny in {city}"

    async def agent() -> str:
        return slow_lookup("Paris")

    with Journal(db) as journal:
        assert asyncio.run(replay.run(agent, journal=journal, run_id="inline")) == "sunny in Paris"
    assert seen == [[("0:1", "started")]]


SSE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-test",'
    b'"choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-test",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_a_sync_openai_stream_read_to_its_end_is_recorded(tmp_path: Path) -> None:
    """The sync OpenAI client streams a chat completion and the code reads every chunk: the
    request is journaled as completed, and replay serves it.

    openai's `Stream.__stream__` (openai/_streaming.py) breaks out at `data: [DONE]` and
    closes the response without reading to EOF, so the journaling tee never sees the end.
    Framework path: smolagents with `stream_outputs=True` calls
    `OpenAIServerModel.generate_stream` (smolagents/models.py), which iterates
    `client.chat.completions.create(..., stream=True)` on the sync client. The framework test
    (test_smolagents, stream_outputs) finds no model request journaled as completed.
    """
    asked: list[str] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        asked.append(str(request.url))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=SSE)

    transport = JournalTransport(httpx2.MockTransport(provider))
    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://api.test/v1",
        http_client=httpx2.Client(transport=transport),
    )

    async def agent() -> str:
        stream = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Capital?"}], stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    with Journal(tmp_path / "journal.db") as journal:
        live = asyncio.run(replay.run(agent, journal=journal, run_id="stream"))
        statuses = [e.status for e in journal.events("stream")]
        replayed = asyncio.run(replay.run(agent, journal=journal, run_id="stream", mode="replay"))
    assert live == replayed == "Paris" and len(asked) == 1
    assert statuses[-1] is EventStatus.COMPLETED


def test_a_step_cancelled_by_a_timeout_replays_as_cancelled(tmp_path: Path) -> None:
    """A step still running when asyncio.wait_for's timeout expires is cancelled, and the run
    answers "timed out". Replayed, the step does not run, and the same timeout cancels it
    again: the same answer.

    Framework path: `asyncio.wait_for(Runner.run(agent, ...), timeout)` around openai-agents
    cancels the run's task, which cancels the tool tasks it started
    (agents/run_internal/tool_execution.py, `_create_tool_task`) in the middle of their
    requests. The framework test (test_openai_agents, wait_for) records "timed out"; its
    replay raises FrontierReached at the first tool request.
    """
    ran: list[str] = []

    @replay.step(name="slow_lookup", kind="tool")
    async def slow_lookup(city: str) -> str:
        ran.append(city)
        await asyncio.sleep(30)
        return f"sunny in {city}"

    async def agent() -> str:
        try:
            return await asyncio.wait_for(slow_lookup("Paris"), 0.1)
        except TimeoutError:
            return "timed out"

    with Journal(tmp_path / "journal.db") as journal:
        recorded = asyncio.run(replay.run(agent, journal=journal, run_id="timeout"))
        replayed = asyncio.run(replay.run(agent, journal=journal, run_id="timeout", mode="replay"))
    assert recorded == replayed == "timed out" and ran == ["Paris"]


# -- llama-index: outcomes handed out back to back -----------------------------------------------

_tool_delays: dict[str, float] = {}
"""How long `timed_lookup` takes live, per city."""
_ask_late: dict[str, float] = {}
"""How long a tool worker waits before it asks for its step (this sitting's timing)."""
_stop_after: dict[str, int] = {}
"""`{"taken": n}`: the process dies once the loop has taken n observations."""


@replay.step(name="timed_lookup", kind="tool")
async def timed_lookup(city: str) -> str:
    await asyncio.sleep(_tool_delays.get(city, 0.0))
    return f"sunny in {city}"


@replay.step(name="summarise", kind="llm")
async def summarise(observations: list[str]) -> str:
    return "; ".join(observations)


async def _control_loop() -> str:
    """llama-index-workflows' control loop, reduced: each tool call is a worker task, the
    loop waits for the next one with `asyncio.wait(FIRST_COMPLETED)` and takes ONE finished
    worker per wake; when several finished, here the first created (llama-index takes the
    first of a list it builds from a set of tasks: in effect any one). The observations go to
    the next model request in the order the loop took them."""

    async def call_tool(city: str) -> str:
        await asyncio.sleep(_ask_late.get(city, 0.0))
        return await timed_lookup(city)

    workers = [asyncio.ensure_future(call_tool(city)) for city in CITIES]
    pending, seen = set(workers), []
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        first = min(done, key=workers.index)
        pending |= done - {first}
        seen.append(first.result())
        if len(seen) == _stop_after.get("taken"):
            raise KeyboardInterrupt  # the process dies with the other tool call in flight
    return await summarise(seen)


def test_outcomes_taken_one_per_wake_replay_in_their_live_order(tmp_path: Path) -> None:
    """Live, Rome's tool answers 0.2 s before Paris's, so a control loop that takes one
    finished worker per wake takes Rome's, then Paris's, and asks the model about
    [Rome, Paris]. Replay must take them in that order too; it gets both at once, takes
    Paris's first (created first) and raises NonDeterminismError at the model request:
    recorded summarise(observations=['sunny in Rome', 'sunny in Paris']), now
    ['sunny in Paris', 'sunny in Rome'].

    Framework path: llama-index-workflows' `_ControlLoopRunner.run`
    (workflows/runtime/control_loop/runner.py) waits through
    `InternalRunAdapter.wait_for_next_task` (workflows/runtime/types/plugin.py):
    `asyncio.wait(tasks, return_when=FIRST_COMPLETED)`, then `pick_highest_priority`
    (workflows/runtime/types/named_task.py) returns one completed task per call, the first in
    the `running` list the runner builds from `self.worker_tasks`, a set. FunctionAgent's
    parallel tool calls are `call_tool` workers (`BaseWorkflowAgent.call_tool`,
    llama_index/core/agent/workflow/base_agent.py) whose results `aggregate_tool_results`
    collects with `ctx.collect_events` in the order the loop took them, and the next model
    request carries the tool messages in that order. Taken
    together, the workers also start a different number of `aggregate_tool_results` workers,
    so later step keys shift (tests/openai2/test_llamaindex.py, sync tools: FrontierReached
    at `0/1/13:1`, the nearest recorded step `0/1/14:1`; streamed: NonDeterminismError,
    "the recorded run asked for step 0/1/13:1 ... and the code does not ask for it now").
    """
    _tool_delays.update({"Paris": 0.2})
    try:
        with Journal(tmp_path / "journal.db") as journal:
            live = asyncio.run(replay.run(_control_loop, journal=journal, run_id="loop"))
            _tool_delays.clear()
            replayed = asyncio.run(
                replay.run(_control_loop, journal=journal, run_id="loop", mode="replay")
            )
    finally:
        _tool_delays.clear()
    assert live == replayed == "sunny in Rome; sunny in Paris"


def test_a_held_live_outcome_comes_after_the_served_one_it_waited_for(tmp_path: Path) -> None:
    """Killed with Rome's tool answered (and taken by the control loop) and Paris's in
    flight. On resume Paris's call runs again and answers at once, while Rome's worker asks
    for its (served) step 0.1 s later: Paris's live outcome waits for Rome's turn, as it
    should, but is then handed out in the same loop turn, so the loop takes Paris's first
    and the model is asked about [Paris, Rome], although Rome's answer came first: the
    resumed run answers otherwise than an uninterrupted one.

    Framework path: the same control loop as the test above (llama-index-workflows,
    `InternalRunAdapter.wait_for_next_task` + `pick_highest_priority`). The framework test
    (tests/openai2/test_llamaindex.py, parallel tool calls) resumes to
    'final: [[lookup:Paris]] [[lookup:Rome]]' where the clean run said
    'final: [[lookup:Rome]] [[lookup:Paris]]'.
    """
    _tool_delays.update({"Paris": 0.3})
    _stop_after.update({"taken": 1})
    try:
        with Journal(tmp_path / "journal.db") as journal:
            with pytest.raises(KeyboardInterrupt):
                asyncio.run(replay.run(_control_loop, journal=journal, run_id="held"))
            _tool_delays.clear()
            _stop_after.clear()
            _ask_late.update({"Rome": 0.1})
            resumed = asyncio.run(replay.run(_control_loop, journal=journal, run_id="held"))
    finally:
        _tool_delays.clear()
        _ask_late.clear()
        _stop_after.clear()
    assert resumed == "sunny in Rome; sunny in Paris"
