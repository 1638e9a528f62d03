"""Nested runs: `run()` awaited inside a running workflow starts a child run.

The child is a run of its own: its own id, journal, status and owner, with `parent_run_id`
naming the parent. For the parent it is one step of kind `run` whose value is the child's
result (or whose failure is the child's error): resuming or replaying the parent serves it
without running the child again. A child id that is not given is the parent's id and the
step's key (`report-7/0:3`), the same on every resume.

A child that waits (a signal, a long sleep) leaves the parent waiting too; when the child
finishes, the parent becomes due again and a worker continues it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from journal import (
    EventKind,
    EventStatus,
    Journal,
    RecordedError,
    RunLocked,
    ValueNotJournalable,
    canonical_json,
    fingerprint,
)

from ._context import TaskScope, current_scope, live_step_key
from ._engine_signals import child_signal
from ._errors import NotJournalable, Suspended
from ._history import Turn
from ._session import LivePlan, RunSummary, Session, rebuild_error
from ._steps import as_replayed_error, step_stopped
from ._workflow import RunOutcome, WorkflowSpec

parent_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "replay_parent_run", default=None
)
"""While a child run starts: its parent's run id, recorded on the child's run."""

LOCKED_RETRY_SECONDS = 5.0
"""A parent whose child is owned by another process looks again after this long."""


class _ChildRunStep:
    """What the parent's session needs of the child's step: name, kind and the value codec."""

    kind = EventKind.RUN
    called_from_library = False
    passive = False
    is_async = True
    """The parent awaited the child's run: its other ready tasks ran meanwhile, and on replay
    they run before the child's recorded outcome is handed out too."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.name = f"replay.run:{spec.path}"
        self.codec = spec.codec


async def run_child(
    scope: TaskScope,
    workflow: Callable[..., Any],
    spec: WorkflowSpec,
    start: Callable[..., Awaitable[RunOutcome[Any]]],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    journal: Journal,
    run_id: str | None,
    options: dict[str, Any],
) -> RunOutcome[Any]:
    """Start, resume or serve the child run of the parent run whose step scope is `scope`.

    `start` is `run_with_summary`, called with the child's id and `options`.
    """
    session = scope.session
    key = scope.next_key()
    child_id = run_id or f"{session.run_id}/{key}"
    step: Any = _ChildRunStep(spec)
    arguments = canonical_json({"run_id": child_id, "args": list(args), "kwargs": dict(kwargs)})
    if session.redact is not None:
        arguments = session.redact(arguments)
    decision = session.prepare(step, key, arguments, fingerprint(step.name, arguments), 2)
    if isinstance(decision, Turn):
        await session.take_turn(decision)
        decision = decision.row
    if isinstance(decision, tuple):
        summary = RunSummary(run_id=child_id, mode=session.mode, already_finished=True)
        if decision[5] == "completed":
            return RunOutcome(spec.codec.decode(decision[7] or b"null"), summary)
        if decision[5] == "cancelled":
            raise asyncio.CancelledError
        raise session.raising(rebuild_error(decision[7]), key)
    if key in session.retried_keys:  # the parent's retry reopened this step: if the child
        options = {**options, "retry": "if failed"}  # failed with it, it is retried too
    run_it = functools.partial(start, workflow, *args, journal=journal, kwargs=kwargs, **options)
    return await _live(session, step, decision, run_it, child_id)


async def _live(
    session: Session,
    step: Any,
    plan: LivePlan,
    run_it: Callable[..., Awaitable[RunOutcome[Any]]],
    child_id: str,
) -> RunOutcome[Any]:
    starting = session.start(step, plan)
    # The child's sitting is a top-level one: its steps are its own, not the parent's.
    tokens = current_scope.set(None), live_step_key.set(None), parent_run.set(session.run_id)
    try:
        await session.started(starting)
        outcome = await run_it(run_id=child_id)
    except RunLocked:  # another process works on the child right now: wait for it
        waiting = Suspended(
            session.run_id,
            wake_at=datetime.now(UTC) + timedelta(seconds=LOCKED_RETRY_SECONDS),
            waiting_for=child_signal(child_id),
        )
        step_stopped(session, plan, waiting)
        raise waiting from None
    except Exception as exc:
        payload = RecordedError.from_exception(exc).encode()
        if session.redact is not None:
            payload = session.redact.scrub_secrets(session.redact(payload), session.secrets)
        session.finish(step, plan, EventStatus.FAILED, payload)
        await session.hold_live(plan.key, step.name)
        failure = session.raising(as_replayed_error(exc), plan.key)
        if failure is exc:
            raise
        raise failure from session.raising(exc, plan.key)
    except asyncio.CancelledError:
        session.cancelled(step, plan)
        raise
    except Suspended as child_waits:  # the parent waits for the child
        waiting = Suspended(
            session.run_id, wake_at=child_waits.wake_at, waiting_for=child_signal(child_id)
        )
        step_stopped(session, plan, waiting)
        raise waiting from child_waits
    except BaseException as exc:
        step_stopped(session, plan, exc)
        raise
    finally:
        current_scope.reset(tokens[0])
        live_step_key.reset(tokens[1])
        parent_run.reset(tokens[2])
    try:
        payload, value = step.codec.record(outcome.result, what="child run's result")
    except ValueNotJournalable as exc:
        raise NotJournalable(session.run_id, plan.key, step.name, str(exc)) from exc
    session.finish(step, plan, EventStatus.COMPLETED, payload)
    await session.hold_live(plan.key, step.name)
    return RunOutcome(value, outcome.summary)
