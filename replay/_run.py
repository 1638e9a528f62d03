"""Running a workflow against a journal: start, resume after a crash, or replay offline."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import typing
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Generic, TypeVar

from journal import (
    Journal,
    LeaseLost,
    Owner,
    PayloadTooLarge,
    RecordedError,
    Run,
    RunConflict,
    RunNotFound,
    RunStatus,
    ValueCodec,
    ValueNotJournalable,
    canonical_json,
    fingerprint,
)
from journal._events import EventRow
from journal.stores._ownership import HOSTNAME

from ._context import TaskScope, current_scope, install_task_factory, uninstall_task_factory
from ._errors import NotJournalable, OwnershipLost, ReplayError, Suspended
from ._log import get_logger
from ._session import Mode, OnDivergence, RunSummary, Session, rebuild_error

R = TypeVar("R")
log = get_logger("replay")

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_SUSPEND_AFTER = 60.0
"""A durable sleep longer than this suspends the run instead of keeping the process."""


@dataclass(frozen=True)
class DebugOptions:
    """How `replay_run` debugs a sitting; set for its duration, read when the sitting opens."""

    allow_live: bool = False
    break_at: str | None = None
    on_break: Callable[[FrameType, str, EventRow], None] | None = None
    observe: Callable[[Session], None] | None = None
    """Called with the sitting's session once it is open (progress reporting)."""
    other_workflow: bool = False
    """The caller chose the function (`--entry`): its name may differ from the recorded one."""


debug_options: contextvars.ContextVar[DebugOptions | None] = contextvars.ContextVar(
    "replay_debug_options", default=None
)


@dataclass(frozen=True)
class RunOutcome(Generic[R]):
    """A workflow's result together with how this sitting obtained it."""

    result: R
    summary: RunSummary


class _WorkflowSpec:
    __slots__ = ("codec", "path", "positional")

    def __init__(self, workflow: Callable[..., Any]) -> None:
        if not asyncio.iscoroutinefunction(workflow):
            raise TypeError(
                f"run() needs an async workflow function, got {workflow!r}. Fix: define it "
                "with `async def`, or wrap other code in `async with journaled(...)`."
            )
        self.path = f"{workflow.__module__}:{workflow.__qualname__}"
        try:
            hints = typing.get_type_hints(workflow)
        except Exception:
            hints = {}
        self.codec = ValueCodec(hints.get("return", Any))
        parameters = inspect.signature(workflow).parameters.values()
        self.positional = [
            p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]


_workflow_specs: weakref.WeakKeyDictionary[Callable[..., Any], _WorkflowSpec] = (
    weakref.WeakKeyDictionary()
)


def _spec_for(workflow: Callable[..., Any]) -> _WorkflowSpec:
    spec = _workflow_specs.get(workflow)
    if spec is None:
        spec = _workflow_specs[workflow] = _WorkflowSpec(workflow)
    return spec


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


def _new_owner(lease_seconds: float) -> Owner:
    now = datetime.now(UTC)
    return Owner(
        token=uuid.uuid4().hex,
        host=HOSTNAME,
        pid=os.getpid(),
        since=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )


async def _heartbeat(session: Session, token: str, lease_seconds: float) -> None:
    while True:
        await asyncio.sleep(lease_seconds / 3)
        expires = datetime.now(UTC) + timedelta(seconds=lease_seconds)
        if not session.store.heartbeat(session.run_id, token, expires):
            session.write_error = LeaseLost(session.run_id)
            log.warning("run.ownership_lost", run_id=session.run_id)
            return


class _Sitting:
    """One sitting: ownership, the loaded journal, the root scope. Used by run and journaled."""

    def __init__(
        self,
        journal: Journal,
        run: Run,
        mode: Mode,
        on_divergence: OnDivergence,
        lease_seconds: float,
        resuming: bool,
    ) -> None:
        self.journal = journal
        self.run = run
        self.run_id = run.run_id
        self.mode = mode
        self.on_divergence = on_divergence
        self.lease_seconds = lease_seconds
        self.resuming = resuming
        self.token: str | None = None
        self.finished = False
        self.suspend_after = DEFAULT_SUSPEND_AFTER

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Session]:
        store = self.journal.store
        loop = asyncio.get_running_loop()
        chain = self.journal.chain if self.run.chain is not None else None
        if self.mode == "resume":
            if chain is not None:
                chain.require_same(self.run)
            owner = _new_owner(self.lease_seconds)
            store.claim(self.run_id, owner, resuming=self.resuming)
            self.token = owner.token
            previous = self.run.owner
            log.info(
                "run.taken_over" if previous is not None else "run.claimed",
                run_id=self.run_id,
                pid=owner.pid,
                host=owner.host,
                lease_seconds=self.lease_seconds,
                **(
                    {"previous_pid": previous.pid, "previous_host": previous.host}
                    if previous is not None
                    else {}
                ),
            )
        rows = store.read_rows(self.run_id)  # read after claiming: nobody else appends
        head = ""
        if chain is not None and self.token is not None:
            head = (store.last_hash(self.run_id) if rows else None) or chain.genesis(self.run)
        session = Session(
            run_id=self.run_id,
            store=store,
            token=self.token,
            mode=self.mode,
            on_divergence=self.on_divergence,
            rows=rows,
            loop=loop,
            chain=chain,
            head=head,
            redact=self.journal.redactor(),
            max_payload=self.journal.max_payload_bytes,
        )
        session.suspend_after = self.suspend_after
        debugging = debug_options.get()
        if debugging is not None and self.mode == "replay":
            session.allow_live = debugging.allow_live
            session.break_at = debugging.break_at
            session.on_break = debugging.on_break
            if debugging.observe is not None:
                debugging.observe(session)
        log.info(
            "run.sitting_started",
            run_id=self.run_id,
            mode=self.mode,
            recorded_events=len(rows),
            resuming=self.resuming,
        )
        heartbeat = None
        if self.token is not None:
            # An empty context: the heartbeat must not take a child slot of any run's task.
            heartbeat = loop.create_task(
                _heartbeat(session, self.token, self.lease_seconds), context=contextvars.Context()
            )
        install_task_factory(loop)
        scope_token = current_scope.set(TaskScope(session, "0"))
        try:
            yield session
        finally:
            current_scope.reset(scope_token)
            uninstall_task_factory(loop)
            if heartbeat is not None:
                heartbeat.cancel()
            if self.token is not None and not self.finished:
                with contextlib.suppress(ReplayError):
                    session.flush()  # steps in flight: their starts are worth keeping
                store.release(self.run_id, self.token)

    def suspend(self, session: Session, waiting: Suspended) -> None:
        """Leave the run `waiting` and unowned: the process may exit, a worker continues it."""
        if self.token is None:
            return
        session.flush()
        try:
            self.journal.store.suspend(
                self.run_id, self.token, wake_at=waiting.wake_at, waiting_for=waiting.waiting_for
            )
        except LeaseLost as exc:
            raise OwnershipLost(str(exc)) from exc
        self.finished = True
        log.info(
            "run.suspended",
            run_id=self.run_id,
            wake_at=None if waiting.wake_at is None else waiting.wake_at.isoformat(),
            waiting_for=waiting.waiting_for,
        )

    def finish(
        self,
        session: Session,
        status: RunStatus,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
    ) -> None:
        if self.token is None:
            return
        session.flush()
        seal = session.seal(status, result, error)
        try:
            self.journal.store.finish(
                self.run_id, self.token, status, result=result, error=error, seal=seal
            )
        except LeaseLost as exc:
            session.write_error = exc
            raise OwnershipLost(str(exc)) from exc
        self.finished = True


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
    journal: Journal, spec: _WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, str]:
    """The run's recorded inputs (secrets redacted, size checked) and their fingerprint."""
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


def _create_run(
    journal: Journal, spec: _WorkflowSpec, run_id: str, inputs: bytes, inputs_fp: str
) -> Run:
    now = datetime.now(UTC)
    return journal.store.create_run(
        Run(
            run_id=run_id,
            workflow=spec.path,
            inputs=inputs,
            inputs_fingerprint=inputs_fp,
            status=RunStatus.RUNNING,
            created_at=now,
            updated_at=now,
            chain=journal.chain.scheme,
        )
    )


def _check_same(existing: Run, spec: _WorkflowSpec, inputs: bytes, inputs_fp: str) -> None:
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
    spec = _spec_for(workflow)
    if spec.path.startswith("__main__:"):
        raise ValueError(
            f"{spec.path} is defined in a script, which a worker cannot import. Fix: define "
            "the workflow in a module and import it from there."
        )
    call_kwargs = dict(kwargs or {})
    inputs, inputs_fp = _inputs(journal, spec, args, call_kwargs)
    run_id = run_id or uuid.uuid4().hex
    existing = journal.store.get_run(run_id)
    if existing is None:
        existing = _create_run(journal, spec, run_id, inputs, inputs_fp)
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
    _check_mode(mode, on_divergence)
    spec = _spec_for(workflow)
    call_kwargs = dict(kwargs or {})
    inputs, inputs_fp = _inputs(journal, spec, args, call_kwargs)
    run_id = run_id or uuid.uuid4().hex
    store = journal.store

    existing = store.get_run(run_id)
    if existing is None:
        if mode == "replay":
            raise RunNotFound(
                run_id, hint="Replay needs a recorded run; start it with mode='resume'."
            )
        existing = _create_run(journal, spec, run_id, inputs, inputs_fp)
        resuming = False
    else:
        resuming = True
    debugging = debug_options.get()
    chosen = mode == "replay" and debugging is not None and debugging.other_workflow
    if not chosen:
        _check_same(existing, spec, inputs, inputs_fp)

    if mode == "resume" and existing.status in (RunStatus.COMPLETED, RunStatus.FAILED):
        summary = RunSummary(run_id=run_id, mode=mode, already_finished=True)
        log.info("run.already_finished", run_id=run_id, status=existing.status.value)
        if existing.status is RunStatus.FAILED:
            raise rebuild_error(existing.error)
        return RunOutcome(spec.codec.decode(existing.result or b"null"), summary)

    sitting = _Sitting(journal, existing, mode, on_divergence, lease_seconds, resuming)
    sitting.suspend_after = suspend_after
    async with sitting.open() as session:
        try:
            value = await workflow(*args, **call_kwargs)
        except Suspended as waiting:
            sitting.suspend(session, waiting)
            raise
        except Exception as exc:
            sitting.finish(
                session, RunStatus.FAILED, error=RecordedError.from_exception(exc).encode()
            )
            log.info("run.failed", run_id=run_id, error=type(exc).__name__)
            raise
        try:
            payload, result = spec.codec.record(value, what="workflow result")
        except ValueNotJournalable as exc:
            raise NotJournalable(run_id, "result", spec.path, str(exc)) from exc
        matches = None if existing.result is None else payload == existing.result
        sitting.finish(session, RunStatus.COMPLETED, result=payload)
        summary = session.summary(result_matches_recorded=matches)
    _log_summary(summary)
    return RunOutcome(result, summary)


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
) -> AsyncIterator[JournaledRun]:
    """Journal every step awaited inside the block, for code you do not own.

    >>> async with journaled(j, run_id="negotiation-7"):
    ...     await executor.execute(program)

    Re-entering the block with the same run id after a crash serves what was recorded and
    continues live. A block that already finished is replayed: its steps are served, and a
    step it never recorded raises `FrontierReached` (use a new run id for new work).
    """
    _check_mode(mode, on_divergence)
    store = journal.store
    existing = store.get_run(run_id)
    if existing is None:
        if mode == "replay":
            raise RunNotFound(run_id, hint="Replay needs a recorded run.")
        now = datetime.now(UTC)
        existing = store.create_run(
            Run(
                run_id=run_id,
                workflow=None,
                inputs=None,
                inputs_fingerprint=None,
                status=RunStatus.RUNNING,
                created_at=now,
                updated_at=now,
                chain=journal.chain.scheme,
            )
        )
        resuming = False
    else:
        resuming = True
    if existing.workflow is not None:
        raise RunConflict(run_id, "workflow", repr(existing.workflow), "a journaled(...) block")
    if existing.status in (RunStatus.COMPLETED, RunStatus.FAILED):
        mode = "replay"
    sitting = _Sitting(journal, existing, mode, on_divergence, lease_seconds, resuming)
    sitting.suspend_after = suspend_after
    async with sitting.open() as session:
        handle = JournaledRun(session)
        try:
            yield handle
        except Suspended as waiting:
            sitting.suspend(session, waiting)
            handle.summary = session.summary()
            raise
        except Exception as exc:
            sitting.finish(
                session, RunStatus.FAILED, error=RecordedError.from_exception(exc).encode()
            )
            handle.summary = session.summary()
            raise
        sitting.finish(session, RunStatus.COMPLETED)
        handle.summary = session.summary()
    _log_summary(handle.summary)
