"""LangGraph + langchain-openai recorded, SIGKILLed mid-request, resumed, replayed.

ChatOpenAI builds its own OpenAI clients; only `instrument()` and the journaled run make the
graph durable (no LangGraph checkpointer). The law each test holds is in harness.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.frameworks.harness import Drivers, Pattern, crash_resume_replay, soak


def test_state_graph_with_tool_node(forks: Drivers, tmp_path: Path) -> None:
    """A StateGraph (model node, ToolNode with async tools, tools_condition) whose model asks
    for two tools at once, killed with one tool answered and the other in flight."""
    crash_resume_replay(
        forks, tmp_path, Pattern("langgraph", "stategraph", hold=3, late=("Paris", "Rome"))
    )


def test_state_graph_with_sync_tools(forks: Drivers, tmp_path: Path) -> None:
    """The same graph with plain `def` tools, which LangChain runs in executor threads that
    copy the caller's context, one starting 0.2 s after the other (the other one on resume):
    the same law. Started at the same moment they hit the threads race of test_reproductions
    in some runs (test_sync_tools_started_at_once)."""
    crash_resume_replay(
        forks, tmp_path, Pattern("langgraph", "stategraph_sync", hold=3, late=("Paris", "Rome"))
    )


def test_create_react_agent(forks: Drivers, tmp_path: Path) -> None:
    """The prebuilt create_react_agent with a `def` tool, one call per round, killed while
    the second tool call is in flight."""
    crash_resume_replay(forks, tmp_path, Pattern("langgraph", "react", hold=4))


def test_sync_graph_invoked_from_async_code(forks: Drivers, tmp_path: Path) -> None:
    """A sync StateGraph (ChatOpenAI.invoke, a ToolNode with `def` tools) run with the sync
    `invoke` straight from the async workflow, its two tool calls started 0.2 s apart (the
    other one first on resume): the same law."""
    pattern = Pattern("langgraph", "stategraph_invoke", hold=3, late=("Paris", "Rome"))
    crash_resume_replay(forks, tmp_path, pattern)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("JOURNAL_SOAK"), reason="soak test: JOURNAL_SOAK=1")
def test_sync_tools_started_at_once(forks: Drivers, tmp_path: Path) -> None:
    """The StateGraph's two `def` tools started at the same moment, as the ToolNode starts
    them: 30 runs each record and replay. (The short version, started 0.2 s apart, is
    test_state_graph_with_sync_tools.)"""
    soak(forks, tmp_path, Pattern("langgraph", "stategraph_sync", hold=0), runs=30, together=2)
