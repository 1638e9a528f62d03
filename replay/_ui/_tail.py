"""What a live run page has already read of a run, kept by the server so that each new event
costs a read of the new events only.

A live page asks again for its rows, its header and its timeline as the run records; each
answer used to read the whole run (and recompute its hash chain), so a run of 10,000 events
cost a third of a second per request and per open page, several times a second. Events are
only ever appended (a retry appends too; `journal gc` removes whole runs), so the rows read
once, with the step rows and the chain checked so far, can be extended by what comes after
their last seq. The run page itself (a load, or a reload) reads the whole run again, and
checks its chain from the start: an edit of the journal under an open page shows there.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from journal import Event, Journal, Run, RunVerification
from journal._verify import Checked, verify_run

from ._views import RunPage, StepRow, step_rows

KEPT_RUNS = 4
"""Runs whose rows the server keeps (the most recently asked for): one per open run page,
for a few pages."""


@dataclass
class RunTail:
    """One run's events as read so far, with their step rows and the chain checked so far."""

    run_id: str
    created_at: datetime
    events: list[Event] = field(default_factory=list)
    rows: list[StepRow] = field(default_factory=list)
    started: dict[tuple[str, int], datetime] = field(default_factory=dict)
    """Attempts begun (their `started` rows) without an outcome yet: a later row's duration."""
    checked: Checked | None = None
    """Where the chain was last found intact; None: not checked yet, or not intact."""
    verification: RunVerification | None = None
    verified_for: tuple[int, str] | None = None
    """The (event count, run status) `verification` was computed for."""

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def add(self, run: Run, new: list[Event]) -> None:
        self.rows.extend(step_rows(run, new, self.started))
        self.events.extend(new)

    def verify(self, journal: Journal, run: Run) -> RunVerification:
        """The run's chain and seal, checking only the events after the last intact check."""
        stamp = (len(self.events), run.status.value)
        if self.verification is not None and self.verified_for == stamp:
            return self.verification
        checked = self.checked
        if checked is not None and checked.events <= len(self.events):
            result = verify_run(journal.chain, run, self.events[checked.events :], after=checked)
            if not result.ok and result.verdict == "broken":  # say where, as a whole check does
                result = verify_run(journal.chain, run, self.events)
        else:
            result = verify_run(journal.chain, run, self.events)
        last = self.events[-1] if self.events else None
        self.checked = None
        if result.verdict == "intact" and last is not None and last.hash is not None:
            self.checked = Checked(last.seq, last.hash, len(self.events))
        self.verification, self.verified_for = result, stamp
        return result


class Tails:
    """The `RunTail`s of the runs last asked for (`KEPT_RUNS`), shared by the server's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tails: OrderedDict[str, RunTail] = OrderedDict()

    def read(self, journal: Journal, run: Run, *, whole: bool = False) -> RunTail:
        """`run`'s tail, extended by the events recorded since it was last read (`whole`: read
        again from the first event). Hold `self.lock` while using what it returns."""
        tail = self.tails.get(run.run_id)
        if whole or tail is None or tail.created_at != run.created_at:
            tail = RunTail(run.run_id, run.created_at)  # removed and recorded again: anew
        tail.add(run, journal.store.read_events(run.run_id, after_seq=tail.last_seq))
        self.tails[run.run_id] = tail
        self.tails.move_to_end(run.run_id)
        while len(self.tails) > KEPT_RUNS:
            self.tails.popitem(last=False)
        return tail


def run_page(journal: Journal, tails: Tails, run_id: str, *, whole: bool) -> RunPage:
    """The run page's content (`whole`: read and check the run from its first event, as a
    page load does; else only what was recorded since the last read); `RunNotFound` for an
    unknown run."""
    run = journal.run(run_id)
    with tails.lock:
        tail = tails.read(journal, run, whole=whole)
        events, steps = list(tail.events), list(tail.rows)

    def verify() -> RunVerification:
        with tails.lock:
            if tails.tails.get(run_id) is tail and len(tail.events) == len(events):
                return tail.verify(journal, run)
        return verify_run(journal.chain, run, events)  # the tail went on: check what is shown

    return RunPage(journal, run, events, steps, verify)


def rows_after(
    journal: Journal, tails: Tails, run_id: str, after: int
) -> tuple[Run, list[StepRow]]:
    """The run and its step rows after seq `after`, reading only what is new."""
    run = journal.run(run_id)
    with tails.lock:
        tail = tails.read(journal, run)
        start = bisect.bisect_right(tail.rows, after, key=lambda row: row.event.seq)
        return run, tail.rows[start:]


def events_of(journal: Journal, tails: Tails, run_id: str) -> tuple[Run, list[Event]]:
    """The run and its events (for the timeline), reading only what is new."""
    run = journal.run(run_id)
    with tails.lock:
        return run, list(tails.read(journal, run).events)
