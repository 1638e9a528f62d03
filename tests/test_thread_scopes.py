"""Where the engine's hooks on threads, pools and loops must stay out of the way, and what
they must keep: code outside the run, pool threads after the run, keys of work in threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import replay
from journal import Journal
from replay._pools import waits_on_the_process
from tests.factories import resume_in_a_smaller_pool, suspend_then_shrink

ran: Counter[str] = Counter()


@replay.step(kind="tool")
def lookup(name: str) -> str:
    ran[name] += 1
    time.sleep(0.002)
    return name.upper()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    opened = Journal(tmp_path / "journal.db")
    ran.clear()
    return opened


def test_a_step_body_may_start_threads_and_event_loops_of_its_own(journal: Journal) -> None:
    """A live step's body runs outside the run (its inner work is its own): a thread it starts,
    and the event loop that thread makes, are plain ones, not keyed into the run."""

    @replay.step(kind="tool")
    async def machinery(name: str) -> str:
        box: list[str] = []

        async def inner() -> str:
            await asyncio.sleep(0)
            return name * 2

        worker = threading.Thread(target=lambda: box.append(asyncio.run(inner())))
        worker.start()
        worker.join()
        ran[name] += 1
        return box[0]

    async def workflow() -> list[str]:
        return [await machinery("a"), await machinery("b")]

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="own")) == ["aa", "bb"]
    assert [e.key for e in journal.events("own") if e.status.value == "completed"] == [
        "0:1",
        "0:2",
    ]
    ran.clear()
    again = asyncio.run(replay.run(workflow, journal=journal, run_id="own", mode="replay"))
    assert again == ["aa", "bb"] and ran == Counter()


def test_a_pool_thread_forgets_the_run_once_its_work_is_done(journal: Journal) -> None:
    """A long-lived pool ran a step for a run: after the run, the same pool thread calls the
    step outside any run, and it runs plain, with nothing written to the ended run."""
    pool = concurrent.futures.ThreadPoolExecutor(1)

    async def workflow() -> str:
        return await asyncio.get_running_loop().run_in_executor(pool, lookup, "inside")

    try:
        assert asyncio.run(replay.run(workflow, journal=journal, run_id="pool")) == "INSIDE"
        written = len(journal.events("pool"))
        assert pool.submit(lookup, "after").result(timeout=10) == "AFTER"
        assert len(journal.events("pool")) == written
        assert ran == Counter({"inside": 1, "after": 1})
    finally:
        pool.shutdown()


def sync_fan_out(name: str) -> list[str]:
    """Sync code run by asyncio.to_thread that makes its own loop (a sync SDK wrapper does)."""

    async def both() -> list[str]:
        return list(
            await asyncio.gather(
                asyncio.to_thread(lookup, f"{name}-x"), asyncio.to_thread(lookup, f"{name}-y")
            )
        )

    return asyncio.run(both())


def test_tasks_of_a_loop_made_in_thread_work_are_keyed_under_that_work(journal: Journal) -> None:
    """asyncio.to_thread hands its function over in a copied context: the work's own scope is
    set inside that context, so the tasks of a loop the work makes are keyed under it (the
    keys are part of the journal: a change of them is a divergence for every recorded run)."""

    async def workflow() -> list[list[str]]:
        return [await asyncio.to_thread(sync_fan_out, n) for n in ("p", "q")]

    live = asyncio.run(replay.run(workflow, journal=journal, run_id="keys"))
    assert live == [["P-X", "P-Y"], ["Q-X", "Q-Y"]]
    keys = sorted(e.key for e in journal.events("keys") if e.status.value == "completed")
    assert keys == [
        "0/sync_fan_out#1/1/lookup#1:1",
        "0/sync_fan_out#1/2/lookup#1:1",
        "0/sync_fan_out#2/1/lookup#1:1",
        "0/sync_fan_out#2/2/lookup#1:1",
    ]
    ran.clear()
    again = asyncio.run(replay.run(workflow, journal=journal, run_id="keys", mode="replay"))
    assert again == live and ran == Counter()


def test_work_submitted_after_a_to_thread_ends_for_the_journal_when_it_ends(
    journal: Journal,
) -> None:
    """After `asyncio.to_thread`, work submitted straight to a pool from the same task is not
    mistaken for the loop's own submission: it takes its place in the history when it ends,
    so the steps after it are served in their recorded order."""
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def two_steps(name: str) -> str:
        return lookup(f"{name}-1") + lookup(f"{name}-2")

    async def workflow() -> list[str]:
        first = await asyncio.to_thread(lookup, "first")
        direct = await asyncio.wrap_future(pool.submit(two_steps, "direct"))
        return [first, direct, lookup("last")]

    try:
        live = asyncio.run(replay.run(workflow, journal=journal, run_id="direct"))
        assert live == ["FIRST", "DIRECT-1DIRECT-2", "LAST"]
        for _ in range(3):
            ran.clear()
            again = asyncio.run(
                replay.run(workflow, journal=journal, run_id="direct", mode="replay")
            )
            assert again == live and ran == Counter()
    finally:
        pool.shutdown()


@replay.step(kind="tool")
async def awaited(name: str, seconds: float = 0.0) -> str:
    await asyncio.sleep(seconds)
    ran[name] += 1
    return name.upper()


def _replay_in_a_thread(workflow: object, journal: Journal, run_id: str) -> list[object]:
    """Replay `run_id`; what it returned or raised. In a thread, so that a replay that never
    stops fails the test instead of hanging the suite."""
    outcome: list[object] = []

    def replay_it() -> None:
        try:
            outcome.append(
                asyncio.run(replay.run(workflow, journal=journal, run_id=run_id, mode="replay"))  # type: ignore[arg-type]
            )
        except BaseException as error:
            outcome.append(error)

    replaying = threading.Thread(target=replay_it, daemon=True)
    replaying.start()
    replaying.join(10)
    assert not replaying.is_alive(), "the replay never stopped"
    return outcome


def test_thread_work_busy_before_its_step_is_not_called_stuck(journal: Journal) -> None:
    """Replay waits for the thread's step (recorded first) while the thread computes for
    longer than the idle limit: a thread at work is progress to come, not a stuck replay."""

    def compute_then_ask() -> str:
        time.sleep(0.8)  # at work (not waiting on another thread of the process)
        return lookup("thread")

    async def workflow() -> list[str]:
        return list(await asyncio.gather(asyncio.to_thread(compute_then_ask), awaited("loop", 1.0)))

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="busy")) == [
        "THREAD",
        "LOOP",
    ]
    ran.clear()
    assert _replay_in_a_thread(workflow, journal, "busy") == [["THREAD", "LOOP"]]
    assert ran == Counter()


def test_a_replay_stuck_behind_thread_work_that_waits_is_called_stuck(journal: Journal) -> None:
    """The code now holds the pool's work back until the loop's step is done, but live the
    work's step came first: replay cannot keep the order. A full one-thread pool with nothing
    queued is not starved (widening it would start nothing), and a thread of the run that has
    ended is not at work: the replay stops with the NonDeterminismError."""
    held_back = {"on": False}

    def first(gate: threading.Event) -> str:
        if held_back["on"]:
            gate.wait()
        return lookup("a")

    async def workflow() -> list[str]:
        warm = threading.Thread(target=lookup, args=("warm",))
        warm.start()
        warm.join()  # a thread of the run that has ended
        gate = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            held = asyncio.get_running_loop().run_in_executor(pool, first, gate)
            second = await awaited("b", 0.05)
            gate.set()
            return [await held, second]
        finally:
            gate.set()
            pool.shutdown(wait=False)

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="held")) == ["A", "B"]
    held_back["on"] = True
    ran.clear()
    outcome = _replay_in_a_thread(workflow, journal, "held")
    assert [type(error) for error in outcome] == [replay.NonDeterminismError]
    assert ran == Counter()


def test_a_deadline_while_thread_work_holds_its_step_result_is_a_busy_expiry(
    journal: Journal,
) -> None:
    """The thread's step is written, but its work goes on (the result is not the loop's yet)
    when the journaled deadline fires: the expiry is recorded as one that met a busy run, and
    every replay times out the same way."""

    def step_then_more() -> str:
        answer = lookup("x")
        time.sleep(0.2)
        return answer

    async def workflow() -> str:
        try:
            return await replay.wait_for(asyncio.to_thread(step_then_more), 0.1)
        except TimeoutError:
            return "timeout"

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="held")) == "timeout"
    timer = [e for e in journal.events("held") if e.name == "replay.timeout"]
    assert timer[-1].payload == b'{"expired":true,"loop_busy":true}'  # the expiry row
    for _ in range(3):
        ran.clear()
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="held", mode="replay"))
        assert again == "timeout" and ran == Counter()


def test_a_resume_with_a_smaller_pool_keeps_the_recorded_order(journal: Journal) -> None:
    """Recorded with four threads, the pool's work finished in the order only four threads
    allow; resumed where the pool has one, its thread waits for a turn that belongs to work
    queued behind it. A stand-in takes that work while the thread waits (the pool still runs
    one piece of work at a time): the resume keeps the recorded order and runs nothing again."""
    resumed = concurrent.futures.ThreadPoolExecutor(1)  # as on a machine with fewer cores
    recorded = concurrent.futures.ThreadPoolExecutor(4)
    again = resume_in_a_smaller_pool(journal, "small", _slow_first, 3, recorded, resumed, ran.clear)
    assert again == [["W0", "W1", "W2"], "went"]
    assert ran == Counter()
    assert resumed._max_workers == 1 and len(resumed._threads) == 1


def _slow_first(index: int) -> str:
    """The later pieces finish first with a pool of four."""
    time.sleep(0.1 * (3 - index))
    return lookup(f"w{index}")


def test_a_resume_waiting_behind_someone_elses_long_work_in_its_pool_is_not_stuck(
    journal: Journal,
) -> None:
    """Resumed with a pool of one, the run's served steps wait for a turn that belongs to its
    work queued behind a second of work that is not the run's: the pool is at work, so the
    run is waiting for it, not stuck (it was called stuck after half a second)."""
    pools = {"now": concurrent.futures.ThreadPoolExecutor(4)}

    def slow_first(index: int) -> str:
        time.sleep(0.05 * (3 - index))
        return lookup(f"w{index}")

    async def workflow() -> list[object]:
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(pools["now"], slow_first, 0)
        second = loop.run_in_executor(pools["now"], slow_first, 1)
        contextvars.Context().run(pools["now"].submit, time.sleep, 1.0)  # not the run's
        third = loop.run_in_executor(pools["now"], slow_first, 2)
        done = list(await asyncio.gather(first, second, third))
        return [done, await replay.signal("go")]

    suspend_then_shrink(
        journal, workflow, "behind", pools, concurrent.futures.ThreadPoolExecutor(1)
    )
    ran.clear()
    try:
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="behind"))
        assert again == [["W0", "W1", "W2"], "went"] and ran == Counter()
    finally:
        pools["now"].shutdown(wait=False, cancel_futures=True)


class _PriorityPool(concurrent.futures.ThreadPoolExecutor):
    """A pool with a queue of its own making (as some libraries have): no stand-ins for it."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._work_queue: Any = queue.Queue()


def test_a_resume_with_a_smaller_pool_of_its_own_kind_says_to_give_it_more_threads(
    journal: Journal,
) -> None:
    """The same resume with a pool whose queue is not the standard one: the engine cannot
    take its work, so the error says why and what to do (a replay gives the pool a thread
    instead: nothing real can happen there)."""
    with pytest.raises(replay.NonDeterminismError, match="give the pool more threads"):
        resume_in_a_smaller_pool(
            journal, "small", _slow_first, 3, _PriorityPool(4), _PriorityPool(1)
        )


def test_a_replay_with_a_smaller_pool_of_its_own_kind_gives_it_a_thread(
    journal: Journal,
) -> None:
    """On replay the same pool gets one more thread of its own when nothing else can move
    (no real call can happen), and its own size back afterwards."""
    pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {"now": _PriorityPool(4)}

    def slow_first(index: int) -> str:
        time.sleep(0.05 * (3 - index))
        return lookup(f"w{index}")

    async def workflow() -> list[str]:
        return await asyncio.to_thread(lambda: list(pools["now"].map(slow_first, range(3))))

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="own")) == ["W0", "W1", "W2"]
    pools["now"].shutdown()
    pools["now"] = _PriorityPool(1)
    ran.clear()
    try:
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="own", mode="replay"))
        assert again == ["W0", "W1", "W2"] and ran == Counter()
        assert pools["now"]._max_workers == 1
    finally:
        pools["now"].shutdown(wait=False, cancel_futures=True)


class _Frame:
    """What `waits_on_the_process` reads of a thread's innermost frame."""

    def __init__(self, code: object, timeout: object) -> None:
        self.f_code = code
        self.f_locals = {"timeout": timeout}


_CONDITION_WAIT = threading.Condition.wait.__code__
_JOIN_WAIT = threading.Thread._wait_for_tstate_lock.__code__  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "timeout", "waits"),
    [
        (_CONDITION_WAIT, None, True),
        (_CONDITION_WAIT, 0, False),
        (_CONDITION_WAIT, 0.0, False),
        (_CONDITION_WAIT, 5, False),
        (_JOIN_WAIT, -1, True),
        (_JOIN_WAIT, 0, False),
        (_JOIN_WAIT, 2.5, False),
    ],
)
def test_only_a_wait_without_timeout_waits_on_the_process(
    code: object, timeout: object, waits: bool
) -> None:
    """`Event.wait(0)` and `join(0)` poll (the thread is at work); `Event.wait()`, `join()`
    (whose lock wait takes -1 for "no timeout") wait until another thread wakes them."""
    assert waits_on_the_process(_Frame(code, timeout)) is waits
