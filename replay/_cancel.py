"""Ending a run that should not go on: `replay.cancel`, `journal cancel RUN`.

A run nobody owns (waiting, interrupted, submitted and never started) is marked `cancelled`
at once: claimed, then finished with its reason as the recorded error, sealed like any other
outcome. A run a live process owns cannot be written by anyone else; the request is kept for
the owner instead (as the engine signal `replay.cancel`), which sees it at its next heartbeat
and stops the run: the workflow gets `CancelledError` where it waits, every step it calls
after that raises `CancelledError` again, and the run is finished `cancelled`. A process that
claims a run with a request pending (the owner died first) finishes it cancelled at once.

Cancelled is final: calling the run again raises `RunCancelled`, workers never pick it up,
and a replay of it stops with `RunCancelled` where the cancellation reached it live. Child runs
that have not finished are cancelled with it. A parent waiting for a child that is cancelled
goes on, and gets `RunCancelled` from its `run(...)` call, as an exception it may handle.
"""

from __future__ import annotations

import contextlib

import orjson

from journal import (
    Journal,
    RecordedError,
    Run,
    RunCancelled,
    RunFinished,
    RunLocked,
    RunStatus,
)
from journal.stores._ownership import new_owner

from ._engine_signals import CANCEL_SIGNAL, wake_parent
from ._log import get_logger

log = get_logger("replay")

_FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def cancel(journal: Journal, run_id: str, reason: str = "") -> Run:
    """Cancel the run `run_id`; the run as it stands now.

    Unowned (waiting, interrupted, never started): it is `cancelled` when this returns.
    Owned by a live process: that process is asked to stop it, and does within about two
    seconds: the returned run is still `running`; `journal.run(run_id)` shows when it is
    `cancelled`. Its child runs that have not finished are cancelled the same way.
    `RunFinished` if it had already finished, `RunNotFound` if there is no such run.
    """
    run = journal.run(run_id)
    if run.status in _FINISHED:
        raise RunFinished(run_id, run.status.value)
    outcome = _cancel_one(journal, run, reason)
    for child in _unfinished_children(journal, run_id):
        with contextlib.suppress(RunFinished):  # it finished meanwhile
            cancel(journal, child.run_id, f"its parent run {run_id!r} was cancelled: {reason}")
    return outcome


def _unfinished_children(journal: Journal, run_id: str) -> list[Run]:
    """Child runs of `run_id` (not forks) that have not finished: they go with it."""
    unfinished = [
        *journal.store.list_runs(status=RunStatus.RUNNING),
        *journal.store.list_runs(status=RunStatus.WAITING),
    ]
    return [r for r in unfinished if r.parent_run_id == run_id and r.fork_seq is None]


def _cancel_one(journal: Journal, run: Run, reason: str) -> Run:
    run_id = run.run_id
    if run.chain is not None:
        journal.chain.require_same(run)
    for _ in range(3):
        owner = new_owner(60.0)
        try:
            claimed = journal.store.claim(run_id, owner, resuming=False)
        except RunLocked as locked:
            journal.store.send_signal(run_id, CANCEL_SIGNAL, orjson.dumps({"reason": reason}))
            log.info(
                "run.cancel_requested",
                run_id=run_id,
                owner_pid=locked.owner.pid,
                owner_host=locked.owner.host,
            )
            now = journal.run(run_id)
            if now.owner is not None or now.status in _FINISHED:
                return now
            continue  # its owner let it go (it suspended) before seeing the request
        if claimed.status in _FINISHED:  # finished between the look and the claim
            journal.store.release(run_id, owner.token)
            raise RunFinished(run_id, claimed.status.value)
        return finish_cancelled(journal, claimed, owner.token, reason)
    return journal.run(run_id)


def finish_cancelled(journal: Journal, run: Run, token: str, reason: str) -> Run:
    """Finish the run `token` owns as `cancelled`, with `reason` as its recorded error."""
    store = journal.store
    error = RecordedError.from_exception(RunCancelled(run.run_id, reason)).encode()
    seal = None
    if run.chain is not None:
        rows = store.read_rows(run.run_id)
        last = (store.last_hash(run.run_id) if rows else None) or journal.chain.genesis(run)
        last_seq = rows[-1][0] if rows else 0
        seal = journal.chain.seal(last_seq, last, RunStatus.CANCELLED, None, error)
    cancelled = store.finish(run.run_id, token, RunStatus.CANCELLED, error=error, seal=seal)
    log.info("run.cancelled", run_id=run.run_id, reason=reason)
    wake_parent(journal, run)
    return cancelled
