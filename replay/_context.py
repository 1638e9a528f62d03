"""Step identity: which journaled run the running code belongs to, and at which key.

A key is the task path plus a per-task counter: `0:3` is the third step of the workflow's own
task, `0/2:1` the first step of its second child task. A child's path is fixed when its parent
creates it (through a task factory on the loop), never by when it happens to run, so
`asyncio.gather` and TaskGroups get the same keys live and on replay.

Work handed to a thread pool from inside a run (`asyncio.to_thread`, `loop.run_in_executor`,
`ThreadPoolExecutor.submit`) gets a child path when it is submitted, named after the function
and numbered per function (`0/lookup#2`): submission order is as deterministic as task creation
order, thread scheduling is not. Tasks and threads
the engine starts for itself (heartbeats, a nested run's workflow) take no path at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._log import get_logger
from ._pools import set_thread_pool

if TYPE_CHECKING:
    from ._session import Session


class TaskScope:
    """The journaling position of one task (or one piece of thread work) inside one run."""

    __slots__ = (
        "__weakref__",
        "children",
        "deferred",
        "parent",
        "path",
        "queued_in",
        "retries",
        "session",
        "steps",
        "thread_work",
        "untaken",
    )

    def __init__(
        self,
        session: Session,
        path: str,
        *,
        in_thread: bool = False,
        parent: TaskScope | None = None,
    ) -> None:
        self.session = session
        self.path = path
        self.parent = parent
        """For work handed to a thread: the scope that handed it over."""
        self.steps = 0
        self.children = 0
        self.thread_work: dict[str, int] | None = None
        """Work handed to threads so far, counted per function: `name` -> how many."""
        self.untaken = False
        """Thread work whose step outcome is written and whose result the loop has not taken."""
        self.deferred: list[int] | None = [] if in_thread else None
        """For work run by a thread pool: outcomes handed out whose place in the history is
        taken only when the work ends or asks for its next step. Live, a thread went on with
        its result before the next one arrived; so must it here, before the next is handed."""
        self.queued_in: Any = None
        """For work submitted to a thread pool and not started yet: that pool."""
        self.retries: dict[str, Any] | None = None
        """Integrations' retry bookkeeping: a call's fingerprint -> the key its next attempt
        continues (an SDK retrying a request is one step with several attempts)."""

    def next_key(self) -> str:
        with self.session.lock:
            if self.deferred:
                self.session.settle(self)
            self.steps += 1
            return f"{self.path}:{self.steps}"

    def child(self) -> TaskScope:
        with self.session.lock:
            self.children += 1
            return TaskScope(self.session, f"{self.path}/{self.children}")

    def thread_child(self, name: str) -> TaskScope:
        """The scope of the next piece of work for function `name` handed to a thread: path
        `0/name#2` for its second one. Counted per function, so work a library hands to a
        thread once per process (platform detection, say) does not shift other keys."""
        session = self.session
        with session.lock:
            if self.deferred:
                session.settle(self)  # handing work on is doing something with what it got
            counts = self.thread_work
            if counts is None:
                counts = self.thread_work = {}
            number = counts[name] = counts.get(name, 0) + 1
            child = TaskScope(session, f"{self.path}/{name}#{number}", in_thread=True, parent=self)
            session.threads().scopes.add(child)
            return child


current_scope: contextvars.ContextVar[TaskScope | None] = contextvars.ContextVar(
    "replay_current_scope", default=None
)
"""None outside any run, and inside a step's live execution (its inner work is its own)."""

live_step_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "replay_live_step_key", default=None
)
"""`run_id:key` of the step whose body is running live, for idempotency keys."""


log = get_logger("replay")

_thread_work = threading.local()
"""The scope of the work this pool thread runs right now (set around plain functions)."""


def thread_work_scope() -> TaskScope | None:
    """The scope of the handed-over work this thread runs, if any."""
    return getattr(_thread_work, "scope", None)


def scope_here() -> TaskScope | None:
    """The journaling scope of the code running here: `current_scope`, unless this thread runs
    work handed over from that scope in a context copied before the work was submitted (as
    LangChain's `ContextThreadPoolExecutor.map` does): then the work's own scope."""
    scope = current_scope.get()
    if scope is None:
        return None
    work: TaskScope | None = getattr(_thread_work, "scope", None)
    if work is not None and work.parent is scope:
        return work
    return scope


def engine_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    scope: TaskScope | None = None,
) -> asyncio.Task[Any]:
    """A task the engine starts: it bypasses the task factory, so it takes no child path of
    the run that is current here; its code runs under `scope` (None: outside any run)."""
    context = contextvars.copy_context()
    context.run(current_scope.set, scope)
    context.run(live_step_key.set, None)
    return asyncio.Task(coro, loop=loop, context=context)


class _Factory:
    """Task factory giving each task created inside a run its own child scope.

    Chains whatever factory the loop had, and is removed when the last run on the loop ends.
    """

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.users = 0

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        scope = current_scope.get()
        if scope is not None:
            context = kwargs.get("context") or contextvars.copy_context()
            context.run(current_scope.set, scope.child())
            kwargs["context"] = context
        if self.previous is None:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = self.previous(loop, coro, **kwargs)
        if scope is not None:
            scope.session.tasks.add(task)
            task.add_done_callback(scope.session.task_done)
        return task


class _ThreadLoopFactory:
    """Task factory of an event loop a thread of the run creates (sync code calling
    `asyncio.run`): its tasks get child scopes in creation order, as on the run's own loop.
    The first task made where the thread's own scope is current (the coroutine given to
    `asyncio.run`) keeps that scope, so code without tasks keys as plain thread work."""

    def __init__(self, scope: TaskScope) -> None:
        self.scope = scope
        self.first = True

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        scope = current_scope.get()
        if scope is not None and not (scope is self.scope and self.first):
            context = kwargs.get("context") or contextvars.copy_context()
            context.run(current_scope.set, scope.child())
            kwargs["context"] = context
        if scope is self.scope:
            self.first = False
        return asyncio.Task(coro, loop=loop, **kwargs)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """`asyncio.new_event_loop`, giving a loop made by a thread of a run the task factory
    that keys its tasks by creation order."""
    loop = _original_new_event_loop()
    scope = scope_here()
    if scope is not None and threading.get_ident() != scope.session.loop_thread:
        loop.set_task_factory(_ThreadLoopFactory(scope))  # type: ignore[arg-type]
    return loop


_original_new_event_loop = asyncio.events.new_event_loop


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    current: Any = loop.get_task_factory()
    if isinstance(current, _Factory):
        factory = current
    else:
        factory = _Factory(current)
        loop.set_task_factory(factory)  # type: ignore[arg-type]
        if "run_in_executor" not in vars(loop):
            setattr(loop, "run_in_executor", _RunInExecutor(loop))  # noqa: B010
    factory.users += 1
    _install_submit_hook()


def uninstall_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    factory = loop.get_task_factory()
    if isinstance(factory, _Factory):
        factory.users -= 1
        if factory.users <= 0:
            loop.set_task_factory(factory.previous)
            if isinstance(vars(loop).get("run_in_executor"), _RunInExecutor):
                delattr(loop, "run_in_executor")
    _uninstall_submit_hook()


# -- thread pools --------------------------------------------------------------------------

_via_loop: contextvars.ContextVar[list[tuple[TaskScope, concurrent.futures.Future[Any]]] | None] = (
    contextvars.ContextVar("replay_via_loop", default=None)
)
"""Set while `loop.run_in_executor` submits: the scope given to the work is reported back."""


class _RunInExecutor:
    """`loop.run_in_executor` (and so `asyncio.to_thread`): work submitted from a run ends
    for the journal when the loop sees its result, not when the thread stops, so a result
    handed out in that thread is in the workflow's hands before the next one is handed out."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.original = type(loop).run_in_executor.__get__(loop)

    def __call__(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        given: list[tuple[TaskScope, concurrent.futures.Future[Any]]] = []
        token = _via_loop.set(given)
        try:
            future = self.original(executor, func, *args)
        finally:
            _via_loop.reset(token)
        for scope, work in given:
            future.add_done_callback(functools.partial(_loop_took, scope, work))
        return future


def _loop_took(scope: TaskScope, work: concurrent.futures.Future[Any], future: Any) -> None:
    """The loop's future of thread work is done. Cancelled (a timeout gave up on it), nobody
    takes the result: the work ends for the journal when its thread does."""
    if future.cancelled():
        work.add_done_callback(functools.partial(_work_done, scope))
        return
    if isinstance(getattr(future, "_exception", None), asyncio.CancelledError):
        future.exception()  # retrieved: work the run let go, released as its sitting ended
    _work_done(scope, future)


_submit_lock = threading.Lock()
_submit_users = 0
_original_submit = concurrent.futures.ThreadPoolExecutor.submit


_original_start = threading.Thread.start


def _install_submit_hook() -> None:
    global _submit_users
    with _submit_lock:
        _submit_users += 1
        if _submit_users == 1:
            concurrent.futures.ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]
            threading.Thread.start = _start  # type: ignore[method-assign,assignment]
            asyncio.events.new_event_loop = _new_event_loop
            asyncio.new_event_loop = _new_event_loop


def _uninstall_submit_hook() -> None:
    global _submit_users
    with _submit_lock:
        _submit_users -= 1
        if _submit_users <= 0:
            _submit_users = 0
            concurrent.futures.ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
            threading.Thread.start = _original_start  # type: ignore[method-assign]
            asyncio.events.new_event_loop = _original_new_event_loop
            asyncio.new_event_loop = _original_new_event_loop


_POOL_WORKERS = (concurrent.futures.thread._worker,)
"""Thread targets that serve a pool for its whole life: their work items get scopes of their
own when submitted, the thread itself none."""


def _start(thread: threading.Thread) -> None:
    """`threading.Thread.start`, giving a thread started inside a run (with a target) its own
    child scope, as pool work gets: its key is fixed by start order, not by scheduling."""
    scope = scope_here()
    target = getattr(thread, "_target", None)
    if scope is not None and target is not None and target not in _POOL_WORKERS:
        args = tuple(getattr(thread, "_args", ()))
        child = scope.thread_child(_work_name(target, args))
        carried = _carried_context(target)
        if carried is not None:
            carried.run(current_scope.set, child)
        thread._target = functools.partial(_thread_body, child, target)  # type: ignore[attr-defined]
    _original_start(thread)


def _thread_body(scope: TaskScope, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return _in_scope(scope, target, *args, **kwargs)
    finally:
        _work_done(scope, None)


def _submit(
    executor: concurrent.futures.ThreadPoolExecutor,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> concurrent.futures.Future[Any]:
    """`ThreadPoolExecutor.submit`, giving work submitted inside a run its own child scope.

    The work runs in the context it carries (`copy_context().run`, as `asyncio.to_thread` and
    smolagents pass it) with the child scope set there, or, for a plain function, with the
    child scope set around it. Either way its steps are journaled under keys fixed now.
    """
    scope = scope_here()
    if scope is None:
        return _original_submit(executor, fn, *args, **kwargs)
    carried = _carried_context(fn)
    child = scope.thread_child(_work_name(fn, args))
    if carried is not None:
        carried.run(current_scope.set, child)
    work = functools.partial(_in_scope, child, fn)
    session = scope.session
    with session.lock:
        handed = session.threads()
        handed.pools.add(executor)
        handed.queued[executor] = handed.queued.get(executor, 0) + 1
        child.queued_in = executor
    future = _original_submit(executor, work, *args, **kwargs)
    future.add_done_callback(functools.partial(_never_started, child))
    reported = _via_loop.get()
    if reported is not None:
        reported.append((child, future))  # ends when the loop has the result: _RunInExecutor
    else:
        future.add_done_callback(functools.partial(_work_done, child))
    return future


def _carried_context(fn: Callable[..., Any]) -> contextvars.Context | None:
    """The context `fn` runs in: `ctx.run` itself, or `functools.partial(ctx.run, ...)`."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    owner = getattr(target, "__self__", None)
    if isinstance(owner, contextvars.Context) and getattr(target, "__name__", "") == "run":
        return owner
    return None


def _work_name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The name of the function a thread will run, for its key: `ctx.run(f, ...)` and
    `partial(ctx.run, f, ...)` name `f`; the name has no `:` or `/` (key separators)."""
    target: Any = fn
    for _ in range(4):
        if isinstance(target, functools.partial):
            args = target.args + args
            target = target.func
        elif _carried_context(target) is not None and args:
            target, args = args[0], args[1:]
        else:
            break
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    name = name.replace("<locals>.", "").replace("<lambda>", "lambda")
    return name.replace(":", ".").replace("/", ".").replace("#", ".") or "work"


class ThreadWork:
    """What one run handed to threads: made when it first does (`Session.threads()`)."""

    __slots__ = ("pools", "queued", "scopes", "widened")

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[concurrent.futures.ThreadPoolExecutor] = weakref.WeakSet()
        """Thread pools the run handed work to."""
        self.queued: weakref.WeakKeyDictionary[concurrent.futures.ThreadPoolExecutor, int] = (
            weakref.WeakKeyDictionary()
        )
        """How much of the run's work each pool holds in its queue, not started yet."""
        self.widened: list[Callable[[], None]] = []
        """What takes back the threads pools were given for this replay (`restore_pools`)."""
        self.scopes: weakref.WeakSet[TaskScope] = weakref.WeakSet()
        """Scopes of work handed to threads: what they were handed may not be in place yet."""


def _in_scope(scope: TaskScope, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run handed-over work in its scope. It counts as the run's work in progress while it
    runs, not while it waits in the pool's queue (then it cannot be what others wait for)."""
    session = scope.session
    token = current_scope.set(scope)
    outer = getattr(_thread_work, "scope", None)
    _thread_work.scope = scope
    ident = threading.get_ident()
    outer_pool = set_thread_pool(scope.queued_in)
    with session.lock:
        _left_queue(scope)
        session.threads_running += 1
        session.run_threads[ident] = session.run_threads.get(ident, 0) + 1
    try:
        return fn(*args, **kwargs)
    finally:
        with session.lock:
            session.threads_running -= 1
            left = session.run_threads.pop(ident) - 1
            if left:
                session.run_threads[ident] = left
        _thread_work.scope = outer
        set_thread_pool(outer_pool)
        current_scope.reset(token)


def _left_queue(scope: TaskScope) -> None:
    """Work submitted to a pool started, or will never start (the caller holds the lock)."""
    pool = scope.queued_in
    if pool is not None:
        scope.queued_in = None
        queued = scope.session.threads().queued
        queued[pool] = queued.get(pool, 1) - 1


def _never_started(scope: TaskScope, _: Any) -> None:
    with scope.session.lock:
        _left_queue(scope)  # cancelled in the queue (shutdown(cancel_futures=True), say)


def _work_done(scope: TaskScope, _: Any) -> None:
    """Work handed to a thread ended (its future has its result): its outcomes take their
    place in the history."""
    session = scope.session
    with session.lock:
        if scope.untaken:
            scope.untaken = False
            session.untaken -= 1
        if scope.deferred:
            session.settle(scope)
