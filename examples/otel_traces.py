"""An agent's runs as OpenTelemetry traces: spans live as it runs, the same trace exported after.

    python examples/otel_traces.py     # offline: a stand-in OpenAI API and a stand-in collector

Needs the `otel` and `openai` extras (`pip install 'journal-replay[otel,openai]'`).

1. A TracerProvider with an in-memory exporter stands in for your observability stack, and
   `replay.otel.instrument(tracer_provider=...)` sends every run's spans to it.
2. The agent (plain OpenAI SDK code journaled by `instrument()`, and a `@step` tool) runs and
   crashes before its last step: its live steps are spans already, the run's span is not.
3. The run is resumed: the steps answered from the journal come as `served` spans (no tokens:
   nothing was paid), the rest live, then the run's span.
4. `journal export -f otlp` sends the finished run to a stand-in OTLP/HTTP collector: the spans
   it receives have the ids, parents and times that went out live.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
from mock_llm_server import MockLLM  # type: ignore[import-not-found]  # next to this script
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import replay
from journal import Journal
from replay import otel
from replay.integrations import instrument

RUN_ID = "otel-research-1"


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so the run is left to resume."""


crash_before_publishing = True


@replay.step(kind="tool")
async def search(query: str) -> list[str]:
    await asyncio.sleep(0.05)
    return [f"{query}: result {n}" for n in (1, 2)]


@replay.step
async def publish(report: str) -> str:
    if crash_before_publishing:
        raise Crash
    return f"published: {report}"


async def research(base_url: str, topic: str) -> str:
    async with openai.AsyncOpenAI(api_key="sk-example-not-real", base_url=base_url) as client:
        plan = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"plan: {topic}"}]
        )
        hits = await search(plan.choices[0].message.content or topic)
        summary = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"summarise: {hits}"}]
        )
    return await publish(summary.choices[0].message.content or "")


def show(spans: Any) -> None:
    """One line per span: id, name, step key, how it went, duration, tokens, parent."""
    for span in spans:
        attributes = dict(span.attributes or {})
        parent = f"parent {span.parent.span_id:016x}" if span.parent else "root"
        how = attributes.get("journal.step.status") or attributes.get("journal.run.status")
        if attributes.get("journal.step.served"):
            how = "served"
        tokens = ""
        if "gen_ai.usage.input_tokens" in attributes:
            tokens = (
                f" tokens {attributes['gen_ai.usage.input_tokens']}"
                f"+{attributes['gen_ai.usage.output_tokens']}"
            )
        ms = (span.end_time - span.start_time) / 1e6
        key = attributes.get("journal.step.key", "-")
        print(
            f"   {span.context.span_id:016x} {span.name:<24} {key:<4} {how:<10} "
            f"{ms:6.1f} ms{tokens}  {parent}"
        )


class Collector(BaseHTTPRequestHandler):
    """A stand-in OpenTelemetry collector: keeps the spans each OTLP/HTTP request carries."""

    received: list[Any] = []  # noqa: RUF012  (one collector per process)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                Collector.received.extend(scope.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    global crash_before_publishing
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "otel" / "journal.db")
    args = parser.parse_args()
    db: Path = args.db
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    api = MockLLM(delay=0.1)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel.instrument(tracer_provider=provider)
    instrument()
    print("1. spans go to an in-memory exporter (your collector, in real life)")

    print("2. the agent runs and crashes before its last step")
    with Journal(db) as journal:
        with contextlib.suppress(Crash):
            asyncio.run(replay.run(research, api.base_url, "cats", journal=journal, run_id=RUN_ID))
        show(spans.get_finished_spans())
        live: list[ReadableSpan] = list(spans.get_finished_spans())
        spans.clear()

        print("3. resumed: served steps are marked, the run's span comes when it ends")
        crash_before_publishing = False
        result = asyncio.run(
            replay.run(research, api.base_url, "cats", journal=journal, run_id=RUN_ID)
        )
        show(spans.get_finished_spans())
        print(f"   {result}")
        live += [
            span
            for span in spans.get_finished_spans()
            if not (span.attributes or {}).get("journal.step.served")
        ]
    api.stop()

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    print(f"4. journal export -f otlp {RUN_ID} --endpoint {endpoint}")
    journal_command = str(Path(sys.executable).with_name("journal"))
    exported = subprocess.run(
        [journal_command, "export", "-f", "otlp", RUN_ID, "--endpoint", endpoint, "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"   {exported.stdout.strip()}")
    collector.shutdown()
    sent = {
        (s.span_id.hex(), s.parent_span_id.hex(), s.start_time_unix_nano, s.end_time_unix_nano)
        for s in Collector.received
    }
    seen = {
        (
            f"{s.context.span_id:016x}",
            f"{s.parent.span_id:016x}" if s.parent else "",
            s.start_time,
            s.end_time,
        )
        for s in live
    }
    print(f"   the collector got the live spans, same ids, parents and times: {sent == seen}")


if __name__ == "__main__":
    main()
