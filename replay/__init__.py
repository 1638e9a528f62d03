"""replay: run async workflows against a journal: durable, resumable, replayable offline.

Everything a workflow may do durably, in one place:

    step            journal a function's result (LLM call, tool, HTTP request, any await)
    run             start, resume or replay a workflow as a journaled run
    retry           retry a failed run in place, once its cause is fixed
    journaled       journal the steps of code you do not own, inside an `async with`
    now, uuid4, random, sleep
                    journaled clock, ids, randomness and durable sleep
    signal          wait for input sent to the run (a person's approval): the run may suspend
    timeout, wait_for
                    asyncio.timeout / wait_for whose expiry is journaled: replayed in place
    as_completed    asyncio.as_completed whose completion order replays as it happened live
    patched, deprecate_patch
                    branch on a code change: old runs keep the old path, new runs the new
    idempotency_key the `run_id:key` of the live step, stable across crash and retry
    replay_run      re-run a recorded run offline with its own workflow and inputs
    resume_run      resume an interrupted run (or a fork) with its own workflow and inputs
    retry_run       retry a failed run in place with its own workflow and inputs
    upgrade_check   replay the runs in flight against new code: which would diverge, where
    cancel          end a run that should not go on: it is cancelled, or its owner stops it
    submit, Worker  record a run for workers to start; a worker resumes runs that need it
"""

# Importing the package imports nothing else (PEP 562): each name loads its module when first
# used. pytest loads `replay.pytest_plugin` in every run of every project where journal-replay is
# installed, and a command-line tool may only need one corner; the engine, pydantic and the
# stores come with the first name that needs them.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journal import RunCancelled, RunConflict, RunLocked, RunNotFailed, RunNotFound

    from ._cancel import cancel
    from ._determinism import now, random, signal, sleep, uuid4
    from ._errors import (
        FrontierReached,
        JournalWriteFailed,
        NonDeterminismError,
        NotJournalable,
        OwnershipLost,
        ReplayError,
        SignalTimeout,
        StepFailed,
        Suspended,
        VersionNotAccepted,
    )
    from ._ordering import as_completed
    from ._patches import deprecate_patch, patched
    from ._rerun import replay_run, resume_run, retry_run
    from ._run import JournaledRun, MissingRunId, journaled, retry, run, run_with_summary, submit
    from ._session import RunSummary
    from ._steps import RetryPolicy, idempotency_key, step
    from ._timeouts import Timeout, timeout, wait_for
    from ._upgrade import UpgradeVerdict, upgrade_check
    from ._worker import Worker, WorkerStats
    from ._workflow import RunOutcome

_WHERE = {
    "FrontierReached": "._errors",
    "JournalWriteFailed": "._errors",
    "JournaledRun": "._run",
    "MissingRunId": "._run",
    "NonDeterminismError": "._errors",
    "NotJournalable": "._errors",
    "OwnershipLost": "._errors",
    "ReplayError": "._errors",
    "RetryPolicy": "._steps",
    "RunCancelled": "journal",
    "RunConflict": "journal",
    "RunLocked": "journal",
    "RunNotFailed": "journal",
    "RunNotFound": "journal",
    "RunOutcome": "._workflow",
    "RunSummary": "._session",
    "SignalTimeout": "._errors",
    "StepFailed": "._errors",
    "Suspended": "._errors",
    "Timeout": "._timeouts",
    "UpgradeVerdict": "._upgrade",
    "VersionNotAccepted": "._errors",
    "Worker": "._worker",
    "WorkerStats": "._worker",
    "as_completed": "._ordering",
    "cancel": "._cancel",
    "deprecate_patch": "._patches",
    "idempotency_key": "._steps",
    "journaled": "._run",
    "now": "._determinism",
    "patched": "._patches",
    "random": "._determinism",
    "replay_run": "._rerun",
    "resume_run": "._rerun",
    "retry": "._run",
    "retry_run": "._rerun",
    "run": "._run",
    "run_with_summary": "._run",
    "signal": "._determinism",
    "sleep": "._determinism",
    "step": "._steps",
    "submit": "._run",
    "timeout": "._timeouts",
    "upgrade_check": "._upgrade",
    "uuid4": "._determinism",
    "wait_for": "._timeouts",
}
"""Where each public name lives."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "FrontierReached",
    "JournalWriteFailed",
    "JournaledRun",
    "MissingRunId",
    "NonDeterminismError",
    "NotJournalable",
    "OwnershipLost",
    "ReplayError",
    "RetryPolicy",
    "RunCancelled",
    "RunConflict",
    "RunLocked",
    "RunNotFailed",
    "RunNotFound",
    "RunOutcome",
    "RunSummary",
    "SignalTimeout",
    "StepFailed",
    "Suspended",
    "Timeout",
    "UpgradeVerdict",
    "VersionNotAccepted",
    "Worker",
    "WorkerStats",
    "as_completed",
    "cancel",
    "deprecate_patch",
    "idempotency_key",
    "journaled",
    "now",
    "patched",
    "random",
    "replay_run",
    "resume_run",
    "retry",
    "retry_run",
    "run",
    "run_with_summary",
    "signal",
    "sleep",
    "step",
    "submit",
    "timeout",
    "upgrade_check",
    "uuid4",
    "wait_for",
]
