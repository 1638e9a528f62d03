"""LangGraph + langchain-openai under journal-replay: see _driver.py for the contract.

Patterns: `stategraph` (a StateGraph over MessagesState: an async model node calling
ChatOpenAI.ainvoke with tools bound, a ToolNode with async tools, tools_condition; the model
asks for two tools in one response, which the ToolNode runs concurrently), `stategraph_sync`
(the same graph with plain `def` tools, which LangChain runs in executor threads with a copy
of the context), `react` (the prebuilt create_react_agent with `def` tools, one per round),
all run with `ainvoke`; and `stategraph_invoke`: a sync graph (a model node calling
ChatOpenAI.invoke, a ToolNode with `def` tools) run with the sync `invoke`, called straight
from the async workflow, as code that mixes sync LangGraph into async code does.
"""

from __future__ import annotations

import warnings
from typing import Any

from _driver import (  # type: ignore[import-not-found]  # next to this script
    API_KEY,
    MODEL,
    Pattern,
    acall_tool,
    call_tool,
    main,
    plan_prompt,
)

# recipe: langgraph-imports
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, create_react_agent, tools_condition

# end recipe: langgraph-imports

QUESTION = "What is the weather in Paris and Rome?"
SEQUENTIAL = [[("lookup", {"city": "Paris"})], [("lookup", {"city": "Rome"})]]
PARALLEL = [[("lookup", {"city": "Paris"}), ("lookup", {"city": "Rome"})]]


# recipe: langgraph
def async_tools(base_url: str) -> list[BaseTool]:
    @tool
    async def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return await acall_tool(base_url, "lookup", city=city)

    return [lookup]


def sync_tools(base_url: str) -> list[BaseTool]:
    @tool
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return call_tool(base_url, "lookup", city=city)

    return [lookup]


def model(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=base_url, api_key=API_KEY, max_retries=2)  # type: ignore[arg-type]


def last_text(messages: list[BaseMessage]) -> str:
    return str(messages[-1].content)


def state_graph(base_url: str, tools: list[BaseTool]) -> Any:
    llm = model(base_url).bind_tools(tools)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


def sync_state_graph(base_url: str, tools: list[BaseTool]) -> Any:
    llm = model(base_url).bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


def stategraph_pattern(base_url: str) -> Pattern:
    graph = state_graph(base_url, async_tools(base_url))

    async def go(_: str) -> str:
        state = await graph.ainvoke({"messages": [HumanMessage(plan_prompt(QUESTION, PARALLEL))]})
        return last_text(state["messages"])

    return go


def stategraph_sync_pattern(base_url: str) -> Pattern:
    graph = state_graph(base_url, sync_tools(base_url))

    async def go(_: str) -> str:
        state = await graph.ainvoke({"messages": [HumanMessage(plan_prompt(QUESTION, PARALLEL))]})
        return last_text(state["messages"])

    return go


def stategraph_invoke_pattern(base_url: str) -> Pattern:
    graph = sync_state_graph(base_url, sync_tools(base_url))

    async def go(_: str) -> str:
        state = graph.invoke({"messages": [HumanMessage(plan_prompt(QUESTION, PARALLEL))]})
        return last_text(state["messages"])

    return go


def react_pattern(base_url: str) -> Pattern:
    with warnings.catch_warnings():  # moved to langchain.agents in 1.0; still shipped here
        warnings.simplefilter("ignore")
        agent = create_react_agent(model(base_url), sync_tools(base_url))

    async def go(_: str) -> str:
        state = await agent.ainvoke({"messages": [HumanMessage(plan_prompt(QUESTION, SEQUENTIAL))]})
        return last_text(state["messages"])

    return go


# end recipe: langgraph


def setup() -> None:
    pass


if __name__ == "__main__":
    main(
        {
            "stategraph": stategraph_pattern,
            "stategraph_sync": stategraph_sync_pattern,
            "stategraph_invoke": stategraph_invoke_pattern,
            "react": react_pattern,
        },
        setup,
    )
