"""llama-index under journal-replay: see _driver.py for the contract.

Runs in the openai 2.x environment (`make test-openai2`; tests/openai2/test_llamaindex.py):
llama-index-llms-openai pins openai<3. The agent is llama-index-core's FunctionAgent over
its OpenAI LLM, run with `agent.run(user_msg=...)`: a workflow (llama-index-workflows) whose
steps run as tasks of their own, one task per event. The model asks for two tools in one
response; the agent sends one ToolCall event each, and the workflow runs them concurrently
as `call_tool` steps, then `aggregate_tool_results` collects them in the order they arrived.
Patterns: `parallel` (streaming=False: `achat_with_tools`, async tools), `sync_tools` (the
same with plain `def` tools, which FunctionTool runs with `run_in_executor` in a copy of the
context), `stream` (streaming=True: `astream_chat_with_tools`, server-sent events; the
workflow code reads the AgentStream deltas from `handler.stream_events()` as they arrive; one
tool call per round), `stream_parallel` (the same, its first round two tools in parallel,
then one more round so the streamed request in flight at the kill is not the last one).
"""

from __future__ import annotations

from _driver import (  # type: ignore[import-not-found]  # next to this script
    API_KEY,
    Pattern,
    acall_tool,
    call_tool,
    forbid_network,
    main,
    plan_prompt,
)

forbid_network()  # before the import: llama-index's tokenizers come from its own package

# recipe: llama-index-imports
from llama_index.core.agent.workflow import AgentStream, FunctionAgent  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from llama_index.llms.openai import OpenAI  # noqa: E402

# end recipe: llama-index-imports

MODEL = "gpt-4o-mini"
"""llama-index's OpenAI LLM looks the model up (context window, function calling)."""
QUESTION = "What is the weather in Paris and Rome?"
SEQUENTIAL = [[("lookup", {"city": "Paris"})], [("lookup", {"city": "Rome"})]]
PARALLEL = [[("lookup", {"city": "Paris"}), ("lookup", {"city": "Rome"})]]
TWO_ROUNDS = [*PARALLEL, [("lookup", {"city": "Berlin"})]]


# recipe: llama-index
def async_tool(base_url: str) -> FunctionTool:
    async def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return str(await acall_tool(base_url, "lookup", city=city))

    return FunctionTool.from_defaults(async_fn=lookup)


def sync_tool(base_url: str) -> FunctionTool:
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return str(call_tool(base_url, "lookup", city=city))

    return FunctionTool.from_defaults(fn=lookup)


def agent(base_url: str, tool: FunctionTool, *, streaming: bool) -> FunctionAgent:
    llm = OpenAI(model=MODEL, api_base=base_url, api_key=API_KEY)
    return FunctionAgent(tools=[tool], llm=llm, streaming=streaming)


def parallel_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        output = await agent(base_url, async_tool(base_url), streaming=False).run(
            user_msg=plan_prompt(QUESTION, PARALLEL)
        )
        return str(output)

    return go


def sync_tools_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        output = await agent(base_url, sync_tool(base_url), streaming=False).run(
            user_msg=plan_prompt(QUESTION, PARALLEL)
        )
        return str(output)

    return go


async def streamed(base_url: str, rounds: list[list[tuple[str, dict[str, str]]]]) -> str:
    handler = agent(base_url, async_tool(base_url), streaming=True).run(
        user_msg=plan_prompt(QUESTION, rounds)
    )
    deltas = [
        event.delta async for event in handler.stream_events() if isinstance(event, AgentStream)
    ]
    output = await handler
    return f"{output} | {len(deltas)} deltas: {''.join(deltas)}"


def stream_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return await streamed(base_url, SEQUENTIAL)

    return go


def stream_parallel_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return await streamed(base_url, TWO_ROUNDS)

    return go


# end recipe: llama-index


def setup() -> None:
    pass


if __name__ == "__main__":
    main(
        {
            "parallel": parallel_pattern,
            "sync_tools": sync_tools_pattern,
            "stream": stream_pattern,
            "stream_parallel": stream_parallel_pattern,
        },
        setup,
    )
