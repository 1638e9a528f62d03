"""smolagents under journal-replay: see _driver.py for the contract.

smolagents is synchronous: its OpenAIServerModel calls a sync `openai.OpenAI` client. Patterns:
`inline` (a ToolCallingAgent's `run` called straight from the async workflow, on the event
loop's thread), `to_thread` (the same run handed to `asyncio.to_thread`), `parallel` (two
tool calls in one model response, which smolagents runs in a ThreadPoolExecutor, each with
`copy_context()`; the agent itself runs in `asyncio.to_thread`), `stream` (stream_outputs=True:
the model's answers arrive as server-sent events; in `asyncio.to_thread`). The agent answers
by calling smolagents' `final_answer` tool, as ToolCallingAgent does.
"""

from __future__ import annotations

import asyncio

from _driver import (  # type: ignore[import-not-found]  # next to this script
    API_KEY,
    MODEL,
    Pattern,
    call_tool,
    main,
    plan_prompt,
)

# recipe: smolagents-imports
from smolagents import OpenAIServerModel, Tool, ToolCallingAgent
from smolagents.monitoring import LogLevel

# end recipe: smolagents-imports

QUESTION = "What is the weather in Paris and Rome?"
SEQUENTIAL = [[("lookup", {"city": "Paris"})], [("lookup", {"city": "Rome"})]]
PARALLEL = [[("lookup", {"city": "Paris"}), ("lookup", {"city": "Rome"})]]


# recipe: smolagents
class Lookup(Tool):  # type: ignore[misc]
    name = "lookup"
    description = "Look up the weather in a city."
    inputs = {"city": {"type": "string", "description": "the city"}}  # noqa: RUF012
    output_type = "string"

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def forward(self, city: str) -> str:
        return call_tool(self.base_url, "lookup", city=city)


def agent(base_url: str, *, stream: bool = False) -> ToolCallingAgent:
    model = OpenAIServerModel(model_id=MODEL, api_base=base_url, api_key=API_KEY)
    return ToolCallingAgent(
        tools=[Lookup(base_url)],
        model=model,
        max_steps=4,
        verbosity_level=LogLevel.OFF,
        stream_outputs=stream,
    )


def task(rounds: list[list[tuple[str, dict[str, str]]]]) -> str:
    return plan_prompt(QUESTION, rounds, final="final_answer")


def inline_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(agent(base_url).run(task(SEQUENTIAL)))

    return go


def to_thread_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await asyncio.to_thread(agent(base_url).run, task(SEQUENTIAL)))

    return go


def parallel_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await asyncio.to_thread(agent(base_url).run, task(PARALLEL)))

    return go


def stream_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await asyncio.to_thread(agent(base_url, stream=True).run, task(SEQUENTIAL)))

    return go


# end recipe: smolagents


def setup() -> None:
    pass


if __name__ == "__main__":
    main(
        {
            "inline": inline_pattern,
            "to_thread": to_thread_pattern,
            "parallel": parallel_pattern,
            "stream": stream_pattern,
        },
        setup,
    )
