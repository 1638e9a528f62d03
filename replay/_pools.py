"""Thread pools whose threads wait on the journal.

A thread of a pool that waits for its recorded turn (a served step whose turn has not come, or
a live outcome held until the replayed part is over) does no work, yet it holds its place in
the pool. Live, that step was at work and its run's next outcome came from elsewhere; served,
the next outcome may be queued in that very pool, behind work whose threads all wait: runs
sharing a small pool (a worker continuing many runs) can hold each other up for good.

When a thread of a pool waits for its turn, fewer of the pool's threads are at work than its
size (a waiting thread does none), and every run with a thread waiting there has its next
outcome in a pool's queue, nothing else can move them: a stand-in thread takes one piece of
the pool's queued work. A thread whose turn comes while the pool's place is taken (by a
stand-in still at work) waits for a place before it goes on: the pool runs no more work at
once than its size. Pools are the standard library's `ThreadPoolExecutor` with no
initializer (a stand-in is a thread of its own: it would run the initializer once more than
the pool's size); others are left alone. A step held on an event loop of a pool thread's own
(`asyncio.run` in the pool's work) parks its thread while nothing else on that loop works
(`OwnLoopWatch`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import _worker as _pool_worker
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ._log import get_logger
from ._loop_state import engine_handles, loop_state

log = get_logger("replay")

_pool_of_thread = threading.local()
"""The pool whose work this thread runs right now, if a run handed it that work."""

_lock = threading.Lock()
_parked: dict[int, list[Callable[[], bool]]] = {}
"""Threads waiting for their recorded turn, with what says whether their run's next outcome is
queued work (one for each step held: a thread's own event loop may hold several)."""
_held: set[int] = set()
"""Threads with a step held for its turn in some way (an event loop of their own, say)."""
_stand_ins: weakref.WeakKeyDictionary[ThreadPoolExecutor, set[threading.Thread]] = (
    weakref.WeakKeyDictionary()
)
"""Stand-in threads at work for each pool."""
_IDLE_CODE = _pool_worker.__code__
"""What a pool's own thread runs between pieces of work (it waits on its queue in there)."""


_COLLECTS_IN_CURRENT_FRAMES = sys.version_info < (3, 11, 9)
"""CPython before 3.11.9 can collect garbage inside `sys._current_frames()` (gh-106883)."""
_frames_lock = threading.RLock()
"""One look at the frames at a time: the collector is the whole process's."""


def current_frames() -> dict[int, FrameType]:
    """`sys._current_frames()`, safe from a CPython deadlock (gh-106883, fixed in 3.11.9).
    A garbage collection inside it runs weakref callbacks while it holds the lock a starting
    or ending thread takes; a callback that lets go of the GIL can then wait forever for it,
    held by a thread that waits for that lock. The collector is held off during the call, as
    CPython's own fix does, unless someone else has turned it off.

    One thread at a time: a second caller that found the collector off (the first's doing)
    read the frames as it was, and the first turned it back on while the second was still
    inside the call."""
    if not _COLLECTS_IN_CURRENT_FRAMES:
        return sys._current_frames()
    with _frames_lock:
        if not gc.isenabled():
            return sys._current_frames()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            gc.enable()


def set_thread_pool(pool: ThreadPoolExecutor | None) -> ThreadPoolExecutor | None:
    """Say which pool's work this thread runs (None: none); returns what was said before."""
    outer = getattr(_pool_of_thread, "pool", None)
    _pool_of_thread.pool = pool
    return outer


def note_held(ident: int, held: bool) -> None:
    """Thread `ident` has a step held for its turn (or no more): it is not at work."""
    with _lock:
        if held:
            _held.add(ident)
        else:
            _held.discard(ident)


def park(waits_on_queued_work: Callable[[], bool]) -> None:
    """This thread waits for its recorded turn (until `unpark`). `waits_on_queued_work`:
    whether its run has its next outcome in a pool's queue (asked with no lock of this module
    held)."""
    with _lock:
        _parked.setdefault(threading.get_ident(), []).append(waits_on_queued_work)


def unpark(waits_on_queued_work: Callable[[], bool]) -> None:
    """This thread's wait that `park` began is over (if `wait_for_room` did not end it)."""
    ident = threading.get_ident()
    with _lock:
        held = _parked.get(ident)
        if held is not None and waits_on_queued_work in held:
            held.remove(waits_on_queued_work)
            if not held:
                del _parked[ident]


@contextmanager
def parked(waits_on_queued_work: Callable[[], bool]) -> Iterator[Callable[[], bool]]:
    """This thread waits for its recorded turn while the block runs (`park`). Yields what to
    call now and then: it starts a stand-in for this thread's pool if the pool is held up
    (whether it did)."""
    park(waits_on_queued_work)
    try:
        yield stand_in_if_held_up
    finally:
        unpark(waits_on_queued_work)


GLANCE_SECONDS = 0.005
"""How long a thread waits for its turn (parked, or on a loop of its own) before it looks
whether its pool is held up."""
_LOOK_SECONDS = 0.05
"""How often, after that, while it waits."""
_ROOM_SECONDS = 0.005
"""How often a thread whose turn came looks whether its pool has room for it again."""


def wait_for_room(stopped: Callable[[], bool]) -> None:
    """This thread's turn came (inside `parked`): it goes on once its pool runs fewer pieces
    of work than its size. A stand-in took a place while this thread waited; going on beside
    it, the pool would run more at once than its size for as long as the stand-in's work
    lasts (live work after the recorded part, say). Taken out of the parked threads as it
    finds room, so the next one to look counts it at work (unless another step is still held
    on the thread's own loop). `stopped`: whether the thread has no more to do than raise
    (its sitting stopped)."""
    pool = getattr(_pool_of_thread, "pool", None)
    ident = threading.get_ident()
    while True:
        with _lock:
            if (
                pool is None
                or not _stand_ins.get(pool)
                or _at_work(pool)[0] < pool._max_workers
                or stopped()
            ):
                held = _parked.get(ident)
                if held is None or len(held) <= 1:
                    _parked.pop(ident, None)
                    _held.discard(ident)
                # else: another step is still held on this thread's own loop; the thread stays
                # parked for it, and `parked` takes this step's entry out as it ends
                return
        time.sleep(_ROOM_SECONDS)


class OwnLoopWatch:
    """Steps held for their turns on an event loop of a pool thread's own (`asyncio.run` in
    work handed to the pool). While nothing else on that loop is ready to run or waits on a
    timer or a socket, the thread does no work, as one parked in `History._park` does: it
    counts as parked, and its pool may get a stand-in. Looked at from a callback of that loop,
    so what the loop has ready is the others' (`loop_state`). Kept by the loop, weakly: it
    holds no reference to it (it runs on it)."""

    __slots__ = ("asks", "handle", "held", "parked")

    def __init__(self, asks: Callable[[], bool]) -> None:
        self.asks = asks
        """Whether the run's next outcome is queued work (`History.waits_on_queued_work`)."""
        self.held = 0
        self.parked = False
        self.handle: asyncio.TimerHandle | None = None

    def hold(self) -> None:
        self.held += 1
        if self.handle is None:
            self._look_in(GLANCE_SECONDS)

    def release(self, went_on: bool, stopped: Callable[[], bool]) -> None:
        """One step's wait is over (`went_on`: its turn came). A thread that counted as
        parked waits for room in its pool before it goes on, as `wait_for_room` says."""
        self.held -= 1
        if self.held == 0 and self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.parked:
            self.parked = False
            if went_on:
                wait_for_room(stopped)
            unpark(self.asks)

    def _look(self) -> None:
        self.handle = None
        if self.held <= 0:
            return
        idle = loop_state(asyncio.get_running_loop()) == "idle"
        if idle and not self.parked:
            park(self.asks)
            self.parked = True
        elif not idle and self.parked:
            unpark(self.asks)
            self.parked = False
        if self.parked:
            stand_in_if_held_up()
        self._look_in(_LOOK_SECONDS)

    def _look_in(self, seconds: float) -> None:
        self.handle = asyncio.get_running_loop().call_later(seconds, self._look)
        engine_handles.add(self.handle)


_own_loop_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OwnLoopWatch] = (
    weakref.WeakKeyDictionary()
)


def own_loop_watch(asks: Callable[[], bool]) -> OwnLoopWatch:
    """The watch of the running loop (made on first use); `asks`: as for `park`."""
    loop = asyncio.get_running_loop()
    watch = _own_loop_watches.get(loop)
    if watch is None:
        watch = _own_loop_watches[loop] = OwnLoopWatch(asks)
    return watch


def pool_at_work(pool: ThreadPoolExecutor) -> bool:
    """Whether a thread of `pool` is at work: not waiting for its turn, nor with no timeout
    on another thread (an idle one is, while work is queued: it takes some at once)."""
    with _lock:
        return _at_work(pool)[0] > 0


def _at_work(pool: ThreadPoolExecutor) -> tuple[int, list[Callable[[], bool]]]:
    """How many threads of `pool` (its own and stand-ins) are at work; for each thread
    waiting for its turn, what says whether its run's next outcome is queued work (the
    caller holds `_lock`)."""
    at_work = 0
    asking: list[Callable[[], bool]] = []
    frames = current_frames()
    idle_takes_work = not pool._work_queue.empty()  # an idle thread is about to take some
    for thread in [*pool._threads, *_stand_ins.get(pool, ())]:
        ident = thread.ident or 0
        held = _parked.get(ident)
        if held:
            asking.extend(held)
            continue
        frame = frames.get(ident)
        if ident in _held or frame is None or waits_on_the_process(frame):
            continue
        if frame.f_code is _IDLE_CODE and not idle_takes_work:
            continue  # between pieces of work, with none queued
        at_work += 1
    return at_work, asking


def parked_for(pool: ThreadPoolExecutor) -> list[Callable[[], bool]]:
    """For each step held for its turn on a thread of `pool`, what says whether its run's
    next outcome is queued work (what `park` was given)."""
    with _lock:
        threads = [*getattr(pool, "_threads", ()), *_stand_ins.get(pool, ())]
        return [asks for thread in threads for asks in _parked.get(thread.ident or 0, ())]


def stand_in_if_held_up(pool: ThreadPoolExecutor | None = None) -> bool:
    """Start a stand-in for `pool` (this thread's pool if None) if the pool is held up
    (whether it did). Called with no lock of a run held: it asks each parked thread's run."""
    if pool is None:
        pool = getattr(_pool_of_thread, "pool", None)
    if pool is None or not _standard(pool) or pool._shutdown or pool._work_queue.empty():
        return False
    with _lock:
        at_work, asking = _at_work(pool)
    if at_work >= pool._max_workers:
        return False  # the pool is full: work it has in hand frees a place
    if not asking or not all(asks() for asks in asking):
        return False  # a run can still move without the queued work: it will free a thread
    with _lock:
        if pool._work_queue.empty() or _at_work(pool)[0] >= pool._max_workers:
            return False
        thread = threading.Thread(
            target=_take_one,
            args=(weakref.ref(pool), pool._work_queue),
            name=f"{pool._thread_name_prefix or 'pool'}_stand-in",
        )
        _stand_ins.setdefault(pool, set()).add(thread)
        # An empty context, as the pool's own threads have: the work carries its own.
        contextvars.Context().run(thread.start)
    log.debug("replay.pool_stand_in", thread=thread.name, workers=pool._max_workers)
    return True


def _take_one(
    pool_ref: weakref.ref[ThreadPoolExecutor], work_queue: queue.SimpleQueue[Any]
) -> None:
    """What a pool's own thread does (`concurrent.futures.thread._worker`), for one piece of
    work: the pool is its own size again as soon as it is done."""
    pool = pool_ref()
    try:
        if pool is None:
            return
        try:
            item = work_queue.get_nowait()
        except queue.Empty:
            return
        if item is None:  # the pool shuts down: leave the signal for its own threads
            work_queue.put(None)
            return
        with _worker_of(pool) as run:
            run(item)
        del item
    finally:
        if pool is not None:
            with _lock:
                _stand_ins.get(pool, set()).discard(threading.current_thread())


def widen_starved(
    pools: weakref.WeakSet[ThreadPoolExecutor],
    queued: weakref.WeakKeyDictionary[ThreadPoolExecutor, int],
    widened: list[Callable[[], None]],
) -> bool:
    """Give one pool of the run one more thread until the sitting ends, if work of the run
    waits in its queue while every thread it may have is taken (whether one did). Called on
    replay when nothing else can move: the outcome due next may belong to queued work that a
    pool smaller than the recorded run's (another machine's default size) would never start,
    its threads held by work waiting for that outcome. `widened` gets what takes the thread
    back (`restore_pools`). `queued`: how much of the run's work each pool holds in its
    queue, not started."""
    for pool in list(pools):
        lock = getattr(pool, "_shutdown_lock", None)
        if lock is None or getattr(pool, "_shutdown", True) or queued.get(pool, 0) <= 0:
            continue
        with lock:
            if len(pool._threads) < pool._max_workers:
                continue  # a thread is on its way
            if _standard(pool):
                released = threading.Event()
                widened.append(released.set)
                thread = threading.Thread(
                    target=_take_until,
                    args=(weakref.ref(pool), pool._work_queue, released),
                    name=f"{pool._thread_name_prefix or 'pool'}_widened",
                )
                contextvars.Context().run(thread.start)
            else:  # a queue of its own: its own threads must take the work (and they stay)
                widened.append(functools.partial(setattr, pool, "_max_workers", pool._max_workers))
                pool._max_workers += 1
                idle = getattr(pool, "_idle_semaphore", None)
                while idle is not None and idle.acquire(blocking=False):
                    pass  # it over-counts idle threads (one per finished job): start one for sure
                pool._adjust_thread_count()
        log.info("replay.pool_widened", workers=pool._max_workers)
        return True
    return False


def restore_pools(widened: list[Callable[[], None]]) -> None:
    """Pools given threads for a replay are back to their own sizes: a standard pool's extra
    thread stops once the work it has in hand is done."""
    for take_back in reversed(widened):  # a pool widened twice is back to its first size
        take_back()
    widened.clear()


def _take_until(
    pool_ref: weakref.ref[ThreadPoolExecutor],
    work_queue: queue.SimpleQueue[Any],
    released: threading.Event,
) -> None:
    """What a pool's own thread does, until `released` is set."""
    pool = pool_ref()
    if pool is None:
        return
    with _worker_of(pool) as run:
        del pool
        while not released.is_set():
            try:
                item = work_queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                work_queue.put(None)
                return
            run(item)
            del item


def _standard(pool: Any) -> bool:
    """A standard-library pool, whose queue holds work items (or None to stop) in order, and
    whose threads need no initializer: a thread the engine starts for it would run that once
    more than the pool has threads (one that takes a place of a fixed number, such as a
    connection of the pool's own, would wait for good, and keep the process from exiting)."""
    return (
        isinstance(pool, ThreadPoolExecutor)
        and isinstance(getattr(pool, "_work_queue", None), queue.SimpleQueue)
        and not _initializes(pool)
    )


def _initializes(pool: ThreadPoolExecutor) -> bool:
    """Whether `pool` runs an initializer in each thread it starts."""
    if getattr(pool, "_initializer", None) is not None:
        return True
    create = getattr(pool, "_create_worker_context", None)  # 3.14
    if create is None:
        return False
    try:
        return getattr(create(), "initializer", None) is not None
    except Exception:
        return True  # a worker context of another kind: leave the pool alone


@contextmanager
def _worker_of(pool: ThreadPoolExecutor) -> Iterator[Callable[[Any], None]]:
    """How a thread of `pool` runs a piece of work. Python 3.14 gave pools a worker context,
    made, set up and finished around a thread's work; pools here have no initializer."""
    create = getattr(pool, "_create_worker_context", None)
    if create is None:
        yield lambda item: item.run()
        return
    context = create()
    context.initialize()
    try:
        yield lambda item: item.run(context)
    finally:
        context.finalize()


_INDEFINITE_WAITS = {
    threading.Condition.wait.__code__: "timeout",  # Event.wait, Future.result, Queue.get...
}
_join_wait = getattr(threading.Thread, "_wait_for_tstate_lock", None)  # Thread.join, 3.11-3.12
if _join_wait is not None:
    _INDEFINITE_WAITS[_join_wait.__code__] = "timeout"


def waits_on_the_process(frame: Any) -> bool:
    """Whether a thread whose innermost frame is `frame` waits, with no timeout, for another
    thread of this process to wake it (a wait with a timeout wakes by itself: it is at work)."""
    argument = _INDEFINITE_WAITS.get(frame.f_code)
    if argument is None:
        return False
    timeout = frame.f_locals.get(argument)
    return timeout is None or (isinstance(timeout, int | float) and timeout < 0)
