"""`@step`: make a function's result a journaled event.

Outside a journaled run a step is the plain function. Inside one, each call gets a key; a
recorded result is served without running the function, an unrecorded one runs live and is
appended before the caller sees it, decoded exactly as replay will decode it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from journal import (
    EventKind,
    EventStatus,
    RecordedError,
    ValueCodec,
    ValueNotJournalable,
    canonical_json,
)
from journal._codec import fingerprinter
from journal._events import EventRow

from ._context import TaskScope, current_scope, live_step_key, scope_here
from ._errors import NotJournalable, ReplayError, StepFailed
from ._group import Ticket
from ._history import Turn
from ._session import LivePlan, Session, rebuild_error
from ._versions import module_version

P = ParamSpec("P")
R = TypeVar("R")

# Frames between the user's call and Session.prepare: wrapper -> _prepare -> prepare.
_SITE_DEPTH = 1


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried before its failure is recorded as final."""

    retries: int = 0
    """Extra attempts after the first; 0 records the first failure as final."""
    delay: float = 0.5
    """Seconds before the first retry."""
    backoff: float = 2.0
    """Factor applied to the delay after each retry."""
    max_delay: float = 30.0
    """Upper bound on any one delay."""
    retry_on: tuple[type[Exception], ...] = (Exception,)
    """Exception types worth retrying; others fail at once."""
    jitter: float = 0.1
    """Up to this fraction of each delay is taken off at random, so that runs that failed
    together (a rate limit) do not all retry at the same moment. 0 for exact delays."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule}, not {value!r}"
            for name, value, ok, rule in [
                ("retries", self.retries, self.retries >= 0, "0 or more"),
                ("retry_delay", self.delay, self.delay >= 0, "0 or more seconds"),
                ("backoff", self.backoff, self.backoff >= 1, "1 or more (1 keeps delays equal)"),
                ("max_delay", self.max_delay, self.max_delay >= 0, "0 or more seconds"),
                ("jitter", self.jitter, 0 <= self.jitter <= 1, "between 0 and 1"),
            ]
            if not ok
        ]
        if problems:
            raise ValueError("; ".join(problems) + ".")

    def delay_before(self, attempt: int, draw: Callable[[], float] | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1 for the first): `delay` times
        `backoff` for each attempt before, at most `max_delay`, less up to `jitter` of it."""
        base = min(self.max_delay, self.delay * self.backoff ** max(0, attempt - 1))
        if not self.jitter:
            return float(base)
        return float(base * (1.0 - self.jitter * (draw or _draw)()))


_draw = random.Random().random
"""Jitter's own source: never the workflow's `random` (seeded by users, journaled by us)."""
_pause = asyncio.sleep
_pause_sync = time.sleep
"""How retries wait: module names, so that tests can run the clock."""


class StepSpec:
    """Everything fixed when a function is decorated, so a call does no reflection."""

    called_from_library = False
    """The call site is the decorated call's caller (integrations say otherwise)."""
    passive = False
    """The live body only waits for the workflow's own tasks (`as_completed`): while it is in
    flight the run is not busy with outside work."""

    def __init__(
        self, fn: Callable[..., Any], name: str, kind: EventKind, retry: RetryPolicy
    ) -> None:
        self.fn = fn
        self.name = name
        self.fingerprint = fingerprinter(name)
        self.kind = kind
        self.retry = retry
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.positional = tuple(
            p.name
            for p in self.signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )

    @functools.cached_property
    def codec(self) -> ValueCodec:
        # Resolved on first use: a return type may be defined after the decorated function.
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception as exc:
            raise TypeError(
                f"step {self.name!r}: its annotations cannot be resolved ({exc}). "
                "Fix: make the return type importable where the step is defined."
            ) from exc
        return ValueCodec(hints.get("return", Any))

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        # The hot path of every call, served or live: positional arguments only, the common
        # single one spelt out (a third of the cost of dict(zip(...)) with one pair).
        if not kwargs:
            positional = self.positional
            if len(args) == 1 and positional:
                return {positional[0]: args[0]}
            if len(args) <= len(positional):
                return dict(zip(positional, args))  # noqa: B905 (fewer args than names)
        return dict(self.signature.bind(*args, **kwargs).arguments)


def _prepare(
    spec: StepSpec, scope: TaskScope, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Session, EventRow | Turn | LivePlan]:
    session = scope.session
    bound = spec.bind(args, kwargs)
    try:
        args_payload = canonical_json(bound)
    except ValueNotJournalable as exc:
        key = f"{scope.path}:{scope.steps + 1}"
        raise NotJournalable(session.run_id, key, spec.name, f"its arguments: {exc}") from None
    if session.redact is not None:
        redacted = session.redact.arguments(bound, args_payload)
        if redacted is not args_payload:  # the call holds secrets: remember them
            session.secrets.update(session.redact.secrets_in(bound))
            args_payload = redacted
    fp = spec.fingerprint(args_payload)
    # The key is taken under the session's lock, with the decision: scope.next_key(), inlined.
    return session, session.prepare(spec, scope, args_payload, fp, _SITE_DEPTH + 1, scope.deferred)


def _serve(spec: StepSpec, session: Session, row: EventRow) -> Any:
    """The recorded outcome of the finishing `row`: its value, or its exception raised."""
    if row[5] == "completed":
        try:
            return spec.codec.decode(row[7] or b"null", what="recorded result")
        except ValueNotJournalable as exc:
            raise NotJournalable(session.run_id, row[1], spec.name, str(exc)) from exc
    if row[5] == "cancelled":
        raise asyncio.CancelledError
    raise session.raising(rebuild_error(row[7]), row[1])


def _record_value(
    spec: StepSpec, session: Session, plan: LivePlan, value: Any, *, wait: bool = True
) -> tuple[Any, Ticket | None]:
    try:
        payload, decoded = spec.codec.record(value, what="result")
    except ValueNotJournalable as exc:
        raise NotJournalable(session.run_id, plan.key, spec.name, str(exc)) from exc
    redact = session.redact
    if redact is not None:
        redacted = redact(payload)
        if session.secrets:  # a result that repeats a secret the run passed (an echo, a URL)
            redacted = redact.scrub_secrets(redacted, session.secrets)
        if redacted is not payload:  # live code sees what replay will serve: the markers
            payload, decoded = redacted, spec.codec.decode(redacted, what="redacted result")
    session.check_size(plan.key, spec.name, "result", payload)
    return decoded, session.finish(spec, plan, EventStatus.COMPLETED, payload, wait=wait)


def _record_failure(
    spec: StepSpec, session: Session, plan: LivePlan, exc: Exception, bound: dict[str, Any]
) -> tuple[bool, float]:
    """Append the failed attempt; (retry?, delay). A final failure is re-raised by the caller.
    Secrets redacted from the call's arguments (`bound`) are scrubbed from the error too: a
    message like "invalid key sk-..." would otherwise write the key to disk."""
    retry = spec.retry
    will_retry = plan.attempt <= retry.retries and isinstance(exc, retry.retry_on)
    status = EventStatus.RETRYING if will_retry else EventStatus.FAILED
    payload = RecordedError.from_exception(exc).encode()
    redact = session.redact
    if redact is not None:
        secrets = [*redact.secrets_in(bound), *session.secrets]
        payload = redact.scrub_secrets(redact(payload), secrets)
    session.check_size(plan.key, spec.name, "error", payload)
    session.finish(spec, plan, status, payload)
    return will_retry, retry.delay_before(plan.attempt)


def as_replayed_error(exc: Exception, redact: Callable[[bytes], bytes] | None = None) -> Exception:
    """What the caller sees live: the original exception if replay would rebuild its type."""
    recorded = RecordedError.from_exception(exc).redacted(redact)  # as the journal stores it
    rebuilt = recorded.rebuild()
    if rebuilt is not None and type(rebuilt) is type(exc):
        return exc
    return StepFailed(recorded.type, recorded.message, recorded.traceback)


def _enter(session: Session, plan: LivePlan) -> tuple[Any, Any]:
    """Run the step body outside the journal: its inner work belongs to the step."""
    return current_scope.set(None), live_step_key.set(f"{session.run_id}:{plan.key}")


def _leave(tokens: tuple[Any, Any]) -> None:
    current_scope.reset(tokens[0])
    live_step_key.reset(tokens[1])


def _next_plan(plan: LivePlan) -> LivePlan:
    return LivePlan(plan.key, plan.fingerprint, plan.args_payload, plan.attempt + 1)


def _after_failure(
    spec: StepSpec,
    session: Session,
    plan: LivePlan,
    exc: Exception,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> float | None:
    """Journal a failed attempt; the delay before the next one, or None if it was final."""
    bound = spec.bind(args, kwargs) if session.redact is not None else {}
    will_retry, delay = _record_failure(spec, session, plan, exc, bound)
    if will_retry:
        return delay
    redact = session.redact
    scrubbed = None
    if redact is not None:
        secrets = [*redact.secrets_in(bound), *session.secrets]
        scrubbed = lambda p: redact.scrub_secrets(redact(p), secrets)  # noqa: E731
    failure = session.raising(as_replayed_error(exc, scrubbed), plan.key)
    if failure is exc:
        raise exc
    raise failure from session.raising(exc, plan.key)


async def _run_live(
    spec: StepSpec,
    session: Session,
    plan: LivePlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    while True:
        starting = session.start(spec, plan)
        tokens = _enter(session, plan)
        try:
            if starting is not None:  # in a group commit: the body waits for its start
                await session.started(starting)
            value = await spec.fn(*args, **kwargs)
        except Exception as exc:
            failed: Exception | None = exc
        except asyncio.CancelledError:
            session.cancelled(spec, plan)
            raise
        except BaseException as exc:
            step_stopped(session, plan, exc)
            raise
        else:
            failed = None
        finally:
            _leave(tokens)
        if failed is None:
            value, ticket = _record_value(spec, session, plan, value, wait=False)
            if ticket is not None:
                await session.landed(ticket)
            await session.hold_live(plan.key, spec.name)
            return value
        try:
            delay = _after_failure(spec, session, plan, failed, args, kwargs)
        except Exception:
            await session.hold_live(plan.key, spec.name)
            raise
        plan = _next_plan(plan)
        try:
            await _pause(delay or 0.0)
        except asyncio.CancelledError:
            session.cancelled(spec, plan)  # cancelled while waiting to retry: that attempt's end
            raise


def _run_live_sync(
    spec: StepSpec,
    session: Session,
    plan: LivePlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    while True:
        session.start(spec, plan, sync=True)
        tokens = _enter(session, plan)
        try:
            value = spec.fn(*args, **kwargs)
        except Exception as exc:
            failed: Exception | None = exc
        except BaseException as exc:
            step_stopped(session, plan, exc)
            raise
        else:
            failed = None
        finally:
            _leave(tokens)
        if failed is None:
            value, _ = _record_value(spec, session, plan, value)
            session.hold_live_sync(plan.key, spec.name)
            return value
        try:
            delay = _after_failure(spec, session, plan, failed, args, kwargs)
        except Exception:
            session.hold_live_sync(plan.key, spec.name)
            raise
        _pause_sync(delay or 0.0)
        plan = _next_plan(plan)


def step_stopped(session: Session, plan: LivePlan, exc: BaseException) -> None:
    """A step body raised past `Exception` (Ctrl+C, SystemExit, an engine signal from a nested
    run or a signal wait): the sitting stops, and the attempt stays in flight for resume."""
    session.abandoned(plan)
    if not isinstance(exc, StepFailed) and isinstance(
        exc, ReplayError | KeyboardInterrupt | SystemExit
    ):
        session.stop(exc)


async def _serve_in_turn(spec: StepSpec, session: Session, turn: Turn) -> Any:
    await session.take_turn(turn)
    return _serve(spec, session, turn.row)


def _serve_sync(
    spec: StepSpec, session: Session, decision: EventRow | Turn, scope: TaskScope
) -> Any:
    if isinstance(decision, Turn):
        session.take_turn_sync(decision, scope.deferred)
        decision = decision.row
    return _serve(spec, session, decision)


def _decorate(
    fn: Callable[P, R], name: str | None, kind: EventKind | str, retry: RetryPolicy
) -> Callable[P, R]:
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"@step cannot journal generator {fn.__qualname__!r}: a step returns one value. "
            "Fix: collect the items and return a list."
        )
    spec = StepSpec(fn, name or fn.__qualname__, EventKind(kind), retry)
    module_version(fn.__module__)  # the module's source as imported (decorating runs then)

    if spec.is_async:

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = current_scope.get()
            if scope is None:
                return await fn(*args, **kwargs)  # type: ignore[misc]
            session, decision = _prepare(spec, scope, args, kwargs)
            if type(decision) is tuple:
                return _serve(spec, session, decision)  # served now: no further coroutine
            if type(decision) is Turn:
                return await _serve_in_turn(spec, session, decision)
            return await _run_live(spec, session, decision, args, kwargs)  # type: ignore[arg-type]

        async_wrapper.__replay_step__ = spec  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = scope_here()
        if scope is None:
            return fn(*args, **kwargs)
        session, decision = _prepare(spec, scope, args, kwargs)
        if isinstance(decision, LivePlan):
            return _run_live_sync(spec, session, decision, args, kwargs)
        return _serve_sync(spec, session, decision, scope)

    sync_wrapper.__replay_step__ = spec  # type: ignore[attr-defined]
    return sync_wrapper


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    kind: EventKind | str = EventKind.STEP,
    retries: int = 0,
    retry_delay: float = 0.5,
    backoff: float = 2.0,
    max_delay: float = 30.0,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    jitter: float = 0.1,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    kind: EventKind | str = EventKind.STEP,
    retries: int = 0,
    retry_delay: float = 0.5,
    backoff: float = 2.0,
    max_delay: float = 30.0,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    jitter: float = 0.1,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Journal each call's result (or exception) inside a run; a plain call outside one.

    >>> @step
    ... async def ask_llm(prompt: str) -> str: ...
    >>> @step(name="search", kind="tool", retries=3)
    ... async def search(query: str) -> list[Hit]: ...

    The return annotation types the value on the way back from the journal; the value the
    caller gets live is already that decoded value, so live and replay see the same thing.
    `name` is stored in the journal: keep it when renaming the function. Each failed attempt
    is journaled; the last one's exception is re-raised on replay as the same type (or as
    `StepFailed` when the type cannot be rebuilt). Async and sync functions both work.

    A failed attempt is retried `retries` times, for the exception types in `retry_on`, after
    `retry_delay` seconds multiplied by `backoff` for each retry before, at most `max_delay`,
    less up to `jitter` of it at random (`RetryPolicy.delay_before`).
    """
    policy = RetryPolicy(retries, retry_delay, backoff, max_delay, retry_on, jitter)

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        return _decorate(f, name, kind, policy)

    return decorate if fn is None else decorate(fn)


def idempotency_key() -> str | None:
    """Inside a live step: `"{run_id}:{key}"`, the same on every attempt and after a crash.

    Pass it to APIs that deduplicate (payments, emails) so an at-least-once re-execution
    after a crash has no second effect. None outside a journaled step.
    """
    return live_step_key.get()
