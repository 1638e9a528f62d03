"""Observers of a sitting: code outside the engine told what a run does as it does it.

`replay.otel` uses it to emit spans. The engine tells an observer three things, and only when
one is installed: the rows of each commit once the store took them (`written`), a step answered
from the journal (`served`), and the sitting's end (`closed`). With none installed, each of
these points costs one `is None` test; replay sittings are never observed (nothing happens in
the world then). An observer is called on the thread that commits, under the session's lock:
it must be quick, and it must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from journal import Event, Journal, Run
from journal._events import EventRow


class SittingObserver(Protocol):
    def written(self, events: Sequence[Event]) -> None:
        """Rows the store has just committed, in seq order (a fork's carried copies follow
        its marker in the same commit)."""

    def served(self, row: EventRow, arguments: bytes | None) -> None:
        """A step answered from the journal: `row` is its finishing row, `arguments` the
        call's recorded arguments."""

    def closed(self, finished: bool) -> None:
        """The sitting is over; `finished`: it wrote the run's outcome (or suspended it)."""


ObserverFactory = Callable[[Journal, Run, str], SittingObserver | None]
"""(journal, run, the sitting's owner token) -> an observer for the sitting, or None."""

_factory: list[ObserverFactory] = []


def observe_with(factory: ObserverFactory | None) -> None:
    """Install the factory asked for each sitting's observer (None: observe nothing)."""
    _factory[:] = [] if factory is None else [factory]


def observer_for(journal: Journal, run: Run, token: str | None) -> SittingObserver | None:
    """The observer of a sitting that owns `run` (token), or None."""
    if not _factory or token is None:
        return None
    return _factory[0](journal, run, token)
