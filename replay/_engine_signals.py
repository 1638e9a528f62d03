"""Signals the engine sends itself, through the store's signal table: a child run's end to the
parent waiting for it, and a cancellation to the process that owns a run."""

from __future__ import annotations

import orjson

from journal import Journal, JournalStore, Run, RunStatus

from ._log import get_logger

log = get_logger("replay")

CANCEL_SIGNAL = "replay.cancel"
"""Holds a cancellation request for a run's live owner: `{"reason": ...}`."""


def child_signal(child_id: str) -> str:
    """The signal a parent run waits for while its child run `child_id` is not finished."""
    return f"replay.child:{child_id}"


def wake_parent(journal: Journal, run: Run) -> None:
    """A child run finished: a parent left waiting for it becomes due."""
    parent_id = run.parent_run_id
    if parent_id is None or run.fork_seq is not None:
        return
    store = journal.store
    parent = store.get_run(parent_id)
    name = child_signal(run.run_id)
    if parent is not None and parent.status is RunStatus.WAITING and parent.waiting_for == name:
        store.send_signal(parent_id, name, b"null")
        log.info("run.parent_woken", run_id=run.run_id, parent_run_id=parent_id)


def cancel_requested(store: JournalStore, run_id: str, spent: int = 0) -> str | None:
    """The reason given when the run's cancellation was asked for, or None if it was not;
    the first `spent` requests do not count (made before the run failed and was retried)."""
    payload = store.read_signal(run_id, CANCEL_SIGNAL, spent + 1)
    if payload is None:
        return None
    try:
        reason = orjson.loads(payload).get("reason", "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""  # edited by hand: cancelled all the same
    return reason if isinstance(reason, str) else str(reason)


def cancel_requests(store: JournalStore, run_id: str) -> int:
    """How many times the run's cancellation has been asked for."""
    count = 0
    while store.read_signal(run_id, CANCEL_SIGNAL, count + 1) is not None:
        count += 1
    return count
