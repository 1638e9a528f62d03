"""A thread pool of its own for each run a worker continues, on the worker's one event loop.

Runs that share a loop would share its default thread pool (`asyncio.to_thread`,
`run_in_executor(None, ...)`): a run whose replay holds a thread until its recorded turn could
take the threads another run needs to reach that turn. The worker's loop gets `RoutingPool`
as its default executor, and each run's task carries its own `RunPool` in a context variable:
work a run hands to a thread goes to that run's pool, as if the run had a loop of its own.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_THREADS_PER_RUN = min(32, (os.cpu_count() or 1) + 4)
"""As many threads as asyncio gives a loop's default pool."""

_CURRENT: contextvars.ContextVar[RunPool | None] = contextvars.ContextVar(
    "journal_replay_run_pool", default=None
)


class RunPool:
    """The threads of one run, started when it first hands work to a thread."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._pool is None:
            # Named after the run: a thread dump says which run each thread works for.
            name = f"journal-run {self.run_id}"
            self._pool = ThreadPoolExecutor(_THREADS_PER_RUN, thread_name_prefix=name)
        return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """No more work; threads still busy (work abandoned by a cancelled run) finish alone."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def context(self) -> contextvars.Context:
        """A copy of the current context in which this pool is the run's."""
        context = contextvars.copy_context()
        context.run(_CURRENT.set, self)
        return context


class RoutingPool(ThreadPoolExecutor):
    """A loop's default executor that hands each run's work to that run's own pool, and
    anything else (the worker's own work, code outside runs) to `fallback`."""

    def __init__(self, fallback: ThreadPoolExecutor | None) -> None:
        super().__init__(max_workers=1)  # never started: every submit is routed
        self.fallback = fallback or ThreadPoolExecutor(thread_name_prefix="asyncio")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        pool = _CURRENT.get()
        if pool is not None:
            return pool.submit(fn, *args, **kwargs)
        return self.fallback.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.fallback.shutdown(wait, cancel_futures=cancel_futures)
        super().shutdown(wait, cancel_futures=cancel_futures)
