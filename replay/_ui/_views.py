"""What the pages show, computed from a `Journal` with no web framework in sight: the runs a
filter selects, one run's facts and steps, one step's rows. The routes render these; tests may
call them directly.

Everything recorded is untrusted text. Nothing here builds HTML: the templates escape it all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from journal import (
    Event,
    EventKind,
    EventStatus,
    Journal,
    Run,
    RunStatus,
    RunVerification,
    parse_since,
)
from journal._codec import json_or_text
from journal._inspect import RunDigest, digest, llm_usage, run_state, with_durations

PAGE_SIZE = 50
"""Runs per page of the list."""
PRETTY_LIMIT = 200_000
"""Characters of one pretty-printed value shown in a page; the rest is cut, with a note."""
STATES = ("running", "waiting", "completed", "failed", "cancelled", "interrupted", "submitted")
"""What the status filter offers: the run statuses, and the two states of a `running` run that
no live process owns (`journal runs` shows the same)."""
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class BadFilter(ValueError):
    """A filter or parameter a page cannot use; the message says what was expected."""


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters, as read from the query string."""

    status: str = ""
    workflow: str = ""
    since: str = ""
    text: str = ""
    offset: int = 0

    @classmethod
    def parse(cls, params: dict[str, str]) -> RunFilter:
        """From query parameters; `BadFilter` naming the parameter and the fix."""
        status = params.get("status", "").strip()
        if status and status not in STATES:
            raise BadFilter(
                f"status {status!r} is not a run status. Expected one of {', '.join(STATES)} "
                "(or nothing, for every run)."
            )
        since = params.get("since", "").strip()
        if since:
            try:
                parse_since(since)
            except ValueError as exc:
                raise BadFilter(f"since: {exc}") from None
        return cls(
            status=status,
            workflow=params.get("workflow", "").strip(),
            since=since,
            text=params.get("q", "").strip(),
            offset=whole_number(params.get("offset", "0") or "0", "offset"),
        )

    def query(self, **changes: Any) -> dict[str, Any]:
        """The filter as query parameters (empty ones left out), with `changes` applied."""
        values = {
            "status": self.status,
            "workflow": self.workflow,
            "since": self.since,
            "q": self.text,
            "offset": self.offset or "",
        }
        values.update(changes)
        return {name: value for name, value in values.items() if value not in ("", None, 0)}

    @property
    def active(self) -> bool:
        return bool(self.status or self.workflow or self.since or self.text)


def href(path: str, **params: Any) -> str:
    """`path` with `params` as its query string (None and "" left out), every value encoded:
    run ids may hold `&`, `#`, `/` or anything else."""
    kept = {name: value for name, value in params.items() if value not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


LARGEST = 2**63 - 1
"""The largest seq or offset a journal can hold (SQLite's and PostgreSQL's integers)."""


def whole_number(text: str, name: str) -> int:
    """`text` as an integer from 0 to `LARGEST`, or `BadFilter` saying what `name` takes."""
    shown = text if len(text) <= 30 else f"{text[:30]}…"
    if len(text) > 30 and text.isdigit():
        number = LARGEST + 1  # int() refuses past 4,300 digits, and none of them is needed
    else:
        try:
            number = int(text)
        except ValueError:
            number = -1
    if number < 0:
        raise BadFilter(f"{name} must be a whole number (0 or more), not {shown!r}.")
    if number > LARGEST:
        raise BadFilter(f"{name} {shown} is too large: expected a whole number up to {LARGEST:,}.")
    return number


def select_runs(journal: Journal, chosen: RunFilter) -> tuple[list[RunDigest], bool]:
    """The page of runs `chosen` selects, newest first, and whether more match after it.

    Status, age and workflow are checked on the run row; the free text on the run's id,
    workflow, inputs, result and error; only the runs shown have their events read.
    """
    since = parse_since(chosen.since) if chosen.since else None
    by_state = chosen.status in ("interrupted", "submitted")
    status = "running" if by_state else chosen.status or None
    needle = chosen.text.casefold()
    workflow = chosen.workflow.casefold()
    # Filters the store cannot apply look at every run; otherwise this page and one more will do.
    every = bool(workflow or needle or by_state)
    limit = None if every else chosen.offset + PAGE_SIZE + 1
    page: list[RunDigest] = []
    skipped = 0
    for run in journal.runs(status=status, limit=limit):
        if since is not None and run.created_at < since:
            break  # newest first: every later run is older still
        if workflow and workflow not in workflow_name(run).casefold():
            continue
        if needle and not any(needle in text.casefold() for text in _searchable(run)):
            continue
        if by_state and run_state(run, journal.store.count_events(run.run_id) > 0) != (
            chosen.status
        ):
            continue
        if skipped < chosen.offset:
            skipped += 1
            continue
        if len(page) == PAGE_SIZE:
            return page, True
        page.append(digest(run, journal.store.read_events(run.run_id)))
    return page, False


def _searchable(run: Run) -> Iterable[str]:
    yield run.run_id
    yield workflow_name(run)
    for recorded in (run.inputs, run.result, run.error):
        if recorded:
            yield recorded.decode(errors="replace")


def workflow_name(run: Run) -> str:
    return run.workflow or "journaled block"


def runs_signature(journal: Journal) -> tuple[tuple[str, str, datetime], ...]:
    """What changes when a run is added or removed, or changes status (appending events does
    not touch the run's row): the live list reloads when it does."""
    return tuple((r.run_id, r.status.value, r.updated_at) for r in journal.runs(limit=200))


@dataclass(frozen=True)
class StepRow:
    """One event as a row of the run page's step table."""

    event: Event
    offset_ms: float
    """Time since the run was created."""
    duration: timedelta | None
    """For an outcome: time since its attempt's `started` row."""
    llm: dict[str, Any] | None

    @property
    def depth(self) -> int:
        return self.event.key.rpartition(":")[0].count("/")


def step_rows(
    run: Run, events: Iterable[Event], started: dict[tuple[str, int], datetime] | None = None
) -> list[StepRow]:
    """`events` (one run's, in seq order) as table rows, each with its attempt's duration
    (`started`: the attempts an earlier call left begun, as `with_durations` keeps them)."""
    rows = []
    for event, duration in with_durations(events, started):
        offset = (event.created_at - run.created_at) / timedelta(milliseconds=1)
        rows.append(StepRow(event, offset, duration, llm_usage(event)))
    return rows


class RunPage:
    """Everything the run page shows around its timeline, from the rows the server holds of
    the run (`_tail`): a live page fetches its header on every new event, the rest only when
    the run changes status, and neither reads more of the journal than what is new."""

    def __init__(
        self,
        journal: Journal,
        run: Run,
        events: list[Event],
        steps: list[StepRow],
        verify: Callable[[], RunVerification],
    ) -> None:
        self.journal = journal
        self.run = run
        self.events = events
        self.steps = steps
        self._verify = verify

    @cached_property
    def digest(self) -> RunDigest:
        return digest(self.run, self.events)

    @cached_property
    def verification(self) -> RunVerification:
        """The run's own hash chain and seal (`journal verify RUN` checks the journal's head
        too: the verify page does)."""
        return self._verify()

    @property
    def verdict(self) -> str:
        return self.verification.describe()

    @property
    def verified(self) -> bool:
        return self.verification.ok

    @cached_property
    def related(self) -> list[Run]:
        """Forks and child runs of this run."""
        return [r for r in self.journal.runs() if r.parent_run_id == self.run.run_id]

    @property
    def finished(self) -> bool:
        return self.run.status in FINISHED

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def keys(self) -> list[str]:
        """Step keys in order of first appearance (what a fork's override may name)."""
        return list(dict.fromkeys(e.key for e in self.events if e.kind is not EventKind.FORK))


@dataclass(frozen=True)
class StepPage:
    """One event in full, and the other rows of its step key."""

    run: Run
    row: StepRow
    attempts: list[StepRow]
    arguments: Any
    site: str | None
    llm: dict[str, Any] | None
    previous: int | None
    next: int | None


def step_page(journal: Journal, run_id: str, seq: int) -> StepPage | None:
    """The step page's content; None if the run has no event `seq`."""
    run = journal.run(run_id)
    rows = step_rows(run, journal.events(run_id))
    index = next((i for i, r in enumerate(rows) if r.event.seq == seq), None)
    if index is None:
        return None
    row = rows[index]
    same = [r for r in rows if r.event.key == row.event.key]
    call = _call_of(row, same)
    llm = row.llm or next((r.llm for r in same if r.llm and _same_attempt(r, row)), None)
    return StepPage(
        run=run,
        row=row,
        attempts=same,
        arguments=call.get("args") if isinstance(call, dict) else call,
        site=str(call["site"]) if isinstance(call, dict) and call.get("site") else None,
        llm=llm,
        previous=rows[index - 1].event.seq if index else None,
        next=rows[index + 1].event.seq if index + 1 < len(rows) else None,
    )


def _same_attempt(a: StepRow, b: StepRow) -> bool:
    return a.event.attempt == b.event.attempt


def _call_of(row: StepRow, same: list[StepRow]) -> Any:
    """The recorded call (arguments and site) of `row`'s attempt: its `started` row's payload,
    or the `args` an outcome row without one carries."""
    event = row.event
    if event.kind is EventKind.FORK:
        return None  # a marker (fork, retry, stop): its payload says what it marks
    if event.status is EventStatus.STARTED:
        return json_or_text(event.payload)
    if event.args is not None:
        return json_or_text(event.args)
    started = next(
        (r.event for r in same if r.event.status is EventStatus.STARTED and _same_attempt(r, row)),
        None,
    )
    return None if started is None else json_or_text(started.payload)


def pretty(value: Any) -> str:
    """A value as indented JSON (recorded bytes are decoded first), cut at `PRETTY_LIMIT`."""
    if isinstance(value, bytes):
        value = json_or_text(value)
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > PRETTY_LIMIT:
        cut = len(text) - PRETTY_LIMIT
        return f"{text[:PRETTY_LIMIT]}\n... ({cut:,} more characters: `journal show` prints all)"
    return text


@dataclass(frozen=True)
class ErrorView:
    """A recorded exception as a reader wants it: `type: message`, the traceback as text."""

    headline: str
    traceback: str | None
    rest: str
    """The other recorded fields, as pretty JSON."""


def error_view(recorded: bytes | None) -> ErrorView | None:
    """A recorded error (a run's or a failed step's), or None if it is not one."""
    error = json_or_text(recorded)
    if not isinstance(error, dict) or "message" not in error:
        return None
    rest = {name: value for name, value in error.items() if name != "traceback"}
    traceback = error.get("traceback")
    return ErrorView(
        headline=f"{error.get('type') or 'error'}: {error['message']}",
        traceback=traceback if isinstance(traceback, str) else None,
        rest=pretty(rest),
    )


def untraced(value: Any) -> Any:
    """A recorded error without its traceback (absolute paths that differ by checkout): what a
    comparison shows; the run's page has the traceback."""
    if isinstance(value, dict) and "traceback" in value:
        return {name: item for name, item in value.items() if name != "traceback"}
    return value


def duration_text(delta: timedelta | None) -> str:
    """`4.2 ms`, `850 ms`, `12.35 s`, `4 min 05 s`; empty for None."""
    if delta is None:
        return ""
    ms = delta / timedelta(milliseconds=1)
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def when_text(moment: datetime | None) -> str:
    """`2026-11-25 14:00:03 UTC`: one zone for every reader of the page."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
