"""Second attack on group commit (replay/_group.py, the stores' append_many, the cancellation
put back by Session.landed, the worker's backlog): each test is a defect found, kept as a
regression test. The one in the stores' `append_many` is in tests/test_store_contract.py.

Real SQLite files, real PostgreSQL, real processes.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from journal import Journal
from replay import run, step
from tests.disk_and_locks import hold_write_lock

# -- a cancellation re-delivered by Session.landed, lost in a second landing --------------

HOLDERS: list[threading.Thread] = []
FLAGS: dict[str, threading.Event] = {}
SEEN: list[Any] = []


def _hold_write_lock(db: str, seconds: float) -> None:
    HOLDERS.append(hold_write_lock(db, seconds))


async def _until(flag: str) -> None:
    while not FLAGS[flag].wait(0):
        await asyncio.sleep(0.002)


@step
async def other_loop_step(name: str) -> str:
    """A step of a run on another thread's loop, in flight until FLAGS['end ' + name]."""
    FLAGS["began " + name].set()
    await _until("end " + name)
    return name


async def other_loop_run() -> str:
    await other_loop_step("n1")
    await _until("begin n2")
    return await other_loop_step("n2")


@step
async def lands_late(db: str) -> int:
    """Returns at once while the file's write lock is held for 0.3 s (its row waits with
    the committer); the workflow's task is cancelled 0.05 s later, during that wait; the
    other loop's step ends at 0.1 s, so the run is alone when its next step starts."""
    await asyncio.sleep(0)
    _hold_write_lock(db, 0.3)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.call_later(0.05, task.cancel)
    loop.call_later(0.1, FLAGS["end n1"].set)
    return 1


@step
async def returns_once_crowded() -> int:
    """Never waits: starts while its run is alone (start buffered), and returns once the
    other loop's run has a step in flight (its outcome goes to the committer)."""
    FLAGS["begin n2"].set()
    FLAGS["began n2"].wait(5)
    return 2


async def cancelled_between_two_landings(db: str) -> list[Any]:
    SEEN.clear()
    await _until("began n1")
    try:
        SEEN.append(await lands_late(db))
        SEEN.append(await returns_once_crowded())
        await asyncio.sleep(0.5)
        SEEN.append("not cancelled")
    except asyncio.CancelledError:
        SEEN.append("cancelled")
        raise
    return SEEN


def test_a_cancellation_put_back_is_not_lost_in_the_next_landing(tmp_path: Path) -> None:
    """Runs on two threads' loops share one journal (a `journal worker` runs each run on a
    loop of its own thread, one committer for all). Run r's task is cancelled while its first
    step's row lands: `Session.landed` holds the cancellation and puts it back with
    `call_soon(_cancel_again, task, asked_before=0)`. Before r's task waits again, its next
    step (which never waits) ends while the other thread's run has a step in flight, so its
    row goes to the committer too, and the second `landed()` reads `asked_before =
    task.cancelling()` = 1: the cancellation not delivered yet counts as 'before'. The
    first `_cancel_again` cancels the second landing's wait, which swallows it and puts it
    back only if cancelling() > 1: it is 1, so the cancellation is dropped and the run
    finishes as if never cancelled. Alone (commit on the spot) the task is cancelled at its
    next wait."""
    db = tmp_path / "j.db"
    for name in ("began n1", "end n1", "begin n2", "began n2", "end n2"):
        FLAGS[name] = threading.Event()
    with Journal(db) as journal:
        other: list[Any] = []
        thread = threading.Thread(
            target=lambda: other.append(
                asyncio.run(run(other_loop_run, journal=journal, run_id="other"))
            )
        )
        thread.start()
        try:
            outcome: Any = asyncio.run(
                run(cancelled_between_two_landings, str(db), journal=journal, run_id="r")
            )
        except asyncio.CancelledError:
            outcome = "cancelled"
        finally:
            FLAGS["end n1"].set()
            FLAGS["end n2"].set()
            thread.join(10)
            for holder in HOLDERS:
                holder.join()
            HOLDERS.clear()
        assert other == ["n2"]
        assert SEEN[:2] == [1, 2], SEEN  # both steps' values reached the workflow
        assert outcome == "cancelled" and SEEN[-1] == "cancelled", (outcome, SEEN)
