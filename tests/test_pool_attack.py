"""Stand-ins for a user's thread pool on resume (`replay._pools`): what they must keep. The
pool runs no more work at once than its size, a pool's initializer runs once a thread of its
own, and a resume held up behind a pool thread that never ends its job goes on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import replay
import replay._history
import replay._pools
from journal import Journal
from tests.factories import resume_in_a_smaller_pool

ROOT = Path(__file__).resolve().parents[1]

ran: Counter[str] = Counter()


@replay.step(kind="tool")
def lookup(name: str) -> str:
    ran[name] += 1
    time.sleep(0.002)
    return name.upper()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    ran.clear()
    return Journal(tmp_path / "journal.db")


class Crash(BaseException):
    """The process dies here."""


def test_a_pool_of_one_runs_one_live_step_at_a_time_on_resume(journal: Journal) -> None:
    """Recorded with four threads, three pieces of work each had a step served on resume and
    a step after it that runs live. Resumed with a pool of one, stand-ins take the queued
    work while the pool's thread waits for its turn; once turns come, the threads they stood
    in for must not go on beside them: the live steps ran three at once in a pool of one."""
    pools = {"now": concurrent.futures.ThreadPoolExecutor(4)}
    resumed = {"yes": False}
    at_once = {"now": 0, "most": 0}
    lock = threading.Lock()

    @replay.step(kind="tool")
    def act(name: str) -> str:
        with lock:
            at_once["now"] += 1
            at_once["most"] = max(at_once["most"], at_once["now"])
        time.sleep(0.15)  # a real call the pool was made small for (one at a time)
        with lock:
            at_once["now"] -= 1
        return name

    def slow_first(index: int) -> str:
        time.sleep(0.05 * (3 - index))
        got = lookup(f"w{index}")
        if resumed["yes"]:
            act(f"a{index}")
        return got

    async def workflow() -> list[str]:
        done = await asyncio.to_thread(lambda: list(pools["now"].map(slow_first, range(3))))
        if not resumed["yes"]:
            raise Crash
        return done

    with pytest.raises(Crash):
        asyncio.run(replay.run(workflow, journal=journal, run_id="one"))
    pools["now"].shutdown()
    pools["now"] = concurrent.futures.ThreadPoolExecutor(1)
    resumed["yes"] = True
    ran.clear()
    try:
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="one"))
        assert again == ["W0", "W1", "W2"] and ran == Counter()
        assert at_once["most"] == 1
    finally:
        pools["now"].shutdown(wait=False, cancel_futures=True)


def test_a_pool_whose_thread_runs_a_job_for_good_does_not_hold_a_resume_up(
    journal: Journal,
) -> None:
    """Resumed with two threads where four recorded it, one of them runs a job of the app's
    for as long as the app lives (a poller), the other waits for its run's turn, which
    belongs to work queued behind it. The pool has a free place (the waiting thread does no
    work): a stand-in takes the work. It waited as long as the poller ran (for good), where
    before the run stopped with an error at once."""
    pools = {"now": concurrent.futures.ThreadPoolExecutor(4)}
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            stop.wait(0.02)

    def slow_first(index: int) -> str:
        time.sleep(0.05 * (3 - index))
        return lookup(f"w{index}")

    async def workflow() -> list[object]:
        done = await asyncio.to_thread(lambda: list(pools["now"].map(slow_first, range(3))))
        return [done, await replay.signal("go")]

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(workflow, journal=journal, run_id="poll"))
    pools["now"].shutdown()
    pools["now"] = concurrent.futures.ThreadPoolExecutor(2)
    pools["now"].submit(poller)
    journal.signal("poll", "go", "went")
    ran.clear()
    gives_up = threading.Timer(8, stop.set)  # what the test waits at most
    gives_up.start()
    started = time.monotonic()
    try:
        again = asyncio.run(replay.run(workflow, journal=journal, run_id="poll"))
        assert again == [["W0", "W1", "W2"], "went"] and ran == Counter()
        assert time.monotonic() - started < 5
    finally:
        gives_up.cancel()
        stop.set()
        pools["now"].shutdown(wait=False, cancel_futures=True)


_HANDS_OUT_CONNECTIONS = """
import asyncio, concurrent.futures, queue, sys, threading, time
import replay
from journal import Journal

connections = queue.Queue()
local = threading.local()

def take_connection():
    local.connection = connections.get()  # one a thread: the pool has as many as threads

def pool(size):
    for n in range(size):
        connections.put(n)
    return concurrent.futures.ThreadPoolExecutor(size, initializer=take_connection)

pools = {"now": pool(4)}

@replay.step(kind="tool")
def lookup(name):
    return f"{name}@{local.connection}"

def slow_first(index):
    time.sleep(0.05 * (3 - index))
    return lookup(f"w{index}")

async def workflow():
    done = await asyncio.to_thread(lambda: list(pools["now"].map(slow_first, range(3))))
    return [done, await replay.signal("go")]

journal = Journal(sys.argv[1])
try:
    asyncio.run(replay.run(workflow, journal=journal, run_id="init"))
except replay.Suspended:
    pass
pools["now"].shutdown()
while not connections.empty():
    connections.get()
pools["now"] = pool(1)
journal.signal("init", "go", "went")
try:
    asyncio.run(replay.run(workflow, journal=journal, run_id="init"))
except replay.NonDeterminismError as error:
    print("error", "give the pool more threads" in str(error), flush=True)
else:
    print("done", flush=True)
pools["now"].shutdown(wait=False, cancel_futures=True)
"""


def test_a_pool_whose_initializer_takes_a_place_of_its_own_lets_the_process_exit(
    tmp_path: Path,
) -> None:
    """A pool's initializer takes, for its thread, one of as many connections as the pool
    has threads. A stand-in is a thread of its own, so it ran the initializer again, which
    waited for a connection for good: one stand-in after another (a new one each glance),
    and the process could not exit. Pools with an initializer get no stand-ins: the resume
    says to give the pool more threads, as before, and the process exits."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_HANDS_OUT_CONNECTIONS))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "j.db")],
            capture_output=True,
            text=True,
            timeout=8,
            env=env,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the process did not exit: {expired.stdout!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["error", "True"]


@replay.step(kind="tool")
async def _fetch(name: str) -> str:
    ran[name] += 1
    await asyncio.sleep(0.002)
    return name.upper()


def _slow_first_on_its_own_loop(index: int) -> str:
    """A sync tool around an async client: its step runs on the thread's own loop, the first
    piece of work the slowest."""
    time.sleep(0.05 * (3 - index))
    return asyncio.run(_fetch(f"w{index}"))


def test_a_smaller_pool_whose_work_runs_async_steps_with_asyncio_run_keeps_the_order(
    journal: Journal,
) -> None:
    """The smaller-pool resume, with each piece of work a sync tool around an async client
    (`asyncio.run`): its step waits for its turn on the thread's own loop. The resume must go
    on as it does with sync steps (a stand-in takes the queued work), not stop."""

    again = resume_in_a_smaller_pool(
        journal, "aio", _slow_first_on_its_own_loop, 3, _pool(4), _pool(1), ran.clear
    )
    assert again == [["W0", "W1", "W2"], "went"] and ran == Counter()


def test_a_smaller_pool_whose_work_gathers_async_steps_on_its_own_loop_keeps_the_order(
    journal: Journal,
) -> None:
    """As above, each piece of work gathering two async steps on its thread's own loop (two
    steps held there at once): the resume keeps the recorded order and runs nothing again."""

    @replay.step(kind="tool")
    async def fetch(name: str, pause: float) -> str:
        ran[name] += 1
        await asyncio.sleep(pause)
        return name.upper()

    def slow_first(index: int) -> list[str]:
        time.sleep(0.04 * (3 - index))

        async def both() -> list[str]:
            pair = (fetch(f"w{index}a", 0.02), fetch(f"w{index}b", 0.0))
            return list(await asyncio.gather(*pair))

        return asyncio.run(both())

    again = resume_in_a_smaller_pool(journal, "two", slow_first, 3, _pool(4), _pool(1), ran.clear)
    expected = [[f"W{i}A", f"W{i}B"] for i in range(3)]
    assert again == [expected, "went"] and ran == Counter()


def test_a_pool_of_one_runs_one_piece_at_a_time_while_its_loop_works_beside_a_held_step(
    journal: Journal,
) -> None:
    """Resumed with a pool of one: the first piece of work gathers, on its thread's own loop,
    a step held for its turn and live code (not a step, so it runs again) that keeps the
    thread working. The queued piece must not start before that live code is done."""
    at_once = {"now": 0, "most": 0}
    lock = threading.Lock()

    @replay.step(kind="tool")
    async def fetch(name: str, pause: float) -> str:
        ran[name] += 1
        await asyncio.sleep(pause)
        return name.upper()

    async def busy(seconds: float) -> None:
        with lock:
            at_once["now"] += 1
            at_once["most"] = max(at_once["most"], at_once["now"])
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.002)  # the thread works...
                await asyncio.sleep(0)  # ...and lets its loop go round
        finally:
            with lock:
                at_once["now"] -= 1

    def job(index: int) -> str:
        async def first() -> str:
            return (await asyncio.gather(fetch("a0", 0.15), busy(0.4)))[0]

        async def second() -> str:
            got = await fetch("b1", 0.0)
            await busy(0.1)
            return got

        if index:
            time.sleep(0.03)
        return asyncio.run(second() if index else first())

    def between() -> None:
        ran.clear()
        at_once["most"] = 0

    again = resume_in_a_smaller_pool(journal, "busy", job, 2, _pool(2), _pool(1), between)
    assert again == [["A0", "B1"], "went"] and ran == Counter()
    assert at_once["most"] == 1


def test_a_step_that_goes_on_leaves_the_other_step_held_on_its_loop_parked(
    journal: Journal,
) -> None:
    """Resumed with a pool of one: the first piece of work gathers two steps on its thread's
    own loop, the first recorded before the queued piece's step, the second after it. The
    first goes on (`wait_for_room`) while the second is still held: the thread must stay
    parked for it, so that a stand-in takes the queued piece. It stopped with 'give the pool
    more threads': going on took every entry of the thread out of the parked ones."""

    @replay.step(kind="tool")
    async def fetch(name: str, pause: float) -> str:
        ran[name] += 1
        await asyncio.sleep(pause)
        return name.upper()

    def job(index: int) -> str:
        async def first() -> str:
            return "".join(await asyncio.gather(fetch("a0", 0.0), fetch("a1", 0.2)))

        if index:
            time.sleep(0.05)
            return asyncio.run(fetch("b1", 0.0))
        return asyncio.run(first())

    again = resume_in_a_smaller_pool(journal, "pair", job, 2, _pool(2), _pool(1), ran.clear)
    assert again == [["A0A1", "B1"], "went"] and ran == Counter()


def _pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(size)


def test_looking_at_the_threads_frames_does_not_hang_the_process() -> None:
    """Whether a pool's threads are at work is read from their frames. In CPython 3.11
    before 3.11.9 (gh-106883), a garbage collection inside `sys._current_frames()` runs a
    weakref callback while it holds the lock a starting thread takes; the callback lets go of
    the GIL, the starting thread takes the GIL and waits for that lock, and the process hangs
    for good (a worker test hung so). Here the collection is made to fall inside the call,
    with a callback that sleeps while another thread starts one: nothing must hang."""
    script = textwrap.dedent(
        """
        import gc, threading, time, weakref
        from replay._pools import current_frames

        started = threading.Event()
        refs = []

        class Cycle:
            pass

        def garbage(callback):
            cycle = Cycle()
            cycle.me = cycle
            refs.append(weakref.ref(cycle, callback))

        def sleeper(_):
            started.set()
            time.sleep(0.3)  # lets go of the GIL

        def first(_):
            garbage(sleeper)  # for the next collection, inside the call

        def starter():
            started.wait()
            threading.Thread(target=lambda: None).start()

        thread = threading.Thread(target=starter)
        thread.start()
        gc.collect()
        garbage(first)
        gc.set_threshold(1)  # every allocation collects
        current_frames()
        gc.set_threshold(700)
        gc.collect()
        gc.collect()  # the callbacks run here if not before
        thread.join()
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung looking at its threads' frames")
    assert done.stdout.strip() == "ok", done.stderr


def test_frames_looked_at_by_two_threads_at_once_are_both_read_with_the_collector_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads look at the frames at once (a run's loop and another's pool check): the
    second found the collector off, the first's, and read the frames without turning it off
    itself; the first then turned it back on while the second was still inside the call,
    open to the very deadlock the call is kept from (gh-106883)."""
    import gc

    from replay import _pools

    if not _pools._COLLECTS_IN_CURRENT_FRAMES:
        pytest.skip("CPython 3.11.9 and later keep the collector out of the call themselves")
    real = sys._current_frames
    inside = threading.Event()
    seen: list[tuple[str, bool, bool]] = []

    def slow_frames() -> dict[int, object]:
        name = threading.current_thread().name
        at_start = gc.isenabled()
        if name == "first":
            inside.set()
        time.sleep(0.3 if name == "first" else 0.6)  # the second is still inside after
        seen.append((name, at_start, gc.isenabled()))
        return real()

    monkeypatch.setattr(sys, "_current_frames", slow_frames)
    first = threading.Thread(target=_pools.current_frames, name="first")
    second = threading.Thread(target=_pools.current_frames, name="second")
    first.start()
    assert inside.wait(5)
    second.start()
    first.join()
    second.join()
    assert gc.isenabled()
    assert sorted(seen) == [("first", False, False), ("second", False, False)], seen


def test_work_on_its_own_loop_given_its_turn_late_by_the_cpu_is_not_called_stuck(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smaller-pool resume with async steps on each thread's own loop, on a loaded
    machine: a thread whose step was given its turn gets the CPU only later, while the run's
    loop has nothing to do and other steps are held. The run was called stuck with the step
    on its way. Made certain here by having each such thread take 0.7 s to go on."""

    late = replay._history.IDLE_SECONDS + 0.2
    go_on = replay._pools.OwnLoopWatch.release

    def starved(watch: replay._pools.OwnLoopWatch, *args: Any) -> None:
        time.sleep(late)  # the thread has its turn, not the CPU
        go_on(watch, *args)

    def starve() -> None:
        ran.clear()
        monkeypatch.setattr(replay._pools.OwnLoopWatch, "release", starved)

    again = resume_in_a_smaller_pool(
        journal, "late", _slow_first_on_its_own_loop, 3, _pool(4), _pool(1), starve
    )
    assert again == [["W0", "W1", "W2"], "went"] and ran == Counter()


@pytest.mark.parametrize("starved", [False, True], ids=["", "first-loop-starved"])
def test_a_run_whose_work_waits_behind_another_runs_moving_step_is_not_called_stuck(
    journal: Journal, starved: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs resumed at once (a loop each, as a worker runs them) share a pool of one.
    The first run's served step waits in the pool's thread for its turn, which comes after
    a timer of that run's own; the second run's work waits in the pool's queue. Nothing is
    stuck: the first run moves on, and its thread then takes the work. The second run was
    called stuck ('the pool has fewer threads than when the run was recorded', of a pool of
    the same size) once its loop had been idle IDLE_SECONDS.

    `starved`: the first run's loop gets no CPU for over IDLE_SECONDS just before one of its
    own checks (a loaded machine; another thread holding the GIL in a long C call): its
    check has not looked since, which is not the run standing still. The second run was
    called stuck meanwhile."""
    second_started, slept = threading.Event(), threading.Event()
    if starved:
        look = replay._history.History._check

        def late_look(history: replay._history.History) -> None:
            if history.run_id == "first" and second_started.is_set() and not slept.is_set():
                slept.set()
                time.sleep(2 * replay._history.IDLE_SECONDS + 0.3)
            look(history)

        monkeypatch.setattr(replay._history.History, "_check", late_look)
    pool = _pool(1)
    crash = {"yes": True}
    pause = replay._history.IDLE_SECONDS + 0.5

    @replay.step(kind="tool")
    def first_in_pool() -> str:
        ran["first_in_pool"] += 1
        time.sleep(pause + 0.2)  # live, it finished after the step the timer led to
        return "f1"

    @replay.step(kind="tool")
    async def first_after_timer() -> str:
        ran["first_after_timer"] += 1
        return "f2"

    async def first() -> list[str]:
        held = asyncio.get_running_loop().run_in_executor(pool, first_in_pool)
        await asyncio.sleep(pause)  # not journaled: the run moves on by itself
        done = [await first_after_timer(), await held]
        if crash["yes"]:
            raise Crash
        return done

    @replay.step(kind="tool")
    def second_in_pool() -> str:
        ran["second_in_pool"] += 1
        return "s1"

    @replay.step(kind="tool")
    async def second_beside() -> str:
        ran["second_beside"] += 1
        await asyncio.sleep(0.05)
        return "s2"

    async def second() -> list[str]:
        queued = asyncio.get_running_loop().run_in_executor(pool, second_in_pool)
        done = list(await asyncio.gather(queued, second_beside()))
        if crash["yes"]:
            raise Crash
        return done

    for workflow in (first, second):
        with pytest.raises(Crash):
            asyncio.run(replay.run(workflow, journal=journal, run_id=workflow.__name__))
    crash["yes"] = False
    ran.clear()
    results: dict[str, object] = {}

    def resume(workflow: Any) -> None:
        try:
            results[workflow.__name__] = asyncio.run(
                replay.run(workflow, journal=journal, run_id=workflow.__name__)
            )
        except BaseException as error:  # a NonDeterminismError, say
            results[workflow.__name__] = error

    try:
        threads = [threading.Thread(target=resume, args=(first,))]
        threads[0].start()
        deadline = time.monotonic() + 5
        while not replay._pools._parked and time.monotonic() < deadline:
            time.sleep(0.005)  # the first run's step waits in the pool's only thread
        threads.append(threading.Thread(target=resume, args=(second,)))
        threads[1].start()
        second_started.set()
        for thread in threads:
            thread.join(10)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert slept.is_set() == starved
    assert results == {"first": ["f2", "f1"], "second": ["s1", "s2"]}
    assert ran == Counter()
