"""`JournalDurability`: a pydantic-ai agent's model requests and tool calls as journal steps.

Every test drives a real agent offline: a scripted `FunctionModel`, or the real
`OpenAIChatModel` over a mock HTTP transport. Counters on the model and the tools prove what
each sitting paid for; replay runs with them switched to fail the test if called.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import replay
from journal import EventKind, EventStatus, Journal
from replay.integrations import JournalDurability

Mode = Literal["resume", "replay"]
SECRET = "sk-test-pydantic-ai-4b1e9d"
PROMPT = "Refund order 7 if the parcel is lost."
TOOLS = "support__function_toolset__<agent>"


class Crash(BaseException):
    """A process dying mid-tool: nothing catches it, nothing records it."""


class Support:
    """A support agent whose model and tools count their calls and can be switched off."""

    def __init__(self) -> None:
        self.model_calls = 0
        self.tool_calls: list[str] = []
        self.offline = False
        self.crash_in_refund = False
        self.delays: dict[str, float] = {}
        self.agent = Agent(
            FunctionModel(self.model), name="support", capabilities=[JournalDurability()]
        )
        self.agent.tool_plain(self.lookup)
        self.agent.tool_plain(self.refund)

    def model(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if self.offline:
            raise AssertionError("the model was called during replay")
        self.model_calls += 1
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn == 0:  # lookup twice in parallel, and refund, in one response
            return ModelResponse(
                parts=[
                    ToolCallPart("lookup", {"what": "order 7"}, tool_call_id="call_order"),
                    ToolCallPart("lookup", {"what": "parcel 7"}, tool_call_id="call_parcel"),
                    ToolCallPart("refund", {"order": 7, "amount": 25.0}, tool_call_id="call_ref"),
                ]
            )
        returns = [p.content for m in messages for p in m.parts if p.part_kind == "tool-return"]
        return ModelResponse(parts=[TextPart(f"Done: {returns}")])

    async def lookup(self, what: str) -> str:
        """Look a record up."""
        await self._called(f"lookup {what}")
        return f"{what}: lost in transit"

    async def refund(self, order: int, amount: float) -> dict[str, Any]:
        """Refund an order."""
        await self._called(f"refund {order}")
        if self.crash_in_refund:
            raise Crash
        return {"order": order, "refunded": amount}

    async def _called(self, what: str) -> None:
        if self.offline:
            raise AssertionError(f"a tool was called during replay: {what}")
        self.tool_calls.append(what)
        await asyncio.sleep(self.delays.get(what.split(" ", 1)[1], 0.0))


def run_agent(
    j: Journal, agent: Agent[None, str], run_id: str, mode: Mode = "resume"
) -> tuple[str, replay.RunSummary]:
    async def sitting() -> tuple[str, replay.RunSummary]:
        async with replay.journaled(j, run_id, mode=mode) as handle:
            result = await agent.run(PROMPT)
        assert handle.summary is not None
        return result.output, handle.summary

    return asyncio.run(sitting())


def test_each_model_request_and_tool_call_is_one_step(tmp_path: Path) -> None:
    """Live: 2 model requests (kind llm) and 3 tool calls (kind tool, named by pydantic-ai's
    journal names plus `@tool_call_id`); tool calls are keyed under the agent run by their id."""
    support = Support()
    with Journal(tmp_path / "j.db") as j:
        output, summary = run_agent(j, support.agent, "ticket-7")
        events = [e for e in j.events("ticket-7") if e.status is not EventStatus.STARTED]
    assert output.startswith("Done: ['order 7: lost in transit', 'parcel 7: lost in transit'")
    assert (summary.served, summary.executed) == (0, 5)
    assert [(e.key, e.kind, e.name) for e in sorted(events, key=lambda e: e.key)] == [
        ("0:1/call_order:1", EventKind.TOOL, f"{TOOLS}.call_tool:lookup@call_order"),
        ("0:1/call_parcel:1", EventKind.TOOL, f"{TOOLS}.call_tool:lookup@call_parcel"),
        ("0:1/call_ref:1", EventKind.TOOL, f"{TOOLS}.call_tool:refund@call_ref"),
        ("0:1:1", EventKind.LLM, "support__model.request"),
        ("0:1:2", EventKind.LLM, "support__model.request"),
    ]


@pytest.mark.parametrize("order", ["first-fast", "second-fast"])
def test_replay_calls_no_model_and_no_tool(tmp_path: Path, order: str) -> None:
    """Replay mode serves every unit: 0 model calls, 0 tool calls, the same output, even when
    the parallel lookups completed in the other order live than they do on replay."""
    support = Support()
    slow = "order 7" if order == "first-fast" else "parcel 7"
    support.delays = {slow: 0.05}
    with Journal(tmp_path / "j.db") as j:
        recorded, _ = run_agent(j, support.agent, "ticket-7")
        assert (support.model_calls, len(support.tool_calls)) == (2, 3)
        support.offline = True
        replayed, summary = run_agent(j, support.agent, "ticket-7", mode="replay")
    assert replayed == recorded
    assert (summary.served, summary.executed, summary.unconsumed) == (5, 0, ())


def test_resume_after_a_crash_in_a_tool(tmp_path: Path) -> None:
    """A crash inside `refund` kills the first sitting after the model request and both
    lookups completed. The resume serves those 3, runs `refund` again (it was in flight) and
    the final model request live: 1 model call and 1 tool call paid on resume."""
    support = Support()
    support.crash_in_refund = True
    with Journal(tmp_path / "j.db") as j:
        with pytest.raises(Crash):
            run_agent(j, support.agent, "ticket-7")
        assert support.model_calls == 1
        assert sorted(support.tool_calls) == ["lookup order 7", "lookup parcel 7", "refund 7"]
        support.crash_in_refund = False
        support.model_calls, support.tool_calls = 0, []
        output, summary = run_agent(j, support.agent, "ticket-7")
        assert (support.model_calls, support.tool_calls) == (1, ["refund 7"])
        assert (summary.served, summary.reexecuted, summary.executed) == (3, 1, 1)
        support.offline = True
        assert run_agent(j, support.agent, "ticket-7", mode="replay")[0] == output


def test_resume_from_a_journal_cut_after_the_first_model_request(tmp_path: Path) -> None:
    """A fork that keeps only the first model request: replay mode stops at the first tool
    call with `FrontierReached`; a resume serves the request and runs the rest live."""
    support = Support()
    with Journal(tmp_path / "j.db") as j:
        recorded, _ = run_agent(j, support.agent, "ticket-7")
        done = [e for e in j.events("ticket-7") if e.status is EventStatus.COMPLETED]
        first = next(e for e in done if e.key == "0:1:1")
        j.fork("ticket-7", at=first.seq + 1, new_run_id="ticket-7-cut")
        support.offline = True
        with pytest.raises(replay.FrontierReached, match=r"step 0:1/call_order:1 \(support__"):
            run_agent(j, support.agent, "ticket-7-cut", mode="replay")
        support.offline = False
        support.model_calls, support.tool_calls = 0, []
        output, summary = run_agent(j, support.agent, "ticket-7-cut")
    assert output == recorded
    assert (summary.served, summary.executed) == (1, 4)
    assert (support.model_calls, len(support.tool_calls)) == (1, 3)


def test_a_tool_that_raises_replays_as_the_same_failure(tmp_path: Path) -> None:
    """A tool's exception is journaled as a failed step and fails the run; replay raises the
    same exception type and message without calling the tool."""
    calls: list[str] = []
    agent = Agent(
        FunctionModel(_call_once("explode")), name="ops", capabilities=[JournalDurability()]
    )

    @agent.tool_plain
    async def explode() -> str:
        calls.append("explode")
        raise ValueError("disk on fire")

    with Journal(tmp_path / "j.db") as j:
        with pytest.raises(ValueError, match="disk on fire"):
            run_agent(j, agent, "ops-1")
        failed = [e for e in j.events("ops-1") if e.status is EventStatus.FAILED]
        assert [e.name for e in failed] == ["ops__function_toolset__<agent>.call_tool:explode@c1"]
        with pytest.raises(ValueError, match="disk on fire"):
            run_agent(j, agent, "ops-1", mode="replay")
    assert calls == ["explode"]


def test_model_retry_is_journaled_as_the_retry_it_asks_for(tmp_path: Path) -> None:
    """`ModelRetry` is a result, not a failure: the retry goes back to the model (a tool
    return with outcome "retried") live, and replay follows the same path calling nothing."""
    calls: list[int] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [p for m in messages for p in m.parts if p.part_kind == "tool-return"]
        retries = [p for p in returns if p.outcome == "retried"]
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn < 2:
            return ModelResponse(parts=[ToolCallPart("pick", {"n": turn}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart(f"retried {len(retries)}x")])

    agent = Agent(FunctionModel(model), name="picker", capabilities=[JournalDurability()])

    @agent.tool_plain
    async def pick(n: int) -> int:
        calls.append(n)
        if n == 0:
            raise ModelRetry("pick a positive number")
        return n

    with Journal(tmp_path / "j.db") as j:
        recorded, _ = run_agent(j, agent, "pick-1")
        done = [e for e in j.events("pick-1") if e.status is EventStatus.COMPLETED]
        keys = [e.key for e in done if e.kind is EventKind.TOOL]
        replayed, summary = run_agent(j, agent, "pick-1", mode="replay")
    assert recorded == replayed == "retried 1x"
    assert keys == ["0:1/c1:1", "0:1/c1:2"]  # the same tool_call_id twice: a second unit
    assert calls == [0, 1] and summary.executed == 0


def _call_once(tool: str) -> Any:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart(tool, {}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("ok")])

    return model


def chat_completions(calls: list[dict[str, Any]], offline: list[bool]) -> Any:
    """A scripted OpenAI chat-completions endpoint: a tool call, then the answer."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        if offline:
            raise AssertionError(f"live request during replay: {request.url}")
        body = json.loads(request.content)
        calls.append(body)
        if not any(m["role"] == "tool" for m in body["messages"]):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_w1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            tool_answer = next(m["content"] for m in body["messages"] if m["role"] == "tool")
            message, finish = {"role": "assistant", "content": f"Paris: {tool_answer}"}, "stop"
        return httpx2.Response(
            200,
            json={
                "id": f"chatcmpl-{len(calls)}",
                "object": "chat.completion",
                "created": 1_764_000_000 + len(calls),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
            },
        )

    return handle


def test_openai_chat_model_records_and_replays_offline(tmp_path: Path) -> None:
    """The real `OpenAIChatModel` over a mock transport: recorded once (2 requests), replayed
    with 0 requests and the same output; token usage is recorded where `journal runs` reads
    it; the API key never reaches the database file."""
    calls: list[dict[str, Any]] = []
    offline: list[bool] = []
    provider = OpenAIProvider(
        base_url="http://llm.test/v1",
        api_key=SECRET,
        http_client=httpx2.AsyncClient(
            transport=httpx2.MockTransport(chat_completions(calls, offline))
        ),
    )
    agent = Agent(
        OpenAIChatModel("gpt-test", provider=provider),
        name="weather_bot",
        capabilities=[JournalDurability()],
    )

    @agent.tool_plain
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny, 21C"

    db = tmp_path / "j.db"
    with Journal(db) as j:
        recorded, _ = run_agent(j, agent, "weather-1")
        assert len(calls) == 2
        offline.append(True)
        replayed, summary = run_agent(j, agent, "weather-1", mode="replay")
        names = [e.name for e in j.events("weather-1") if e.status is EventStatus.COMPLETED]
        (digest,) = j.digests()
    assert recorded == replayed == "Paris: sunny, 21C"
    assert (len(calls), summary.served, summary.executed) == (2, 3, 0)
    assert names == [
        "weather_bot__model.request",
        "weather_bot__function_toolset__<agent>.call_tool:weather@call_w1",
        "weather_bot__model.request",
    ]
    assert (digest.input_tokens, digest.output_tokens) == (40, 10)  # what `journal runs` shows
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in on_disk


def test_outside_a_run_the_capability_is_a_pass_through(tmp_path: Path) -> None:
    """Without a journaled run the agent runs as if the capability were absent: the model and
    tools are called and the journal holds no run."""
    support = Support()
    with Journal(tmp_path / "j.db") as j:
        result = asyncio.run(support.agent.run(PROMPT))
        assert j.runs() == []
    assert result.output.startswith("Done:")
    assert (support.model_calls, len(support.tool_calls)) == (2, 3)


class StreamingModel:
    """A streamed model: a tool call, then the answer in four text deltas."""

    def __init__(self) -> None:
        self.calls = 0
        self.offline = False

    async def __call__(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
        if self.offline:
            raise AssertionError("the model was called during replay")
        self.calls += 1
        if not any(isinstance(m, ModelResponse) for m in messages):
            yield {0: DeltaToolCall(name="lookup", json_args='{"what": "a"}', tool_call_id="c1")}
            return
        for word in ("the ", "parcel ", "is ", "lost"):
            yield word


def _streaming_agent(model: StreamingModel, **durability: Any) -> Agent[None, str]:
    agent = Agent(
        FunctionModel(stream_function=model),
        name="streamer",
        capabilities=[JournalDurability(**durability)],
    )

    @agent.tool_plain
    def lookup(what: str) -> str:
        return f"{what}: lost"

    return agent


def test_run_stream_records_and_replays(tmp_path: Path) -> None:
    """`run_stream` inside a run: each streamed request is one `model.request_stream` step;
    the text arrives as one delta (the unit completes the stream before it returns), and
    replay gives the same text with no model call."""
    model = StreamingModel()
    agent = _streaming_agent(model)

    async def sitting(j: Journal, mode: Mode) -> tuple[list[str], str]:
        async with replay.journaled(j, "stream-1", mode=mode):
            async with agent.run_stream(PROMPT) as stream:
                deltas = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
            return deltas, await stream.get_output()

    with Journal(tmp_path / "j.db") as j:
        recorded = asyncio.run(sitting(j, "resume"))
        names = {e.name for e in j.events("stream-1") if e.kind is EventKind.LLM}
        model.offline = True
        replayed = asyncio.run(sitting(j, "replay"))
    assert recorded == replayed == (["the parcel is lost"], "the parcel is lost")
    assert names == {"streamer__model.request_stream"} and model.calls == 2


def test_event_stream_handlers_live_and_on_replay(tmp_path: Path) -> None:
    """A handler on the capability gets the model's deltas live, inside the model step, and
    tool events as steps of their own; replay serves those steps and calls it with nothing.
    A handler passed to `agent.run` sees the same events live and on replay."""
    seen: list[str] = []

    async def handler(ctx: Any, events: AsyncIterator[Any]) -> None:
        seen.extend([type(event).__name__ async for event in events])

    model = StreamingModel()
    on_capability = _streaming_agent(model, event_stream_handler=handler)
    plain = _streaming_agent(model)

    async def sitting(j: Journal, agent: Agent[None, str], mode: Mode, **run: Any) -> None:
        async with replay.journaled(j, f"events-{agent is plain}", mode=mode):
            await agent.run(PROMPT, **run)

    with Journal(tmp_path / "j.db") as j:
        asyncio.run(sitting(j, on_capability, "resume"))
        live = seen.copy()
        handler_steps = [e.key for e in j.events("events-False") if e.kind is EventKind.STEP]
        model.offline = True
        seen.clear()
        asyncio.run(sitting(j, on_capability, "replay"))
        assert seen == []
        model.offline = False
        asyncio.run(sitting(j, plain, "resume", event_stream_handler=handler))
        recorded = seen.copy()
        seen.clear()
        model.offline = True
        asyncio.run(sitting(j, plain, "replay", event_stream_handler=handler))
    assert live.count("PartDeltaEvent") == 3  # "the ", then 3 deltas of the same part
    assert handler_steps == ["0:1/event_stream_handler:1", "0:1/event_stream_handler:2"]
    assert seen == recorded and "FunctionToolResultEvent" in seen


def test_an_agent_without_a_name_is_refused_with_the_fix() -> None:
    """Step names start with the agent's name, so an unnamed agent is refused at once."""
    with pytest.raises(UserError, match=r"Agent\(\.\.\., name='support'\)"):
        Agent(FunctionModel(_call_once("x")), capabilities=[JournalDurability()])


def test_a_changed_prompt_is_a_divergence_naming_the_request(tmp_path: Path) -> None:
    """Timestamps and run ids differ on every sitting and are not fingerprinted; the prompt
    is: replaying with another prompt raises `NonDeterminismError` naming `request`."""
    support = Support()
    with Journal(tmp_path / "j.db") as j:
        run_agent(j, support.agent, "ticket-7")

        async def other_prompt() -> None:
            async with replay.journaled(j, "ticket-7", mode="replay"):
                await support.agent.run("Refund order 8.")

        with pytest.raises(replay.NonDeterminismError) as caught:
            asyncio.run(other_prompt())
    assert caught.value.key == "0:1:1"
    changed = [line.split(":")[0].split(",")[0] for line in caught.value.changed_arguments]
    assert changed == ["request.parts[0].content"]  # the argument, and where inside it


def test_concurrent_agent_runs_in_a_workflow_replay_with_the_same_ids(tmp_path: Path) -> None:
    """Inside `replay.run`, two agent runs gathered concurrently each take a key of their own
    task; their run ids and conversation ids derive from it, so replay gives the same ids
    and outputs with no calls, whatever order the runs finished in live."""
    support = Support()
    support.delays = {"order 7": 0.03}

    async def two_tickets() -> list[list[str]]:
        results = await asyncio.gather(support.agent.run(PROMPT), support.agent.run(PROMPT))
        return [[r.run_id, r.conversation_id, r.output] for r in results]

    with Journal(tmp_path / "j.db") as j:
        recorded = asyncio.run(replay.run(two_tickets, journal=j, run_id="tickets"))
        keys = {e.key.partition("/c")[0] for e in j.events("tickets") if e.kind is EventKind.LLM}
        support.offline = True
        replayed = asyncio.run(replay.run(two_tickets, journal=j, run_id="tickets", mode="replay"))
    assert replayed == recorded
    assert [ids[0] for ids in recorded] == ["tickets:0/1:1", "tickets:0/2:1"]
    assert recorded[0][1] != recorded[1][1]
    assert keys == {"0/1:1:1", "0/1:1:2", "0/2:1:1", "0/2:1:2"}


def test_a_sequential_tool_between_parallel_calls_keeps_its_keys(tmp_path: Path) -> None:
    """A `sequential=True` tool splits one response's calls into segments, and pydantic-ai
    creates a timing-dependent number of helper tasks per segment, so task paths shift
    between sittings; keys by tool_call_id do not, and replay serves every call."""
    calls: list[str] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[TextPart("ok")])
        names = ["fetch", "fetch", "barrier", "fetch", "fetch"]
        return ModelResponse(
            parts=[ToolCallPart(n, {"n": i}, tool_call_id=f"c{i}") for i, n in enumerate(names)]
        )

    agent = Agent(FunctionModel(model), name="seg", capabilities=[JournalDurability()])
    delays = {0: 0.03, 4: 0.03}

    @agent.tool_plain
    async def fetch(n: int) -> int:
        calls.append(f"fetch {n}")
        await asyncio.sleep(delays.get(n, 0.0))
        return n

    @agent.tool_plain(sequential=True)
    async def barrier(n: int) -> int:
        calls.append(f"barrier {n}")
        return n

    with Journal(tmp_path / "j.db") as j:
        recorded, _ = run_agent(j, agent, "seg-1")
        replayed, summary = run_agent(j, agent, "seg-1", mode="replay")
    assert replayed == recorded and len(calls) == 5
    assert (summary.served, summary.executed) == (7, 0)


def test_a_result_that_cannot_be_json_is_refused(tmp_path: Path) -> None:
    """A tool result pydantic cannot reduce to JSON is `NotJournalable` (naming the step),
    raised live before anything is recorded as its result."""
    agent = Agent(
        FunctionModel(_call_once("opaque")), name="ops", capabilities=[JournalDurability()]
    )

    @agent.tool_plain
    def opaque() -> object:
        return object()

    with Journal(tmp_path / "j.db") as j:
        with pytest.raises(replay.NotJournalable, match=r"0:1/c1:1 .*cannot be stored as JSON"):
            run_agent(j, agent, "ops-2")
        statuses = {e.key: e.status for e in j.events("ops-2")}
    assert statuses["0:1/c1:1"] is EventStatus.STARTED


def test_a_run_id_the_caller_chose_names_the_agent_runs_steps(tmp_path: Path) -> None:
    """`agent.run(run_id=...)` keys the run's steps under that id (`run=<id>:n`), so a
    caller's stable id replays; the run keeps the id it was given."""
    support = Support()

    async def sitting(j: Journal, mode: Mode) -> str:
        async with replay.journaled(j, "ticket-9", mode=mode):
            result = await support.agent.run(PROMPT, run_id="order-7/refund")
        assert result.run_id == "order-7/refund"
        return result.output

    with Journal(tmp_path / "j.db") as j:
        recorded = asyncio.run(sitting(j, "resume"))
        keys = sorted({e.key for e in j.events("ticket-9")})
        support.offline = True
        assert asyncio.run(sitting(j, "replay")) == recorded
    assert keys[-2:] == ["run=order-7_refund:1", "run=order-7_refund:2"]
