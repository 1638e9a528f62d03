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
