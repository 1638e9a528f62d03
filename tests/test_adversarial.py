"""Cases an adversarial review of the engine found, each pinned: live and replay must agree,
a resumable run must stay resumable, and nothing may hang."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import threading
import time
from collections import Counter
from typing import Any

import pytest

import replay
from journal import Journal, MemoryStore, RunStatus

ran: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    ran.clear()


@replay.step(kind="tool")
def lookup(name: str, pause: float = 0.0) -> str:
    ran[name] += 1
    time.sleep(pause)
    return name.upper()


@replay.step(kind="tool")
async def fetch(name: str, pause: float = 0.0) -> str:
    ran[name] += 1
    await asyncio.sleep(pause)
    return name


def _replays_as_live(workflow: object, journal: Journal, run_id: str, times: int = 5) -> object:
    live = asyncio.run(replay.run(workflow, journal=journal, run_id=run_id))  # type: ignore[arg-type]
    ran.clear()
    for _ in range(times):
        again = asyncio.run(replay.run(workflow, journal=journal, run_id=run_id, mode="replay"))  # type: ignore[arg-type]
        assert again == live
    assert ran == Counter()
    return live


def test_thread_work_calling_several_steps_replays(journal: Journal) -> None:
    """Work handed to a thread that calls two sync steps in a row: the first one's place in
    the order is taken when the second is asked (it used to be lost, and replay stuck)."""

    def chain(name: str) -> str:
        return lookup(f"{name}-1", 0.01) + lookup(f"{name}-2")

    async def workflow() -> list[str]:
        return list(await asyncio.gather(*(asyncio.to_thread(chain, n) for n in "abc")))

    assert _replays_as_live(workflow, journal, "chain", times=20) == ["A-1A-2", "B-1B-2", "C-1C-2"]


async def timeout_cut_by_sibling() -> str:
    async def guarded() -> str:
        async with replay.timeout(10):  # never expires: the sibling's failure ends it first
            return await fetch("slow", 5)

    async def failing() -> None:
        await fetch("fast")
        raise ValueError("sibling failed")

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(guarded())
            group.create_task(failing())
    except ExceptionGroup:
        return await fetch("fallback")
    return "no failure"


def test_a_journaled_timeout_cut_short_by_a_cancellation_replays(journal: Journal) -> None:
    """A replay.timeout block ended by a failing TaskGroup sibling (not by its deadline) is
    journaled as not expired; replay takes that row's turn instead of waiting for it forever."""
    assert _replays_as_live(timeout_cut_by_sibling, journal, "cut") == "fallback"


def test_an_engine_signal_the_workflow_swallows_still_stops_the_run(journal: Journal) -> None:
    """A background task waits for a signal (the run must suspend); the workflow's own code
    catches the CancelledError the engine uses to stop it and returns. The run is not sealed
    completed with the signal step in flight: it is left waiting and Suspended is raised."""

    async def workflow() -> str:
        waiter = asyncio.create_task(replay.signal("go"))
        try:
            await asyncio.sleep(5)
            return str(await waiter)
        except asyncio.CancelledError:
            return "cancelled-fallback"

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(workflow, journal=journal, run_id="swallow"))
    assert journal.run("swallow").status is RunStatus.WAITING


def test_a_task_cancelled_after_its_step_finished_gets_its_result(journal: Journal) -> None:
    """Live, a task's step finished long before the workflow cancelled the task (a no-op):
    replay must not let the cancellation win because outcomes come back faster."""

    async def workflow() -> list[str]:
        async def inner() -> str:
            return await asyncio.create_task(fetch("fast", 0.005))  # one more hop after it

        task = asyncio.create_task(inner())
        other = await fetch("slow", 0.05)
        task.cancel()
        try:
            return [await task, other]
        except asyncio.CancelledError:
            return ["cancelled", other]

    assert _replays_as_live(workflow, journal, "late-cancel", times=10) == ["fast", "slow"]


@pytest.mark.parametrize("late", [0.0, 0.05], ids=["", "thread-starts-late"])
def test_a_deadline_that_beat_a_threads_result_to_the_loop_replays(
    journal: Journal, late: float
) -> None:
    """A thread's step finished, but the loop was busy and the journaled deadline fired before
    the loop took the result: live says timeout, and so must every replay. `late`: the
    thread gets the CPU that much later (a loaded machine); its result still comes while the
    loop is busy."""

    async def hog() -> None:
        await asyncio.sleep(0.01)
        # The loop is busy from 0.01 s to 0.31 s: the thread's result (0.03 s) comes meanwhile
        # though the thread gets the CPU late, and the deadline (0.04 s) passes meanwhile.
        time.sleep(0.3)

    def in_thread() -> str:
        time.sleep(late)
        return lookup("x", 0.03)

    async def workflow() -> str:
        busy = asyncio.create_task(hog())
        try:
            answer = await replay.wait_for(asyncio.to_thread(in_thread), 0.04)
        except TimeoutError:
            answer = "timeout"
        await busy
        return answer

    assert _replays_as_live(workflow, journal, "beat", times=10) == "timeout"
    expiry = [e.payload for e in journal.events("beat") if e.name == "replay.timeout"][-1]
    assert expiry == b'{"expired":true,"loop_busy":true}'


def test_raw_threads_get_keys_by_start_order(journal: Journal) -> None:
    """threading.Thread(target=copy_context().run, ...) started from workflow code: each
    thread's steps are keyed by the order the threads were started, not by which thread
    reaches its step first, so replay pairs each with its own result."""

    def draw(name: str, results: dict[str, str]) -> None:
        results[name] = lookup(name, 0.02 if name == "a" else 0.0)

    async def workflow() -> dict[str, str]:
        results: dict[str, str] = {}
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(draw, n, results))
            for n in "abc"
        ]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        return dict(sorted(results.items()))

    _replays_as_live(workflow, journal, "raw")
    keys = {
        e.key.rpartition(".")[2]: e.call_arguments()
        for e in journal.events("raw")
        if e.call_arguments()
    }  # keys like 0/test_raw_threads_get_keys_by_start_order.draw#1:1
    assert keys == {f"draw#{i}:1": {"name": n, "pause": p} for i, n, p in
                    [(1, "a", 0.02), (2, "b", 0.0), (3, "c", 0.0)]}  # fmt: skip


def test_waiting_on_a_timer_outside_any_step_is_not_called_stuck() -> None:
    """While a served result is held, the workflow waits on an Event a plain timer sets
    (deterministic, journal-free code): no false NonDeterminismError, whatever the wait."""

    async def workflow() -> list[str]:
        ready = asyncio.Event()
        asyncio.get_running_loop().call_later(0.8, ready.set)

        async def after_event() -> str:
            await ready.wait()
            return await fetch("after")

        late = asyncio.create_task(after_event())
        early = asyncio.create_task(fetch("early", 0.01))
        return [await early, await late]

    journal = Journal(store=MemoryStore())
    assert _replays_as_live(workflow, journal, "timer", times=1) == ["early", "after"]


def test_a_smaller_pool_on_replay_replays(journal: Journal) -> None:
    """Recorded with eight pool threads, replayed where the pool has two (another machine's
    default size): the outcome that comes first belongs to work still in the pool's queue,
    behind two threads that wait for their turns. The pool gets the threads it needs."""
    workers = {"n": 8}

    def fan_out() -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(workers["n"]) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, lookup, f"w{i}", 0.02 * (8 - i))
                for i in range(8)
            ]
            return [f.result() for f in futures]

    async def workflow() -> list[str]:
        return await asyncio.to_thread(fan_out)

    live = asyncio.run(replay.run(workflow, journal=journal, run_id="pool"))
    assert live == [f"W{i}" for i in range(8)]
    workers["n"] = 2
    ran.clear()
    for _ in range(2):
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="pool", mode="replay"))
        assert again == live
    assert ran == Counter()


def test_a_loop_blocked_on_a_pool_does_not_deadlock_replay(journal: Journal) -> None:
    """One task's thread work and a sync call that blocks the loop on a thread pool (a sync
    framework's batch() called from async code): on replay the pool thread may not wait for
    the loop to take the other thread's result, since the loop waits for the pool."""

    def chain() -> str:
        return lookup("x1", 0.01)

    def batch() -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda n: lookup(n, 0.05), ["y1"]))

    async def workflow() -> list[str]:
        first = asyncio.create_task(asyncio.to_thread(chain))
        await asyncio.sleep(0)
        second = batch()  # blocks the loop's thread
        return [await first, *second]

    assert _replays_as_live(workflow, journal, "blocked", times=2) == ["X1", "Y1"]


def test_async_steps_under_asyncio_run_in_threads_replay(journal: Journal) -> None:
    """Sync code in threads runs async steps with `asyncio.run` (a sync tool wrapping an async
    client), one of them gathering two: each thread's loop waits for its recorded turns on its
    own loop (it used to fail: a future attached to a different loop)."""

    def sync_tool(name: str, pause: float) -> list[str]:
        async def both() -> list[str]:
            return list(await asyncio.gather(fetch(f"{name}-x", pause), fetch(f"{name}-y")))

        return asyncio.run(both())

    async def workflow() -> list[list[str]]:
        calls = (asyncio.to_thread(sync_tool, n, 0.01 * (3 - i)) for i, n in enumerate("abc"))
        return list(await asyncio.gather(*calls))

    live = _replays_as_live(workflow, journal, "foreign", times=10)
    assert live == [[f"{n}-x", f"{n}-y"] for n in "abc"]


def test_keyboard_interrupt_in_a_task_group_releases_the_run(journal: Journal) -> None:
    """A second Ctrl+C (or an exit) raised inside a TaskGroup's task leaves the event loop at
    once, before the run's own cleanup could run: the run is released anyway, so the same
    process (a notebook) can resume it at once instead of meeting its own lease."""
    interrupt = {"on": True}

    @replay.step(kind="tool")
    async def maybe_interrupt(name: str) -> str:
        await asyncio.sleep(0.01)
        if interrupt["on"] and name == "boom":
            raise KeyboardInterrupt
        ran[name] += 1
        return name

    async def workflow() -> list[str]:
        async with asyncio.TaskGroup() as group:
            first = group.create_task(maybe_interrupt("a"))
            second = group.create_task(maybe_interrupt("boom"))
        return [first.result(), second.result()]

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(workflow, journal=journal, run_id="ki"))
    # asyncio.run closed its loop with the run's task still pending: collect it here, not in
    # the middle of a later test (CPython 3.11.7 breaks if a finaliser runs inside ast.parse).
    gc.collect()
    assert journal.run("ki").owner is None
    interrupt["on"] = False
    ran.clear()
    assert asyncio.run(replay.run(workflow, journal=journal, run_id="ki")) == ["a", "boom"]
    assert ran == Counter({"boom": 1})  # "a" finished before the interrupt: served


# -- a second round: pools, threads that wait on each other, loops of their own ---------------


def test_a_one_thread_pool_is_not_widened_while_the_loop_has_work(journal: Journal) -> None:
    """A pool of one serialises its jobs, the same size live and on replay: while the loop
    waits on a timer, the queued job must not start beside the running one."""
    trace: list[str] = []

    def work(name: str) -> str:
        trace.append(f"{name}-begin")
        result = lookup(name, 0.3)
        trace.append(f"{name}-end")
        return result

    async def workflow() -> list[Any]:
        trace.clear()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(pool, work, "a")
        second = loop.run_in_executor(pool, work, "b")
        await asyncio.sleep(0.15)
        x = await fetch("x")
        await asyncio.gather(first, second)
        pool.shutdown()
        return [x, list(trace)]

    live = _replays_as_live(workflow, journal, "serial", times=2)
    assert live == ["x", ["a-begin", "a-end", "b-begin", "b-end"]]


def test_a_widened_pool_gets_its_size_back(journal: Journal) -> None:
    """A long-lived pool widened for a replay is its own size again afterwards."""
    pools = {"now": concurrent.futures.ThreadPoolExecutor(4)}

    def fan_out() -> list[str]:
        pool = pools["now"]
        futures = [
            pool.submit(contextvars.copy_context().run, lookup, f"w{i}", 0.02 * (4 - i))
            for i in range(4)
        ]
        return [f.result() for f in futures]

    async def workflow() -> list[str]:
        return await asyncio.to_thread(fan_out)

    asyncio.run(replay.run(workflow, journal=journal, run_id="size"))
    pools["now"].shutdown()
    pools["now"] = concurrent.futures.ThreadPoolExecutor(1)  # as on a machine with fewer cores
    again = asyncio.run(replay.run(workflow, journal=journal, run_id="size", mode="replay"))
    assert again == ["W0", "W1", "W2", "W3"]
    # Threads given to the pool for the replay are gone: it runs one job at a time again
    at_once = {"now": 0, "most": 0}
    lock = threading.Lock()

    def job() -> None:
        with lock:
            at_once["now"] += 1
            at_once["most"] = max(at_once["most"], at_once["now"])
        time.sleep(0.05)
        with lock:
            at_once["now"] -= 1

    time.sleep(0.2)  # what the replay's extra threads had in hand is done
    for done in [pools["now"].submit(job) for _ in range(4)]:
        done.result()
    assert pools["now"]._max_workers == 1 and at_once["most"] == 1
    pools["now"].shutdown()


def test_nested_pools_smaller_on_replay(journal: Journal) -> None:
    """The outer pool's only thread waits on an inner pool's future while the outcome due
    next belongs to work in the outer queue: the outer pool is the one that gets a thread."""
    workers = {"n": 2}

    def outer_a(inner: concurrent.futures.ThreadPoolExecutor) -> str:
        return inner.submit(contextvars.copy_context().run, lookup, "inner", 0.2).result()

    def fan() -> list[str]:
        with (
            concurrent.futures.ThreadPoolExecutor(2) as inner,
            concurrent.futures.ThreadPoolExecutor(workers["n"]) as outer,
        ):
            a = outer.submit(contextvars.copy_context().run, outer_a, inner)
            b = outer.submit(contextvars.copy_context().run, lookup, "b", 0.05)
            return [a.result(), b.result()]

    async def workflow() -> list[str]:
        return await asyncio.to_thread(fan)

    live = asyncio.run(replay.run(workflow, journal=journal, run_id="nested"))
    workers["n"] = 1
    started = time.monotonic()
    again = asyncio.run(replay.run(workflow, journal=journal, run_id="nested", mode="replay"))
    assert again == live and time.monotonic() - started < 10


def test_a_pool_shut_down_with_cancelled_work_is_a_clear_error(journal: Journal) -> None:
    """Shut down with cancel_futures while work is queued, then replayed with a smaller pool:
    whether the cancelled work is still queued at the shutdown depends on timing. The replay
    ends as live did, or says it cannot go on; it never spins."""
    workers = {"n": 2}

    def job(i: int) -> str:
        return lookup(f"s{i}", 0.05 * (3 - i))

    def fan() -> list[str]:
        pool = concurrent.futures.ThreadPoolExecutor(workers["n"])
        futures = [pool.submit(job, i) for i in range(4)]
        time.sleep(0.01)
        pool.shutdown(wait=True, cancel_futures=True)
        return ["cancelled" if f.cancelled() else f.result() for f in futures]

    async def workflow() -> list[str]:
        return await asyncio.to_thread(fan)

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="shut"))[2:] == [
        "cancelled",
        "cancelled",
    ]
    workers["n"] = 1
    started = time.monotonic()
    # Served work ends at once, so the pool may take work that live was still queued when
    # cancelled (a step the journal has no result for), or not: then, the queued work taken
    # by a stand-in while the pool's thread waits for its turn, the replay ends as live did
    try:
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="shut", mode="replay"))
    except (replay.NonDeterminismError, replay.FrontierReached):
        pass
    else:
        assert again == ["S0", "S1", "cancelled", "cancelled"]
    assert time.monotonic() - started < 10


def test_threads_waiting_on_each_other_against_the_record_are_a_clear_error() -> None:
    """Changed code makes one thread wait for another's result while the record has its own
    step first: the threads wait on each other, not on the world, so replay says so within
    seconds (it used to count them as at work and wait forever)."""
    changed = {"on": False}
    got_b = threading.Event()

    def first() -> str:
        if changed["on"]:
            got_b.wait()
        return lookup("a", 0.05)

    def second() -> str:
        result = lookup("b", 0.1)
        got_b.set()
        return result

    async def workflow() -> list[str]:
        got_b.clear()
        return list(await asyncio.gather(asyncio.to_thread(first), asyncio.to_thread(second)))

    journal = Journal(store=MemoryStore())
    asyncio.run(replay.run(workflow, journal=journal, run_id="blocked"))
    changed["on"] = True
    loop = asyncio.new_event_loop()  # not asyncio.run: it would join the blocked thread
    started = time.monotonic()
    try:
        with pytest.raises(replay.NonDeterminismError, match="cannot go on in the order"):
            loop.run_until_complete(
                replay.run(workflow, journal=journal, run_id="blocked", mode="replay")
            )
        assert time.monotonic() - started < 10
    finally:
        got_b.set()  # let the blocked thread finish
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_replay_timeouts_on_a_threads_own_loop(journal: Journal) -> None:
    """replay.wait_for inside asyncio.run in one thread, while another thread's steps finish
    first: the recorded expiry cancels the task on its own loop (it used to be cancelled from
    the wrong thread, and never woke)."""

    def with_deadline() -> str:
        async def inner() -> str:
            try:
                return await replay.wait_for(fetch("slow", 3), 0.2)
            except TimeoutError:
                return "timeout"

        return asyncio.run(inner())

    def other() -> list[str]:
        async def inner() -> list[str]:
            return [await fetch("a", 0.1), await fetch("b", 0.2)]

        return asyncio.run(inner())

    async def workflow() -> list[Any]:
        return list(
            await asyncio.gather(asyncio.to_thread(with_deadline), asyncio.to_thread(other))
        )

    assert _replays_as_live(workflow, journal, "deadline", times=3) == ["timeout", ["a", "b"]]


def test_tasks_on_a_threads_own_loop_are_keyed_by_creation(journal: Journal) -> None:
    """Two tasks gathered inside asyncio.run in a thread ask the same step after waits the
    journal does not hold: each gets its own result back, never the other's."""
    counter = iter(range(1000))

    @replay.step(kind="llm")
    async def sample(prompt: str) -> int:
        return next(counter)

    async def pair() -> list[str]:
        async def one(name: str, pause: float) -> str:
            await asyncio.sleep(pause)
            return f"{name}={await sample('pick a number')}"

        return list(await asyncio.gather(one("x", state["x"]), one("y", state["y"])))

    state = {"x": 0.03, "y": 0.0}

    async def workflow() -> list[str]:
        return await asyncio.to_thread(lambda: asyncio.run(pair()))

    live = asyncio.run(replay.run(workflow, journal=journal, run_id="keys"))
    assert live == ["x=1", "y=0"]
    state.update(x=0.0, y=0.03)  # the other one is first now
    again = asyncio.run(replay.run(workflow, journal=journal, run_id="keys", mode="replay"))
    assert again == live


def test_an_interrupted_sitting_takes_its_hooks_off(journal: Journal) -> None:
    """Ctrl+C raised in a step inside a TaskGroup leaves the loop before cleanup: the thread
    hooks come off anyway, so later code in the process runs on the plain APIs."""
    import replay._context as engine

    @replay.step(kind="tool")
    async def interrupted() -> str:
        await asyncio.sleep(0.01)
        raise KeyboardInterrupt

    async def workflow() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(interrupted())

    for number in range(3):
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(replay.run(workflow, journal=journal, run_id=f"hooks-{number}"))
        # Before the abandoned task is collected (which would run its cleanup late):
        assert engine._submit_users == 0
        assert concurrent.futures.ThreadPoolExecutor.submit is engine._original_submit
        assert threading.Thread.start is engine._original_start
        gc.collect()
    assert engine._submit_users == 0
