"""A run as trace spans: the run is the trace, each step attempt a span. No OpenTelemetry here.

Both the spans a run emits while it executes (`replay.otel`) and the export of a finished run
(`journal export -f otlp`) are built by this module from the journal's own rows, so the two
agree: the same ids, names, parents, attributes and times for every attempt.

* Ids are derived from the run: the trace id from the run id, the run's span id from the run
  id, an attempt's span id from the run id, its key, its attempt number and the seq of its first
  row (a retried run reruns a key from attempt 1: the seq tells the two apart).
* Every step span is a child of the run's span, whatever task it ran in: a step's key, not the
  task that happened to be current, says where it belongs.
* An attempt starts at its `started` row and ends at its outcome. A step that finished without
  waiting is one row, so its span has no duration.
* LLM steps carry the GenAI semantic conventions' attributes (operation, provider, request and
  response model, token usage, finish reasons) from what the HTTP integrations recorded, and
  never a prompt, a body, a header or a URL's path: see `journal._span_attributes`.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ._events import STATUS_BY_VALUE, Event, EventKind, EventStatus, Run, RunStatus, trusted_event
from ._exceptions import RecordedError
from ._span_attributes import (
    GEN_AI_OPERATION,
    GEN_AI_WORKFLOW_NAME,
    AttributeValue,
    SpanKind,
    describe,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, in plain values: what `journal._otel` hands to an OpenTelemetry tracer."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    kind: SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    error: str | None = None
    """The span failed: its status description."""
    exception: tuple[str, str, str | None] | None = None
    """(type, message, traceback) of the recorded exception, for an `exception` event."""
    links: tuple[tuple[int, int], ...] = field(default=())
    """(trace id, span id) of related runs' spans: the parent of a child run or a fork."""


def _id(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\0".join(("journal-replay", *parts)).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1  # 0 is OpenTelemetry's "invalid"


@functools.lru_cache(maxsize=1024)
def trace_id_of(run_id: str) -> int:
    """The 128-bit trace id of a run: the same wherever and whenever it is computed."""
    return _id(128, "trace", run_id)


@functools.lru_cache(maxsize=1024)
def run_span_id(run_id: str) -> int:
    """The 64-bit span id of the run's own span (the root of its trace)."""
    return _id(64, "run", run_id)


def attempt_span_id(run_id: str, key: str, attempt: int, seq: int) -> int:
    """The span id of one attempt of a step: `seq` is the attempt's first row."""
    return _id(64, "step", run_id, key, str(attempt), str(seq))


def served_span_id(run_id: str, key: str, sitting: str) -> int:
    """The span id of a step a sitting (named by its owner token) served from the journal."""
    return _id(64, "served", run_id, key, sitting)


def nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a float would lose the microseconds)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US * 1000


def _run_attributes(run: Run) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"journal.run_id": run.run_id}
    if run.workflow is not None:
        attributes["journal.workflow"] = run.workflow
    if run.version is not None:
        attributes["journal.version"] = run.version
    return attributes


def workflow_name(run: Run) -> str | None:
    """The workflow's qualified name without its module (`research` for
    `agents.research:research`, `Agent.run`, `research` for a function defined in another
    one's body), None for a `journaled(...)` block."""
    if run.workflow is None:
        return None
    return run.workflow.rpartition(":")[2].rpartition("<locals>.")[2] or run.workflow


def run_span(run: Run, end: datetime | None = None) -> SpanRecord:
    """The run's own span: from its creation to its end (`finished_at`, else `end`, else the
    last update), its outcome as the span's status. A child run or a fork links to its parent."""
    name = workflow_name(run)
    attributes = _run_attributes(run)
    attributes[GEN_AI_OPERATION] = "invoke_workflow"
    if name is not None:
        attributes[GEN_AI_WORKFLOW_NAME] = name
    attributes["journal.run.status"] = run.status.value
    attributes["journal.run.resumes"] = run.resumes
    links: tuple[tuple[int, int], ...] = ()
    if run.parent_run_id is not None:
        attributes["journal.parent_run_id"] = run.parent_run_id
        links = ((trace_id_of(run.parent_run_id), run_span_id(run.parent_run_id)),)
    if run.fork_seq is not None:
        attributes["journal.fork_seq"] = run.fork_seq
    error = exception = None
    if run.status is RunStatus.FAILED:
        exception = _recorded_error(run.error)
        error = f"{exception[0]}: {exception[1]}" if exception else "the run failed"
    finished = run.finished_at or end or run.updated_at
    return SpanRecord(
        name=f"invoke_workflow {name}" if name else "invoke_workflow",
        trace_id=trace_id_of(run.run_id),
        span_id=run_span_id(run.run_id),
        parent_id=None,
        kind="internal",
        start_ns=nanoseconds(run.created_at),
        end_ns=max(nanoseconds(finished), nanoseconds(run.created_at)),
        attributes=attributes,
        error=error,
        exception=exception,
        links=links,
    )


def attempt_span(run: Run, started: Event | None, outcome: Event | None) -> SpanRecord:
    """One attempt's span from its `started` row and its outcome (either may be missing: a
    step that never waited is one outcome row; a step cut short by a crash has no outcome)."""
    first = started or outcome
    assert first is not None
    last = outcome or first
    status = "unfinished" if outcome is None else outcome.status.value
    arguments = started.payload if started is not None else outcome.args if outcome else None
    attributes = _run_attributes(run)
    attributes.update(_step_attributes(first.key, first.name, first.kind, first.attempt, status))
    attributes["journal.step.seq"] = first.seq
    attributes["journal.step.served"] = False
    if outcome is not None:
        attributes["journal.step.payload_bytes"] = len(outcome.payload or b"")
    name, kind = describe(first.kind, first.name, attributes, arguments, outcome, tokens=True)
    error = exception = None
    if outcome is not None and outcome.status in (EventStatus.FAILED, EventStatus.RETRYING):
        exception = _recorded_error(outcome.payload)
        http = attributes.get("http.response.status_code")
        error = (
            f"{exception[0]}: {exception[1]}"
            if exception
            else f"HTTP {http}"
            if http is not None
            else f"attempt {status}"
        )
    elif isinstance(code := attributes.get("http.response.status_code"), int) and code >= 400:
        error = f"HTTP {code}"
    return SpanRecord(
        name=name,
        trace_id=trace_id_of(run.run_id),
        span_id=attempt_span_id(run.run_id, first.key, first.attempt, first.seq),
        parent_id=run_span_id(run.run_id),
        kind=kind,
        start_ns=nanoseconds(first.created_at),
        end_ns=nanoseconds(last.created_at),
        attributes=attributes,
        error=error,
        exception=exception,
    )


def served_span(
    run: Run,
    key: str,
    kind: EventKind,
    name: str,
    status: str,
    attempt: int,
    payload: bytes | None,
    arguments: bytes | None,
    at: int,
    sitting: str,
) -> SpanRecord:
    """A step this sitting answered from the journal, at `at` (ns): nothing ran and nothing
    was paid, so it carries no tokens and no error status, only what was served."""
    attributes = _run_attributes(run)
    attributes.update(_step_attributes(key, name, kind, attempt, status))
    attributes["journal.step.served"] = True
    outcome = trusted_event(
        run.run_id, 0, key, kind, name, "", STATUS_BY_VALUE[status], attempt, payload, _EPOCH
    )
    span_name, span_kind = describe(kind, name, attributes, arguments, outcome, tokens=False)
    return SpanRecord(
        name=span_name,
        trace_id=trace_id_of(run.run_id),
        span_id=served_span_id(run.run_id, key, sitting),
        parent_id=run_span_id(run.run_id),
        kind=span_kind,
        start_ns=at,
        end_ns=at,
        attributes=attributes,
    )


def _step_attributes(
    key: str, name: str, kind: EventKind, attempt: int, status: str
) -> dict[str, AttributeValue]:
    return {
        "journal.step.key": key,
        "journal.step.name": name,
        "journal.step.kind": kind.value,
        "journal.step.attempt": attempt,
        "journal.step.status": status,
    }


def _recorded_error(payload: bytes | None) -> tuple[str, str, str | None] | None:
    """(type, message, traceback) of a recorded exception; None for another payload (an HTTP
    response recorded as a retryable attempt)."""
    if not payload:
        return None
    try:
        recorded = RecordedError.decode(payload)
    except ValueError:
        return None
    module, _, name = recorded.type.rpartition(":")
    kind = name if module in ("", "builtins") else f"{module}.{name}"  # Python's own spelling
    return kind, recorded.message, recorded.traceback


def run_spans(run: Run, events: Iterable[Event]) -> Iterator[SpanRecord]:
    """Every span of a recorded run: an attempt's span per attempt, in the order the attempts
    ended (unfinished ones last), then the run's own span. Rows a fork or a retry carried past
    its marker are copies of rows already seen, and are skipped; so are the rows a fork
    copied from its parent (they ran in the parent, whose trace holds them: the fork's run
    span links to it)."""
    steps = StepSpans(run)
    last: datetime | None = None
    copied = run.fork_seq if run.parent_run_id is not None and run.fork_seq is not None else 0
    for event in _without_carried(events):
        if event.seq < copied:
            continue
        last = event.created_at if last is None else max(last, event.created_at)
        if event.kind is EventKind.FORK:
            yield from steps.superseded(event)
            continue
        span = steps.add(event)
        if span is not None:
            yield span
    yield from steps.unfinished()
    yield run_span(run, end=None if run.status is not RunStatus.RUNNING else last)


class StepSpans:
    """Rows in seq order -> the span of each attempt once its outcome arrives."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.started: dict[tuple[str, int], Event] = {}

    def add(self, event: Event) -> SpanRecord | None:
        if event.kind is EventKind.FORK:
            return None
        if event.status is EventStatus.STARTED:
            self.started[(event.key, event.attempt)] = event
            return None
        started = self.started.pop((event.key, event.attempt), None)
        return attempt_span(self.run, started, event)

    def superseded(self, marker: Event) -> list[SpanRecord]:
        """A divergence fork, a retry or a stop supersedes the rows from its
        `superseded_from_seq` to itself: attempts begun there stay unfinished, whatever
        finishes the same key and attempt later (a step run again after a divergence starts
        from attempt 1, and may finish in one row)."""
        try:
            cut = orjson.loads(marker.payload or b"{}").get("superseded_from_seq")
        except (orjson.JSONDecodeError, AttributeError):
            return []
        if not isinstance(cut, int):
            return []
        spans = []
        for slot, started in list(self.started.items()):
            if cut <= started.seq < marker.seq:
                del self.started[slot]
                spans.append(attempt_span(self.run, started, None))
        return spans

    def unfinished(self) -> Iterator[SpanRecord]:
        """Attempts with no outcome: cut short by a crash or a stop, or still running."""
        for started in self.started.values():
            yield attempt_span(self.run, started, None)
        self.started.clear()


def _without_carried(events: Iterable[Event]) -> Iterator[Event]:
    """The rows, without the copies a fork or a retry carried past its marker: the rows right
    after the marker that repeat rows from its `superseded_from_seq` on (a fork carries the
    steps begun before that seq, a retry those not in its `keys`; a stop carries none).

    Read as they come: of the rows already read, only their identity is kept (the payload as
    a digest), so a run is never held whole in memory."""
    seen: list[tuple[int, str, tuple[Any, ...]]] = []
    """(seq, key, identity) of every step row read so far, carried copies included."""
    begun: dict[str, int] = {}
    copies: Counter[tuple[Any, ...]] = Counter()
    for event in events:
        if event.kind is not EventKind.FORK:
            same = _same_row(event)
            seen.append((event.seq, event.key, same))
            begun.setdefault(event.key, event.seq)
            if copies[same] > 0:
                copies[same] -= 1
                continue
            copies.clear()  # the copies right after a marker end at the first other row
            yield event
            continue
        copies.clear()
        yield event
        if event.name == "replay.stop":
            continue
        record = orjson.loads(event.payload or b"{}")
        cut = record.get("superseded_from_seq")
        if not isinstance(cut, int):
            continue
        if event.name == "replay.retry":
            reopened = set(record.get("keys") or ())
            carried = [same for seq, key, same in seen if seq >= cut and key not in reopened]
        else:
            carried = [same for seq, key, same in seen if seq >= cut and begun[key] < cut]
        copies.update(carried)


def _same_row(event: Event) -> tuple[Any, ...]:
    """What a carried copy repeats of its row (the payload as a digest: equal bytes, equal
    digest; the bytes themselves are not kept)."""
    payload = event.payload
    digest = None if payload is None else hashlib.blake2b(payload, digest_size=16).digest()
    return (event.key, event.name, event.fingerprint, event.status, event.attempt, digest)
