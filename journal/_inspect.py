"""Read-side views of a journal: a digest per run, a timeline per run. What `journal runs` and
`journal show` print, available from Python as `Journal.digests()` and `Journal.timeline()`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ._codec import json_or_text
from ._events import Event, EventKind, EventStatus, Run, RunStatus
from .stores._ownership import owner_is_gone

_OUTCOMES = (EventStatus.COMPLETED, EventStatus.FAILED)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d`, `1w` before now, or an ISO date/time (UTC unless it says otherwise)."""
    match = _AGE.match(text.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_AGE_UNITS[unit]: float(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time. Expected an age such as 30m, 2h, 7d, 1w, "
            "or an ISO date such as 2026-11-25 or 2026-11-25T14:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunDigest:
    """One line about a run: the run and what its journal holds."""

    run: Run
    steps: int
    """Step keys with a final outcome (completed or failed)."""
    events: int
    duration: timedelta
    """First start (its first event) to finish, or to the last update for a run that has not
    finished; zero for a run that never started."""
    input_tokens: int = 0
    output_tokens: int = 0
    """Token usage of the LLM calls whose provider reported it (see `llm_usage`)."""
    cost: float | None = None
    """Estimated cost from a price table, None without one or for a model not in it."""
    state: str = ""
    """What `journal runs` shows: the status, except for a `running` run that no live process
    owns: `submitted` if it never started, `interrupted` if it did (resume it)."""

    def as_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": run.status.value,
            "steps": self.steps,
            "events": self.events,
            "started": run.created_at.isoformat(),
            "duration_seconds": round(self.duration.total_seconds(), 6),
            "state": self.state or run.status.value,
            "resumes": run.resumes,
            "parent_run_id": run.parent_run_id,
            "fork_seq": run.fork_seq,
            "version": run.version,
            "owner": None if run.owner is None else run.owner.model_dump(mode="json"),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated_cost": self.cost,
        }


Prices = Mapping[str, Mapping[str, float]]
"""Model name -> {"input": price per million input tokens, "output": per million output}."""


def llm_usage(event: Event) -> dict[str, Any] | None:
    """The LLM metadata an integration recorded with a response (model, tokens, finish
    reason), or None: `{"provider", "model", "input_tokens", "output_tokens", "finish_reason"}`."""
    if event.kind is not EventKind.LLM or event.status is EventStatus.STARTED:
        return None
    if not event.payload or b'"llm"' not in event.payload:
        return None
    try:
        recorded = orjson.loads(event.payload)
    except orjson.JSONDecodeError:
        return None
    usage = recorded.get("llm") if isinstance(recorded, dict) else None
    return usage if isinstance(usage, dict) else None


def digest(run: Run, events: list[Event], prices: Prices | None = None) -> RunDigest:
    outcomes = {e.key for e in events if e.status in _OUTCOMES and e.kind is not EventKind.FORK}
    end = run.finished_at or run.updated_at
    tokens_in = tokens_out = 0
    cost: float | None = 0.0 if prices is not None else None
    for event in events:
        usage = llm_usage(event)
        if usage is None:
            continue
        used_in, used_out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        tokens_in += used_in
        tokens_out += used_out
        if cost is not None and prices is not None:
            price = prices.get(str(usage.get("model")))
            if price is None:
                cost = None  # one unpriced model makes the total unknown, not low
            else:
                cost += (used_in * price["input"] + used_out * price["output"]) / 1e6
    started = _first_start(run, events) or end
    return RunDigest(
        run,
        len(outcomes),
        len(events),
        max(end - started, timedelta(0)),
        tokens_in,
        tokens_out,
        cost,
        run_state(run, bool(events)),
    )


def _first_start(run: Run, events: list[Event]) -> datetime | None:
    """When the run first ran: its first event; for a fork, its first event after the fork's
    marker (the ones before are its parent's, copied with their times). None: never ran."""
    if run.fork_seq is None:
        return events[0].created_at if events else None
    return next((e.created_at for e in events if e.seq > run.fork_seq), None)


def _count(value: Any) -> int:
    """A recorded token count, or 0 for anything else: the usage is a step's own return
    value, and one step holding text there must not break every listing of the runs."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def run_state(run: Run, started: bool, now: datetime | None = None) -> str:
    """The run's status, told apart for a `running` run no live process owns: `submitted`
    (it never started: a worker will) or `interrupted` (its process died: resume it)."""
    if run.status is not RunStatus.RUNNING:
        return run.status.value
    if run.owner is not None and not owner_is_gone(run.owner, now or datetime.now(UTC)):
        return "running"
    return "interrupted" if started else "submitted"


@dataclass(frozen=True)
class TimelineEntry:
    """One event on a run's timeline, with what a reader wants next to it."""

    event: Event
    depth: int
    """How many tasks deep the step ran: 0 for the workflow's own task."""
    duration: timedelta | None
    """For an outcome: time since the same attempt's `started` row (None if it had none)."""

    @property
    def payload_size(self) -> int:
        return len(self.event.payload or b"") + len(self.event.args or b"")

    def as_json(self, *, payloads: bool = False) -> dict[str, Any]:
        e = self.event
        entry: dict[str, Any] = {
            "seq": e.seq,
            "key": e.key,
            "kind": e.kind.value,
            "name": e.name,
            "status": e.status.value,
            "attempt": e.attempt,
            "at": e.created_at.isoformat(),
            "duration_seconds": None
            if self.duration is None
            else round(self.duration.total_seconds(), 6),
            "payload_bytes": self.payload_size,
            "fingerprint": e.fingerprint,
        }
        usage = llm_usage(e)
        if usage is not None:
            entry["llm"] = usage
        if payloads:
            entry["payload"] = json_or_text(e.payload)
            entry["arguments"] = e.call_arguments()
        return entry


def with_durations(
    events: Iterable[Event], started: dict[tuple[str, int], datetime] | None = None
) -> Iterator[tuple[Event, timedelta | None]]:
    """Each event (one run's, in seq order) with its attempt's duration: from the attempt's
    `started` row to this row; None for a `started` row, or an outcome written alone.

    `started` holds the attempts begun and not ended yet, kept across calls that go on from
    the rows an earlier call read."""
    started = {} if started is None else started
    for event in events:
        duration = None
        if event.status is EventStatus.STARTED:
            started[(event.key, event.attempt)] = event.created_at
        else:
            begun = started.pop((event.key, event.attempt), None)
            if begun is not None:
                duration = event.created_at - begun
        yield event, duration


def timeline(events: list[Event]) -> list[TimelineEntry]:
    return [
        TimelineEntry(event, event.key.rpartition(":")[0].count("/"), duration)
        for event, duration in with_durations(events)
    ]
