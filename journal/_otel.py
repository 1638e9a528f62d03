"""OpenTelemetry for the journal: spans emitted through a tracer, runs sent to an OTLP endpoint.

Imported only when the feature is used, since it needs the `otel` extra; the core never imports
OpenTelemetry. Spans come from `journal._spans`, with the ids it derives from the run: the
tracer's id generator is wrapped (`JournalIds`) to hand out those ids for our spans only, so a
run's trace has the same ids live and exported, through the caller's own provider, sampler,
processors and exporters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

from ._errors import JournalError
from ._events import Event, Run
from ._spans import SpanRecord, run_spans

_MISSING = (
    "OpenTelemetry support needs the `otel` extra ({error}). "
    "Fix: pip install 'journal-replay[otel]'."
)

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(_MISSING.format(error=exc)) from exc

SCOPE = "journal_replay"
"""The instrumentation scope of every span the journal emits."""
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
BATCH = 512
"""Spans per OTLP request when exporting (the SDK's batch processor uses the same size)."""

_KINDS = {"internal": trace.SpanKind.INTERNAL, "client": trace.SpanKind.CLIENT}
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_forced: ContextVar[tuple[int, int] | None] = ContextVar("journal_span_ids", default=None)


class OtlpExportFailed(JournalError):
    """The OTLP endpoint did not take the spans (unreachable, or it answered an error)."""


class JournalIds(IdGenerator):
    """The ids a span of ours must have while `emit` starts it; the wrapped generator's ids
    for every other span (the wrapper is on our own tracer only)."""

    def __init__(self, fallback: IdGenerator) -> None:
        self.fallback = fallback

    def generate_span_id(self) -> int:
        forced = _forced.get()
        return self.fallback.generate_span_id() if forced is None else forced[1]

    def generate_trace_id(self) -> int:
        forced = _forced.get()
        return self.fallback.generate_trace_id() if forced is None else forced[0]

    def is_trace_id_random(self) -> bool:
        # Ours are hashes of the run id: uniform, but not random draws.
        return _forced.get() is None and self.fallback.is_trace_id_random()


@functools.cache
def _package_version() -> str | None:
    try:
        return version("journal-replay")
    except PackageNotFoundError:
        return None


def journal_tracer(provider: Any) -> Any:
    """Our tracer from `provider`, its id generator wrapped once. A tracer that has none (not
    the SDK's) still gets our spans, with its own ids and our parents."""
    tracer = provider.get_tracer(SCOPE, _package_version())
    generator = getattr(tracer, "id_generator", None)
    if isinstance(generator, IdGenerator) and not isinstance(generator, JournalIds):
        tracer.id_generator = JournalIds(generator)
    return tracer


def records_spans(provider: Any) -> bool:
    """Whether spans given to `provider` go anywhere: the API's stand-in (before the
    application sets a provider) and its no-op provider drop them."""
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def root_sampled(tracer: Any, trace_id: int) -> bool:
    """Whether the tracer's sampler keeps a root span of this trace: the step spans take the
    same decision, so a sampled-out run emits no orphan steps (a ratio sampler decides on the
    trace id, which is the run's)."""
    sampler = getattr(tracer, "sampler", None)
    if sampler is None:
        return True
    result = sampler.should_sample(Context(), trace_id, "invoke_workflow")
    return bool(result.decision.is_sampled())


def emit(tracer: Any, record: SpanRecord, *, sampled: bool = True) -> None:
    """Start and end `record` as a span of `tracer`, with its own ids, parent and times."""
    context = (
        Context()  # a root: the span current in the caller is not its parent
        if record.parent_id is None
        else _under(record.trace_id, record.parent_id, sampled)
    )
    links = [
        trace.Link(trace.SpanContext(trace_id, span_id, True, _SAMPLED))
        for trace_id, span_id in record.links
    ]
    token = _forced.set((record.trace_id, record.span_id))
    try:
        span = tracer.start_span(
            record.name,
            context=context,
            kind=_KINDS[record.kind],
            attributes=record.attributes,
            links=links,
            start_time=record.start_ns,
        )
    finally:
        _forced.reset(token)
    if record.exception is not None:
        kind, message, traceback = record.exception
        attributes = {"exception.type": kind, "exception.message": message}
        if traceback:
            attributes["exception.stacktrace"] = traceback
        span.add_event("exception", attributes, timestamp=record.end_ns)
    if record.error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, record.error))
    span.end(end_time=record.end_ns)


@functools.lru_cache(maxsize=256)
def _under(trace_id: int, parent_id: int, sampled: bool) -> Any:
    """The context that makes a span a child of `parent_id` (one per run: kept)."""
    flags = _SAMPLED if sampled else trace.TraceFlags(trace.TraceFlags.DEFAULT)
    parent = trace.SpanContext(trace_id, parent_id, False, flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())


def traces_endpoint(endpoint: str | None) -> str:
    """Where traces go: `endpoint` (a collector's base URL gets `/v1/traces`), else the
    standard variables `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) and
    `OTEL_EXPORTER_OTLP_ENDPOINT` (plus `/v1/traces`), else the local collector's default.
    ValueError, naming the value and where it came from, for one that is not an http(s) URL
    with a host (and a port, if any, that is one)."""
    if endpoint is not None:
        return _with_traces_path(_checked(endpoint, ""))
    variable = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    value = os.environ.get(variable)
    if value:
        return _checked(value, variable)
    variable = "OTEL_EXPORTER_OTLP_ENDPOINT"
    value = os.environ.get(variable)
    if value:
        return _with_traces_path(_checked(value, variable))
    return DEFAULT_ENDPOINT


def _checked(endpoint: str, variable: str) -> str:
    where = f"the OTLP endpoint {endpoint!r}" + (f" (from ${variable})" if variable else "")
    expected = (
        "Expected the collector's OTLP/HTTP address, such as http://localhost:4318 "
        "(or .../v1/traces)."
    )
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"{where} is not an http(s) URL. {expected}")
    try:
        parts = urlsplit(endpoint)
    except ValueError as exc:
        raise ValueError(f"{where} is not a valid URL ({exc}). {expected}") from None
    host = parts.hostname
    if not host or any(character.isspace() for character in host):
        raise ValueError(f"{where} names no host. {expected}")
    try:
        parts.port  # noqa: B018  (reading it checks it)
    except ValueError as exc:
        raise ValueError(f"{where} has no valid port ({exc}). {expected}") from None
    return endpoint


def _with_traces_path(endpoint: str) -> str:
    path = endpoint.partition("://")[2].partition("/")[2]
    return endpoint if path else endpoint.rstrip("/") + "/v1/traces"


class _Collect(SpanProcessor):
    """Keeps ended spans for the caller to send, so that a refused export is an error."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class _Reasons(logging.Filter):
    """What the exporter logs on this thread while it tries: the reason an export failed, kept
    for the error (so not printed too). The application's own exporters log under the same
    names from other threads: their records pass untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno < logging.WARNING:
            return True
        self.messages.append(record.getMessage())
        return False


@contextlib.contextmanager
def _reasons() -> Iterator[_Reasons]:
    loggers = [
        logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        logging.getLogger("opentelemetry.exporter.otlp.common.http"),
    ]
    reasons = _Reasons()
    for logger in loggers:
        logger.addFilter(reasons)
    try:
        yield reasons
    finally:
        for logger in loggers:
            logger.removeFilter(reasons)


def export_runs(
    runs: Iterable[tuple[Run, Iterable[Event]]],
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> int:
    """Send each run's spans to the OTLP/HTTP `endpoint` (see `traces_endpoint`); the number
    of spans sent. `OtlpExportFailed` names the endpoint and its answer if it refuses them."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ImportError(_MISSING.format(error=exc)) from exc
    url = traces_endpoint(endpoint)
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "journal-replay"}))
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    collected = _Collect()
    provider.add_span_processor(collected)
    tracer = journal_tracer(provider)
    exporter: Any = OTLPSpanExporter(
        endpoint=url, headers=dict(headers or {}) or None, timeout=timeout
    )
    sent = 0
    try:
        for run, events in runs:
            for record in run_spans(run, events):
                emit(tracer, record)
                if len(collected.spans) >= BATCH:
                    sent += _send(exporter, collected.spans, url)
        sent += _send(exporter, collected.spans, url)
    finally:
        exporter.shutdown()
        provider.shutdown()
    return sent


def _send(exporter: Any, spans: list[ReadableSpan], url: str) -> int:
    batch: Sequence[ReadableSpan] = tuple(spans)
    spans.clear()
    if not batch:
        return 0
    with _reasons() as reasons:
        result = exporter.export(batch)
    if result is not SpanExportResult.SUCCESS:
        # The first thing that went wrong says why; the exporter's later retries repeat it.
        why = (
            re.sub(r",? retrying in [\d.]+s\.?$", "", reasons.messages[0])
            if reasons.messages
            else "no reason given"
        )
        raise OtlpExportFailed(
            f"the OTLP endpoint {url} did not take the spans ({why}). Fix: check that an "
            "OpenTelemetry collector listens there (OTLP over HTTP, usually port 4318), or "
            "pass its address with --endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)."
        )
    return len(batch)
