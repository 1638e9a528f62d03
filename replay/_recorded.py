"""What the journal holds for a run, folded per step key: the served-vs-live decision reads it.

Fork markers are not steps, and the rows a divergence fork (or a stopped `journaled` block)
superseded do not count. A key with a single row (most keys: a step that never waited is one
row) is kept as the row itself; serving it then costs no object at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from journal import EventKind, EventStatus
from journal._events import KIND_BY_VALUE, STATUS_BY_VALUE, EventRow

_FINISHED = frozenset({"completed", "failed", "cancelled"})
RETRY_MARKER = "replay.retry"
"""The name of the marker a retry appends: the failed run's tail it reopens is superseded."""


class Recorded:
    """What the journal holds for one step key, folded from its rows."""

    __slots__ = (
        "args_payload",
        "attempt",
        "fingerprint",
        "first_seq",
        "key",
        "kind",
        "name",
        "payload",
        "rows",
        "status",
    )

    def __init__(self, first: EventRow) -> None:
        self.first_seq, self.key, kind, self.name, self.fingerprint = first[:5]
        self.kind = KIND_BY_VALUE[kind]
        self.args_payload: bytes | None = None
        self.payload: bytes | None = None
        self.rows: list[EventRow] = []
        """The key's rows, in order."""
        self.apply(first)

    def apply(self, row: EventRow) -> None:
        """Fold the key's next row in: the latest status and attempt, arguments and value."""
        self.rows.append(row)
        self.status = STATUS_BY_VALUE[row[5]]
        self.attempt = row[6]
        if self.status is EventStatus.STARTED:
            self.args_payload = row[7]
        else:
            self.payload = row[7]
            if row[8] is not None:
                self.args_payload = row[8]

    @property
    def finished(self) -> bool:
        return self.status.value in _FINISHED


def as_recorded(entry: Recorded | EventRow) -> Recorded:
    """The full view of a folded entry (a key with one row is kept as that row)."""
    return Recorded(entry) if isinstance(entry, tuple) else entry


def fold_rows(
    rows: Sequence[EventRow],
) -> tuple[Sequence[EventRow], dict[str, Recorded | EventRow], frozenset[str]]:
    """Rows -> (the rows that count, per-key state, keys a retry reopened): without fork
    markers and the ranges a divergence, a stop or a retry superseded.

    A key with a single row (most keys: a step that never waited is one row) is kept as the
    row itself; serving it then costs no object at all. Keys with more rows become `Recorded`.
    """
    fork = EventKind.FORK.value
    markers = [
        (seq, name, payload) for seq, _, kind, name, _, _, _, payload, _ in rows if kind == fork
    ]
    retried: frozenset[str] = frozenset()
    if markers:
        superseded = [
            (start, seq)
            for seq, _, payload in markers
            if (start := orjson.loads(payload or b"{}").get("superseded_from_seq")) is not None
        ]
        if any(name == RETRY_MARKER for _, name, _ in markers):
            retries = [
                (orjson.loads(payload or b"{}").get("superseded_from_seq", seq), seq)
                for seq, name, payload in markers
                if name == RETRY_MARKER
            ]
            retried = frozenset(
                row[1]
                for row in rows
                if row[2] != fork and any(lo <= row[0] < hi for lo, hi in retries)
            )
        rows = [
            row
            for row in rows
            if row[2] != fork and not any(lo <= row[0] < hi for lo, hi in superseded)
        ]
    recorded: dict[str, Recorded | EventRow] = {}
    get = recorded.get
    for row in rows:
        key = row[1]
        entry = get(key)
        if entry is None:
            recorded[key] = row
        elif isinstance(entry, tuple):
            folded = recorded[key] = Recorded(entry)
            folded.apply(row)
        else:
            entry.apply(row)
    return rows, recorded, retried
