"""Streamed (SSE) responses are journaled once their terminal event has been read.

SDKs stop reading at the terminal event: openai's chat streams close right after `data: [DONE]`
(sync always; async after a drain of at most 0.1 s), and a consumer may stop at
`response.completed` or `message_stop` and never close the response. Each test drives a real SDK
against tests/llm_server.py (one HTTP chunk per event) or a mock transport, and checks the
journal, a resume (requests counted at the server) and an offline replay. The openai 2.x streams
are checked in their own environment, tests/openai2/.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import replay
from journal import EventStatus, Journal
from replay.integrations import AsyncJournalTransport, JournalTransport, instrument, uninstrument
from tests.streams import (
    Crash,
    LocalLLM,
    completed_keys,
    record_resume_replay,
    recorded_body,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalLLM]:
    running = LocalLLM(tmp_path / "requests.log")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """The SDKs' own default clients, journaled as a framework's would be."""
    instrument()
    yield
    uninstrument()


def _chat(question: str) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": question}]}


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_openai_sync_chat_stream_is_recorded_at_done(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """openai 3 `Stream` (sync) closes the response right after `data: [DONE]` without reading
    to EOF: the stream is still recorded as complete, a resume does not pay for it again, and the
    replay with the server gone yields the same chunk objects."""

    def ask(base_url: str, question: str) -> tuple[str, list[Any]]:
        client = openai.OpenAI(api_key="sk-x", base_url=base_url, max_retries=0)
        chunks = list(client.chat.completions.create(**_chat(question), stream=True))
        return _text(chunks), [c.model_dump() for c in chunks]

    recorded, _, _ = record_resume_replay(sqlite_journal, server, ask)
    assert [len(objects) for objects in recorded] == [4, 4]  # two words, finish, usage
    assert recorded_body(sqlite_journal, "s", "0:1").endswith("data: [DONE]\n\n")


def test_openai_async_chat_stream_is_recorded_when_the_drain_times_out(
    sqlite_journal: Journal, tmp_path: Path
) -> None:
    """openai 3 `AsyncStream` drains the body after `[DONE]` for at most 0.1 s; a server whose
    next bytes come later (a keep-alive comment 0.3 s on) makes it close before EOF. The stream
    is recorded all the same, as of its terminal event."""
    server = LocalLLM(tmp_path / "requests.log", trailing_delay=0.3)

    async def ask(base_url: str, question: str) -> tuple[str, list[Any]]:
        async with openai.AsyncOpenAI(api_key="sk-x", base_url=base_url, max_retries=0) as llm:
            stream = await llm.chat.completions.create(**_chat(question), stream=True)
            chunks = [chunk async for chunk in stream]
        return _text(chunks), [c.model_dump() for c in chunks]

    try:
        record_resume_replay(sqlite_journal, server, ask)
    finally:
        server.stop()
    assert "keep-alive" not in recorded_body(sqlite_journal, "s", "0:1")


def test_openai_async_drain_does_not_record_the_body_twice(sqlite_journal: Journal) -> None:
    """openai 3 async iterates the transport stream a second time after `[DONE]` to drain it.
    Over a body the provider hands out from memory, a second iterator would start again from
    byte 0; the journal holds the body exactly once, as the provider sent it."""
    body = "".join(
        f"data: {json.dumps(chunk)}\n\n"
        for chunk in (
            {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        )
    ) + "data: [DONE]\n\n"  # fmt: skip
    calls: list[str] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=body)

    async def agent() -> str:
        client = openai.AsyncOpenAI(
            api_key="sk-x",
            base_url="http://llm.test/v1",
            http_client=httpx2.AsyncClient(
                transport=AsyncJournalTransport(httpx2.MockTransport(provider))
            ),
        )
        stream = await client.chat.completions.create(**_chat("hi"), stream=True)
        return _text([chunk async for chunk in stream])

    assert asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s")) == "hi"
    assert recorded_body(sqlite_journal, "s", "0:1") == body
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s", mode="replay"))
    assert replayed == "hi" and len(calls) == 1


def test_responses_api_stream_is_recorded_before_response_completed_reaches_the_code(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """Responses API (`responses.create(stream=True)`): when the workflow receives the
    `response.completed` event, the completed row is already in the journal, so a consumer
    that stops there and never closes the stream loses nothing; resume and offline replay
    serve the same events."""
    committed_at_terminal: list[int] = []

    async def ask(base_url: str, question: str) -> tuple[str, list[Any]]:
        before = len(completed_keys(sqlite_journal, "s"))
        llm = openai.AsyncOpenAI(api_key="sk-x", base_url=base_url, max_retries=0)
        events = []
        async for event in await llm.responses.create(model="m", input=question, stream=True):
            events.append(event)
            if event.type == "response.completed":
                committed_at_terminal.append(len(completed_keys(sqlite_journal, "s")) - before)
                break  # and no close: the SDK object is simply dropped
        final = events[-1].response.output_text  # type: ignore[union-attr]
        return final, [e.model_dump() for e in events]

    recorded, _, _ = record_resume_replay(sqlite_journal, server, ask)
    assert [e["type"] for e in recorded[0]][-1] == "response.completed"
    # Rows committed by the time the code saw the terminal event: recorded sitting (two live),
    # resumed (two served, one live), replay (three served).
    assert committed_at_terminal == [1, 1, 0, 0, 1, 0, 0, 0]
    llm_meta = json.loads(sqlite_journal.events("s")[-1].payload or b"")["llm"]
    assert llm_meta["output_tokens"] == 2 and llm_meta["finish_reason"] == "completed"


def test_anthropic_stream_is_recorded_before_message_stop_reaches_the_code(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """anthropic `messages.create(stream=True)`: the completed row is committed before the
    workflow sees `message_stop`; a consumer that stops there and closes the stream before its
    EOF is served on resume (no second request) and replays offline to the same events."""
    committed_at_terminal: list[int] = []

    async def ask(root: str, question: str) -> tuple[str, list[Any]]:
        before = len(completed_keys(sqlite_journal, "s"))
        llm = anthropic.AsyncAnthropic(api_key="sk-ant-x", base_url=root, max_retries=0)
        events, text = [], ""
        async with await llm.messages.create(
            model="claude-test",
            max_tokens=50,
            messages=[{"role": "user", "content": question}],
            stream=True,
        ) as stream:
            async for event in stream:
                events.append(event)
                if event.type == "content_block_delta":
                    text += event.delta.text  # type: ignore[union-attr]
                if event.type == "message_stop":
                    committed_at_terminal.append(len(completed_keys(sqlite_journal, "s")) - before)
                    break
        return text, [e.model_dump() for e in events]

    recorded, _, _ = record_resume_replay(sqlite_journal, server, ask, base_url=server.root)
    assert recorded[0][-1] == {"type": "message_stop"}
    assert committed_at_terminal == [1, 1, 0, 0, 1, 0, 0, 0]  # as for the Responses API


def test_anthropic_message_stream_helper_records_and_replays(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """anthropic's `messages.stream()` helper (text_stream, get_final_message) reads to EOF:
    recorded once, served on resume, the same final message offline."""

    def ask(root: str, question: str) -> tuple[str, list[Any]]:
        llm = anthropic.Anthropic(api_key="sk-ant-x", base_url=root, max_retries=0)
        with llm.messages.stream(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": question}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        return text, [final.model_dump()]

    record_resume_replay(sqlite_journal, server, ask, base_url=server.root)
    body = recorded_body(sqlite_journal, "s", "0:1")
    assert body.count("event: message_stop") == 1


def test_a_stream_abandoned_before_its_terminator_is_asked_again(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """A consumer that breaks out after the first chunk and closes the stream, before the
    terminal event reached the transport: only the started row is journaled, and a resume
    makes the request again."""
    crashing = {"on": True}

    async def agent() -> str:
        async with openai.AsyncOpenAI(
            api_key="sk-x", base_url=server.base_url, max_retries=0
        ) as llm:
            stream = await llm.chat.completions.create(**_chat("a b c d"), stream=True)
            async for chunk in stream:
                first = chunk.choices[0].delta.content or ""
                break
            await stream.close()
        if crashing["on"]:
            raise Crash
        return first

    with pytest.raises(Crash):
        asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s"))
    assert [e.status for e in sqlite_journal.events("s")] == [EventStatus.STARTED]
    crashing["on"] = False
    assert asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s")) == "echo: "
    assert server.questions() == ["a b c d", "a b c d"]


def test_a_terminator_read_by_the_transport_is_recorded_though_the_consumer_stopped(
    sqlite_journal: Journal,
) -> None:
    """A provider that sends the whole body in one piece: the transport has read `[DONE]` with
    the first chunk, so the response is whole and recorded, even though the consumer broke out
    after one chunk. The resume serves it and the consumer stops at the same chunk."""
    body = "".join(
        f"data: {json.dumps(chunk)}\n\n"
        for chunk in (
            {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": word}}]}
            for word in ("a", "b", "c")
        )
    ) + "data: [DONE]\n\n"  # fmt: skip
    calls: list[str] = []
    crashing = {"on": True}

    def provider(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=body)

    async def agent() -> str:
        client = openai.AsyncOpenAI(
            api_key="sk-x",
            base_url="http://llm.test/v1",
            http_client=httpx2.AsyncClient(
                transport=AsyncJournalTransport(httpx2.MockTransport(provider))
            ),
        )
        stream = await client.chat.completions.create(**_chat("abc"), stream=True)
        async for chunk in stream:
            first = chunk.choices[0].delta.content or ""
            break
        await stream.close()
        if crashing["on"]:
            raise Crash
        return first

    with pytest.raises(Crash):
        asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s"))
    assert completed_keys(sqlite_journal, "s") == ["0:1"]
    crashing["on"] = False
    assert asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s")) == "a"
    assert calls == ["/v1/chat/completions"]


def test_a_stream_never_closed_is_recorded_once_its_terminator_is_read(
    sqlite_journal: Journal, server: LocalLLM
) -> None:
    """Code that reads SSE lines itself (httpx2 `send(stream=True)`), stops at `data: [DONE]`
    and drops the response without closing it: the completed row is committed by the time the
    `[DONE]` line reaches the code, and the replay serves the same lines with the server gone."""
    committed: list[list[str]] = []

    async def agent() -> list[str]:
        client = httpx2.AsyncClient()
        request = client.build_request(
            "POST", f"{server.base_url}/chat/completions", json={**_chat("x y"), "stream": True}
        )
        response = await client.send(request, stream=True)
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "data: [DONE]":
                committed.append(completed_keys(sqlite_journal, "s"))
                return lines  # the response is never closed
        raise AssertionError("no [DONE]")

    live = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s"))
    assert committed == [["0:1"]]
    server.stop()
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s", mode="replay"))
    assert replayed == live and live[-1] == "data: [DONE]"


def test_a_gzip_encoded_stream_is_recorded_at_done(sqlite_journal: Journal) -> None:
    """An SSE body sent gzip-compressed, in several pieces, to a sync client that closes at
    `[DONE]`: the terminal event is found through the compression. The compressed bytes lack
    their gzip trailer at that point, so the journal keeps the text (no content-encoding), which
    replay serves to the same chunks."""
    events = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": word}}]}
        for word in ("zip ", "ped")
    ]  # fmt: skip
    plain = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    packed = gzip.compress(plain.encode())
    pieces = [packed[i : i + 7] for i in range(0, len(packed), 7)]
    calls: list[str] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
            stream=_Pieces(pieces),
        )

    async def agent() -> list[dict[str, Any]]:
        client = openai.OpenAI(
            api_key="sk-x",
            base_url="http://llm.test/v1",
            http_client=httpx2.Client(transport=JournalTransport(httpx2.MockTransport(provider))),
        )
        return [c.model_dump() for c in client.chat.completions.create(**_chat("z"), stream=True)]

    live = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s"))
    assert completed_keys(sqlite_journal, "s") == ["0:1"]
    stored = json.loads(sqlite_journal.events("s")[-1].payload or b"")
    assert stored["body"] == plain and "content-encoding" not in dict(stored["headers"])
    assert stored["llm"]["model"] == "m"
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="s", mode="replay"))
    assert replayed == live and len(live) == 2 and calls == ["/v1/chat/completions"]


class _Pieces(httpx2.SyncByteStream):
    """A body handed out in fixed pieces, as a socket would."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def test_a_stream_read_after_its_run_ended_is_not_journaled_and_says_so(
    sqlite_journal: Journal, server: LocalLLM, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream opened inside a journaled block and read after the block ended: the consumer
    gets every chunk (no OwnershipLost from a released lease), nothing more is written to the
    finished run, and the log and the summary say the step was left in flight."""
    caplog.set_level(logging.WARNING, logger="replay")

    async def open_then_read() -> tuple[str, replay.RunSummary | None]:
        async with openai.AsyncOpenAI(
            api_key="sk-x", base_url=server.base_url, max_retries=0
        ) as llm:
            async with replay.journaled(sqlite_journal, "late") as handle:
                stream = await llm.chat.completions.create(**_chat("read me later"), stream=True)
            chunks = [chunk async for chunk in stream]
        return _text(chunks), handle.summary

    text, summary = asyncio.run(open_then_read())
    assert text.strip() == "echo: read me later"
    assert summary is not None and summary.unfinished == ("0:1",)
    assert [e.status for e in sqlite_journal.events("late")] == [EventStatus.STARTED]
    assert "step.finished_after_its_run" in caplog.text
    assert all(v.ok for v in sqlite_journal.verify("late"))
