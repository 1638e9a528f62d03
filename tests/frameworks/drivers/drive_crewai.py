"""crewai under journal-replay: see _driver.py for the contract.

Runs in the crewai environment (`make test-crewai`; tests/crewai/test_crewai.py): crewai
pins openai<3 and brings httpx2 along, so it has a virtual environment of its own. A crew of
one agent with one tool (`lookup`, a sync BaseTool), its LLM crewai's native OpenAI provider
(`LLM(model="openai/...")` -> OpenAICompletion, an `openai.OpenAI` client over legacy httpx).
The model asks for the tool twice in one response: crewai runs the two calls in a
ThreadPoolExecutor, each in `copy_context()` (crewai/agents/agent_executor.py,
`execute_native_tool`). Patterns: `kickoff_async` (Crew.kickoff_async: the sync kickoff in
`asyncio.to_thread`), `akickoff` (Crew.akickoff, crewai's native async path), `stream`
(kickoff_async with `LLM(stream=True)`: every model answer is a server-sent event stream),
`crew_stream` (`Crew(stream=True)` as well: kickoff_async hands back a CrewStreamingOutput
that the workflow code iterates, chunk by chunk, while the crew runs in a thread), both over
two rounds so the streamed request in flight at the kill is not the last one.

crewai sends telemetry to its own servers unless told not to: CREWAI_DISABLE_TELEMETRY (or
OTEL_SDK_DISABLED, or CREWAI_DISABLE_TRACKING) turns it off, CREWAI_TRACING_ENABLED=false
declines its run tracing; `forbid_network()` makes a run that still tries fail. Its app data
(a SQLite file of the last kickoff's task outputs) goes under XDG_DATA_HOME, which the tests
point into their temporary directory.
"""

from __future__ import annotations

import os

from _driver import (  # type: ignore[import-not-found]  # next to this script
    API_KEY,
    Pattern,
    call_tool,
    forbid_network,
    main,
    plan_prompt,
)

forbid_network()
# recipe: crewai-telemetry
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true", OTEL_SDK_DISABLED="true", CREWAI_TRACING_ENABLED="false"
)
# end recipe: crewai-telemetry

# recipe: crewai-imports
from crewai import LLM, Agent, Crew, Task  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402

# end recipe: crewai-imports

MODEL = "openai/gpt-4o-mini"
"""`openai/` picks crewai's native OpenAI provider (no litellm)."""
QUESTION = "What is the weather in Paris and Rome?"
PARALLEL = [[("lookup", {"city": "Paris"}), ("lookup", {"city": "Rome"})]]
TWO_ROUNDS = [*PARALLEL, [("lookup", {"city": "Berlin"})]]


# recipe: crewai
class Lookup(BaseTool):
    name: str = "lookup"
    description: str = "Look up the weather in a city."
    base_url: str

    def _run(self, city: str) -> str:
        return str(call_tool(self.base_url, "lookup", city=city))


def crew(
    base_url: str,
    rounds: list[list[tuple[str, dict[str, str]]]],
    *,
    stream: bool,
    crew_stream: bool = False,
) -> Crew:
    llm = LLM(model=MODEL, base_url=base_url, api_key=API_KEY, stream=stream)
    forecaster = Agent(
        role="forecaster",
        goal="Report the weather.",
        backstory="You look the weather up.",
        tools=[Lookup(base_url=base_url)],
        llm=llm,
        verbose=False,
    )
    task = Task(
        description=plan_prompt(QUESTION, rounds),
        expected_output="The weather in each city.",
        agent=forecaster,
    )
    return Crew(agents=[forecaster], tasks=[task], verbose=False, stream=crew_stream)


def kickoff_async_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await crew(base_url, PARALLEL, stream=False).kickoff_async())

    return go


def akickoff_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await crew(base_url, PARALLEL, stream=False).akickoff())

    return go


def stream_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        return str(await crew(base_url, TWO_ROUNDS, stream=True).kickoff_async())

    return go


def crew_stream_pattern(base_url: str) -> Pattern:
    async def go(_: str) -> str:
        streaming = await crew(base_url, TWO_ROUNDS, stream=True, crew_stream=True).kickoff_async()
        chunks = [chunk.content async for chunk in streaming]
        return f"{streaming.result} | {len(chunks)} chunks: {''.join(chunks)}"

    return go


# end recipe: crewai


def setup() -> None:
    pass


if __name__ == "__main__":
    main(
        {
            "kickoff_async": kickoff_async_pattern,
            "akickoff": akickoff_pattern,
            "stream": stream_pattern,
            "crew_stream": crew_stream_pattern,
        },
        setup,
    )
