"""The journaling HTTP transport under the real OpenAI and Anthropic SDKs, offline.

Each test records a run through a mock transport (the provider, played offline), then replays
it with the network side switched off: any live request fails the test. Parsed SDK objects must
come back equal.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replay
from journal import EventStatus, Journal
from replay.integrations import AsyncJournalTransport, JournalTransport

SECRET = "sk-test-7f3a9c2e5b1d4086"


class Provider:
    """A scripted provider behind `httpx2.MockTransport`; `offline` makes any call fail."""

    def __init__(self, answer: Callable[[httpx2.Request, int], httpx2.Response]) -> None:
        self.answer = answer
        self.calls: list[str] = []
        self.offline = False

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if self.offline:
            raise AssertionError(f"live request during replay: {request.method} {request.url}")
        self.calls.append(request.url.path)
        return self.answer(request, len(self.calls))


def chat_answer(request: httpx2.Request, number: int) -> httpx2.Response:
    body = json.loads(request.content)
    text = f"re: {body['messages'][-1]['content']}"
    if body.get("stream"):
        chunks = [
            {
                "id": f"c{number}",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word + " "}}],
            }
            for word in text.split()
        ]
        sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=sse.encode()
        )
    return httpx2.Response(
        200,
        json={
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        },
        headers={
            "x-request-id": f"req_{number}",
            "set-cookie": "__cf_bm=cookie-secret; path=/",
            "openai-organization": "org-secret",
        },
    )


def openai_client(provider: Callable[[httpx2.Request], Any]) -> openai.AsyncOpenAI:
    """An OpenAI client whose requests a journaling transport passes to `provider`."""
    transport = AsyncJournalTransport(httpx2.MockTransport(provider))
    return openai.AsyncOpenAI(
        api_key=SECRET,
        base_url="http://llm.test/v1",
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=2,
    )


async def ask(client: openai.AsyncOpenAI, question: str) -> str:
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": question}]
    )
    return reply.choices[0].message.content or ""


def record_and_replay(
    journal: Journal, provider: Provider, workflow: Callable[..., Any], *args: Any
) -> tuple[Any, Any]:
    """(live result, replayed result); the replay runs with the provider offline."""
    live = asyncio.run(replay.run(workflow, *args, journal=journal, run_id="r"))
    provider.offline = True
    replayed = asyncio.run(
        replay.run_with_summary(workflow, *args, journal=journal, run_id="r", mode="replay")
    )
    assert replayed.summary.executed == 0
    return live, replayed.result


@pytest.fixture
def provider() -> Provider:
    return Provider(chat_answer)


def test_chat_completions_replay_to_equal_sdk_objects(
    sqlite_journal: Journal, provider: Provider
) -> None:
    """Two chat calls are two llm steps; replayed offline, the parsed completions (request id
    included) equal the live ones, and a finished run's second look is served too."""
    seen: list[Any] = []

    async def agent(topic: str) -> list[str]:
        client = openai_client(provider)
        answers = []
        for prompt in (topic, topic + "?"):
            completion = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": prompt}]
            )
            seen.append((completion.model_dump(), completion._request_id))
            answers.append(completion.choices[0].message.content or "")
        return answers

    live, replayed = record_and_replay(sqlite_journal, provider, agent, "cats")
    assert live == replayed == ["re: cats", "re: cats?"]
    assert seen[:2] == seen[2:]
    assert seen[0][1] == "req_1"
    events = sqlite_journal.events("r")
    # A mock transport answers without waiting, so each call is one row carrying its request.
    assert [(e.key, e.kind.value, e.status.value) for e in events] == [
        ("0:1", "llm", "completed"),
        ("0:2", "llm", "completed"),
    ]
    assert events[0].name == "POST llm.test/v1/chat/completions"
    assert events[0].call_arguments()["body"]["json"]["model"] == "gpt-test"  # type: ignore[index]
    recorded = json.loads(events[0].payload or b"")
    assert recorded["llm"] == {
        "provider": "openai",
        "model": "gpt-test",
        "input_tokens": 7,
        "output_tokens": 2,
        "finish_reason": "stop",
    }
    assert ["x-request-id", "req_1"] in recorded["headers"]


def test_credentials_and_cookies_never_reach_the_journal(db_path: Path, provider: Provider) -> None:
    """The API key (authorization header), set-cookie and org headers are not in the file."""

    async def agent() -> str:
        completion = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hello"}]
        )
        return completion.choices[0].message.content or ""

    with Journal(db_path) as journal:
        asyncio.run(replay.run(agent, journal=journal, run_id="r"))
        started = {"args": journal.events("r")[0].call_arguments()}
    on_disk = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.is_file())
    for secret in (SECRET.encode(), b"cookie-secret", b"org-secret"):
        assert secret not in on_disk
    assert set(started["args"]["headers"]) <= {"content-type", "accept", "x-stainless-retry-count"}
    assert started["args"]["body"]["json"]["messages"] == [{"role": "user", "content": "hello"}]


def test_a_500_then_200_is_one_step_and_replay_never_waits(
    sqlite_journal: Journal,
) -> None:
    """An SDK retry is the same step's next attempt; the 500 is recorded as retrying and is
    never served: replay answers the first request with the final 200."""

    def flaky(request: httpx2.Request, number: int) -> httpx2.Response:
        if number == 1:
            return httpx2.Response(500, json={"error": {"message": "busy"}})
        return chat_answer(request, number)

    provider = Provider(flaky)

    async def agent() -> str:
        completion = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "again"}]
        )
        return completion.choices[0].message.content or ""

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed == "re: again" and provider.calls == ["/v1/chat/completions"] * 2
    rows = [(e.key, e.status, e.attempt) for e in sqlite_journal.events("r")]
    assert rows == [("0:1", EventStatus.RETRYING, 1), ("0:1", EventStatus.COMPLETED, 2)]


def test_gzip_bodies_are_kept_as_received(sqlite_journal: Journal) -> None:
    """A gzip-encoded response is stored compressed with its content-encoding, so the SDK
    decodes the replayed one exactly like the live one."""

    def gzipped(request: httpx2.Request, number: int) -> httpx2.Response:
        plain = chat_answer(request, number)
        return httpx2.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=gzip.compress(plain.content),
        )

    provider = Provider(gzipped)

    async def agent() -> dict[str, Any]:
        completion = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "zip"}]
        )
        return completion.model_dump()

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed and live["choices"][0]["message"]["content"] == "re: zip"
    stored = json.loads(sqlite_journal.events("r")[-1].payload or b"")
    assert "body_base64" in stored and ["content-encoding", "gzip"] in stored["headers"]
    assert stored["llm"]["output_tokens"] == 2  # metadata read through the compression


def test_streamed_completions_replay_to_the_same_chunks(
    sqlite_journal: Journal, provider: Provider
) -> None:
    """stream=True: the SSE body is recorded when read to the end and replays to equal chunks."""

    async def agent() -> list[dict[str, Any]]:
        stream = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "one two"}], stream=True
        )
        return [chunk.model_dump() async for chunk in stream]

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed and len(live) == 3
    assert [e.status for e in sqlite_journal.events("r")][-1] is EventStatus.COMPLETED


def test_an_abandoned_stream_is_not_recorded_as_complete(
    sqlite_journal: Journal, provider: Provider
) -> None:
    """Breaking out of a stream before its `[DONE]` arrived (the provider sends one event per
    piece) leaves only the started row: a resume asks again."""

    def in_pieces(request: httpx2.Request, number: int) -> httpx2.Response:
        whole = chat_answer(request, number)

        async def pieces() -> AsyncIterator[bytes]:
            for event in whole.content.split(b"\n\n")[:-1]:
                yield event + b"\n\n"

        return httpx2.Response(200, headers=whole.headers, content=pieces())

    provider.answer = in_pieces

    async def agent() -> str:
        stream = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "a b c d"}], stream=True
        )
        async for chunk in stream:
            first = chunk.choices[0].delta.content or ""
            break
        await stream.close()
        return first

    asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r"))
    assert [e.status for e in sqlite_journal.events("r")] == [EventStatus.STARTED]


def test_concurrent_calls_under_gather_replay_by_task(sqlite_journal: Journal) -> None:
    """Three calls under gather finish in scrambled order live; keys follow the tasks, so the
    replay pairs every answer with its question."""

    async def answer(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        await asyncio.sleep({"a": 0.2, "b": 0.0, "c": 0.1}[body["messages"][0]["content"]])
        return chat_answer(request, 1)

    offline = {"on": False}

    async def handler(request: httpx2.Request) -> httpx2.Response:
        assert not offline["on"], "live request during replay"
        return await answer(request)

    async def agent() -> list[str]:
        client = openai_client(handler)
        return list(await asyncio.gather(*(ask(client, q) for q in ("a", "b", "c"))))

    live = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r"))
    order = [e.key for e in sqlite_journal.events("r") if e.status is EventStatus.COMPLETED]
    assert order == ["0/2:1", "0/3:1", "0/1:1"]  # b, c, a finished in that order
    offline["on"] = True
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r", mode="replay"))
    assert live == replayed == ["re: a", "re: b", "re: c"]


def test_multipart_uploads_match_despite_random_boundaries(
    sqlite_journal: Journal, provider: Provider
) -> None:
    """files.create sends a multipart body with a random boundary: the fingerprint normalises
    it, so the replay matches (and an unchanged upload is served)."""

    def uploaded(request: httpx2.Request, number: int) -> httpx2.Response:
        assert request.headers["content-type"].startswith("multipart/form-data")
        return httpx2.Response(
            200,
            json={
                "id": "file-1",
                "object": "file",
                "bytes": 5,
                "created_at": 1,
                "filename": "notes.txt",
                "purpose": "assistants",
                "status": "processed",
            },
        )

    provider.answer = uploaded

    async def agent() -> str:
        created = await openai_client(provider).files.create(
            file=("notes.txt", b"hello"), purpose="assistants"
        )
        return created.id

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed == "file-1"


def test_anthropic_messages_and_streams_replay(sqlite_journal: Journal) -> None:
    """anthropic's messages.create and messages.stream (httpx2 only) replay to equal objects,
    and the x-api-key header never reaches the journal."""

    def messages(request: httpx2.Request, number: int) -> httpx2.Response:
        body = json.loads(request.content)
        text = f"re: {body['messages'][-1]['content']}"
        if body.get("stream"):
            events = [
                ("message_start", {"type": "message_start", "message": {
                    "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                    "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {
                    "stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 3}}),
                ("message_stop", {"type": "message_stop"}),
            ]  # fmt: skip
            sse = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, content=sse.encode()
            )
        return httpx2.Response(
            200,
            json={
                "id": f"msg_{number}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 3},
            },
            headers={"request-id": f"req_{number}"},
        )

    provider = Provider(messages)

    async def agent() -> list[Any]:
        client = anthropic.AsyncAnthropic(
            api_key=SECRET,
            base_url="http://claude.test",
            http_client=httpx2.AsyncClient(
                transport=AsyncJournalTransport(httpx2.MockTransport(provider))
            ),
        )
        made = await client.messages.create(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "yo"}]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        return [made.model_dump(), made._request_id, text, final.model_dump()]

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed
    assert live[1] == "req_1" and live[2] == "re: yo"
    events = sqlite_journal.events("r")
    assert json.loads(events[-1].payload or b"")["llm"]["finish_reason"] == "end_turn"
    assert all(SECRET.encode() not in (e.payload or b"") + (e.args or b"") for e in events)


def test_sync_clients_are_journaled_too(sqlite_journal: Journal, provider: Provider) -> None:
    """openai.OpenAI over JournalTransport: the same record and offline replay, synchronously."""

    async def agent() -> str:
        client = openai.OpenAI(
            api_key=SECRET,
            base_url="http://llm.test/v1",
            http_client=httpx2.Client(transport=JournalTransport(httpx2.MockTransport(provider))),
        )
        completion = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "sync"}]
        )
        return completion.choices[0].message.content or ""

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed == "re: sync"


def test_legacy_httpx_flavour_and_outside_a_run(sqlite_journal: Journal) -> None:
    """A legacy `httpx` client gets `httpx` responses back; outside a run nothing is journaled."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json={"weather": "sunny"})

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=AsyncJournalTransport(httpx.MockTransport(handler)))

    async def plain() -> Any:
        async with client() as http:
            response = await http.get("http://tools.test/weather?city=Oslo")
            assert isinstance(response, httpx.Response)
            return response.json()

    assert asyncio.run(plain()) == {"weather": "sunny"}  # no run: a plain request
    live = asyncio.run(replay.run(plain, journal=sqlite_journal, run_id="r"))
    replayed = asyncio.run(replay.run(plain, journal=sqlite_journal, run_id="r", mode="replay"))
    assert live == replayed == {"weather": "sunny"} and len(calls) == 2
    (event,) = sqlite_journal.events("r")
    assert event.kind.value == "tool" and event.name == "GET tools.test/weather"


def test_a_changed_request_is_a_divergence_naming_the_call_site(
    sqlite_journal: Journal, provider: Provider
) -> None:
    """Asking the model something else at the same step is caught, with the user's line."""
    prompt = {"text": "cats"}

    async def agent() -> str:
        completion = await openai_client(provider).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": prompt["text"]}]
        )
        return completion.choices[0].message.content or ""

    asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r"))
    prompt["text"] = "dogs"
    with pytest.raises(replay.NonDeterminismError) as err:
        asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r", mode="replay"))
    message = str(err.value)
    assert "POST llm.test/v1/chat/completions" in message and "dogs" in message
    assert "tests/test_http_journal.py:" in message


def test_runs_and_show_report_llm_usage_and_estimated_cost(
    db_path: Path, provider: Provider, tmp_path: Path
) -> None:
    """`journal show` lists model, tokens and finish reason per LLM call; `journal runs`
    sums tokens and, with a price table, estimates the cost (an unpriced model says so)."""
    from typer.testing import CliRunner

    from replay._cli import app

    async def agent() -> None:
        client = openai_client(provider)
        for prompt in ("one", "two"):
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": prompt}]
            )

    with Journal(db_path) as journal:
        asyncio.run(replay.run(agent, journal=journal, run_id="priced"))
        (digest,) = journal.digests(prices={"gpt-test": {"input": 1.0, "output": 10.0}})
    assert (digest.input_tokens, digest.output_tokens) == (14, 4)
    assert digest.cost == pytest.approx((14 * 1.0 + 4 * 10.0) / 1e6)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "priced", "--db", str(db_path)])
    assert shown.exit_code == 0 and "gpt-test 7+2 tokens stop" in shown.output
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-test": {"input": 1.0, "output": 10.0}}))
    listed = runner.invoke(app, ["runs", "--db", str(db_path), "--prices", str(prices)])
    assert listed.exit_code == 0 and "14/4" in listed.output and "$0.000054" in listed.output
    prices.write_text(json.dumps({"other-model": {"input": 1.0, "output": 1.0}}))
    listed = runner.invoke(app, ["runs", "--db", str(db_path), "--prices", str(prices)])
    assert "unpriced model" in listed.output
    prices.write_text('{"gpt-test": 3}')
    refused = runner.invoke(app, ["runs", "--db", str(db_path), "--prices", str(prices)])
    assert refused.exit_code == 1 and "is not a price table" in refused.output


def test_tasks_the_http_stack_starts_do_not_shift_workflow_keys(
    sqlite_journal: Journal,
) -> None:
    """A live request whose transport starts a task (as connection pools do) must not take a
    child slot of the workflow's task: replay, which starts none, must see the same keys."""

    async def pooled(request: httpx2.Request) -> httpx2.Response:
        assert not offline["on"], "live request during replay"
        await asyncio.ensure_future(asyncio.sleep(0))  # the stack's own background task
        return chat_answer(request, 1)

    offline = {"on": False}

    async def agent() -> list[str]:
        client = openai_client(pooled)
        first = await ask(client, "plan")
        return [first, *await asyncio.gather(ask(client, "x"), ask(client, "y"))]

    live = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r"))
    assert {e.key for e in sqlite_journal.events("r")} == {"0:1", "0/1:1", "0/2:1"}
    offline["on"] = True
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="r", mode="replay"))
    assert live == replayed == ["re: plan", "re: x", "re: y"]


def test_a_tool_calling_loop_replays_with_no_model_and_no_tool(sqlite_journal: Journal) -> None:
    """The model asks for a tool, the tool (a @step) runs, the model answers: record, then
    replay with both the provider and the tool switched off."""
    tool_runs: list[str] = []

    def model(request: httpx2.Request, number: int) -> httpx2.Response:
        body = json.loads(request.content)
        last = body["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": f"It is {last['content']}."}
            finish = "stop"
        else:
            call = {"name": "weather", "arguments": json.dumps({"city": "Oslo"})}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
            finish = "tool_calls"
        return httpx2.Response(
            200,
            json={
                "id": f"c{number}",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            },
        )

    provider = Provider(model)

    @replay.step(kind="tool")
    def weather(city: str) -> str:
        tool_runs.append(city)
        return "sunny"

    async def agent() -> str:
        client = openai_client(provider)
        messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
        tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
        first = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        result = weather(**json.loads(call.function.arguments))  # type: ignore[union-attr]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        final = await client.chat.completions.create(model="m", messages=messages, tools=tools)
        return final.choices[0].message.content or ""

    live, replayed = record_and_replay(sqlite_journal, provider, agent)
    assert live == replayed == "It is sunny." and tool_runs == ["Oslo"]
    kinds = [e.kind.value for e in sqlite_journal.events("r") if e.status.value == "completed"]
    assert kinds == ["llm", "tool", "llm"]


@given(
    responses=st.lists(
        st.tuples(
            st.sampled_from([200, 201, 204, 400, 404]),
            st.binary(max_size=200),
            st.sampled_from(["application/json", "text/plain", "application/octet-stream"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=40)
def test_replay_returns_the_bytes_live_returned(
    responses: list[tuple[int, bytes, str, bool]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Law: for any responses (status, any bytes, content type, gzip or not), the replayed
    response has the status, decoded body and headers the live one had."""
    path = tmp_path_factory.mktemp("law") / "j.db"
    served = iter(responses)

    def handler(request: httpx2.Request) -> httpx2.Response:
        status, body, content_type, zipped = next(served)
        headers = {"content-type": content_type, "x-request-id": "r"}
        if zipped:
            headers["content-encoding"] = "gzip"
            body = gzip.compress(body)
        return httpx2.Response(status, headers=headers, content=body)

    async def fetch_all() -> list[tuple[int, bytes, list[tuple[str, str]]]]:
        transport = AsyncJournalTransport(httpx2.MockTransport(handler))
        async with httpx2.AsyncClient(transport=transport) as http:
            results = []
            for number in range(len(responses)):
                response = await http.post("http://api.test/items", json={"n": number})
                kept = sorted(
                    (k, v)
                    for k, v in response.headers.items()
                    if k in ("content-type", "x-request-id")
                )
                results.append((response.status_code, response.content, kept))
            return results

    with Journal(path) as journal:
        live = asyncio.run(replay.run(fetch_all, journal=journal, run_id="law"))
        replayed = asyncio.run(replay.run(fetch_all, journal=journal, run_id="law", mode="replay"))
    assert replayed == live
    assert [r[1] for r in live] == [body for _, body, _, _ in responses]
