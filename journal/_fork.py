"""Forking a run: a new run holding a prefix of another's events, optionally with a result
changed ("what if the model had answered X"), that resumes live from the fork point."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ._chain import Chain
from ._codec import canonical_json
from ._errors import ForkRefused, PayloadTooLarge, RunConflict
from ._events import Event, EventKind, EventStatus, Run, RunStatus, replaced, trusted_event
from ._redact import Redactor
from ._verify import verify_run
from .stores import JournalStore
from .stores._ownership import new_owner

FORK_KEY = "fork"
"""The key of the marker event a fork appends after the copied prefix."""


def fork_run(
    store: JournalStore,
    chain: Chain,
    redactor: Redactor | None,
    max_payload: int,
    run_id: str,
    *,
    at: int | None,
    new_run_id: str | None,
    overrides: Mapping[str, Any],
) -> Run:
    """Make the fork; see `Journal.fork`."""
    parent = store.get_run(run_id)
    if parent is None:
        raise ForkRefused(f"No run {run_id!r} to fork.")
    events = store.read_events(run_id)
    last = events[-1].seq if events else 0
    at = _fork_point(run_id, events, at, overrides)
    if not 1 <= at <= last + 1:
        raise ForkRefused(
            f"Cannot fork run {run_id!r} at seq {at}: it has events 1 to {last}. Fix: pick "
            f"--at between 1 (nothing copied) and {last + 1} (everything copied)."
        )
    verdict = verify_run(chain, parent, events)
    if verdict.verdict == "broken" and verdict.broken is not None:
        where = verdict.broken.seq
        if where is None or where < at:
            raise ForkRefused(
                f"Run {run_id!r} does not verify ({verdict}); a fork would copy edited events "
                "as if they were recorded. Fix: investigate with `journal verify`."
            )
    new_run_id = new_run_id or f"{run_id}~fork-{uuid.uuid4().hex[:8]}"
    if store.get_run(new_run_id) is not None:
        raise RunConflict(new_run_id, "run id", "an existing run", "a new fork")
    prefix = [event for event in events if event.seq < at]
    replaced = _apply_overrides(run_id, prefix, overrides, redactor, max_payload)

    now = datetime.now(UTC)
    owner = new_owner(60)  # held only while the copies are appended
    fork = Run(
        run_id=new_run_id,
        workflow=parent.workflow,
        inputs=parent.inputs,
        inputs_fingerprint=parent.inputs_fingerprint,
        status=RunStatus.RUNNING,
        parent_run_id=run_id,
        fork_seq=at,
        created_at=now,
        updated_at=now,
        chain=chain.scheme,
        owner=owner,
    )
    store.create_run(fork)
    copies = [_copy(event, new_run_id, replaced.get(event.seq)) for event in prefix]
    marker = orjson.dumps(
        {
            "parent_run_id": run_id,
            "fork_seq": at,
            "parent_seal": parent.seal,
            "parent_head": events[at - 2].hash if at > 1 else None,
            "overrides": sorted(overrides),
        }
    )
    copies.append(
        trusted_event(
            new_run_id,
            at,
            FORK_KEY,
            EventKind.FORK,
            "journal.fork",
            "",
            EventStatus.COMPLETED,
            0,
            marker,
            now,
        )
    )
    chained, _ = chain.extend(chain.genesis(fork), copies)
    try:
        store.append(new_run_id, owner.token, chained)
    except BaseException:
        store.release(new_run_id, owner.token)
        raise
    # The head takes the fork as made: its copied events are covered before it ever resumes.
    store.release(new_run_id, owner.token, head="forked")
    stored = store.get_run(new_run_id)
    assert stored is not None
    return stored


def _fork_point(
    run_id: str, events: list[Event], at: int | None, overrides: Mapping[str, Any]
) -> int:
    """`at`, or by default the seq just after the last overridden step (or after everything)."""
    if at is not None:
        return at
    if not overrides:
        return (events[-1].seq if events else 0) + 1
    ends = []
    for key in overrides:
        rows = [event.seq for event in events if event.key == key]
        if not rows:
            raise ForkRefused(_unknown_step(run_id, key, events))
        ends.append(max(rows))
    return max(ends) + 1


def _apply_overrides(
    run_id: str,
    prefix: list[Event],
    overrides: Mapping[str, Any],
    redactor: Redactor | None,
    max_payload: int,
) -> dict[int, bytes]:
    """seq -> new payload for the finishing row of each overridden step."""
    by_seq: dict[int, bytes] = {}
    for key, value in overrides.items():
        rows = [event for event in prefix if event.key == key]
        if not rows:
            raise ForkRefused(_unknown_step(run_id, key, prefix))
        final = rows[-1]
        if final.status is not EventStatus.COMPLETED:
            raise ForkRefused(
                f"Step {key} of run {run_id!r} ends in a {final.status.value} row at seq "
                f"{final.seq} within the fork; only a completed result can be overridden. "
                "Fix: fork at an earlier --at, or override a completed step."
            )
        payload = canonical_json(value)
        if redactor is not None:
            payload = redactor(payload)
        if len(payload) > max_payload:
            raise PayloadTooLarge(f"the override for step {key}", len(payload), max_payload)
        by_seq[final.seq] = payload
    return by_seq


def _unknown_step(run_id: str, key: str, events: list[Event]) -> str:
    keys = sorted({event.key for event in events if event.kind is not EventKind.FORK})
    shown = ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
    return (
        f"Run {run_id!r} has no step {key!r} before the fork point. Its steps: {shown}. "
        "Fix: name a step key from `journal show`."
    )


def _copy(event: Event, run_id: str, payload: bytes | None) -> Event:
    return replaced(
        event,
        run_id=run_id,
        payload=event.payload if payload is None else payload,
        prev_hash=None,
        hash=None,
    )
