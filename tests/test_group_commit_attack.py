"""Attacks on group commit (replay/_group.py): each test is a defect an attack found, kept as
a regression test.

Real SQLite files; group mode is forced by a neighbour run with a step in flight on the same
journal, and a row is kept "on its way" by another connection holding the file's write lock.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import replay
from journal import EventStatus, Journal
from replay import JournalWriteFailed, run, run_with_summary, step
from tests.disk_and_locks import hold_write_lock, small_tmpfs

HOLDERS: list[threading.Thread] = []


def _hold_write_lock(db: str, seconds: float) -> None:
    HOLDERS.append(hold_write_lock(db, seconds))


@step
async def returns_while_locked(db: str) -> int:
    """Returns at once, while the file's write lock is held for 0.3 s: its outcome row waits
    with the group committer (the workflow's wait for it lets timers fire)."""
    await asyncio.sleep(0)
    _hold_write_lock(db, 0.3)
    return 1


@step
async def long_wait(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def neighbour() -> str:
    """A step in flight on the same store: the other run writes in group mode."""
    return await long_wait(0.6)


def _beside_a_neighbour(journal: Journal, workflow: Any, *args: Any, run_id: str) -> list[Any]:
    """[`workflow`'s outcome, the neighbour's], run together: the workflow writes in a group."""

    async def main() -> list[Any]:
        return await asyncio.gather(
            run(workflow, *args, journal=journal, run_id=run_id),
            run(neighbour, journal=journal, run_id="neighbour"),
            return_exceptions=True,
        )

    return asyncio.run(main())


def _join_holders() -> None:
    for holder in HOLDERS:
        holder.join()
    HOLDERS.clear()


async def timed_block(db: str) -> list[Any]:
    seen: list[Any] = []
    try:
        async with replay.timeout(0.05):
            seen.append(await returns_while_locked(db))
    except TimeoutError:
        seen.append("timeout")
    await asyncio.sleep(0.01)
    seen.append("after the block")
    return seen


def test_a_timeout_firing_while_the_row_lands_does_not_cancel_the_run(tmp_path: Path) -> None:
    """`replay.timeout` around a step whose body returned before the deadline, but whose
    row is still with the group committer when the deadline falls. Alone, the row commits on
    the spot and the block ends without a timeout. In a group, the timer fires during the
    step's wait for its ticket; the cancellation is put back for the 'next wait' -- which
    is after the block, where no timeout catches it: the workflow (and the run) is
    cancelled by a bare CancelledError. Expected: the block either ends normally (as alone)
    or raises TimeoutError; the run completes either way."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        outcomes = _beside_a_neighbour(journal, timed_block, str(db), run_id="timed")
        _join_holders()
        assert outcomes[1] == "done"
        assert outcomes[0] in ([1, "after the block"], ["timeout", "after the block"]), outcomes
        assert all(v.ok for v in journal.verify())
        replayed = asyncio.run(
            run_with_summary(timed_block, str(db), journal=journal, run_id="timed", mode="replay")
        )
        assert replayed.result == outcomes[0]


async def task_cancelled_while_landing(db: str) -> Any:
    """A task runs one step; the workflow cancels the task once the step's body returned
    (its row still on its way to the store)."""

    async def one_step() -> int:
        value = await returns_while_locked(db)
        return value

    task = asyncio.create_task(one_step())
    await asyncio.sleep(0.1)  # the body has returned by now; its row waits for the lock
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "task cancelled"


def test_a_task_cancelled_while_its_row_lands_gets_the_committed_value(tmp_path: Path) -> None:
    """The step's completed row is committed, so by the group-commit promise its value is
    the workflow's. But the task holding it ends right after the step: Python marks a task
    that returns with a cancellation pending as cancelled, so the value is lost and the
    workflow sees the task cancelled. Replay serves the completed row and the task returns
    the value: live and replay disagree (and alone, the task would have been cancelled
    before the body returned, with a `cancelled` row)."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        outcomes = _beside_a_neighbour(journal, task_cancelled_while_landing, str(db), run_id="t")
        _join_holders()
        statuses = [(e.key, e.status) for e in journal.events("t")]
        assert all(v.ok for v in journal.verify())
        replayed = asyncio.run(
            run_with_summary(
                task_cancelled_while_landing, str(db), journal=journal, run_id="t", mode="replay"
            )
        )
        assert replayed.result == outcomes[0], (outcomes, replayed, statuses)
        if (  # the completed row is the workflow's: it must have seen the value
            "0/1:1" in dict(statuses) or any(s is EventStatus.COMPLETED for _, s in statuses)
        ):
            assert outcomes[0] == 1, (outcomes, statuses)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs."""
    with small_tmpfs(tmp_path / "small", "1m") as where:
        yield where


@step
async def too_big_for_the_disk(db: str) -> str:
    """Returns 1.5 MB (more than the disk holds) while the write lock is held for 0.3 s:
    its outcome row waits with the committer, then fails with a full disk."""
    await asyncio.sleep(0.02)  # both steps' starts have landed
    _hold_write_lock(db, 0.3)
    return "x" * 1_500_000


@step
async def small_soon() -> int:
    await asyncio.sleep(0.1)  # returns while the big row still waits for the lock
    return 2


async def big_and_small(db: str) -> list[Any]:
    return list(await asyncio.gather(too_big_for_the_disk(db), small_soon()))


async def long_neighbour() -> str:
    return await long_wait(1.0)


def test_rows_queued_behind_a_refused_commit_are_not_written_past_the_gap(
    small_disk: Path,
) -> None:
    """Two steps of one run finish while the committer is busy: the first one's row (too big
    for the disk) is refused, the second one's row was already queued behind it. The
    committer commits the second in its next round, after the first failed: the journal
    holds seq 4 without seq 3, the hash chain is broken (`journal verify` fails), promise 3
    ("a run's rows land in the order it wrote them"). Expected: a run's rows queued after a
    refused ticket are refused too."""
    db = small_disk / "j.db"
    with Journal(db) as journal:

        async def main() -> Any:
            return await asyncio.gather(
                run(big_and_small, str(db), journal=journal, run_id="gapped"),
                run(long_neighbour, journal=journal, run_id="neighbour"),
                return_exceptions=True,
            )

        outcomes = asyncio.run(main())
        _join_holders()
        assert isinstance(outcomes[0], JournalWriteFailed), outcomes
        seqs = [e.seq for e in journal.events("gapped")]
        assert seqs == list(range(1, len(seqs) + 1)), [
            (e.seq, e.key, e.status.value) for e in journal.events("gapped")
        ]
        assert all(v.ok for v in journal.verify()), journal.verify()


@step
async def one(i: int) -> int:
    return i


async def one_step() -> int:
    return await one(1)


def test_a_journal_used_by_a_run_can_be_collected(tmp_path: Path) -> None:
    """Every Writer registers its store's committer in `_group._committers`, a
    WeakKeyDictionary whose value (the Committer) holds the store itself: the entry never
    dies, so every store a run ever used stays in memory for the life of the process, and a
    Journal dropped without close() keeps its SQLite file open (three descriptors each).
    Before group commit the store was collected and its file closed."""
    import gc
    import weakref

    closed = Journal(tmp_path / "closed.db")
    asyncio.run(run(one_step, journal=closed, run_id="r"))
    closed.close()
    store = weakref.ref(closed.store)
    del closed

    def fds() -> int:
        """Descriptors open on this test's files: other tests' journals may close theirs
        meanwhile (a checkpoint thread closes its connection after idling), which a count
        of every descriptor would take for this test's."""
        opened = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the descriptor listdir itself used, closed since
                continue
            opened += target.startswith(str(tmp_path))
        return opened

    before = fds()
    for i in range(5):
        dropped = Journal(tmp_path / f"dropped{i}.db")
        asyncio.run(run(one_step, journal=dropped, run_id="r"))
        del dropped
    gc.collect()
    assert store() is None, "the store of a closed, dropped Journal is still alive"
    assert fds() == before, f"{fds() - before} file descriptors of dropped journals still open"


@step
async def waits(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def many_waits(n: int) -> int:
    total = 0
    for i in range(n):
        total += await waits(i)
    return total


def test_serving_steps_while_another_thread_posts_to_the_loop(tmp_path: Path) -> None:
    """Serving a recorded step that waited live, the engine looks through the loop's ready
    queue (`_history.run_ready` iterates `loop._ready`, a deque) while another thread may
    append to it (`call_soon_threadsafe`: the group committer landing tickets, a to_thread
    worker finishing, any thread posting). The iteration then fails with "RuntimeError:
    deque mutated during iteration", raised into the workflow at a step call, or in
    History._settle, after which the run is stopped as a NonDeterminismError. Found resuming
    60 runs (async steps, gather, asyncio.to_thread with sync steps) after a SIGINT; it
    predates group commit (reproduced at 9f50a23), whose committer is one more poster."""
    import threading as _threading

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(run(many_waits, 3000, journal=journal, run_id="r"))

        async def replayed() -> Any:
            loop = asyncio.get_running_loop()
            stop = _threading.Event()

            def poster() -> None:  # as the committer's thread does for each ticket it lands
                ready = loop._ready  # type: ignore[attr-defined]
                while not stop.is_set():
                    if len(ready) < 64:  # a busy loop, not a flood it can never drain
                        for _ in range(16):
                            loop.call_soon_threadsafe(lambda: None)
                    else:
                        time.sleep(0.0001)

            thread = _threading.Thread(target=poster)
            thread.start()
            try:
                return await run_with_summary(
                    many_waits, 3000, journal=journal, run_id="r", mode="replay"
                )
            finally:
                stop.set()
                thread.join()

        assert asyncio.run(replayed()).result == sum(range(3000))


@step
async def on_its_own_loop(i: int) -> int:
    await asyncio.sleep(0.01)
    return i * 2


async def steps_on_a_loop_of_its_own() -> int:
    return sum([await on_its_own_loop(i) for i in range(3)])


async def runs_a_loop_in_a_thread() -> int:
    """The workflow hands work to a thread that runs an event loop of its own (supported:
    tasks there are keyed by creation order), with async steps on that loop."""
    return await asyncio.to_thread(lambda: asyncio.run(steps_on_a_loop_of_its_own()))


def test_an_async_step_on_a_loop_of_a_thread_waits_for_its_ticket_there(tmp_path: Path) -> None:
    """Alone this works (6). In a group, the step's outcome goes to the committer and
    `Session.landed` awaits a future made on the run's loop (`self.loop`), from the thread's
    own loop: "RuntimeError: ... got Future ... attached to a different loop". The completed
    row is committed meanwhile, but the workflow gets the RuntimeError instead of the value
    (replay serves 6)."""
    with Journal(tmp_path / "j.db") as journal:
        assert asyncio.run(run(runs_a_loop_in_a_thread, journal=journal, run_id="alone")) == 6

        assert _beside_a_neighbour(journal, runs_a_loop_in_a_thread, run_id="grouped") == [
            6,
            "done",
        ]


GO: list[asyncio.Event] = []
NEIGHBOUR_WAITING: list[asyncio.Event] = []
FIRST_WAITING: list[asyncio.Event] = []
SECOND_WAITING: list[asyncio.Event] = []


@step
async def checks_its_start_after_first_wait(db: str) -> bool:
    """Whether this step's `started` row is committed once its first wait has ended."""
    await asyncio.sleep(0.05)
    reader = sqlite3.connect(db)
    try:
        row = reader.execute(
            "SELECT 1 FROM events WHERE run_id = 'r' AND key = '0/1:1' AND status = ?",
            (EventStatus.STARTED.value,),
        ).fetchone()
    finally:
        reader.close()
    return row is not None


@step
async def second(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "second"


async def first_alone_then_grouped(db: str) -> list[Any]:
    go = GO[0]

    async def first() -> bool:
        await go.wait()
        return await checks_its_start_after_first_wait(db)

    async def then() -> str:
        await go.wait()
        return await second(0.1)

    one = asyncio.create_task(first())
    await asyncio.sleep(0)
    FIRST_WAITING[0].set()
    await NEIGHBOUR_WAITING[0].wait()
    two = asyncio.create_task(then())
    await asyncio.sleep(0)
    SECOND_WAITING[0].set()
    return [await one, await two]


async def neighbour_after_go() -> str:
    await FIRST_WAITING[0].wait()
    NEIGHBOUR_WAITING[0].set()
    await GO[0].wait()
    return await long_wait(0.5)


def test_a_start_buffered_alone_is_committed_by_the_end_of_its_first_wait(
    tmp_path: Path,
) -> None:
    """Step X of run R starts while R is alone: its `started` row is buffered, to be flushed
    on the spot at X's first wait (promise 2 for a run alone). In the same loop turn another
    run starts a step (R is crowded now) and R's second task starts step Y: Y's write takes
    every buffered row, X's start included, to the committer, and only Y waits for that
    ticket. X's flush callback then finds nothing buffered; X's body runs its first wait and
    goes on while its start is still with the committer (held up by a write lock): a crash
    then would leave X's effect without any record that it was in flight."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:

        async def main() -> Any:
            GO[:] = [asyncio.Event()]
            NEIGHBOUR_WAITING[:] = [asyncio.Event()]
            FIRST_WAITING[:] = [asyncio.Event()]
            SECOND_WAITING[:] = [asyncio.Event()]

            async def driver() -> None:
                await SECOND_WAITING[0].wait()
                _hold_write_lock(str(db), 0.3)
                GO[0].set()  # wakes X's task, then the neighbour, then Y's task, in that order

            results = await asyncio.gather(
                run(first_alone_then_grouped, str(db), journal=journal, run_id="r"),
                run(neighbour_after_go, journal=journal, run_id="n"),
                driver(),
                return_exceptions=True,
            )
            return results[:2]

        outcomes = asyncio.run(main())
        _join_holders()
        assert outcomes == [[True, "second"], "done"], outcomes
