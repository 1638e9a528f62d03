"""Two runs compared step by step: which keys agree, which changed and how, which only one run
has. Keys pair the steps, so two runs of the same code line up even though their times differ.

Rows are folded per key the way the replay engine folds them (`replay._recorded.fold_rows`):
fork markers are not steps, and rows a divergence fork superseded are ignored. Timestamps,
hashes and seqs never count as differences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from ._codec import canonical_json, json_or_text
from ._events import Event, EventKind, EventStatus, Run

Change = Literal["same", "changed", "only_a", "only_b"]
_ERROR_STATUSES = frozenset({EventStatus.RETRYING.value, EventStatus.FAILED.value})


class Absent(Enum):
    """Stands for an argument one call did not carry (canonical arguments omit defaults)."""

    ABSENT = "(absent)"

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = Absent.ABSENT


@dataclass(frozen=True)
class StepSide:
    """One run's view of one step key, folded from its rows."""

    seq: int
    """The key's first seq in that run (after superseded rows are dropped)."""
    name: str
    kind: str
    status: str
    """The final row's status: completed, failed, retrying or started."""
    attempts: int
    """The final row's attempt number."""
    arguments: Any
    """The call's canonical arguments (`{"name": value}`), None if no row recorded them."""
    outcome: Any
    """The final row's result or error dict, None when the final row is a `started` row."""
    fingerprint: str


@dataclass(frozen=True)
class StepDiff:
    """One key in both runs (or in only one of them)."""

    key: str
    a: StepSide | None
    b: StepSide | None
    change: Change
    fields: tuple[str, ...]
    """For `changed`: which of name, arguments, outcome, status, attempts differ."""


@dataclass(frozen=True)
class RunDiff:
    """Run `a` against run `b`: differing run fields, then every step key."""

    a: Run
    b: Run
    header: tuple[tuple[str, Any, Any], ...]
    """`(field, a value, b value)` for each differing workflow, inputs, status, result, error."""
    steps: tuple[StepDiff, ...]
    """Every key by first appearance: A's order, then keys only B has in B's order."""

    @property
    def first_difference(self) -> StepDiff | None:
        """The first step that is not `same`: where the two runs parted."""
        return next((step for step in self.steps if step.change != "same"), None)

    @property
    def identical(self) -> bool:
        """No run field and no step differs."""
        return not self.header and self.first_difference is None

    def argument_changes(self, step: StepDiff) -> list[tuple[str, Any, Any]]:
        """`(argument, a value, b value)` for each top-level argument that differs.

        `ABSENT` marks an argument one call did not pass. Empty when a side is missing or its
        arguments are unknown. Ordered like `NonDeterminismError.changed_arguments`.
        """
        if step.a is None or step.b is None:
            return []
        old, new = step.a.arguments, step.b.arguments
        if not isinstance(old, dict) or not isinstance(new, dict):
            return []
        changes = []
        for name in sorted(old.keys() | new.keys(), key=lambda n: (n not in new, n)):
            before, after = old.get(name, ABSENT), new.get(name, ABSENT)
            if before is ABSENT or after is ABSENT or not _same(before, after):
                changes.append((name, before, after))
        return changes


def diff_runs(a: Run, a_events: Iterable[Event], b: Run, b_events: Iterable[Event]) -> RunDiff:
    """Compare run `a` with run `b` step by step, each with its events in append order.

    >>> d = diff_runs(j.run("a"), j.events("a"), j.run("b"), j.events("b"))
    >>> d.first_difference.key, d.first_difference.fields        # ("0:2", ("outcome",))

    `ValueError` if an event belongs to neither the run it was passed with.
    """
    sides_a, sides_b = _fold(a.run_id, a_events), _fold(b.run_id, b_events)
    steps = [_step(key, side, sides_b.get(key)) for key, side in sides_a.items()]
    steps += [_step(key, None, side) for key, side in sides_b.items() if key not in sides_a]
    return RunDiff(a, b, _header(a, b), tuple(steps))


def _header(a: Run, b: Run) -> tuple[tuple[str, Any, Any], ...]:
    fields = (
        ("workflow", a.workflow, b.workflow),
        ("inputs", json_or_text(a.inputs), json_or_text(b.inputs)),
        ("status", a.status.value, b.status.value),
        ("result", json_or_text(a.result), json_or_text(b.result)),
        ("error", json_or_text(a.error), json_or_text(b.error)),
    )
    return tuple((name, x, y) for name, x, y in fields if not _same(x, y, errors=name == "error"))


def _step(key: str, a: StepSide | None, b: StepSide | None) -> StepDiff:
    if a is None:
        return StepDiff(key, None, b, "only_b", ())
    if b is None:
        return StepDiff(key, a, None, "only_a", ())
    fields = []
    if a.name != b.name:
        fields.append("name")
    # The fingerprint hashes name and arguments: under a renamed step, compare the values.
    if a.fingerprint != b.fingerprint and (a.name == b.name or not _same(a.arguments, b.arguments)):
        fields.append("arguments")
    errors = a.status in _ERROR_STATUSES and b.status in _ERROR_STATUSES
    if not _same(a.outcome, b.outcome, errors=errors):
        fields.append("outcome")
    if a.status != b.status:
        fields.append("status")
    if a.attempts != b.attempts:
        fields.append("attempts")
    return StepDiff(key, a, b, "changed" if fields else "same", tuple(fields))


def _fold(run_id: str, events: Iterable[Event]) -> dict[str, StepSide]:
    """Key -> its folded side, in order of first appearance, as the engine would read it."""
    rows = []
    superseded: list[tuple[int, int]] = []
    for event in events:
        if event.run_id != run_id:
            raise ValueError(
                f"event {event.seq} belongs to run {event.run_id!r}, not {run_id!r}. "
                "Fix: pass each run with its own events (Journal.events(run_id))."
            )
        if event.kind is not EventKind.FORK:
            rows.append(event)
            continue
        marker = json_or_text(event.payload)
        start = marker.get("superseded_from_seq") if isinstance(marker, dict) else None
        if isinstance(start, int):  # a Journal.fork marker has none: nothing superseded
            superseded.append((start, event.seq))
    folds: dict[str, _Fold] = {}
    for event in rows:
        if any(lo <= event.seq < hi for lo, hi in superseded):
            continue
        fold = folds.get(event.key)
        if fold is None:
            folds[event.key] = _Fold(event)
        else:
            fold.apply(event)
    return {key: fold.side() for key, fold in folds.items()}


class _Fold:
    """One key's rows so far: identity from the first row, state from the latest."""

    __slots__ = ("args", "first", "last")

    def __init__(self, first: Event) -> None:
        self.first = self.last = first
        self.args: bytes | None = None
        self.apply(first)

    def apply(self, event: Event) -> None:
        self.last = event
        if event.status is EventStatus.STARTED:
            self.args = event.payload
        elif event.args is not None:
            self.args = event.args

    def side(self) -> StepSide:
        first, last = self.first, self.last
        recorded = json_or_text(self.args)
        return StepSide(
            seq=first.seq,
            name=first.name,
            kind=first.kind.value,
            status=last.status.value,
            attempts=last.attempt,
            arguments=recorded.get("args") if isinstance(recorded, dict) else recorded,
            outcome=None if last.status is EventStatus.STARTED else json_or_text(last.payload),
            fingerprint=first.fingerprint,
        )


def _same(a: Any, b: Any, *, errors: bool = False) -> bool:
    """Equal as JSON: `1`, `1.0` and `true` differ, though Python calls them equal.

    Errors are compared without their traceback: it holds absolute paths, which differ by
    checkout, while type, message and args say what failed.
    """
    if errors:
        a, b = _drop_traceback(a), _drop_traceback(b)
    return a is b or canonical_json(a) == canonical_json(b)


def _drop_traceback(error: Any) -> Any:
    if not isinstance(error, dict):
        return error
    return {k: v for k, v in error.items() if k != "traceback"}
