"""LangGraph + langchain-openai recorded, SIGKILLed mid-request, resumed, replayed.

ChatOpenAI builds its own OpenAI clients; only `instrument()` and the journaled run make the
graph durable (no LangGraph checkpointer). The law each test holds is in harness.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay


def test_state_graph_with_tool_node(forks: Drivers, tmp_path: Path) -> None:
    """A StateGraph (model node, ToolNode with async tools, tools_condition) whose model asks
    for two tools at once, killed with one tool answered and the other in flight."""
    crash_resume_replay(
        forks, tmp_path, Pattern("langgraph", "stategraph", hold=3, late=("Paris", "Rome"))
    )


def test_state_graph_with_sync_tools(forks: Drivers, tmp_path: Path) -> None:
    """The same graph with plain `def` tools, which LangChain runs in executor threads that
    copy the caller's context: the same law."""
    crash_resume_replay(
        forks, tmp_path, Pattern("langgraph", "stategraph_sync", hold=3, late=("Paris", "Rome"))
    )


def test_create_react_agent(forks: Drivers, tmp_path: Path) -> None:
    """The prebuilt create_react_agent with a `def` tool, one call per round, killed while
    the second tool call is in flight."""
    crash_resume_replay(forks, tmp_path, Pattern("langgraph", "react", hold=4))
