"""Retrying a failed run in place: which of its recorded steps run again, and the marker.

What runs again:

* the step whose failure ended the run: the failed step whose recorded error is the run's
  error, or its cause, or one of its group (the last such step, if several failed alike);
* the tail recorded after the run's last completed step: siblings cancelled as the run
  ended, attempts cut short. Nothing recorded after them depends on them.

The retry appends a marker that supersedes those steps' rows (as a divergence fork does) and
holds the run's recorded failure. Steps that completed, and failures the workflow caught and
went on from, stay served: rows of other steps recorded after the first reopened row are
carried past the marker, so that each reopened step starts afresh (attempt 1, its whole retry
policy) and everything else is kept as it was, in its order.

The journal keeps all of it: the failed attempts, the marker with the failure, the new
attempts after it. The run's chain goes on through the marker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from journal import Event, EventKind, EventStatus, Run
from journal._chain import Chain
from journal._events import KIND_BY_VALUE, STATUS_BY_VALUE, EventRow, trusted_event

from ._recorded import RETRY_MARKER, fold_rows


@dataclass(frozen=True)
class Reopening:
    """What a retry appends: the marker, then the rows it carries past it."""

    events: list[Event]
    keys: tuple[str, ...]
    """The step keys that run again."""
    cut: int
    """The first superseded seq."""


def reopening(run: Run, rows: Sequence[EventRow], chain: Chain | None, head: str) -> Reopening:
    """The events that reopen the failed `run` whose rows are `rows`; stamped with `chain`
    from `head` (the hash of its last event, or its genesis)."""
    kept, _, _ = fold_rows(rows)
    last_completed = max(
        (index for index, row in enumerate(kept) if row[5] == "completed"), default=-1
    )
    keys = {row[1] for row in kept[last_completed + 1 :]} | _failed_with_the_run(run, kept)
    next_seq = rows[-1][0] + 1 if rows else 1
    cut = min((row[0] for row in kept if row[1] in keys), default=next_seq)
    carried = [row for row in kept if row[0] >= cut and row[1] not in keys]
    failure = orjson.loads(run.error) if run.error else None
    now = datetime.now(UTC)
    marker = orjson.dumps(
        {
            "superseded_from_seq": cut,
            "reason": "retry",
            "keys": sorted(keys),
            "failure": failure,
            "failed_at": None if run.finished_at is None else run.finished_at.isoformat(),
        }
    )
    events = [
        trusted_event(
            run.run_id,
            next_seq,
            f"retry@{next_seq}",
            EventKind.FORK,
            RETRY_MARKER,
            "",
            EventStatus.COMPLETED,
            0,
            marker,
            now,
        )
    ]
    for offset, (_, key, kind, name, fp, status, attempt, payload, args) in enumerate(
        carried, start=1
    ):
        events.append(
            trusted_event(
                run.run_id,
                next_seq + offset,
                key,
                KIND_BY_VALUE[kind],
                name,
                fp,
                STATUS_BY_VALUE[status],
                attempt,
                payload,
                now,
                args,
            )
        )
    if chain is not None:
        chain.stamp(head, events)
    return Reopening(events, tuple(sorted(keys)), cut)


def _failed_with_the_run(run: Run, kept: Sequence[EventRow]) -> set[str]:
    """The keys of the failed steps whose error the run failed with (itself, as a cause, or in
    an exception group): the last step to fail with each such error."""
    wanted = set(_signatures(_json(run.error)))
    last: dict[tuple[str, str, bytes], str] = {}
    for row in kept:
        if row[5] == "failed":
            found = _signature(_json(row[7]))
            if found is not None and found in wanted:
                last[found] = row[1]
    return set(last.values())


def _json(payload: bytes | None) -> Any:
    try:
        return orjson.loads(payload or b"null")
    except orjson.JSONDecodeError:
        return None  # edited by hand: verify says where


def _signature(error: Any) -> tuple[str, str, bytes] | None:
    if not isinstance(error, dict):
        return None
    return (str(error.get("type")), str(error.get("message")), orjson.dumps(error.get("args")))


def _signatures(error: Any, depth: int = 0) -> Iterator[tuple[str, str, bytes]]:
    """The error's signature, its causes' and its group members', recursively."""
    found = _signature(error)
    if found is None or depth > 50:
        return
    yield found
    yield from _signatures(error.get("cause"), depth + 1)
    for member in error.get("group") or []:
        yield from _signatures(member, depth + 1)
