"""One sitting of a run: claiming it, loading its journal, heartbeats, finishing or suspending.

`run()` and `journaled(...)` both open a sitting; this is where ownership is taken and given
back, and where the engine's session is built with everything it needs (chain, redaction,
limits, debugging options).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import orjson

from journal import (
    Journal,
    JournalStore,
    LeaseLost,
    Owner,
    RecordedError,
    Run,
    RunCancelled,
    RunStatus,
)
from journal._chain import Chain
from journal._events import EventRow
from journal.stores._ownership import give_up, new_owner

from ._cancel import finish_cancelled
from ._context import (
    TaskScope,
    current_scope,
    install_task_factory,
    uninstall_task_factory,
)
from ._engine_signals import cancel_requested, cancel_requests, wake_parent
from ._errors import OwnershipLost, ReplayError, StepFailed, Suspended
from ._log import get_logger
from ._loop_state import engine_handles
from ._observe import observer_for
from ._pools import restore_pools
from ._retry import cancels_spent, failure_record, reopening
from ._session import Mode, OnDivergence, Session

log = get_logger("replay")

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_SUSPEND_AFTER = 60.0
"""A durable sleep longer than this suspends the run instead of keeping the process."""
CANCEL_CHECK_SECONDS = 2.0
"""How often the owner of a run looks for a request to cancel it (one small read)."""


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
SERVE_RECORDED_HTTP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "replay_serve_recorded_http", default=False
)
"""Set while re-running a recorded run (`resume_run`, `replay_run`, `retry_run`): a sitting
whose rows hold journaled HTTP requests journals (serves) them again, as `instrument()` does,
for as long as it lasts."""
_HTTP_STEP = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) \S+$")


def _recorded_http(store: JournalStore, rows: list[EventRow], seen: set[str]) -> bool:
    """Whether the run journaled HTTP requests (the journaling transport's step names), or
    one of its child runs did: a parent whose requests all went through its children must
    journal the requests of the children it starts anew too (their rows are empty)."""
    if any(row[2] in ("llm", "tool") and _HTTP_STEP.match(str(row[3])) for row in rows):
        return True
    for row in rows:
        if row[2] != "run" or row[5] != "started" or not row[7]:
            continue
        try:  # a child run's step starts with its arguments, the child's run id among them
            child = orjson.loads(row[7])["args"]["run_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if isinstance(child, str) and child not in seen:
            seen.add(child)
            if _recorded_http(store, store.read_rows(child), seen):
                return True
    return False


_ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class EndedMeanwhile(Exception):
    """The run, read unfinished before its claim (a worker's look), had finished by the claim
    (another worker completed it, it was cancelled): nothing runs, the claim is let go, and
    the caller answers with the run as it ended (`run`)."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.run_id!r} finished ({run.status.value}) before its claim")
        self.run = run


class _Heartbeat:
    """Renews the lease every third of it, and looks for a cancellation request every few
    seconds, from loop callbacks the engine owns: no task, so it takes no step key, and its
    timer does not count as the workflow waiting on something."""

    def __init__(self, session: Session, token: str, lease_seconds: float) -> None:
        self.session = session
        self.token = token
        self.lease_seconds = lease_seconds
        self.every = min(lease_seconds / 3, CANCEL_CHECK_SECONDS)
        self.renew_at = time.monotonic() + lease_seconds / 3 - self.every / 2
        self.spent: int | None = None
        """Cancel requests a retry of the run found already made, once looked up."""
        self.handle: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        self.handle = self.session.loop.call_later(self.every, self._beat)
        engine_handles.add(self.handle)

    def _beat(self) -> None:
        session = self.session
        if time.monotonic() >= self.renew_at and not self._renewed():
            return
        if session.stopping is None:
            try:
                reason = self._cancel_requested()
            except Exception as exc:  # unreachable for now: look again next time
                log.warning("run.cancel_check_failed", run_id=session.run_id, error=str(exc))
                reason = None
            if reason is not None:
                log.info("run.cancelling", run_id=session.run_id, reason=reason)
                session.stop(RunCancelled(session.run_id, reason))
        self._schedule()

    def _cancel_requested(self) -> str | None:
        """A request to cancel the run that this run has not outlived (one made before it
        failed and was retried does not count)."""
        store, run_id = self.session.store, self.session.run_id
        reason = cancel_requested(store, run_id, self.spent or 0)
        if reason is not None and self.spent is None:
            self.spent = cancels_spent(store.read_rows(run_id))
            reason = cancel_requested(store, run_id, self.spent)
        return reason

    def _renewed(self) -> bool:
        """Extend the lease; False if the run is no longer this process's."""
        session = self.session
        self.renew_at = time.monotonic() + self.lease_seconds / 3 - self.every / 2
        expires = datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        try:
            owned = session.store.heartbeat(session.run_id, self.token, expires)
        except Exception as exc:  # the store is unreachable for now: try again next time
            log.warning("run.heartbeat_failed", run_id=session.run_id, error=str(exc))
            owned = True
        if not owned:
            session.write_error = LeaseLost(session.run_id)
            log.warning("run.ownership_lost", run_id=session.run_id)
        return owned

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class Sitting:
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
        self.let_go = False
        self._hooked = False
        self.suspend_after = DEFAULT_SUSPEND_AFTER
        self.root_scope: TaskScope | None = None
        """The workflow's own task scope (path `0`), once the sitting is open."""
        self.retry = False
        """Reopen the run first if it failed (`replay.retry`): its failed tail runs again."""
        self.created_owner: Owner | None = None
        """The owner this process created the run with (`run` is then ours): the sitting does
        not claim it."""

    @asynccontextmanager
    async def open(self, *, enter_scope: bool = False) -> AsyncIterator[Session]:
        """The sitting's session, the run claimed (resume) and released at the end.

        `enter_scope`: the caller's own code is the workflow (`journaled`), so the run's root
        scope is set here; `run()` gives it to the workflow's task instead (`root_scope`)."""
        store = self.journal.store
        loop = asyncio.get_running_loop()
        chain = self.journal.chain if self.run.chain is not None else None
        if self.mode == "resume":
            if chain is not None:
                chain.require_same(self.run)
            created = self.created_owner
            owner = created or new_owner(self.lease_seconds)
            claimed = (
                self.run if created else store.claim(self.run_id, owner, resuming=self.resuming)
            )
            if (
                claimed.status in _ENDED
                and self.run.status not in _ENDED
                and not (self.retry and claimed.status is RunStatus.FAILED)
            ):  # read unfinished (a worker's look), it finished before the claim: let it be
                store.release(self.run_id, owner.token)
                raise EndedMeanwhile(claimed)
            self.token = owner.token
            if self.resuming:
                self._cancel_if_requested(claimed)
            if self.retry and claimed.status is RunStatus.FAILED:
                self._reopen(claimed, chain)
            previous = None if created else self.run.owner
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
        try:
            # Read after claiming: nobody else appends. Read for a run created here too: its
            # id may still hold events (its row deleted by hand), served, never run again.
            rows = store.read_rows(self.run_id)
            head = ""
            if chain is not None and self.token is not None:
                head = (store.last_hash(self.run_id) if rows else None) or chain.genesis(self.run)
            redact = self.journal.redactor()
        except BaseException:
            self._give_back()
            raise
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
            redact=redact,
            max_payload=self.journal.max_payload_bytes,
            run_finished=self.run.status in (RunStatus.COMPLETED, RunStatus.FAILED),
        )
        session.suspend_after = self.suspend_after
        if self.mode == "replay" and self.run.status is RunStatus.CANCELLED:
            session.cancelled_run = _recorded_cancellation(self.run)
        debugging = debug_options.get()
        if debugging is not None and self.mode == "replay":
            session.allow_live = debugging.allow_live
            session.break_at = debugging.break_at
            session.on_break = debugging.on_break
            if debugging.observe is not None:
                debugging.observe(session)
        observer = observer_for(self.journal, self.run, self.token)
        if observer is not None and self.mode == "resume":
            session.observer = session.writer.observer = observer
        log.info(
            "run.sitting_started",
            run_id=self.run_id,
            mode=self.mode,
            recorded_events=len(rows),
            resuming=self.resuming,
        )
        held = contextlib.ExitStack()
        if SERVE_RECORDED_HTTP.get() and _recorded_http(store, rows, {self.run_id}):
            from .integrations._instrument import instrumented_while

            held.enter_context(instrumented_while())
        heartbeat = None
        if self.token is not None:
            heartbeat = _Heartbeat(session, self.token, self.lease_seconds)
        session.on_interrupt = functools.partial(self._interrupted, session, heartbeat, loop)
        install_task_factory(loop)
        self._hooked = True
        self.root_scope = TaskScope(session, "0")
        scope_token = current_scope.set(self.root_scope) if enter_scope else None
        try:
            yield session
        finally:
            if scope_token is not None:
                current_scope.reset(scope_token)
            self._unhook(session, loop)
            self._let_go(session, heartbeat)
            session.writer.close()
            with session.lock:
                session.closed = True
                # Whatever still waits for a turn (a thread the workflow let go) is let go too.
                session.history.fail_all(asyncio.CancelledError())
            if session.observer is not None:
                session.observer.closed(self.finished)
            held.close()

    def _give_back(self) -> None:
        """The sitting failed before it began (its first reads, on a lost connection): the run
        it owns is released, or, if the store cannot be told, given up, so that running it
        again from this process takes it at once rather than after a whole lease."""
        if self.token is None:
            return
        try:
            self.journal.store.release(self.run_id, self.token)
        except Exception as exc:
            give_up(self.token)
            log.warning("run.release_failed", run_id=self.run_id, error=str(exc))

    def pending_cancel(self) -> str | None:
        """The reason of a request to cancel the run that this sitting has not seen yet (it
        was asked for while the run was about to suspend), or None."""
        if self.token is None:
            return None
        store = self.journal.store
        try:
            reason = cancel_requested(store, self.run_id)
            if reason is not None:
                spent = cancels_spent(store.read_rows(self.run_id))
                reason = cancel_requested(store, self.run_id, spent)
        except Exception as exc:  # unreachable: suspend as asked, a later claim cancels it
            log.warning("run.cancel_check_failed", run_id=self.run_id, error=str(exc))
            return None
        return reason

    def _cancel_if_requested(self, claimed: Run) -> None:
        """Its cancellation was asked for while another process owned it (which died first):
        it is finished cancelled now, and nothing runs."""
        store = self.journal.store
        if claimed.status not in (RunStatus.RUNNING, RunStatus.WAITING):
            return
        reason = cancel_requested(store, self.run_id)
        if reason is not None:
            reason = cancel_requested(
                store, self.run_id, cancels_spent(store.read_rows(self.run_id))
            )
        if reason is None:
            return
        assert self.token is not None
        try:
            finish_cancelled(self.journal, claimed, self.token, reason)
        except BaseException:
            with contextlib.suppress(Exception):
                self.journal.store.release(self.run_id, self.token)
            raise
        self.finished = True
        raise RunCancelled(self.run_id, reason)

    def _reopen(self, failed: Run, chain: Chain | None) -> None:
        """Retry the failed run in place: its failed tail is superseded, the run running again."""
        store = self.journal.store
        assert self.token is not None
        try:
            rows = store.read_rows(self.run_id)
            head = ""
            if chain is not None:
                head = (store.last_hash(self.run_id) if rows else None) or chain.genesis(failed)
            spent = cancel_requests(store, self.run_id)
            reopened = reopening(failed, rows, chain, head, cancels_spent=spent)
            self.run = store.reopen(self.run_id, self.token, reopened.events)
        except BaseException:
            with contextlib.suppress(Exception):
                store.release(self.run_id, self.token)
            raise
        log.info(
            "run.retried",
            run_id=self.run_id,
            keys=list(reopened.keys[:20]),
            reopened=len(reopened.keys),
            from_seq=reopened.cut,
        )

    def _unhook(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        """Take the engine's hooks off the loop and the thread APIs, once."""
        if self._hooked:
            self._hooked = False
            uninstall_task_factory(loop)
            if session.thread_work is not None:
                restore_pools(session.thread_work.widened)

    def _interrupted(
        self, session: Session, heartbeat: _Heartbeat | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Ctrl+C or an exit raised in a task: it leaves the loop at once, and asyncio.run may
        close the loop before this sitting's cleanup runs. Release the run and unhook now."""
        self._unhook(session, loop)
        self._let_go(session, heartbeat)

    def _let_go(self, session: Session, heartbeat: _Heartbeat | None) -> None:
        """Release the run, unless it finished or was let go already. Also called the moment
        Ctrl+C or an exit raised in a task stops the sitting: it leaves the event loop at once,
        and `asyncio.run` may close the loop before this sitting's cleanup gets to run."""
        if heartbeat is not None:
            heartbeat.cancel()
        if self.token is None or self.finished or self.let_go:
            return
        self.let_go = True
        with contextlib.suppress(ReplayError):
            # Steps in flight: their starts are worth keeping. Cancellations not written yet
            # are dropped: a resume cancels those steps again as a crash here would.
            session.writer.flush(cancellations=False)
        try:
            self.journal.store.release(self.run_id, self.token)
        except Exception as exc:  # the store is gone (a full disk, a lost server): the lease
            # expires by itself (or this process takes it back at once once the store is
            # back), and the error that ended the sitting is the one to raise
            give_up(self.token)
            log.warning("run.release_failed", run_id=self.run_id, error=str(exc))

    def suspend(self, session: Session, waiting: Suspended) -> None:
        """Leave the run `waiting` and unowned: the process may exit, a worker continues it."""
        if self.token is None:
            return
        session.writer.flush(cancellations=False)
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
        session.writer.flush()
        unfinished = session.summary().unfinished
        if unfinished:
            # Sealed with only their starts: say so, a replay will stop at them.
            log.warning(
                "run.finished_with_steps_in_flight",
                run_id=self.run_id,
                status=status.value,
                keys=list(unfinished[:20]),
                count=len(unfinished),
            )
        if error is not None and session.redact is not None:  # the run's own failure: its
            # message or traceback may name a secret the run used (a step's cause, a URL)
            error = session.redact.scrub_secrets(session.redact(error), session.secrets)
        seal = session.writer.seal(status, result, error)
        try:
            self.journal.store.finish(
                self.run_id, self.token, status, result=result, error=error, seal=seal
            )
        except LeaseLost as exc:
            session.write_error = exc
            raise OwnershipLost(str(exc)) from exc
        self.finished = True
        wake_parent(self.journal, self.run)


def _recorded_cancellation(run: Run) -> RunCancelled:
    """The cancellation a cancelled run recorded as its error."""
    try:
        recorded = RecordedError.decode(run.error or b"")
    except ValueError:
        return RunCancelled(run.run_id)
    reason = (recorded.attributes or {}).get("reason")
    return RunCancelled(run.run_id, reason if isinstance(reason, str) else "")


async def workflow_body(session: Session, workflow: Coroutine[Any, Any, Any]) -> Any:
    """The workflow itself; Ctrl+C or an exit raised in its code stops the sitting at once, so
    nothing its other tasks do while the loop unwinds is journaled."""
    try:
        return await workflow
    except (KeyboardInterrupt, SystemExit, ReplayError) as exc:
        if not isinstance(exc, StepFailed):
            session.stop(exc)
        raise


async def until_done(session: Session, task: asyncio.Task[Any]) -> None:
    """Wait for the workflow's task. Cancelled from outside (Ctrl+C, a worker stopping), the
    sitting stops first, so the workflow's unwinding runs and journals no step, then the
    workflow is cancelled: the run is left as a crash at this moment would have left it."""
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        session.stop(asyncio.CancelledError())
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: it is the cancellation's, not the run's
        await session.close_tasks(normally=False)
        raise


async def outcome_of(sitting: Sitting, session: Session, task: asyncio.Task[Any]) -> Any:
    """The workflow's value; or its failure recorded and raised; or the sitting stopped and
    the engine's signal (suspension, divergence...) raised as itself."""
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: what is raised is decided here, and asyncio must not
        # report "Task exception was never retrieved" for a run that merely suspended
    stop: BaseException | None = swallowed_stop(session)
    if stop is not None:
        pass  # the engine stopped the run, whatever the workflow then made of it
    elif task.cancelled():
        stop = engine_signal(asyncio.CancelledError(), session)
    else:
        failure = task.exception()
        if failure is None:
            await session.close_tasks(normally=True)
            return task.result()
        stop = engine_signal(failure, session)
        if stop is failure and isinstance(failure, Exception):
            await session.close_tasks(normally=True)
            sitting.finish(session, RunStatus.FAILED, error=failure_record(session, failure))
            log.info("run.failed", run_id=session.run_id, error=type(failure).__name__)
            raise failure
    raise await end_stopped(sitting, session, stop)


def swallowed_stop(session: Session) -> BaseException | None:
    """The engine's signal if the sitting stopped on one (a suspension, a divergence, a lost
    lease) and the workflow ended anyway: caught by an `except CancelledError` or
    `except BaseException` in its code. The run must not be sealed as if nothing happened."""
    stop = session.stopping
    if stop is None or isinstance(stop, asyncio.CancelledError):
        return None
    return stop


def engine_signal(failure: BaseException, session: Session) -> BaseException:
    """What stops the sitting, if `failure` carries it: an engine signal, Ctrl+C or a
    cancellation, itself or inside an exception group (a TaskGroup wraps what its tasks
    raise); otherwise `failure` itself, an ordinary failure of the workflow."""
    swallowed = swallowed_stop(session)
    if swallowed is not None:
        return swallowed  # what the workflow raised came after the engine had stopped it
    if isinstance(failure, StepFailed) or (
        isinstance(failure, Exception) and not isinstance(failure, BaseExceptionGroup)
    ):
        return failure
    stop = session.stopping
    if isinstance(failure, asyncio.CancelledError):
        if session.cancelled_root and stop is not None:
            return stop  # the engine cancelled the workflow to stop it
        return failure
    if isinstance(failure, BaseExceptionGroup):
        if session.stopping is not None and not isinstance(
            session.stopping, asyncio.CancelledError
        ):
            return session.stopping
        leaves = _leaves(failure)
        signal = next((leaf for leaf in leaves if not isinstance(leaf, Exception)), None)
        return failure if signal is None else signal
    return failure


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for inner in group.exceptions:
        found.extend(_leaves(inner) if isinstance(inner, BaseExceptionGroup) else [inner])
    return found


async def end_stopped(sitting: Sitting, session: Session, stop: BaseException) -> BaseException:
    """The sitting ends without an outcome: tasks left running are cancelled unrecorded, and a
    suspended run is left waiting (unless its cancellation was asked for meanwhile: it is
    cancelled instead). What to raise: `stop`, or the cancellation."""
    session.stop(stop)
    await session.close_tasks(normally=False)
    if isinstance(stop, Suspended):
        reason = sitting.pending_cancel()
        if reason is None:
            sitting.suspend(session, stop)
            return stop
        stop = RunCancelled(session.run_id, reason)
    if isinstance(stop, RunCancelled) and sitting.run.status is not RunStatus.CANCELLED:
        sitting.finish(
            session, RunStatus.CANCELLED, error=RecordedError.from_exception(stop).encode()
        )
        log.info("run.cancelled", run_id=session.run_id, reason=stop.reason)
    return stop
