"""Running a workflow against a journal: start, resume after a crash, or replay offline."""

from __future__ import annotations

import asyncio
import sys
import typing
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from journal import (
    Journal,
    Owner,
    PayloadTooLarge,
    Run,
    RunCancelled,
    RunConflict,
    RunNotFailed,
    RunNotFound,
    RunStatus,
    ValueNotJournalable,
    canonical_json,
    fingerprint,
)
from journal.stores._ownership import give_up, new_owner

from ._blocks import block_call, holder_here, refuse_other_run
from ._context import current_scope, engine_task
from ._errors import NotJournalable
from ._log import get_logger
from ._nested import parent_run, run_child
from ._retry import failure_record
from ._session import Mode, OnDivergence, RunSummary, Session, rebuild_error
from ._sitting import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_SUSPEND_AFTER,
    EndedMeanwhile,
    Sitting,
    debug_options,
    end_stopped,
    engine_signal,
    outcome_of,
    swallowed_stop,
    until_done,
    workflow_body,
)
from ._versions import configured_version, module_version, version_of
from ._workflow import RunOutcome, WorkflowSpec, spec_for

R = TypeVar("R")
log = get_logger("replay")


def _same_workflow(recorded: str | None, now: str) -> bool:
    """Equal import paths; a script's `__main__` matches the same function imported by name."""
    if recorded == now:
        return True
    if recorded is None:
        return False
    recorded_module, _, recorded_name = recorded.partition(":")
    now_module, _, now_name = now.partition(":")
    return recorded_name == now_name and "__main__" in (recorded_module, now_module)


def _check_mode(mode: str, on_divergence: str) -> None:
    if mode not in ("resume", "replay"):
        raise ValueError(
            f"mode must be 'resume' (serve what is recorded, then continue live) or 'replay' "
            f"(recorded results only, never live), not {mode!r}"
        )
    if on_divergence not in ("raise", "fork"):
        raise ValueError(f"on_divergence must be 'raise' or 'fork', not {on_divergence!r}")


def _log_summary(summary: RunSummary) -> None:
    log.info(
        "run.sitting_finished",
        run_id=summary.run_id,
        mode=summary.mode,
        served=summary.served,
        executed=summary.executed,
        reexecuted=summary.reexecuted,
        unconsumed=len(summary.unconsumed),
    )
    if summary.unconsumed:
        log.warning(
            "run.unconsumed_events",
            run_id=summary.run_id,
            keys=list(summary.unconsumed[:20]),
            count=len(summary.unconsumed),
        )


def _inputs(
    journal: Journal,
    spec: WorkflowSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run_id: str,
) -> tuple[bytes, str]:
    """The run's recorded inputs (secrets redacted, size checked) and their fingerprint."""
    try:
        return _encoded_inputs(journal, spec, args, kwargs)
    except PayloadTooLarge:
        raise
    except ValueNotJournalable as exc:
        raise NotJournalable(run_id, "inputs", spec.path, f"the workflow's inputs: {exc}") from None


def _run_id(run_id: str | None, *, resumable: bool = False) -> str:
    """`run_id`, checked; a new random one if None (and, for a run that is resumed by calling
    again with its id, a warning that it cannot be: once per call site, as warnings are, so
    its text names no id: Python shows a warning again when its text differs)."""
    if run_id is None:
        new = uuid.uuid4().hex
        if resumable:
            warnings.warn(
                "this run was started without a run_id, so it got a random one (`journal "
                "runs` lists it): after a crash, calling again starts a new run instead of "
                "resuming this one. "
                "Fix: pass run_id=... (a name for this piece of work, e.g. the ticket it "
                "handles).",
                MissingRunId,
                stacklevel=_outside_replay(),
            )
        return new
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(
            f"run_id must be a non-empty string, not {run_id!r}: an empty id would start a "
            "new run on every call, which could never be resumed. Fix: pass a stable id "
            "(e.g. the ticket or job it works on), or None for a new random one."
        )
    try:
        run_id.encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"run_id {run_id!r} holds lone surrogates, which are not valid UTF-8 and cannot be "
            "stored. Fix: decode it with errors='replace', or use another id."
        ) from None
    return run_id


class MissingRunId(UserWarning):
    """A run that can only be resumed by its id was started without one."""


def _outside_replay() -> int:
    """The `stacklevel` of the first frame outside this package and asyncio's machinery: the
    user's call (`asyncio.run(run(...))` or an `await run(...)` in their code)."""
    skipped = (str(Path(__file__).parent), str(Path(asyncio.__file__).parent))
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


def _encoded_inputs(
    journal: Journal, spec: WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, str]:
    redactor = journal.redactor()
    if redactor is None:
        inputs = canonical_json({"args": list(args), "kwargs": kwargs})
    else:
        # Positional inputs are redacted by their parameter's name, like step arguments.
        named = [
            redactor.argument(name, value)
            for name, value in zip(spec.positional, args, strict=False)
        ]
        shown = named + list(args[len(named) :])
        inputs = redactor(canonical_json({"args": shown, "kwargs": kwargs}))
    if len(inputs) > journal.max_payload_bytes:
        raise PayloadTooLarge("the workflow's inputs", len(inputs), journal.max_payload_bytes)
    return inputs, fingerprint("inputs", inputs)


def _new_run(
    journal: Journal,
    spec: WorkflowSpec,
    run_id: str,
    inputs: bytes,
    inputs_fp: str,
    version: str | None,
    owner: Owner | None = None,
) -> Run:
    """A run of `spec` to create now, owned by `owner` from its first moment if given."""
    now = datetime.now(UTC)
    return Run(
        run_id=run_id,
        workflow=spec.path,
        inputs=inputs,
        inputs_fingerprint=inputs_fp,
        status=RunStatus.RUNNING,
        owner=owner,
        created_at=now,
        updated_at=now,
        chain=journal.chain.scheme,
        parent_run_id=parent_run.get(),
        version=version,
    )


def _create_owned(
    journal: Journal, lease_seconds: float, new_run: Callable[[Owner], Run]
) -> tuple[Run, Owner | None]:
    """The run as stored, created with a fresh owner (one transaction where a creation and a
    claim took two); that owner if the run is ours, None if another process created it first.

    A creation that raised may still have committed (a connection lost after its COMMIT left):
    its owner, which nobody here holds, is given up, so that running the run again from this
    process takes it at once rather than waiting a whole lease for itself."""
    owner = new_owner(lease_seconds)
    try:
        stored = journal.store.create_run(new_run(owner))
    except BaseException:
        give_up(owner.token)
        raise
    ours = stored.owner is not None and stored.owner.token == owner.token
    return stored, owner if ours else None


def _check_same(existing: Run, spec: WorkflowSpec, inputs: bytes, inputs_fp: str) -> None:
    """A run id names one workflow with one set of inputs: `RunConflict` otherwise."""
    if not _same_workflow(existing.workflow, spec.path):
        raise RunConflict(existing.run_id, "workflow", repr(existing.workflow), repr(spec.path))
    if existing.inputs_fingerprint != inputs_fp:
        raise RunConflict(
            existing.run_id, "inputs", (existing.inputs or b"").decode(), inputs.decode()
        )


def submit(
    workflow: Callable[..., Awaitable[Any]],
    *args: Any,
    journal: Journal,
    run_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Record a run for a worker to start (`journal worker`, `replay.Worker`); its run id.

    Nothing runs here: the run is `running` with no owner, which is what a worker looks for.
    Submitting the same run id again with the same workflow and inputs changes nothing.
    """
    spec = spec_for(workflow)
    if spec.path.startswith("__main__:"):
        raise ValueError(
            f"{spec.path} is defined in a script, which a worker cannot import. Fix: define "
            "the workflow in a module and import it from there."
        )
    call_kwargs = dict(kwargs or {})
    run_id = _run_id(run_id)
    inputs, inputs_fp = _inputs(journal, spec, args, call_kwargs, run_id)
    existing = journal.store.get_run(run_id)
    if existing is None:
        existing = journal.store.create_run(
            _new_run(journal, spec, run_id, inputs, inputs_fp, version_of(workflow))
        )
    _check_same(existing, spec, inputs, inputs_fp)
    log.info("run.submitted", run_id=run_id, workflow=spec.path)
    return run_id


async def run_with_summary(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    journal: Journal,
    run_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    mode: Mode = "resume",
    on_divergence: OnDivergence = "raise",
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
) -> RunOutcome[R]:
    """Like `run`, but also returns the sitting's `RunSummary` (served / executed / ...)."""
    return await start_run(
        workflow,
        *args,
        journal=journal,
        run_id=run_id,
        kwargs=kwargs,
        mode=mode,
        on_divergence=on_divergence,
        lease_seconds=lease_seconds,
        suspend_after=suspend_after,
    )


Retry = Literal["failed", "if failed"] | None
"""`failed`: the run must have failed, and is reopened (`retry`); `if failed`: reopened if it
failed, else resumed (a child run whose failure its parent's retry reopened)."""


async def start_run(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    journal: Journal,
    run_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    mode: Mode = "resume",
    on_divergence: OnDivergence = "raise",
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
    retry: Retry = None,
    known: Run | None = None,
) -> RunOutcome[R]:
    """`run_with_summary`, and the engine's own ways in: a retry, a child run, a resume of a
    run just read (`known`, not read again)."""
    _check_mode(mode, on_divergence)
    spec = spec_for(workflow)
    call_kwargs = dict(kwargs or {})
    parent = current_scope.get()
    if parent is not None:  # awaited inside a running workflow: a child run
        options: dict[str, Any] = {
            "mode": parent.session.mode,
            "on_divergence": on_divergence,
            "lease_seconds": lease_seconds,
            "suspend_after": suspend_after,
        }
        return await run_child(
            parent,
            workflow,
            spec,
            start_run,
            args,
            call_kwargs,
            journal=journal,
            run_id=run_id,
            options=options,
        )
    run_id = _run_id(run_id, resumable=True)
    refuse_other_run(run_id)
    inputs, inputs_fp = _inputs(journal, spec, args, call_kwargs, run_id)
    store = journal.store

    existing = known if known is not None and known.run_id == run_id else store.get_run(run_id)
    created: Owner | None = None
    if existing is None:
        if mode == "replay" or retry == "failed":
            raise RunNotFound(
                run_id,
                hint="Replay needs a recorded run; start it with mode='resume'."
                if mode == "replay"
                else "Only a recorded run that failed can be retried; run() starts a new one.",
            )
        version = version_of(workflow)
        existing, created = _create_owned(
            journal,
            lease_seconds,
            lambda owner: _new_run(journal, spec, run_id, inputs, inputs_fp, version, owner),
        )
        resuming = False
    else:
        resuming = True
    debugging = debug_options.get()
    chosen = mode == "replay" and debugging is not None and debugging.other_workflow
    if not chosen:
        _check_same(existing, spec, inputs, inputs_fp)
    if retry == "failed" and existing.status is not RunStatus.FAILED:
        raise RunNotFailed(run_id, existing.status.value)
    retrying = retry is not None and existing.status is RunStatus.FAILED

    if mode == "resume" and not retrying and existing.status in _ENDED:
        return _already_finished(spec, existing, mode)

    sitting = Sitting(journal, existing, mode, on_divergence, lease_seconds, resuming)
    sitting.created_owner = created
    sitting.retry = retrying
    sitting.suspend_after = suspend_after
    try:
        return await _sit(sitting, spec, workflow, args, call_kwargs)
    except EndedMeanwhile as ended:  # `existing` (a look's) was stale: it ended before the claim
        return _already_finished(spec, ended.run, mode)


def _already_finished(spec: WorkflowSpec, existing: Run, mode: Mode) -> RunOutcome[Any]:
    summary = RunSummary(run_id=existing.run_id, mode=mode, already_finished=True)
    log.info("run.already_finished", run_id=existing.run_id, status=existing.status.value)
    if existing.status is RunStatus.COMPLETED:
        return RunOutcome(spec.codec.decode(existing.result or b"null"), summary)
    raise recorded_outcome_error(existing)


async def _sit(
    sitting: Sitting,
    spec: WorkflowSpec,
    workflow: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    call_kwargs: dict[str, Any],
) -> RunOutcome[R]:
    existing, run_id = sitting.run, sitting.run_id
    async with sitting.open() as session:
        if session.redact is not None:  # the inputs' secrets, by parameter name
            named = dict(zip(spec.positional, args, strict=False))
            session.secrets.update(session.redact.secrets_in({**named, **call_kwargs}))
        assert sitting.root_scope is not None
        coro = typing.cast(Coroutine[Any, Any, Any], workflow(*args, **call_kwargs))
        task = engine_task(
            asyncio.get_running_loop(), workflow_body(session, coro), sitting.root_scope
        )
        session.root_task = task
        await until_done(session, task)
        value = await outcome_of(sitting, session, task)
        try:
            payload, result = spec.codec.record(value, what="workflow result")
        except ValueNotJournalable as exc:
            raise NotJournalable(run_id, "result", spec.path, str(exc)) from exc
        if session.redact is not None:
            redacted = session.redact.scrub_secrets(session.redact(payload), session.secrets)
            if redacted is not payload:  # the caller gets what a later call will be served
                payload = redacted
                result = spec.codec.decode(redacted, what="redacted workflow result")
        matches = None if existing.result is None else _same_result(spec, existing.result, payload)
        sitting.finish(session, RunStatus.COMPLETED, result=payload)
        summary = session.summary(result_matches_recorded=matches)
    _log_summary(summary)
    return RunOutcome(result, summary)


_ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def recorded_outcome_error(run: Run) -> Exception:
    """What calling a failed or cancelled run again raises: its recorded error, with a note
    that it is the recorded one (nothing ran) and how to retry it."""
    if run.status is RunStatus.CANCELLED:
        cancelled = rebuild_error(run.error)
        if isinstance(cancelled, RunCancelled):
            return cancelled
        return RunCancelled(run.run_id, str(cancelled))
    error = rebuild_error(run.error)
    when = "" if run.finished_at is None else f" on {run.finished_at:%Y-%m-%d %H:%M:%S} UTC"
    error.add_note(
        f"journal-replay: this is the recorded failure of run {run.run_id!r} (it failed{when}); "
        "nothing ran now. Once the cause is fixed, retry the run in place: "
        f"replay.retry(workflow, ..., run_id={run.run_id!r}) or `journal retry {run.run_id}`. "
        "Steps that completed are served; the failed step and what follows run again."
    )
    return error


async def retry(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    journal: Journal,
    run_id: str,
    kwargs: Mapping[str, Any] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
) -> R:
    """Retry the failed run `run_id` in place with the current code; return its result.

    >>> report = await retry(agent, "cats", journal=j, run_id="cats-1")

    Call it as the run was called (same workflow, same inputs) once the cause of the failure
    is fixed. Every step that completed is served from the journal; the step whose failure
    ended the run, and everything after it, runs live. The journal keeps the whole history:
    the failed attempts stay, a marker event holds the recorded failure, and the run's chain
    goes on through it. A step failure the workflow caught and went on from is served as it
    was. A child run that failed with it is retried too. `RunNotFailed` if the run has not
    failed; the CLI's `journal retry RUN` does the same with the run's recorded workflow.
    """
    outcome: RunOutcome[R] = await start_run(
        workflow,
        *args,
        journal=journal,
        run_id=run_id,
        kwargs=kwargs,
        lease_seconds=lease_seconds,
        suspend_after=suspend_after,
        retry="failed",
    )
    return outcome.result


def _same_result(spec: WorkflowSpec, recorded: bytes, payload: bytes) -> bool:
    """Whether the result is the recorded one: the same bytes, or the same value (a journal
    from before sets were spelt sorted holds them in the order of the process that wrote it)."""
    if payload == recorded:
        return True
    try:
        return bool(spec.codec.decode(recorded) == spec.codec.decode(payload))
    except ValueNotJournalable:
        return False


async def run(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    journal: Journal,
    run_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    mode: Mode = "resume",
    on_divergence: OnDivergence = "raise",
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
) -> R:
    """Run `workflow(*args, **kwargs)` as the journaled run `run_id`; return its result.

    >>> report = await run(agent, "cats", journal=j, run_id="cats-1")

    The first call starts the run. After a crash the same call resumes it: every recorded
    step is served from the journal, the step that was in flight runs again, and the code
    continues live from the frontier. Once the run has finished, the call returns the
    recorded result (or re-raises the recorded error) without running anything.

    `mode="replay"` re-runs the code offline on recorded results only and raises
    `FrontierReached` instead of calling live. `on_divergence="fork"` (resume mode) keeps the
    journal up to a changed step and continues live from there instead of raising
    `NonDeterminismError`. A second live process gets `RunLocked`.
    """
    outcome = await run_with_summary(
        workflow,
        *args,
        journal=journal,
        run_id=run_id,
        kwargs=kwargs,
        mode=mode,
        on_divergence=on_divergence,
        lease_seconds=lease_seconds,
        suspend_after=suspend_after,
    )
    return outcome.result


class JournaledRun:
    """Handle yielded by `journaled(...)`: the run id and, at the end, the summary."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.run_id = session.run_id
        self.summary: RunSummary | None = None

    @property
    def progress(self) -> RunSummary:
        """The summary so far (served / executed / re-executed)."""
        return self._session.summary()


@asynccontextmanager
async def journaled(
    journal: Journal,
    run_id: str,
    *,
    mode: Mode = "resume",
    on_divergence: OnDivergence = "raise",
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
    retry: bool = False,
) -> AsyncIterator[JournaledRun]:
    """Journal every step awaited inside the block, for code you do not own.

    >>> async with journaled(j, run_id="negotiation-7"):
    ...     await executor.execute(program)

    Re-entering the block with the same run id after a crash serves what was recorded and
    continues live. A block that already finished is replayed: its steps are served, and a
    step it never recorded raises `FrontierReached` (use a new run id for new work).
    `retry=True` retries a block that failed, in place, as `retry()` does for a workflow;
    `RunNotFailed` if it has not failed.
    """
    _check_mode(mode, on_divergence)
    if retry and mode == "replay":
        raise ValueError("retry=True reopens a failed run to run it live; use mode='resume'")
    run_id = _run_id(run_id, resumable=True)
    again = block_call.get()
    if again is not None:  # `journal replay|resume|retry` called the block's holder again
        refuse_other_run(run_id)
        again.entered = True
        journal, mode, retry = again.journal, again.mode, again.retry or retry
    store = journal.store
    existing = store.get_run(run_id)
    created: Owner | None = None
    if existing is None:
        if mode == "replay" or retry:
            raise RunNotFound(run_id, hint="Replay and retry need a recorded run.")
        now = datetime.now(UTC)
        holder = holder_here()
        inputs = None if holder is None else canonical_json({"block": holder})
        version = configured_version() or (
            None if holder is None else module_version(holder["function"].split(":")[0])
        )
        existing, created = _create_owned(
            journal,
            lease_seconds,
            lambda owner: Run(
                run_id=run_id,
                workflow=None,
                inputs=inputs,
                inputs_fingerprint=None if inputs is None else fingerprint("inputs", inputs),
                status=RunStatus.RUNNING,
                owner=owner,
                created_at=now,
                updated_at=now,
                chain=journal.chain.scheme,
                version=version,
            ),
        )
        resuming = False
    else:
        resuming = True
    if existing.workflow is not None:
        raise RunConflict(run_id, "workflow", repr(existing.workflow), "a journaled(...) block")
    if retry and existing.status is not RunStatus.FAILED:
        raise RunNotFailed(run_id, existing.status.value)
    if existing.status is RunStatus.CANCELLED:
        raise recorded_outcome_error(existing)
    if existing.status in (RunStatus.COMPLETED, RunStatus.FAILED) and not retry:
        mode = "replay"
    sitting = Sitting(journal, existing, mode, on_divergence, lease_seconds, resuming)
    sitting.created_owner = created
    sitting.retry = retry
    sitting.suspend_after = suspend_after
    async with sitting.open(enter_scope=True) as session:
        block_task = asyncio.current_task()
        if block_task is not None:
            session.root_task = session.writer.block_task = block_task
            session.writer.block_cancelling = block_task.cancelling()
        handle = JournaledRun(session)
        try:
            yield handle
        except BaseException as exc:
            stop = engine_signal(exc, session)
            if stop is exc and isinstance(exc, Exception):
                await session.close_tasks(normally=True)
                sitting.finish(session, RunStatus.FAILED, error=failure_record(session, exc))
                handle.summary = session.summary()
                raise
            if session.cancelled_root and block_task is not None:
                block_task.uncancel()  # that cancellation was the engine's, now spent
            if isinstance(stop, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                session.writer.supersede_unwinding()  # stopped from outside while the block ran
            ended = await end_stopped(sitting, session, stop)
            handle.summary = session.summary()
            if ended is exc:
                raise
            raise ended from None
        swallowed = swallowed_stop(session)
        if swallowed is not None:
            ended = await end_stopped(sitting, session, swallowed)
            handle.summary = session.summary()
            raise ended
        await session.close_tasks(normally=True)
        sitting.finish(session, RunStatus.COMPLETED)
        handle.summary = session.summary()
        if again is not None:
            again.summary = handle.summary
    _log_summary(handle.summary)
