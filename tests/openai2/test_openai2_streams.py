"""openai 2.x chat streams over legacy httpx 0.28 (the stack litellm, llama-index and crewai pin).

openai 2.x closes a stream right after `data: [DONE]`, sync and async alike, without reading to
EOF. Both are journaled through `instrument()`, which wraps legacy httpx's default transports.
This environment has no httpx2 at all, so it also checks that nothing on the legacy path needs it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import replay
from journal import Journal
from replay.integrations import AsyncJournalTransport, instrument, uninstrument
from tests.streams import LocalLLM, record_resume_replay, recorded_body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalLLM]:
    running = LocalLLM(tmp_path / "requests.log")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    assert "httpx" in instrument()
    yield
    uninstrument()


def _chat(question: str) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": question}]}


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_this_is_the_openai2_environment() -> None:
    """The environment is the one these tests are about: openai 2.x on legacy httpx 0.28,
    whose default client is a legacy `httpx` client."""
    assert version("openai").startswith("2.") and httpx.__version__.startswith("0.28.")
    client = openai.OpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1")
    assert isinstance(client._client, httpx.Client)


def test_openai2_sync_chat_stream_is_recorded_at_done(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """openai 2.x `Stream` closes after `data: [DONE]` without reading to EOF: recorded as
    complete all the same, not paid again on resume, replayed offline to equal chunks."""

    def ask(base_url: str, question: str) -> tuple[str, list[Any]]:
        client = openai.OpenAI(api_key="sk-x", base_url=base_url, max_retries=0)
        chunks = list(client.chat.completions.create(**_chat(question), stream=True))
        return _text(chunks), [c.model_dump() for c in chunks]

    recorded, _, _ = record_resume_replay(sqlite_journal, server, ask)
    assert [len(objects) for objects in recorded] == [4, 4]
    assert recorded_body(sqlite_journal, "s", "0:1").endswith("data: [DONE]\n\n")


def test_openai2_async_chat_stream_is_recorded_at_done(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """openai 2.x `AsyncStream` (no drain, unlike openai 3) closes after `data: [DONE]`:
    recorded as complete, not paid again on resume, replayed offline to equal chunks."""

    async def ask(base_url: str, question: str) -> tuple[str, list[Any]]:
        async with openai.AsyncOpenAI(api_key="sk-x", base_url=base_url, max_retries=0) as llm:
            stream = await llm.chat.completions.create(**_chat(question), stream=True)
            chunks = [chunk async for chunk in stream]
        return _text(chunks), [c.model_dump() for c in chunks]

    recorded, resumed, replayed = record_resume_replay(sqlite_journal, server, ask)
    assert resumed == replayed and len(recorded) == 2


def test_gzip_json_answers_are_journaled_without_httpx2(sqlite_journal: Journal) -> None:
    """Where legacy httpx is the only HTTP stack (no httpx2 installed), a gzip-compressed JSON
    answer, as real providers send, is decoded for redaction by legacy httpx itself: recorded,
    then replayed offline to the same completion."""
    calls: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        completion = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "zipped"}}],
        }  # fmt: skip
        return httpx.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=gzip.compress(json.dumps(completion).encode()),
        )

    async def agent() -> str:
        transport = AsyncJournalTransport(httpx.MockTransport(provider))
        async with openai.AsyncOpenAI(
            api_key="sk-x",
            base_url="http://llm.test/v1",
            http_client=httpx.AsyncClient(transport=transport),
        ) as llm:
            completion = await llm.chat.completions.create(**_chat("zip"))
        return completion.choices[0].message.content or ""

    with pytest.raises(ModuleNotFoundError):
        import httpx2  # noqa: F401
    assert asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="z")) == "zipped"
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="z", mode="replay"))
    assert replayed == "zipped" and calls == ["/v1/chat/completions"]
