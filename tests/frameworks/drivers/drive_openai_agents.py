"""openai-agents (the OpenAI Agents SDK) under journal-replay: see _driver.py for the contract.

Patterns: `run` (Runner.run, one async tool per round, two rounds), `streamed`
(Runner.run_streamed, events consumed to the end), `parallel` (two async tools called in one
model response, run by the SDK as concurrent tasks), `parallel_sync` (the same with plain
`def` tools, which the SDK runs with asyncio.to_thread), `timeout` (Runner.run with the two
async tools under `asyncio.wait_for(..., TIMEOUT)`, answering "timed out" when it expires).
The SDK builds its own AsyncOpenAI client from OPENAI_BASE_URL; it speaks the chat completions
API to the local server.
"""

from __future__ import annotations

import asyncio

from _driver import (  # type: ignore[import-not-found]  # next to this script
    MODEL,
    Pattern,
    acall_tool,
    call_tool,
    main,
    plan_prompt,
)

# recipe: openai-agents-imports
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_tracing_disabled,
)

# end recipe: openai-agents-imports

QUESTION = "What is the weather in Paris and Rome?"
TIMEOUT = 2.0
"""Seconds `timeout` gives the agent: the tests hold its tool calls open far longer. Long
enough that the tool calls have begun when it expires, on a loaded machine too: at 0.5 s, a
full suite run beside other heavy work once saw it expire between the LLM's answer and the
tool calls, a point no step records, so replay went on to the calls (a plain asyncio timer
that fires between steps is not in the journal: docs/concepts.md)."""


# recipe: openai-agents
def async_tools(base_url: str) -> list[object]:
    @function_tool
    async def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return await acall_tool(base_url, "lookup", city=city)

    return [lookup]


def sync_tools(base_url: str) -> list[object]:
    @function_tool
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return call_tool(base_url, "lookup", city=city)

    return [lookup]


def weather_agent(tools: list[object]) -> Agent:
    return Agent(name="weather", instructions="Answer briefly.", tools=tools, model=MODEL)  # type: ignore[arg-type]


SEQUENTIAL = [[("lookup", {"city": "Paris"})], [("lookup", {"city": "Rome"})]]
PARALLEL = [[("lookup", {"city": "Paris"}), ("lookup", {"city": "Rome"})]]


def run_pattern(base_url: str) -> Pattern:
    agent = weather_agent(async_tools(base_url))

    async def go(_: str) -> str:
        result = await Runner.run(agent, plan_prompt(QUESTION, SEQUENTIAL))
        return str(result.final_output)

    return go


def streamed_pattern(base_url: str) -> Pattern:
    agent = weather_agent(async_tools(base_url))

    async def go(_: str) -> str:
        result = Runner.run_streamed(agent, plan_prompt(QUESTION, SEQUENTIAL))
        async for _event in result.stream_events():
            pass
        return str(result.final_output)

    return go


def parallel_pattern(base_url: str) -> Pattern:
    agent = weather_agent(async_tools(base_url))

    async def go(_: str) -> str:
        result = await Runner.run(agent, plan_prompt(QUESTION, PARALLEL))
        return str(result.final_output)

    return go


def parallel_sync_pattern(base_url: str) -> Pattern:
    agent = weather_agent(sync_tools(base_url))

    async def go(_: str) -> str:
        result = await Runner.run(agent, plan_prompt(QUESTION, PARALLEL))
        return str(result.final_output)

    return go


# end recipe: openai-agents


def timeout_pattern(base_url: str) -> Pattern:
    agent = weather_agent(async_tools(base_url))

    async def go(_: str) -> str:
        try:
            result = await asyncio.wait_for(
                Runner.run(agent, plan_prompt(QUESTION, PARALLEL)), TIMEOUT
            )
        except TimeoutError:
            return "timed out"
        return str(result.final_output)

    return go


# recipe: openai-agents-setup
def setup() -> None:
    set_tracing_disabled(True)  # no trace export to the real API
    set_default_openai_api("chat_completions")


# end recipe: openai-agents-setup


if __name__ == "__main__":
    main(
        {
            "run": run_pattern,
            "streamed": streamed_pattern,
            "parallel": parallel_pattern,
            "parallel_sync": parallel_sync_pattern,
            "timeout": timeout_pattern,
        },
        setup,
    )
