"""Workers: processes that find runs with no live owner and resume them.

A run needs a worker when it is `running` and nobody owns it (it was submitted and never
started, or its process crashed, was killed, or lost its lease), or when it is `waiting` and
due (its sleep ended, its signal arrived or timed out). Any number of workers, on any
number of machines sharing a PostgreSQL journal, can look at once. Ownership decides who runs
what: a worker resumes a run only by claiming it (a row lock and a lease), and a worker that
loses the race gets `RunLocked` and moves on. No run is ever executed by two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import sys
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from journal import (
    Journal,
    JournalError,
    JournalUnavailable,
    Run,
    RunCancelled,
    RunLocked,
    RunStatus,
)
from journal.stores._ownership import HOSTNAME, owner_is_gone
from journal.stores._protocol import provided

from ._blocks import WorkflowNotFound
from ._errors import JournalWriteFailed, OwnershipLost, ReplayError, Suspended, VersionNotAccepted
from ._log import get_logger
from ._rerun import resume_recorded
from ._run_pools import RoutingPool, RunPool
from ._sitting import DEFAULT_LEASE_SECONDS
from ._versions import accepted_versions, module_version
from ._workflow import RunOutcome

log = get_logger("replay.worker")

DEFAULT_CONCURRENCY = 32
"""Runs a worker continues at once by default: agents' steps mostly wait on LLM calls and
tools, so one process keeps many runs going; each run renews its own lease."""
LOOK_SAMPLE = 256
"""Runs needing a worker that a look picks at most (at random), or four per slot when more:
enough for the slots and for the runs other workers take first."""


@dataclass
class WorkerStats:
    """What a worker did: runs it finished, failed, saw cancelled, could not claim, or could
    not import."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    """Runs whose cancellation was asked while they ran, or before this worker claimed them."""
    locked: int = 0
    skipped: int = 0
    suspended: int = 0
    unavailable: int = 0
    """Runs left for a later round because the journal could not be reached."""
    other_version: int = 0
    """Runs started by a version of the code this worker does not accept: left for others."""


class Worker:
    """Resumes interrupted runs of the journal, up to `concurrency` at once, until stopped.

    >>> worker = Worker(Journal("postgresql://..."), imports=["myapp.workflows"])
    >>> await worker.run()                   # until worker.stop() (or SIGTERM via the CLI)

    `imports` are modules to import first, so their workflows resolve by the import path each
    run recorded. Candidates are tried in random order, so workers spread over the work.

    A run started by another version of the code (see `Run.version`) is left alone, for the
    workers of its version, unless that version is in `accept_versions` (`"*"`: any).

    `concurrency` runs go on at once in this process's event loop, each with its own lease
    and its own threads (`asyncio.to_thread`); `stop()` stops them all, each releasing its
    lease for another worker. A workflow that blocks the loop (a sync SDK call in async code)
    holds up the others: `loop_per_run=True` gives each run an event loop of its own, in a
    thread, at about twice the CPU per step.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        imports: Iterable[str] = (),
        poll_seconds: float = 0.5,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        accept_versions: Iterable[str] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
        loop_per_run: bool = False,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(
                f"concurrency is how many runs a worker continues at once: a whole number of "
                f"at least 1, not {concurrency!r}"
            )
        self.concurrency = concurrency
        self.loop_per_run = loop_per_run
        self.journal = journal
        self.accept_versions = accepted_versions(accept_versions)
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.stats = WorkerStats()
        self._stop_requested = False
        self._stop_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._unresolvable: set[str] = set()
        self._backlog: list[Run] = []
        """Runs found needing work at the last look, not taken yet (a look reads every run)."""
        self._running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
        """Each run in progress: the loop it runs on (the worker's, or its own with `loop_per_run`)
        and the task continuing it."""
        self._running_lock = threading.Lock()
        self._cancelled_early: set[str] = set()
        """Runs given up before their loop of their own had started them (`loop_per_run`)."""
        self.imports = tuple(imports)
        for module in self.imports:
            if "" not in sys.path:
                sys.path.insert(0, "")  # as `python -m` does: import from where you stand
            importlib.import_module(module)
            module_version(module)  # the code as imported now, whatever the disk holds later

    def stop(self) -> None:
        """Finish no more runs: those in progress are cancelled, their leases released."""
        self._stop_requested = True
        for loop, event in list(self._stop_events.items()):
            # From any thread (an asyncio.Event is set only on its own loop's thread).
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing waits
                loop.call_soon_threadsafe(event.set)
        with self._running_lock:
            running = list(self._running.values())
        for loop, task in running:
            loop.call_soon_threadsafe(task.cancel)

    def _stopping(self) -> asyncio.Event:
        """The stop event of the running loop: a worker may be used from more than one loop
        (`asyncio.run(worker.run_once())` twice), and an asyncio.Event belongs to one."""
        loop = asyncio.get_running_loop()
        event = self._stop_events.get(loop)
        if event is None:
            event = self._stop_events[loop] = asyncio.Event()
            if self._stop_requested:
                event.set()
        return event

    async def run(self) -> WorkerStats:
        """Resume interrupted runs until `stop()`; between rounds wait `poll_seconds`."""
        log.info(
            "worker.started",
            store=_where(self.journal),
            imports=list(self.imports),
            accept_versions=sorted(self.accept_versions),
            concurrency=self.concurrency,
            poll_seconds=self.poll_seconds,
        )
        in_flight: dict[str, asyncio.Future[int]] = {}
        stopping = asyncio.ensure_future(self._stopping().wait())
        try:
            while not self._stop_requested:
                candidates: list[Run] = []
                try:
                    if len(in_flight) < self.concurrency:
                        candidates = self._next(in_flight, self.concurrency - len(in_flight))
                except JournalUnavailable as exc:  # a database blip: look again at the next poll
                    log.warning("worker.journal_unavailable", error=str(exc))
                for run in candidates:
                    if len(in_flight) >= self.concurrency or self._stop_requested:
                        break
                    in_flight[run.run_id] = asyncio.ensure_future(self._resume(run))
                # Look again when a run ends (a slot is free), at the next poll, or on stop.
                watched: set[asyncio.Future[Any]] = {stopping, *in_flight.values()}
                await asyncio.wait(
                    watched,
                    timeout=self.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for run_id in [r for r, task in in_flight.items() if task.done()]:
                    in_flight.pop(run_id).result()
        finally:
            stopping.cancel()
            if in_flight:  # stopping: each run is stopped and releases its lease
                if not self._stop_requested:  # this task was cancelled (or failed): likewise
                    for task in in_flight.values():
                        task.cancel()
                await asyncio.gather(*in_flight.values(), return_exceptions=True)
        log.info("worker.stopped", **vars(self.stats))
        return self.stats

    async def run_once(self) -> int:
        """One round: try every run that needs resuming now, `concurrency` at a time; how
        many this worker finished."""
        finished = 0
        pending: set[asyncio.Future[int]] = set()
        try:
            for run in self._candidates({}, every=True):
                if self._stop_requested:
                    break
                if len(pending) >= self.concurrency:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    finished += sum(task.result() for task in done)
                pending.add(asyncio.ensure_future(self._resume(run)))
            if pending:
                done, pending = await asyncio.wait(pending)
                finished += sum(task.result() for task in done)
        finally:
            # Given up (cancelled, a timeout) or failed: the runs still going are stopped and
            # release their leases before the round ends, not carried on unseen.
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return finished

    def _next(self, in_flight: Mapping[str, object], free: int) -> list[Run]:
        """Up to `free` runs to continue: from what the last look found, read again in one read
        (they may have been taken or finished since), or from a new look once that is used up. A
        look reads every run of the journal; with many runs in progress, a slot frees up
        many times a second, and a look each time cost a worker a quarter of its CPU."""
        if not self._backlog:
            self._backlog = self._candidates(in_flight)
            fresh = True
        else:
            fresh = False
        chosen: list[Run] = []
        while self._backlog and len(chosen) < free:
            wanted = free - len(chosen)
            batch: list[Run] = []
            # Read again in one read, a few more than wanted: with other workers about, most
            # of what a look found is taken by them before this one reaches it.
            while self._backlog and len(batch) < (wanted if fresh else 2 * wanted + 6):
                run = self._backlog.pop()
                if run.run_id not in in_flight and run.run_id not in self._unresolvable:
                    batch.append(run)
            if not fresh:
                try:
                    found = _read_again(self.journal.store, batch)
                except BaseException:  # out of reach: all taken off wait for the next try
                    self._backlog += [*reversed(batch), *reversed(chosen)]
                    raise
                current = {run.run_id: run for run in found}
                batch = [current[run.run_id] for run in batch if run.run_id in current]
                batch = [run for run in batch if _needs_work(run)]
            chosen += batch[:wanted]
            self._backlog += reversed(batch[wanted:])  # read just now: next in line
        return chosen

    def _candidates(self, in_flight: Mapping[str, object], *, every: bool = False) -> list[Run]:
        """Runs that need resuming now and that this worker is not already continuing, in
        random order, so workers spread over the work: all of them with `every` (one round),
        else a sample of the interrupted ones (a look of a worker that goes on)."""
        due = self.journal.due()
        sampled = None if every else self._sampled()
        if sampled is None:
            return self._usable([*self.journal.interrupted(), *due], in_flight)
        found, partial = sampled
        candidates = self._usable([*found, *due], in_flight)
        if partial and not candidates:
            # A full sample of runs this worker cannot take (other versions, unimportable)
            # says nothing of the others: this look reads them all rather than find nothing.
            candidates = self._usable([*self.journal.interrupted(), *due], in_flight)
        return candidates

    def _usable(self, needing: list[Run], in_flight: Mapping[str, object]) -> list[Run]:
        """`needing` in random order, without repeats, nor runs in flight here or that this
        worker cannot take."""
        seen: set[str] = set()
        usable = []
        for run in needing:
            if run.run_id in self._unresolvable or run.run_id in in_flight:
                continue
            if run.run_id not in seen:
                seen.add(run.run_id)
                usable.append(run)
        random.shuffle(usable)
        return usable

    def _sampled(self) -> tuple[list[Run], bool] | None:
        """Running runs with no live owner, a sample of them from a store that can pick one
        (`sample_resumable`), so that a look costs the same with 100 runs queued or 100,000,
        and whether there may be more; None from a store that cannot."""
        sample = provided(self.journal.store, "sample_resumable")
        if sample is None:
            return None
        now = datetime.now(UTC)
        limit = max(LOOK_SAMPLE, 4 * self.concurrency)
        found: list[Run] = sample(now, HOSTNAME, limit)
        live = [run for run in found if run.owner is None or owner_is_gone(run.owner, now)]
        # Runs owned from this host with a live lease come on top of the `limit` picked: the
        # sample is full only when the picked part is.
        picked = [
            run
            for run in found
            if run.owner is None or run.owner.host != HOSTNAME or run.owner.lease_expires_at <= now
        ]
        return live, len(picked) >= limit

    async def _resume(self, run: Run) -> int:
        if run.workflow is None or run.workflow.startswith("__main__:"):
            self._skip(run, "it names no importable workflow (a journaled block or a script)")
            return 0
        threads = RunPool(run.run_id)
        running: asyncio.Future[RunOutcome[Any]]
        if self.loop_per_run:
            running = asyncio.wrap_future(threads.submit(self._alone, run))
        else:
            _route_threads()
            running = asyncio.get_running_loop().create_task(
                self._continue(run), context=threads.context()
            )
        try:
            outcome = await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.done():  # this task was cancelled, not the run: stop the run too
                if self.loop_per_run:
                    self._cancel(run.run_id)
                else:
                    running.cancel()  # whether or not it has begun
                await asyncio.wait([running])
                if not running.cancelled():
                    running.exception()  # retrieved: the cancellation's, raised below
                raise
            if not self._stop_requested:
                raise
            log.info("worker.released", run_id=run.run_id)  # its sitting released its lease
            return 0
        except RunLocked:
            self.stats.locked += 1  # another worker claimed it first
            return 0
        except OwnershipLost:
            self.stats.locked += 1  # its lease ran out and another worker took it over
            return 0
        except Suspended:
            self.stats.suspended += 1  # waiting again (a sleep, a signal): due later
            return 0
        except (JournalUnavailable, JournalWriteFailed) as exc:
            # The database went away for a moment: the run stays as it was, for a later round.
            self.stats.unavailable += 1
            log.warning("worker.journal_unavailable", run_id=run.run_id, error=str(exc))
            return 0
        except VersionNotAccepted as exc:  # for the workers of its own version
            self._unresolvable.add(run.run_id)
            self.stats.other_version += 1
            log.info(
                "worker.other_version", run_id=run.run_id, version=exc.recorded, own=exc.current
            )
            return 0
        except (WorkflowNotFound, ReplayError) as exc:
            # Code that no longer reproduces the run (or is gone) needs a person, not a retry.
            self._skip(run, f"{type(exc).__name__}: {exc}")
            return 0
        except RunCancelled as cancelled:
            self.stats.cancelled += 1
            log.info("worker.run_cancelled", run_id=run.run_id, reason=cancelled.reason)
            return 1
        except JournalError:
            self.stop()  # the journal refuses this worker: the other runs let go at once
            raise
        except Exception as exc:  # the workflow failed: recorded as such in the journal
            self.stats.failed += 1
            log.info("worker.run_failed", run_id=run.run_id, error=type(exc).__name__)
            return 1
        finally:
            threads.close()
            with self._running_lock:
                self._cancelled_early.discard(run.run_id)
        if outcome.summary.already_finished:  # another worker finished it since the look
            self.stats.locked += 1
            return 0
        self.stats.completed += 1
        log.info("worker.recovered", run_id=run.run_id, summary=str(outcome.summary))
        return 1

    def _alone(self, run: Run) -> RunOutcome[Any]:
        """Continue `run` on an event loop of its own (`loop_per_run`), in a thread. As
        `asyncio.run`, except that the loop's threads still busy at the end (work a stopped
        run let go) are not waited for: a hung call must not hold the worker."""
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self._continue(run))
        finally:
            try:
                left = asyncio.all_tasks(loop)
                for task in left:
                    task.cancel()
                if left:
                    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()  # its default pool is shut down without waiting

    def _cancel(self, run_id: str) -> None:
        with self._running_lock:
            running = self._running.get(run_id)
            if running is None:  # its loop has not started it yet: it must not begin
                self._cancelled_early.add(run_id)
        if running is not None:
            running[0].call_soon_threadsafe(running[1].cancel)

    async def _continue(self, run: Run) -> RunOutcome[Any]:
        """Continue `run`, a task of the worker's loop beside the other runs going at once
        (the loop's threads are the run's own: `_run_pools`)."""
        task = asyncio.current_task()
        assert task is not None
        with self._running_lock:
            self._running[run.run_id] = (asyncio.get_running_loop(), task)
            given_up = run.run_id in self._cancelled_early
        try:
            if self._stop_requested or given_up:
                raise asyncio.CancelledError
            return await resume_recorded(
                self.journal,
                run,
                lease_seconds=self.lease_seconds,
                accept_versions=self.accept_versions,
            )
        finally:
            with self._running_lock:
                self._running.pop(run.run_id, None)

    def _skip(self, run: Run, reason: str) -> None:
        self._unresolvable.add(run.run_id)
        self.stats.skipped += 1
        log.warning("worker.skipped", run_id=run.run_id, reason=reason)


def _route_threads() -> None:
    """Make the running loop's default executor hand each run's work to the run's own pool."""
    loop = asyncio.get_running_loop()
    current = getattr(loop, "_default_executor", None)  # None until first used
    if not isinstance(current, RoutingPool):
        loop.set_default_executor(RoutingPool(current))


def _read_again(store: Any, runs: list[Run]) -> list[Run]:
    """`runs` as the store holds them now, in one read (one each from a store of another
    package written before `get_runs`)."""
    ids = [run.run_id for run in runs]
    get_runs = provided(store, "get_runs")
    if get_runs is not None:
        return list(get_runs(ids))
    return [run for run in map(store.get_run, ids) if run is not None]


def _needs_work(run: Run) -> bool:
    """Whether a run found earlier still needs a worker: running without a live owner, or
    waiting with its time come. (A run due for a signal is left to the next look, which asks
    the store; one another worker has put back to sleep meanwhile is not due.)"""
    now = datetime.now(UTC)
    if run.status is RunStatus.WAITING:
        return run.owner is None and run.wake_at is not None and run.wake_at <= now
    if run.status is not RunStatus.RUNNING:
        return False
    return run.owner is None or owner_is_gone(run.owner, now)


def _where(journal: Journal) -> str:
    """The journal a worker serves, for its log: the file, or the PostgreSQL schema (never a
    URL, which may hold a password)."""
    store = journal.store
    path = getattr(store, "path", None)
    if path is not None:
        return f"sqlite:{path}"
    schema = getattr(store, "schema", None)
    return f"postgresql schema {schema}" if schema else type(store).__name__
