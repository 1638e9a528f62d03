"""OpenTelemetry: each run a trace, each step attempt a span, emitted live (`replay.otel`) and
exported afterwards (`journal export -f otlp`) with the same ids, on real SQLite journals, with
the SDK's in-memory exporter and a real OTLP/HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

import replay
from journal import Journal, JournalError
from journal._spans import run_span_id, trace_id_of
from replay import otel, step
from replay._cli import app
from replay.integrations import instrument, uninstrument
from tests.llm_server import serve

ROOT = Path(__file__).resolve().parent.parent


_providers: dict[int, TracerProvider] = {}


def exported_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    return _providers[id(exporter)]


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans of every run, live, into the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _providers[id(exporter)] = provider
    otel.instrument(tracer_provider=provider)
    yield exporter
    otel.uninstrument()
    provider.shutdown()
    del _providers[id(exporter)]


def by_key(spans: Any) -> dict[str, ReadableSpan]:
    return {
        str(s.attributes["journal.step.key"]): s
        for s in spans
        if s.attributes and "journal.step.key" in s.attributes
    }


def root_of(spans: Any) -> ReadableSpan:
    (root,) = [s for s in spans if s.parent is None]
    return root


class Interrupt(BaseException):
    """Stands in for a crash: not an Exception, so the run is left to resume."""


# -- live spans -----------------------------------------------------------------------------


def test_a_run_is_a_trace_and_each_step_a_span_under_it(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Every span of a run shares the trace id derived from its run id; each step is a child
    of the run's span, with its key, kind, attempt and status; a failed step records the
    error on its span (the run goes on: the workflow caught it); the run's span ends last."""

    @step(name="fetch")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0.001)
        return n * 2

    @step(name="lookup", kind="tool")
    async def lookup(city: str) -> str:
        raise ValueError(f"no such city: {city}")

    async def research(n: int) -> int:
        total = await fetch(n)
        try:
            await lookup("Atlantis")
        except ValueError:
            total += 1
        return total

    assert asyncio.run(replay.run(research, 3, journal=sqlite_journal, run_id="r-1")) == 7
    spans = exported.get_finished_spans()
    assert len(spans) == 3
    root = root_of(spans)
    assert spans[-1] is root  # ended when the run had
    assert root.name == "invoke_workflow research"
    assert {s.context.trace_id for s in spans} == {trace_id_of("r-1")}
    assert root.context.span_id == run_span_id("r-1")
    run = sqlite_journal.run("r-1")
    assert root.attributes is not None
    assert root.attributes["journal.run.status"] == "completed"
    assert root.attributes["journal.workflow"] == run.workflow
    assert root.attributes["journal.version"] == run.version
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    steps = by_key(spans)
    assert set(steps) == {"0:1", "0:2"}
    fetched, looked_up = steps["0:1"], steps["0:2"]
    for span in (fetched, looked_up):
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.attributes is not None
        assert span.attributes["journal.run_id"] == "r-1"
        assert span.attributes["journal.step.attempt"] == 1
        assert span.attributes["journal.step.served"] is False
    assert fetched.name == "fetch" and fetched.kind is SpanKind.INTERNAL
    assert fetched.attributes is not None
    assert fetched.attributes["journal.step.kind"] == "step"
    assert fetched.attributes["journal.step.status"] == "completed"
    assert fetched.status.status_code is StatusCode.UNSET
    assert fetched.end_time is not None and fetched.start_time is not None
    assert fetched.end_time - fetched.start_time >= 1_000_000  # it waited 1 ms on I/O
    assert looked_up.name == "execute_tool lookup"
    assert looked_up.attributes is not None
    assert looked_up.attributes["journal.step.status"] == "failed"
    assert looked_up.attributes["gen_ai.tool.name"] == "lookup"
    assert looked_up.status.status_code is StatusCode.ERROR
    assert looked_up.status.description == "ValueError: no such city: Atlantis"
    (event,) = looked_up.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert "no such city" in str(event.attributes["exception.stacktrace"])


def test_a_resume_marks_served_steps_and_the_run_span_comes_once(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Stopped at step 3, then resumed: the first sitting emits its two live steps, step 3
    as `unfinished` (its start is in the journal, its outcome never came) and no run span;
    the resume emits the two served steps (marked served, new span ids, at the resume's
    time), step 3's second attempt live, and the run's span; no two span ids clash."""
    crash = [True]

    @step(name="fetch")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @step(name="publish")
    async def publish(n: int) -> int:
        if crash[0]:
            raise Interrupt
        return n

    async def pipeline(n: int) -> int:
        return await publish(await fetch(await fetch(n)))

    with pytest.raises(Interrupt):
        asyncio.run(replay.run(pipeline, 1, journal=sqlite_journal, run_id="r-2"))
    first = exported.get_finished_spans()
    assert all(s.parent for s in first)  # no run span: the run has not ended
    status = {
        k: s.attributes["journal.step.status"] for k, s in by_key(first).items() if s.attributes
    }
    assert status == {"0:1": "completed", "0:2": "completed", "0:3": "unfinished"}
    exported.clear()
    crash[0] = False
    assert asyncio.run(replay.run(pipeline, 1, journal=sqlite_journal, run_id="r-2")) == 3
    second = exported.get_finished_spans()
    root = root_of(second)
    assert root.attributes is not None and root.attributes["journal.run.resumes"] == 1
    served = [s for s in second if s.attributes and s.attributes.get("journal.step.served")]
    assert sorted(str(s.attributes["journal.step.key"]) for s in served if s.attributes) == [
        "0:1",
        "0:2",
    ]
    for span in served:
        assert span.attributes is not None
        assert span.attributes["journal.step.status"] == "completed"
        assert span.start_time == span.end_time  # answered at once; nothing ran
        assert span.parent is not None and span.parent.span_id == root.context.span_id
    live = by_key(s for s in second if s not in served and s.parent is not None)
    assert list(live) == ["0:3"]
    assert live["0:3"].attributes is not None
    assert live["0:3"].attributes["journal.step.attempt"] == 2  # in flight at the crash
    ids = [s.context.span_id for s in (*first, *second)]
    assert len(ids) == len(set(ids))


def test_served_steps_can_be_left_out(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """`instrument(served_steps=False)`: a resume sends its live steps and the run's span, and
    nothing for the steps it answered from the journal."""
    crash = [True]

    @step(name="fetch")
    async def fetch(n: int) -> int:
        return n + 1

    @step(name="publish")
    async def publish(n: int) -> int:
        if crash[0]:
            raise Interrupt
        return n

    async def pipeline(n: int) -> int:
        return await publish(await fetch(await fetch(n)))

    with pytest.raises(Interrupt):
        asyncio.run(replay.run(pipeline, 1, journal=sqlite_journal, run_id="r-6"))
    exported.clear()
    otel.instrument(tracer_provider=exported_provider(exported), served_steps=False)
    crash[0] = False
    asyncio.run(replay.run(pipeline, 1, journal=sqlite_journal, run_id="r-6"))
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["publish", "invoke_workflow pipeline"]


def test_concurrent_steps_are_children_of_the_run_not_of_each_other(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Steps in gathered tasks, and a step in a task a step's task created, each get the run's
    span as parent and their own key; a span current in the caller (a web request) is not the
    run's parent: the run is its own trace."""

    @step(name="search")
    async def search(query: str) -> str:
        await asyncio.sleep(0.001 * len(query))
        return query.upper()

    async def branch(query: str) -> str:
        first = await search(query)
        nested = await asyncio.create_task(search(first + "!"))
        return nested

    async def fan_out(queries: list[str]) -> list[str]:
        return list(await asyncio.gather(*(branch(q) for q in queries)))

    caller = TracerProvider().get_tracer("web")
    with caller.start_as_current_span("POST /research"):
        result = asyncio.run(
            replay.run(fan_out, ["ab", "c", "def"], journal=sqlite_journal, run_id="r-3")
        )
    assert result == ["AB!", "C!", "DEF!"]
    spans = exported.get_finished_spans()
    root = root_of(spans)
    assert root.context.trace_id == trace_id_of("r-3")
    steps = by_key(spans)
    assert sorted(steps) == ["0/1/1:1", "0/1:1", "0/2/1:1", "0/2:1", "0/3/1:1", "0/3:1"]
    for span in steps.values():
        assert span.context.trace_id == trace_id_of("r-3")
        assert span.parent is not None and span.parent.span_id == root.context.span_id


def test_a_journaled_block_is_a_trace_too(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """`async with journaled(...)` around code we do not own: its steps under an
    `invoke_workflow` span with no workflow name (a block has none), sent when it ends."""

    @step(name="ping")
    async def ping() -> int:
        await asyncio.sleep(0)
        return 1

    async def block() -> None:
        async with replay.journaled(sqlite_journal, "b-1"):
            await ping()

    asyncio.run(block())
    root = root_of(exported.get_finished_spans())
    assert root.name == "invoke_workflow" and root.context.trace_id == trace_id_of("b-1")
    assert root.attributes is not None and "gen_ai.workflow.name" not in root.attributes
    (ping_span,) = by_key(exported.get_finished_spans()).values()
    assert ping_span.parent is not None and ping_span.parent.span_id == run_span_id("b-1")


def test_a_sampled_out_run_emits_nothing_and_a_sampled_one_everything(
    sqlite_journal: Journal,
) -> None:
    """With a ratio sampler, a run's step spans follow the decision taken on its trace id:
    no run leaves orphan steps without its run span, nor a run span without its steps."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(tracer_provider=provider)

    @step(name="ping")
    async def ping(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def twice(n: int) -> int:
        return await ping(n) + await ping(n + 1)

    try:
        for number in range(8):
            asyncio.run(replay.run(twice, number, journal=sqlite_journal, run_id=f"s-{number}"))
    finally:
        otel.uninstrument()
    counts = {f"s-{n}": 0 for n in range(8)}
    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        counts[str(span.attributes["journal.run_id"])] += 1
    assert set(counts.values()) == {0, 3}, counts


def test_replay_emits_nothing_and_uninstrument_stops(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Replaying a run offline happens nowhere in the world: no spans. After
    `uninstrument()`, live runs emit none either."""

    @step(name="ping")
    async def ping(n: int) -> int:
        return n

    async def once(n: int) -> int:
        return await ping(n)

    asyncio.run(replay.run(once, 1, journal=sqlite_journal, run_id="r-4"))
    assert len(exported.get_finished_spans()) == 2
    asyncio.run(replay.run(once, 1, journal=sqlite_journal, run_id="r-4", mode="replay"))
    assert len(exported.get_finished_spans()) == 2
    otel.uninstrument()
    assert not otel.is_instrumented()
    asyncio.run(replay.run(once, 2, journal=sqlite_journal, run_id="r-5"))
    assert len(exported.get_finished_spans()) == 2


# -- LLM steps --------------------------------------------------------------------------------


@pytest.fixture
def llm_base_url(tmp_path: Path) -> Iterator[str]:
    running = serve(tmp_path / "requests.log")
    instrument()
    yield f"http://127.0.0.1:{running.server_port}/v1"
    uninstrument()
    running.shutdown()
    running.server_close()


def test_an_llm_call_follows_the_genai_conventions_without_its_content(
    exported: InMemorySpanExporter, sqlite_journal: Journal, llm_base_url: str
) -> None:
    """An OpenAI SDK call journaled by `instrument()` is a CLIENT span `chat gpt-4o-mini` with
    the GenAI attributes (operation, provider, request and response model, token usage,
    finish reasons) and where it went; never the prompt, the answer or the API key. Served on
    resume, the same call carries no token counts (nothing was paid twice)."""
    prompt = "the secret plan is PLUTONIUM-7"

    async def ask(question: str) -> str:
        async with openai.AsyncOpenAI(api_key="sk-otel-test-9999", base_url=llm_base_url) as ai:
            answer = await ai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
        return str(answer.choices[0].message.content)

    async def ask_then_stop(question: str) -> str:
        answer = await ask(question)
        await stop_here()
        return answer

    crash = [True]

    @step(name="stop_here")
    async def stop_here() -> None:
        if crash[0]:
            raise Interrupt

    with pytest.raises(Interrupt):
        asyncio.run(replay.run(ask_then_stop, prompt, journal=sqlite_journal, run_id="llm-1"))
    chat = by_key(exported.get_finished_spans())["0:1"]
    assert chat.name == "chat gpt-4o-mini" and chat.kind is SpanKind.CLIENT
    attributes = dict(chat.attributes or {})
    port = int(llm_base_url.split(":")[2].split("/")[0])
    assert {k: v for k, v in attributes.items() if not k.startswith("journal.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }
    assert attributes["journal.step.kind"] == "llm"
    text = repr(attributes)
    assert "PLUTONIUM" not in text and "sk-otel" not in text and "echo" not in text
    exported.clear()
    crash[0] = False
    asyncio.run(replay.run(ask_then_stop, prompt, journal=sqlite_journal, run_id="llm-1"))
    served = by_key(exported.get_finished_spans())["0:1"]
    assert served.attributes is not None and served.attributes["journal.step.served"] is True
    assert served.name == "chat gpt-4o-mini"
    assert served.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert "gen_ai.usage.input_tokens" not in served.attributes


# -- export to an OTLP/HTTP receiver ---------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint: keeps each request's path and decoded body; answers `status`."""

    status: ClassVar[int] = 200
    delay: ClassVar[float] = 0.0
    url: ClassVar[str] = ""
    requests: ClassVar[list[tuple[str, str, ExportTraceServiceRequest]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(type(self).delay)
        decoded = ExportTraceServiceRequest.FromString(body)
        type(self).requests.append((self.path, self.headers["Content-Type"], decoded))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[type[Receiver]]:
    handler = type("OneTestReceiver", (Receiver,), {"requests": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


def received(handler: type[Receiver]) -> list[Any]:
    return [
        span
        for _, _, request in handler.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind)


def _as_sent(span: ReadableSpan) -> tuple[Any, ...]:
    assert span.attributes is not None
    return (
        span.name,
        span.context.span_id.to_bytes(8, "big"),
        b"" if span.parent is None else span.parent.span_id.to_bytes(8, "big"),
        span.start_time,
        span.end_time,
        dict(span.attributes),
        span.status.status_code.value,
    )


def _as_received(span: Any) -> tuple[Any, ...]:
    return (
        span.name,
        span.span_id,
        span.parent_span_id,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        {kv.key: _value(kv.value) for kv in span.attributes},
        span.status.code,
    )


def test_export_of_a_finished_run_sends_the_spans_it_emitted_live(
    exported: InMemorySpanExporter,
    sqlite_journal: Journal,
    db_path: Path,
    receiver: type[Receiver],
) -> None:
    """`journal export -f otlp RUN --endpoint URL` posts protobuf to URL/v1/traces; decoded
    there, its spans are the ones the run emitted live: same ids, parents, names, times,
    attributes and statuses, across a failed attempt, a retry, and the copies the retry
    carried past its marker (sent once)."""
    broken = [True]

    @step(name="flaky")
    async def flaky(n: int) -> int:
        await asyncio.sleep(0.02)
        if broken[0]:
            raise ValueError("flaky broke")
        return n

    @step(name="quick")
    async def quick(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    async def both(n: int) -> int:
        first = asyncio.create_task(flaky(n))  # starts first, fails after `quick` completed
        second = asyncio.create_task(quick(n))
        return await first + await second

    with pytest.raises(ValueError):
        asyncio.run(replay.run(both, 5, journal=sqlite_journal, run_id="x-1"))
    broken[0] = False
    assert asyncio.run(replay.retry(both, 5, journal=sqlite_journal, run_id="x-1")) == 11
    names = [(e.key, e.name, e.status.value) for e in sqlite_journal.events("x-1")]
    assert names.count(("0/2:1", "quick", "completed")) == 2  # carried past the retry marker
    # What went out live, served steps aside; the run's span was sent when it failed and
    # again, with the same id, when the retry finished it: the later one is the run's state.
    live = {
        s.context.span_id: s
        for s in exported.get_finished_spans()
        if s.attributes and not s.attributes.get("journal.step.served")
    }.values()
    result = CliRunner().invoke(
        app,
        ["export", "-f", "otlp", "x-1", "--endpoint", receiver.url, "--db", str(db_path)],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"exported 4 spans of 1 run to {receiver.url}/v1/traces"
    ((path, content_type, request),) = receiver.requests
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    resource = {kv.key: _value(kv.value) for kv in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "journal-replay"
    assert request.resource_spans[0].scope_spans[0].scope.name == "journal_replay"
    sent = received(receiver)
    assert {s.trace_id for s in sent} == {trace_id_of("x-1").to_bytes(16, "big")}
    assert sorted(map(_as_received, sent)) == sorted(map(_as_sent, live))
    flaky_spans = [s for s in sent if s.name == "flaky"]
    assert sorted(s.status.code for s in flaky_spans) == [0, 2]  # failed, then completed


def test_export_errors_say_what_to_do(
    sqlite_journal: Journal, db_path: Path, receiver: type[Receiver]
) -> None:
    """A collector that answers 500, a file asked of -f otlp, --endpoint without it, an
    endpoint that is not http(s), a run that does not exist: each a clear error, exit 1."""

    @step(name="ping")
    async def ping() -> int:
        return 1

    async def once() -> int:
        return await ping()

    asyncio.run(replay.run(once, journal=sqlite_journal, run_id="e-1"))
    cli = CliRunner()
    base = ["export", "e-1", "--db", str(db_path)]
    receiver.status = 500
    refused = cli.invoke(app, [*base, "-f", "otlp", "--endpoint", receiver.url])
    assert refused.exit_code == 1
    assert f"the OTLP endpoint {receiver.url}/v1/traces did not take the spans" in refused.output
    assert "500" in refused.output and "--endpoint" in refused.output
    to_file = cli.invoke(app, [*base, "-f", "otlp", "-o", "spans.bin"])
    assert to_file.exit_code == 1 and "writes no file" in to_file.output
    stray = cli.invoke(app, [*base, "--endpoint", "http://127.0.0.1:1"])
    assert stray.exit_code == 1 and "Fix: add -f otlp" in stray.output
    ftp = cli.invoke(app, [*base, "-f", "otlp", "--endpoint", "ftp://127.0.0.1"])
    assert ftp.exit_code == 1 and "is not an http(s) URL" in ftp.output
    missing = cli.invoke(app, ["export", "nope", "-f", "otlp", "--db", str(db_path)])
    assert missing.exit_code == 1 and "nope" in missing.output


# -- the extra ---------------------------------------------------------------------------------


def test_the_core_never_imports_opentelemetry_and_says_how_to_get_it() -> None:
    """A run, the CLI and `replay.otel` itself import no OpenTelemetry; without it installed,
    `instrument()` and `journal export -f otlp` say which extra to install."""
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
import journal, replay, replay.otel
from replay._cli import main
from replay import step

@step
async def ping() -> int:
    return 1

async def once() -> int:
    return await ping()

asyncio.run(replay.run(once, journal=journal.Journal(sys.argv[1]), run_id="n-1"))
try:
    replay.otel.instrument()
except ImportError as exc:
    print("instrument:", exc)
sys.argv = ["journal", "export", "-f", "otlp", "n-1", "--db", sys.argv[1]]
try:
    main()
except SystemExit as exit:
    print("exit", exit.code)
"""
    with_db = [sys.executable, "-c", script, str(ROOT / ".pytest-otel-never.db")]
    try:
        done = subprocess.run(with_db, capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        for leftover in ROOT.glob(".pytest-otel-never.db*"):
            leftover.unlink()
    assert done.returncode == 0, done.stderr
    fix = "Fix: pip install 'journal-replay[otel]'"
    assert "instrument: OpenTelemetry support needs the `otel` extra" in done.stdout
    assert done.stdout.count(fix) == 1 and fix in done.stderr and "exit 1" in done.stdout


def test_genai_attribute_names_are_the_conventions_own() -> None:
    """Our copies of the GenAI attribute names match the semantic-conventions package's (not
    imported at run time: its module is incubating and deprecated)."""
    import warnings

    from journal import _span_attributes as _spans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as upstream

    assert _spans.GEN_AI_OPERATION == upstream.GEN_AI_OPERATION_NAME
    assert _spans.GEN_AI_PROVIDER == upstream.GEN_AI_PROVIDER_NAME
    assert _spans.GEN_AI_SYSTEM == upstream.GEN_AI_SYSTEM
    assert _spans.GEN_AI_REQUEST_MODEL == upstream.GEN_AI_REQUEST_MODEL
    assert _spans.GEN_AI_RESPONSE_MODEL == upstream.GEN_AI_RESPONSE_MODEL
    assert _spans.GEN_AI_INPUT_TOKENS == upstream.GEN_AI_USAGE_INPUT_TOKENS
    assert _spans.GEN_AI_OUTPUT_TOKENS == upstream.GEN_AI_USAGE_OUTPUT_TOKENS
    assert _spans.GEN_AI_FINISH_REASONS == upstream.GEN_AI_RESPONSE_FINISH_REASONS
    assert _spans.GEN_AI_TOOL_NAME == upstream.GEN_AI_TOOL_NAME
    assert _spans.GEN_AI_WORKFLOW_NAME == upstream.GEN_AI_WORKFLOW_NAME


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example/v1/traces", "https://otlp.example/v1/traces"),
        ("http://gateway/otel/traces", "http://gateway/otel/traces"),
    ],
)
def test_an_endpoint_is_a_base_address_or_the_traces_url(given: str, used: str) -> None:
    from journal._otel import traces_endpoint

    assert traces_endpoint(given) == used


# -- attacks: what must hold whatever the user, the network or the code does ------------------


def live_attempts(exporter: InMemorySpanExporter, run_id: str) -> dict[int, ReadableSpan]:
    """The run's spans that went out live, served steps aside, by span id."""
    return {
        s.context.span_id: s
        for s in exporter.get_finished_spans()
        if s.attributes
        and s.attributes["journal.run_id"] == run_id
        and not s.attributes.get("journal.step.served")
    }


def exported_records(journal: Journal, run_id: str) -> dict[int, Any]:
    """What `journal export -f otlp` sends for the run, by span id."""
    from journal._spans import run_spans

    return {r.span_id: r for r in run_spans(journal.run(run_id), journal.iter_events(run_id))}


def assert_export_is_live(exporter: InMemorySpanExporter, journal: Journal, run_id: str) -> None:
    """The export of the run sends exactly the attempts, names, times and statuses that went
    out live (minus the unfinished ones the process could not send: none here)."""
    live = live_attempts(exporter, run_id)
    records = exported_records(journal, run_id)
    described = {
        i: (r.name, r.start_ns, r.end_ns, r.attributes.get("journal.step.status"))
        for i, r in records.items()
    }
    assert described == {
        i: (s.name, s.start_time, s.end_time, (s.attributes or {}).get("journal.step.status"))
        for i, s in live.items()
    }


class RaisesOnUnfinished(SpanProcessor):
    """A user's span processor with a bug: it raises on the first unfinished attempt."""

    def __init__(self) -> None:
        self.raised = 0

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        if attributes.get("journal.step.status") == "unfinished" and not self.raised:
            self.raised += 1
            raise RuntimeError("a bug in the user's span processor")


def test_a_span_processor_that_raises_loses_only_its_span(sqlite_journal: Journal) -> None:
    """A processor raising on one span (ahead of the exporter) costs that span only: the
    others of the same batch (here: three attempts cut short together) still go out, and the
    run and its journal are untouched."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    buggy = RaisesOnUnfinished()
    provider.add_span_processor(buggy)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(tracer_provider=provider)

    @step(name="slow")
    async def slow(n: int) -> int:
        await asyncio.sleep(30)
        return n

    @step(name="crash")
    async def crash() -> None:
        await asyncio.sleep(0.01)
        raise Interrupt

    async def fan_out() -> None:
        await asyncio.gather(slow(1), slow(2), crash())

    try:
        with pytest.raises(Interrupt):
            asyncio.run(replay.run(fan_out, journal=sqlite_journal, run_id="p-1"))
    finally:
        otel.uninstrument()
        provider.shutdown()
    assert buggy.raised == 1
    assert [e.status.value for e in sqlite_journal.events("p-1")] == ["started"] * 3
    assert len(exporter.get_finished_spans()) == 2  # three unfinished attempts, one lost


class PlainApi(BaseHTTPRequestHandler):
    """An HTTP API that is no LLM (a chat app's REST API, a weather service): JSON back."""

    def _answer(self, value: dict[str, Any]) -> None:
        body = orjson.dumps(value)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer({"forecast": "sunny"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer({"id": "1", "posted": True})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def plain_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainApi)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    instrument()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    uninstrument()
    server.shutdown()
    server.server_close()


def test_http_steps_send_no_url_path_and_are_not_genai(
    exported: InMemorySpanExporter, sqlite_journal: Journal, plain_api: str
) -> None:
    """Requests journaled by `instrument()` to APIs that are not LLMs: a bot token in the
    URL's path (Telegram's `/bot<token>/...`, a webhook's secret path) never reaches a span,
    as the docs promise for paths and queries; the spans follow the HTTP conventions (named
    after the method, CLIENT), with no GenAI attributes, even for a path that ends like an
    LLM API's (`/channels/7/messages` is a chat app's, not Anthropic's)."""
    token = "8041:AAH-bot-token-QUITE-SECRET"

    async def notify(text: str) -> None:
        async with httpx.AsyncClient() as client:
            await client.get(f"{plain_api}/weather", params={"city": "Paris"})
            await client.post(f"{plain_api}/bot{token}/sendMessage", json={"text": text})
            await client.post(f"{plain_api}/api/channels/7/messages", json={"content": text})

    asyncio.run(replay.run(notify, "hello", journal=sqlite_journal, run_id="h-1"))
    steps = by_key(exported.get_finished_spans())
    assert sorted(steps) == ["0:1", "0:2", "0:3"]
    host = plain_api.removeprefix("http://")
    for span, method in zip(steps.values(), ["GET", "POST", "POST"], strict=True):
        attributes = dict(span.attributes or {})
        assert (span.name, span.kind) == (method, SpanKind.CLIENT)
        assert attributes["journal.step.name"] == f"{method} {host}"
        assert attributes["http.response.status_code"] == 200
        assert not [name for name in attributes if name.startswith("gen_ai.")], attributes
        assert token not in repr(attributes) and "bot" not in repr(attributes)


def test_a_fork_exports_what_it_ran_not_its_parents_steps_again(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """A fork holds copies of its parent's first rows: they ran in the parent (whose trace
    has their spans, tokens included) and the fork only served them. Its export sends what
    went out live for it, the steps it ran and its run span (linked to the parent's), not
    the copies again as attempts of its own (an LLM call's tokens would count twice)."""

    @step(name="fetch")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    async def pipeline() -> int:
        return sum([await fetch(n) for n in range(4)])

    asyncio.run(replay.run(pipeline, journal=sqlite_journal, run_id="f-1"))
    fork = sqlite_journal.fork("f-1", at=5, new_run_id="f-1-fork")
    assert asyncio.run(replay.run(pipeline, journal=sqlite_journal, run_id=fork.run_id)) == 6
    live = live_attempts(exported, "f-1-fork")
    ran = sorted(str((s.attributes or {}).get("journal.step.key")) for s in live.values())
    assert ran == ["0:3", "0:4", "None"]
    assert_export_is_live(exported, sqlite_journal, "f-1-fork")


def test_a_divergence_fork_after_a_crash_exports_what_went_out_live(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Cut short in flight, then resumed by code that changed an earlier step's arguments
    (`on_divergence="fork"`): the marker supersedes the cut attempt, and the step runs again
    as a new attempt that finishes without waiting (one row). The export pairs that row with
    nothing superseded: the cut attempt stays unfinished and the new one is its own span, as
    they went out live."""
    changed = [0]
    crash = [True]

    @step(name="plan")
    async def plan(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    @step(name="publish")
    async def publish() -> int:
        if crash[0]:
            await asyncio.sleep(0.001)
            raise Interrupt
        return 5

    async def pipeline(n: int) -> int:
        return await plan(n + changed[0]) + await publish()

    with pytest.raises(Interrupt):
        asyncio.run(replay.run(pipeline, 1, journal=sqlite_journal, run_id="d-1"))
    changed[0], crash[0] = 1, False
    resumed = replay.run(pipeline, 1, journal=sqlite_journal, run_id="d-1", on_divergence="fork")
    assert asyncio.run(resumed) == 7
    statuses = sorted(
        (str(attributes["journal.step.key"]), str(attributes["journal.step.status"]))
        for s in live_attempts(exported, "d-1").values()
        if (attributes := s.attributes or {}) and "journal.step.key" in attributes
    )
    assert statuses == [
        ("0:1", "completed"),
        ("0:1", "completed"),
        ("0:2", "completed"),
        ("0:2", "unfinished"),
    ]
    assert_export_is_live(exported, sqlite_journal, "d-1")


def test_an_export_reads_a_run_as_it_goes(sqlite_journal: Journal) -> None:
    """`journal export -f otlp` reads a run page by page, like the file exports: its spans
    come while the rows are read, so a long run with large results is never held whole in
    memory (10,000 steps of 20 kB took 250 MB to export when the whole run was read first)."""
    from journal._spans import run_spans

    @step(name="fetch")
    async def fetch(n: int) -> str:
        return "x" * 1000

    async def many() -> int:
        return len([await fetch(n) for n in range(40)])

    asyncio.run(replay.run(many, journal=sqlite_journal, run_id="m-1"))
    pulled: list[int] = []

    def rows() -> Iterator[Any]:
        for event in sqlite_journal.iter_events("m-1", page=10):
            pulled.append(event.seq)
            yield event

    spans = run_spans(sqlite_journal.run("m-1"), rows())
    first = next(spans)
    assert first.attributes["journal.step.key"] == "0:1"
    assert len(pulled) <= 10  # one page read, not the run's 40 rows
    assert len(list(spans)) == 40  # the other 39 steps, then the run's span


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("http://", "names no host"),
        ("http:///v1/traces", "names no host"),
        ("http://collector:notaport", "port"),
        ("http://collector:99999", "port"),
        ("http://my collector:4318", "names no host"),
        ("http://[::1", "not a valid URL"),
    ],
)
def test_an_endpoint_that_cannot_be_reached_by_anyone_is_refused_as_typed(
    given: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint with no host, a port that is not one, or no URL at all is refused before
    anything is sent, naming what was typed (`http://` came back as `'http:/v1/traces'`, the
    others as the collector "not taking the spans"), from --endpoint or from the variables."""
    from journal._otel import traces_endpoint

    with pytest.raises(ValueError, match=says) as refused:
        traces_endpoint(given)
    assert repr(given) in str(refused.value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", given)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        traces_endpoint(None)


def test_an_endpoint_variable_that_is_no_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is checked like --endpoint (`Journal.export_otlp`
    sent to `localhost:4318` and reported the collector "did not take the spans")."""
    from journal._otel import traces_endpoint

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "localhost:4318")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") as refused:
        traces_endpoint(None)
    assert "'localhost:4318' (from $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is not an http" in str(
        refused.value
    )


def test_a_postgresql_journal_exports_the_spans_it_emitted_live(
    exported: InMemorySpanExporter, pg_schema: str, receiver: type[Receiver]
) -> None:
    """On PostgreSQL (its own timestamps, its own reads) the export of a run that failed a
    step, caught it and went on carries the very spans that went out live."""
    from tests.conftest import PG_URL, postgres_store

    journal = Journal(store=postgres_store(pg_schema))

    @step(name="lookup", kind="tool")
    async def lookup(city: str) -> str:
        await asyncio.sleep(0.001)
        if city == "Atlantis":
            raise ValueError(f"no such city: {city}")
        return city.upper()

    async def trip(cities: list[str]) -> list[str]:
        found = []
        for city in cities:
            try:
                found.append(await lookup(city))
            except ValueError:
                found.append("?")
        return found

    try:
        run = replay.run(trip, ["Paris", "Atlantis"], journal=journal, run_id="pg-1")
        assert asyncio.run(run) == ["PARIS", "?"]
    finally:
        journal.close()
    live = live_attempts(exported, "pg-1").values()
    db = f"{PG_URL}?schema={pg_schema}"
    result = CliRunner().invoke(
        app, ["export", "-f", "otlp", "pg-1", "--endpoint", receiver.url, "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert "exported 3 spans of 1 run" in result.output
    assert sorted(map(_as_received, received(receiver))) == sorted(map(_as_sent, live))


def test_streamed_and_anthropic_calls_carry_their_provider_and_usage(
    exported: InMemorySpanExporter, sqlite_journal: Journal, llm_base_url: str
) -> None:
    """A streamed chat completion whose last chunk reports usage, and Anthropic's messages
    API (whole and streamed, usage split over `message_start` and `message_delta`; sent as
    the Anthropic SDK sends them, without importing it: that alone takes seconds): each a
    `chat MODEL` span with its provider, models, finish reason and tokens."""

    async def ask() -> None:
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=llm_base_url) as ai:
            stream = await ai.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "one two"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass
        headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient(base_url=llm_base_url, headers=headers) as claude:
            for streamed in (False, True):
                question = {
                    "model": "claude-x",
                    "max_tokens": 9,
                    "messages": [{"role": "user", "content": "three four"}],
                    "stream": streamed,
                }
                async with claude.stream("POST", "/messages", json=question) as answer:
                    await answer.aread()

    asyncio.run(replay.run(ask, journal=sqlite_journal, run_id="st-1"))
    steps = by_key(exported.get_finished_spans())
    genai = {
        key: {k: v for k, v in (s.attributes or {}).items() if k.startswith("gen_ai.")}
        for key, s in steps.items()
    }
    assert [steps[k].name for k in sorted(steps)] == ["chat gpt-4o-mini", *["chat claude-x"] * 2]
    assert genai["0:1"]["gen_ai.provider.name"] == "openai"
    assert (
        genai["0:1"]["gen_ai.usage.input_tokens"],
        genai["0:1"]["gen_ai.usage.output_tokens"],
    ) == (11, 3)
    for key in ("0:2", "0:3"):
        assert genai[key]["gen_ai.provider.name"] == genai[key]["gen_ai.system"] == "anthropic"
        assert genai[key]["gen_ai.response.model"] == "claude-x"
        assert genai[key]["gen_ai.response.finish_reasons"] == ("end_turn",)
        assert genai[key]["gen_ai.usage.input_tokens"] == 9
    assert genai["0:3"]["gen_ai.usage.output_tokens"] == 3  # message_delta's, not message_start's


@pytest.mark.parametrize("given", ["localhost:4318", InMemorySpanExporter(), "tracer"])
def test_instrument_refuses_what_is_no_tracer_provider(given: Any) -> None:
    """An exporter or a tracer given where a provider belongs (the usual slip) is refused at
    once, saying how to wrap it: accepted, it sent no span and said nothing, on every run."""
    if given == "tracer":
        given = TracerProvider().get_tracer("mine")
    with pytest.raises(TypeError, match="TracerProvider") as refused:
        otel.instrument(tracer_provider=given)
    assert type(given).__name__ in str(refused.value) and "Fix:" in str(refused.value)
    assert not otel.is_instrumented()


def test_concurrent_exports_leave_the_exporters_logs_to_the_application(
    sqlite_journal: Journal, receiver: type[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    """An export keeps the OTLP exporter's complaints of its own thread for its error message;
    the application's exporters log under the same names from other threads, and theirs
    still reach its logs, during and after two exports that overlap (the exporter's loggers
    were left silenced for good when two exports overlapped)."""
    import logging

    @step(name="ping")
    async def ping() -> int:
        return 1

    async def once() -> int:
        return await ping()

    asyncio.run(replay.run(once, journal=sqlite_journal, run_id="lg-1"))
    receiver.status, receiver.delay = 500, 0.3
    name = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    refusals: list[str] = []

    def export() -> None:
        try:
            sqlite_journal.export_otlp(["lg-1"], endpoint=receiver.url, timeout=5)
        except JournalError as exc:
            refusals.append(str(exc))

    exports = [threading.Thread(target=export) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger=name):
        exports[0].start()
        time.sleep(0.1)
        exports[1].start()
        time.sleep(0.1)
        logging.getLogger(name).warning("the application's exporter: collector down")
        for thread in exports:
            thread.join()
        logging.getLogger(name).warning("the application's exporter: still down")
    assert len(refusals) == 2 and all("500" in refusal for refusal in refusals)
    logged = [r.getMessage() for r in caplog.records if r.name == name]
    assert logged == [
        "the application's exporter: collector down",
        "the application's exporter: still down",
    ]


_KILLED_AGENT = """
import asyncio, os

from replay import step


@step(name="fetch")
async def fetch(n: int) -> int:
    await asyncio.sleep(0.001)
    if n == 3 and os.environ.get("HANG"):
        print("hanging", flush=True)
        await asyncio.sleep(60)
    return n


async def pipeline() -> int:
    return sum([await fetch(n) for n in range(5)])
"""

_KILLED_MAIN = """
import asyncio, sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import replay
from journal import Journal
from replay import otel
from otel_killed_agent import pipeline

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1])))
otel.instrument(tracer_provider=provider)
asyncio.run(replay.run(pipeline, journal=Journal("runs.db"), run_id="kill-1"))
"""


def test_a_run_killed_and_resumed_is_one_trace_that_the_export_completes(
    exported: InMemorySpanExporter,
    tmp_path: Path,
    receiver: type[Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILLed while its 4th step is in flight, then resumed by another process: both
    sittings' spans are in the run's one trace under one run span; the attempt the kill cut
    short could not be sent by anyone live, and the export sends it (`unfinished`) along
    with exactly the spans both sittings sent."""
    (tmp_path / "otel_killed_agent.py").write_text(_KILLED_AGENT)
    (tmp_path / "main.py").write_text(_KILLED_MAIN)
    env = {**os.environ, "HANG": "1"}
    command = [sys.executable, "main.py", f"{receiver.url}/v1/traces"]
    agent = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=env)
    assert agent.stdout is not None and agent.stdout.readline().strip() == "hanging"
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    agent.stdout.close()
    killed = received(receiver)
    assert sorted(s.name for s in killed) == ["fetch"] * 3  # steps 1-3; no run span
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "otel_killed_agent", raising=False)
    from otel_killed_agent import pipeline  # type: ignore[import-not-found]

    with Journal(tmp_path / "runs.db") as journal:
        assert asyncio.run(replay.run(pipeline, journal=journal, run_id="kill-1")) == 10
        resumed = live_attempts(exported, "kill-1").values()
        receiver.requests.clear()
        assert journal.export_otlp(["kill-1"], endpoint=receiver.url) == 7
    sys.modules.pop("otel_killed_agent", None)
    sent = received(receiver)
    trace = trace_id_of("kill-1").to_bytes(16, "big")
    assert {s.trace_id for s in (*killed, *sent)} == {trace}
    live = sorted([*map(_as_received, killed), *map(_as_sent, resumed)])
    (cut,) = [s for s in sent if _as_received(s) not in live]
    attributes = {kv.key: _value(kv.value) for kv in cut.attributes}
    assert (attributes["journal.step.key"], attributes["journal.step.status"]) == (
        "0:4",
        "unfinished",
    )
    assert sorted(s for s in map(_as_received, sent) if s != _as_received(cut)) == live


_crash_at_gate = [True]


@step(name="work")
async def _work(n: int) -> int:
    await asyncio.sleep(0.005)
    return n


@step(name="gate")
async def _gate() -> None:
    if _crash_at_gate[0]:
        raise Interrupt


async def worker_pipeline(n: int) -> int:
    """A workflow a worker can import (module level): one step, a gate, two steps at once."""
    first = await _work(n)
    await _gate()
    more = await asyncio.gather(_work(n + 1), _work(n + 2))
    return first + sum(more)


def test_a_worker_continuing_runs_at_once_keeps_each_in_its_own_trace(
    exported: InMemorySpanExporter, sqlite_journal: Journal
) -> None:
    """Four interrupted runs continued by one worker three at a time, each in a thread and a
    loop of its own: every span lands in its own run's trace under its own run's span, each
    run has one run span, and each run's export is what went out live for it."""
    _crash_at_gate[0] = True
    runs = [f"w-{n}" for n in range(4)]
    for number, run_id in enumerate(runs):
        with pytest.raises(Interrupt):
            asyncio.run(replay.run(worker_pipeline, number, journal=sqlite_journal, run_id=run_id))
    _crash_at_gate[0] = False
    worker = replay.Worker(sqlite_journal, concurrency=3)
    assert asyncio.run(worker.run_once()) == 4
    for run_id in runs:
        spans = [
            s
            for s in exported.get_finished_spans()
            if s.attributes and s.attributes["journal.run_id"] == run_id
        ]
        assert {s.context.trace_id for s in spans} == {trace_id_of(run_id)}
        assert len([s for s in spans if s.parent is None]) == 1
        assert {s.parent.span_id for s in spans if s.parent} == {run_span_id(run_id)}
        assert_export_is_live(exported, sqlite_journal, run_id)
