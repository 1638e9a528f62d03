"""litellm (the client inside Playbooks and many frameworks) journaled through its sessions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the cost map

import litellm

import replay
from journal import Journal
from replay.integrations import route_litellm
from tests.llm_server import requests_logged, serve
from tests.streams import LocalLLM, record_resume_replay

SECRET = "sk-litellm-secret-5150"


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    running = serve(tmp_path / "requests.log")
    yield f"http://127.0.0.1:{running.server_port}/v1"
    running.shutdown()
    running.server_close()


@pytest.fixture(autouse=True)
def _routed() -> Iterator[None]:
    saved = litellm.aclient_session, litellm.client_session
    route_litellm()
    yield
    litellm.aclient_session, litellm.client_session = saved


def test_litellm_completions_record_and_replay_offline(
    base_url: str, tmp_path: Path, db_path: Path
) -> None:
    """acompletion and completion inside a run are journaled steps; the replay serves both
    without a request reaching the server, and the API key is not in the database file."""

    # recipe: litellm
    async def agent(question: str) -> list[str]:
        first = await litellm.acompletion(
            model="openai/gpt-test",
            api_base=base_url,
            api_key=SECRET,
            messages=[{"role": "user", "content": question}],
        )
        second = litellm.completion(
            model="openai/gpt-test",
            api_base=base_url,
            api_key=SECRET,
            messages=[{"role": "user", "content": question + " again"}],
        )
        return [first.choices[0].message.content, second.choices[0].message.content]
        # end recipe: litellm

    log = tmp_path / "requests.log"
    with Journal(db_path) as journal:
        live = asyncio.run(replay.run(agent, "hi", journal=journal, run_id="l"))
        assert live == ["echo: hi", "echo: hi again"] and len(requests_logged(log)) == 2
        replayed = asyncio.run(
            replay.run_with_summary(agent, "hi", journal=journal, run_id="l", mode="replay")
        )
        assert replayed.result == live and replayed.summary.served == 2
        assert len(requests_logged(log)) == 2
        assert [e.kind.value for e in journal.events("l")][-1] == "llm"
    assert SECRET.encode() not in db_path.read_bytes()


def test_route_litellm_is_idempotent_and_keeps_your_sessions() -> None:
    """Routing twice wraps once; a session you set keeps its own transport inside ours."""
    import httpx

    first = litellm.aclient_session
    route_litellm()
    assert litellm.aclient_session is first
    mine = httpx.Client()
    inner = mine._transport
    litellm.client_session = mine
    route_litellm()
    assert litellm.client_session is mine and mine._transport.inner is inner  # type: ignore[attr-defined]
    mine.close()


def test_litellm_sync_streams_are_recorded_and_not_paid_again(
    tmp_path: Path, sqlite_journal: Journal
) -> None:
    """`completion(stream=True)`: litellm's sync openai client closes the stream at
    `data: [DONE]`; the stream is recorded all the same, a resume after a crash pays for no
    recorded stream again, and the replay with the server gone gives the same chunks."""
    server = LocalLLM(tmp_path / "streams.log")

    def ask(base: str, question: str) -> tuple[str, list[Any]]:
        stream = litellm.completion(
            model="openai/gpt-test",
            api_base=base,
            api_key=SECRET,
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        deltas = [c.choices[0].delta.content for c in stream if c.choices]
        return "".join(d or "" for d in deltas), deltas

    try:
        recorded, _, _ = record_resume_replay(sqlite_journal, server, ask)
    finally:
        server.stop()
    assert "".join(d or "" for d in recorded[0]) == "echo: one "
    assert SECRET.encode() not in b"".join(e.args or b"" for e in sqlite_journal.events("s"))
