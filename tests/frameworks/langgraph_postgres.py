"""The LangGraph + PostgreSQL recipe: a StateGraph run as a journal-replay workflow, resumed
after a crash by `journal worker` from the journal alone, with no LangGraph checkpointer.

A workflow module, as `journal worker --import tests.frameworks.langgraph_postgres` imports
it (tests/frameworks/test_langgraph_postgres.py): a StateGraph over MessagesState (a model
node calling ChatOpenAI with the tool bound, a ToolNode, tools_condition), compiled without a
checkpointer. `instrument()` at import journals every request of a run, ChatOpenAI's own
clients included; the tool's side effect is a POST the local server counts
(tests/llm_server.py). `start()` is the service that starts a run and may die mid-run:

    python -c "from tests.frameworks.langgraph_postgres import start; start()" DB BASE_URL RUN_ID
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import replay
from journal import Journal
from replay.integrations import instrument

# recipe: langgraph-postgres
instrument()  # once, when the workers import this module: every client is journaled in a run

QUESTION = (
    "What is the weather in Paris and Rome?\nPLAN "
    '{"rounds": [[["lookup", {"city": "Paris"}]], [["lookup", {"city": "Rome"}]]]}'
)  # the local server's script: one tool call per round, then the answer


def weather_graph(base_url: str) -> Any:
    @tool
    async def lookup(city: str) -> str:
        """Look up the weather in a city."""
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{base_url}/tools/lookup", json={"city": city})
        return str(response.raise_for_status().json()["result"])

    tools: list[BaseTool] = [lookup]
    llm = ChatOpenAI(model="gpt-test", base_url=base_url, api_key="sk-graph-secret-0000")  # type: ignore[arg-type]
    model = llm.bind_tools(tools)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()  # no checkpointer: the journal is what resumes the run


async def forecast(base_url: str, question: str) -> str:
    """The workflow: one graph run, from the first node, on every sitting."""
    state = await weather_graph(base_url).ainvoke({"messages": [HumanMessage(question)]})
    return str(state["messages"][-1].content)


def start() -> None:
    """The service: start run RUN_ID on the journal at DB (a postgresql:// URL)."""
    db, base_url, run_id = sys.argv[1:4]
    print(f"checkpointer: {weather_graph(base_url).checkpointer}", flush=True)
    with Journal(db) as journal:
        answer = asyncio.run(
            replay.run(forecast, base_url, QUESTION, journal=journal, run_id=run_id)
        )
    print(answer, flush=True)


# end recipe: langgraph-postgres
