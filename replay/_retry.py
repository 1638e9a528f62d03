"""Retrying a failed run in place: which of its recorded steps run again, and the marker.

When a run fails, its recorded error also names the steps it came from (`failure_record`):
`raised`, the steps whose failure the run's error is, or has as its cause or context, or holds
in its exception group; `cut_short`, the steps cancelled because the workflow ended while they
ran. A retry reopens those steps. It appends a marker that holds the recorded failure and
supersedes, from the first row of a reopened step (the cut) on:

* the reopened steps' rows;
* the rows that may have come about because of them (`_depends`): later in the same task,
  in a task begun inside it after it began, in an enclosing task after it ended, in a task
  begun after it ended, or a cancellation after it ended.

Rows of other steps from the cut on (concurrent tasks begun before the step ended: a
`gather`'s other branches) are carried past the marker, in their order, and stay served. So each
reopened step starts afresh (attempt 1, its whole retry policy), and what follows it runs live
again; what completed before it, and a failure the workflow caught and went on from, is
served as it was. An error that names no step, raised right after a step failed (the run's
last row), reopens that step: a library wrapped its failure without a link to it. A run that
failed before errors named their steps is reopened by the error's content (the failed steps
it matches) and its tail after the last completed step.

The journal keeps all of it: the failed attempts, the marker with the failure, the new
attempts after it. The run's chain goes on through the marker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from journal import Event, EventKind, EventStatus, RecordedError, Run
from journal._chain import Chain
from journal._events import KIND_BY_VALUE, STATUS_BY_VALUE, EventRow, trusted_event

from ._recorded import RETRY_MARKER, fold_rows

if TYPE_CHECKING:
    from ._session import Session


@dataclass(frozen=True)
class Reopening:
    """What a retry appends: the marker, then the rows it carries past it."""

    events: list[Event]
    keys: tuple[str, ...]
    """The step keys that run again."""
    cut: int
    """The first superseded seq."""


def reopening(
    run: Run, rows: Sequence[EventRow], chain: Chain | None, head: str, *, cancels_spent: int = 0
) -> Reopening:
    """The events that reopen the failed `run` whose rows are `rows`; stamped with `chain`
    from `head` (the hash of its last event, or its genesis). `cancels_spent`: how many
    requests to cancel the run were made before it failed (its retry does not honour them)."""
    kept, _, _ = fold_rows(rows)
    failure = _json(run.error)
    keys = _named_steps(failure, kept)
    if keys is None:  # recorded before errors named their steps
        last_completed = max(
            (index for index, row in enumerate(kept) if row[5] == "completed"), default=-1
        )
        keys = {row[1] for row in kept[last_completed + 1 :]} | _failed_with_the_run(run, kept)
    elif not keys and kept and kept[-1][5] == "failed":
        # Named none, yet the last thing the run recorded is a step's failure: what failed the
        # run came of it, raised by code that dropped the link (a library wrapping a transport
        # error in its own exception, raised outside its `except`).
        keys = {kept[-1][1]}
    next_seq = rows[-1][0] + 1 if rows else 1
    cut = min((row[0] for row in kept if row[1] in keys), default=next_seq)
    spans, began = _spans(keys, kept), _first_rows(kept)
    carried = [
        row
        for row in kept
        if row[0] >= cut and row[1] not in keys and not _depends(row, spans, began)
    ]
    now = datetime.now(UTC)
    marker = orjson.dumps(
        {
            "superseded_from_seq": cut,
            "reason": "retry",
            "keys": sorted(keys),
            "failure": failure,
            "failed_at": None if run.finished_at is None else run.finished_at.isoformat(),
            "cancels_spent": cancels_spent,
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


def cancels_spent(rows: Sequence[EventRow]) -> int:
    """How many cancel requests the run's latest retry found already made (and ignores)."""
    for row in reversed(rows):
        if row[2] == "fork" and row[3] == RETRY_MARKER:
            spent = _json(row[7])
            value = spent.get("cancels_spent") if isinstance(spent, dict) else None
            return value if isinstance(value, int) else 0
    return 0


def failure_record(session: Session, failure: BaseException) -> bytes:
    """The run's error as it is recorded: the exception, and the steps it came from."""
    record = orjson.loads(RecordedError.from_exception(failure).encode())
    record["steps"] = {
        "raised": sorted(_raising_steps(session, failure)),
        "cut_short": sorted(set(session.cut_short)),
    }
    return orjson.dumps(record)


def _raising_steps(session: Session, failure: BaseException) -> set[str]:
    """Keys of the step failures `failure` is, or holds as cause, context or group member."""
    found: set[str] = set()
    seen: set[int] = set()
    pending: list[BaseException] = [failure]
    while pending and len(seen) < 1000:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        noted = session.raised.get(id(error))
        if noted is not None and noted[0] is error:
            found.add(noted[1])
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
    return found


def _named_steps(failure: Any, kept: Sequence[EventRow]) -> set[str] | None:
    """The steps the recorded failure names (None if it names none: an older record)."""
    steps = failure.get("steps") if isinstance(failure, dict) else None
    if not isinstance(steps, dict):
        return None
    named = {
        key
        for part in ("raised", "cut_short")
        for key in steps.get(part) or []
        if isinstance(key, str)
    }
    return named & {row[1] for row in kept}


def _depends(row: EventRow, spans: dict[str, tuple[int, int]], began: dict[str, int]) -> bool:
    """Whether `row` may have come about because of a reopened step (so it must go, and run
    again if the fixed code asks for it): it was recorded in the step's task after the step
    began, in a task begun inside it after it began, in an enclosing task after the step
    ended (its failure reached there), in a task begun after the step ended (made by
    whatever handled the failure), or a cancellation after the step ended (a TaskGroup
    cancelling the rest). Rows of concurrent tasks begun before the step ended, recorded
    before, during or after it, are its siblings' own work: they stay."""
    task, seq = _task(row[1]), row[0]
    for key, (first, last) in spans.items():
        if row[5] == "cancelled" and seq > last:
            return True  # a TaskGroup cancelling its other tasks when the step failed
        step_task = _task(key)
        if task == step_task and seq > first:
            return True
        if task.startswith(step_task + "/") and began[task] > first:
            return True
        if step_task.startswith(task + "/") and seq > last:
            return True
        if began[task] > last:
            return True
    return False


def _spans(keys: set[str], kept: Sequence[EventRow]) -> dict[str, tuple[int, int]]:
    """Each reopened key's first and last seq."""
    spans: dict[str, tuple[int, int]] = {}
    for row in kept:
        if row[1] in keys:
            first, _ = spans.get(row[1], (row[0], row[0]))
            spans[row[1]] = (first, row[0])
    return spans


def _first_rows(kept: Sequence[EventRow]) -> dict[str, int]:
    """Each task's first seq."""
    began: dict[str, int] = {}
    for row in kept:
        began.setdefault(_task(row[1]), row[0])
    return began


def _task(key: str) -> str:
    return key.rpartition(":")[0]


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
