"""Attacks on the worker's runs sharing one event loop (and on a loop per run)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import replay
from journal import Journal, JournalUnavailable, RunStatus
from tests import attack_workflows as wf
from tests.conftest import PG_URL, postgres_store
from tests.factories import store_from_before
from tests.fleet_workflows import chain
from tests.test_worker import _wait_until_it_handles_sigterm

ROOT = Path(__file__).resolve().parents[1]
MODES = pytest.mark.parametrize("loop_per_run", [False, True], ids=["shared", "per-run"])


def _worker(db: str, effects: Path, *options: str) -> subprocess.Popen[str]:
    script = str(Path(sys.executable).with_name("journal"))
    return subprocess.Popen(
        [script, "worker", "--import", "tests.attack_workflows", "--db", db, "--poll", "0.05",
         *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FLEET_EFFECTS": str(effects)},
    )  # fmt: skip


def _stop(worker: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    try:
        worker.send_signal(sig)
        return worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


@MODES
def test_sigterm_with_fifty_runs_in_flight_releases_every_one(
    tmp_path: Path, loop_per_run: bool
) -> None:
    db = str(tmp_path / "j.db")
    count = 50
    with Journal(db) as journal:
        for n in range(count):
            replay.submit(wf.slow, 120.0, journal=journal, run_id=f"long{n}")
    extra = ["--loop-per-run"] if loop_per_run else []
    worker = _worker(db, tmp_path / "effects", "--concurrency", str(count), *extra)
    _wait_until_it_handles_sigterm(worker)
    deadline = time.monotonic() + 60
    with Journal(db, read_only=True) as journal:
        while not all(journal.events(f"long{n}") for n in range(count)):
            assert time.monotonic() < deadline, "the worker did not start them all"
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.05)
    began = time.monotonic()
    _, err = _stop(worker)
    assert worker.returncode == 0, err
    assert time.monotonic() - began < 20
    with Journal(db, read_only=True) as journal:
        runs = [journal.run(f"long{n}") for n in range(count)]
        assert all(r.status is RunStatus.RUNNING and r.owner is None for r in runs)
        assert len(journal.interrupted()) == count


def _kill_nine_then_finish(db: str, tmp_path: Path, loop_per_run: bool) -> None:
    count, steps = 50, 12
    effects = tmp_path / "effects"
    with Journal(db) as journal:
        for n in range(count):
            replay.submit(wf.threaded, n, steps, journal=journal, run_id=f"k{n:02d}")
    expected = {f"k{n:02d}": asyncio.run(wf.threaded(n, steps)) for n in range(count)}
    extra = ["--loop-per-run"] if loop_per_run else []
    worker = _worker(db, effects, "--concurrency", str(count), *extra)
    try:
        deadline = time.monotonic() + 60
        while not effects.exists() or len(effects.read_text().splitlines()) < count * steps // 3:
            assert time.monotonic() < deadline, "no progress"
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.01)
    finally:
        _stop(worker, signal.SIGKILL)
    with Journal(db) as journal:
        assert len(journal.runs(status=RunStatus.COMPLETED)) < count  # killed mid-flight
    second = _worker(db, effects, "--concurrency", str(count), *extra)
    try:
        with Journal(db) as journal:
            deadline = time.monotonic() + 120
            while len(journal.runs(status=RunStatus.COMPLETED)) < count:
                assert time.monotonic() < deadline, "the second worker did not finish"
                assert second.poll() is None, second.communicate()
                time.sleep(0.1)
    finally:
        _wait_until_it_handles_sigterm(second)
        _, err = _stop(second)
    assert second.returncode == 0, err
    with Journal(db) as journal:
        for run_id, value in expected.items():
            run = journal.run(run_id)
            assert run.status is RunStatus.COMPLETED, run_id
            assert run.result == str(value).encode(), run_id
        attempts = {
            f"{run_id}:{e.key}": e.attempt
            for run_id in expected
            for e in journal.events(run_id)
            if e.status.value == "completed"
        }
        assert all(v.sealed for v in journal.verify())
    executions = Counter(line.split()[1] for line in effects.read_text().splitlines())
    assert all(count <= attempts[key] for key, count in executions.items())
    assert set(executions) == set(attempts)


@MODES
def test_kill_nine_mid_flight_then_a_second_worker_finishes_exactly_sqlite(
    tmp_path: Path, loop_per_run: bool
) -> None:
    _kill_nine_then_finish(str(tmp_path / "j.db"), tmp_path, loop_per_run)


@MODES
def test_kill_nine_mid_flight_then_a_second_worker_finishes_exactly_postgres(
    pg_schema: str, tmp_path: Path, loop_per_run: bool
) -> None:
    postgres_store(pg_schema).close()
    _kill_nine_then_finish(f"{PG_URL}?schema={pg_schema}", tmp_path, loop_per_run)


@MODES
def test_journal_cancel_reaches_a_run_the_worker_is_continuing(
    tmp_path: Path, loop_per_run: bool
) -> None:
    journal = Journal(tmp_path / "j.db")
    for n in range(5):
        replay.submit(wf.slow, 60.0, journal=journal, run_id=f"s{n}")
    worker = replay.Worker(journal, concurrency=5, poll_seconds=0.05, loop_per_run=loop_per_run)

    async def go() -> replay.WorkerStats:
        runner = asyncio.ensure_future(worker.run())
        while not all(journal.events(f"s{n}") for n in range(5)):
            await asyncio.sleep(0.02)
        replay.cancel(journal, "s2", "no longer wanted")
        while journal.run("s2").status is not RunStatus.CANCELLED:
            await asyncio.sleep(0.05)
        worker.stop()
        return await runner

    stats = asyncio.run(asyncio.wait_for(go(), 30))
    assert stats.cancelled == 1
    assert journal.run("s2").status is RunStatus.CANCELLED
    others = [journal.run(f"s{n}") for n in (0, 1, 3, 4)]
    assert all(r.status is RunStatus.RUNNING and r.owner is None for r in others), others
    journal.close()


@MODES
def test_cancelling_the_task_of_worker_run_stops_its_runs_at_once(
    tmp_path: Path, loop_per_run: bool
) -> None:
    """A program that runs the worker as a task of its own and cancels it (a timeout, its own
    shutdown) without calling stop(): the worker stops its runs, releasing their leases, and
    does not wait for them to finish."""
    journal = Journal(tmp_path / "j.db")
    for n in range(4):
        replay.submit(wf.slow, 60.0, journal=journal, run_id=f"s{n}")
    worker = replay.Worker(journal, concurrency=4, poll_seconds=0.05, loop_per_run=loop_per_run)

    async def go() -> None:
        runner = asyncio.ensure_future(worker.run())
        while not all(journal.events(f"s{n}") for n in range(4)):
            await asyncio.sleep(0.02)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    began = time.monotonic()
    asyncio.run(asyncio.wait_for(go(), 90))
    assert time.monotonic() - began < 20
    runs = [journal.run(f"s{n}") for n in range(4)]
    assert all(r.status is RunStatus.RUNNING and r.owner is None for r in runs), runs
    journal.close()


@MODES
def test_cancelling_run_once_stops_its_runs_at_once(tmp_path: Path, loop_per_run: bool) -> None:
    journal = Journal(tmp_path / "j.db")
    for n in range(4):
        replay.submit(wf.slow, 60.0, journal=journal, run_id=f"s{n}")
    worker = replay.Worker(journal, concurrency=2, loop_per_run=loop_per_run)

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.run_once(), 2)
        # still on the loop: nothing of the round goes on after it was given up
        runs = [journal.run(f"s{n}") for n in range(4)]
        assert all(r.owner is None for r in runs), runs

    began = time.monotonic()
    asyncio.run(asyncio.wait_for(go(), 90))
    assert time.monotonic() - began < 20
    journal.close()


def _threads() -> int:
    return threading.active_count()


@MODES
def test_thousands_of_runs_leave_no_threads_behind(tmp_path: Path, loop_per_run: bool) -> None:
    journal = Journal(tmp_path / "j.db")
    count = 1000
    for n in range(count):
        replay.submit(wf.threaded, n, 2, journal=journal, run_id=f"t{n}")
    worker = replay.Worker(journal, concurrency=32, loop_per_run=loop_per_run)

    async def go() -> int:
        done = await worker.run_once()
        await asyncio.sleep(0.5)
        return done

    before = _threads()
    assert asyncio.run(go()) == count
    deadline = time.monotonic() + 10
    while _threads() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() <= before + 1, [t.name for t in threading.enumerate()]
    assert worker.stats.completed == count
    journal.close()


@MODES
def test_runs_keep_their_context_variables_and_task(tmp_path: Path, loop_per_run: bool) -> None:
    journal = Journal(tmp_path / "j.db")
    names = [f"run-{n}" for n in range(30)]
    for name in names:
        replay.submit(wf.tagged, name, 5, journal=journal, run_id=name)
    worker = replay.Worker(journal, concurrency=30, loop_per_run=loop_per_run)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 60)) == 30
    for name in names:
        run = journal.run(name)
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.result == f'"{name}"'.encode()
    journal.close()


@MODES
def test_fifty_crashed_runs_replayed_at_once_equal_clean_runs(
    tmp_path: Path, loop_per_run: bool
) -> None:
    journal = Journal(tmp_path / "j.db")
    count, width = 50, 6
    expected = {}
    for n in range(count):
        expected[f"i{n}"] = asyncio.run(wf.interleaved(n, width))
        wf.CRASH_AT[0] = 102  # after two waves and their steps
        try:
            with pytest.raises(wf.Crash):
                asyncio.run(replay.run(wf.interleaved, n, width, journal=journal, run_id=f"i{n}"))
        finally:
            wf.CRASH_AT[0] = -1
    worker = replay.Worker(journal, concurrency=count, loop_per_run=loop_per_run)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 120)) == count
    assert worker.stats.completed == count, worker.stats
    for run_id, value in expected.items():
        assert journal.run(run_id).result == str(value).encode(), run_id
    journal.close()


@MODES
def test_journaled_timeouts_in_runs_going_at_once(tmp_path: Path, loop_per_run: bool) -> None:
    journal = Journal(tmp_path / "j.db")
    for n in range(20):
        replay.submit(wf.timed, n, journal=journal, run_id=f"t{n}")
    worker = replay.Worker(journal, concurrency=20, loop_per_run=loop_per_run)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 60)) == 20
    for n in range(20):
        run = journal.run(f"t{n}")
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.result == f'"True {asyncio.run(wf.async_work(n, 1))}"'.encode()
    journal.close()


def _crashed_asking_runs(journal: Journal, base_url: str, runs: dict[str, float]) -> None:
    """Runs of `ask_twice` interrupted after their first (journaled) request."""
    from replay.integrations import instrument, uninstrument
    from tests import fleet_workflows

    instrument()
    fleet_workflows.CRASH_AFTER_FIRST_CALL[0] = True
    try:
        for run_id, pause in runs.items():
            with pytest.raises(fleet_workflows.Crash):
                asyncio.run(
                    replay.run(
                        fleet_workflows.ask_twice, base_url, pause, journal=journal, run_id=run_id
                    )
                )
    finally:
        fleet_workflows.CRASH_AFTER_FIRST_CALL[0] = False
        uninstrument()


@MODES
def test_instrument_called_by_the_user_while_a_re_run_holds_it_stays(
    tmp_path: Path, loop_per_run: bool, server: tuple[str, Path]
) -> None:
    """The program calls instrument() (a module doing so as the worker imports it) while the
    worker re-runs a run with recorded requests: when the re-run ends, the program's
    instrument() is still in force, and a fresh run's requests are journaled."""
    from replay.integrations import uninstrument
    from replay.integrations._instrument import instrument, is_instrumented
    from tests import fleet_workflows
    from tests.llm_server import requests_logged

    base_url, log = server
    journal = Journal(tmp_path / "j.db")
    try:
        _crashed_asking_runs(journal, base_url, {"late": 0.5})
        assert not is_instrumented()
        worker = replay.Worker(journal, concurrency=2, loop_per_run=loop_per_run)

        async def go() -> int:
            round_ = asyncio.ensure_future(worker.run_once())
            while not is_instrumented():  # the re-run holds it
                await asyncio.sleep(0.005)
            instrument()  # the program's own
            return await round_

        assert asyncio.run(asyncio.wait_for(go(), 60)) == 1
        assert is_instrumented(), "the program's instrument() was undone by the re-run"
        asyncio.run(
            replay.run(fleet_workflows.ask_twice, base_url, 0.0, journal=journal, run_id="fresh")
        )
        requests = [e for e in journal.events("fresh") if e.kind.value == "llm"]
        assert len(requests) >= 2
        assert len(requests_logged(log)) == 1 + 1 + 2
    finally:
        uninstrument()
        journal.close()


@MODES
def test_uninstrument_called_by_the_user_does_not_unjournal_a_re_run(
    tmp_path: Path, loop_per_run: bool, server: tuple[str, Path]
) -> None:
    """The program calls uninstrument() while the worker re-runs a run whose requests were
    journaled: the re-run's next request is still journaled (made once, kept), and
    instrument() is undone once the re-run ends."""
    from replay.integrations import instrument, uninstrument
    from replay.integrations._instrument import is_instrumented
    from tests.llm_server import requests_logged

    base_url, log = server
    journal = Journal(tmp_path / "j.db")
    try:
        _crashed_asking_runs(journal, base_url, {"late": 0.5})
        instrument()  # the program's, from the start
        worker = replay.Worker(journal, concurrency=2, loop_per_run=loop_per_run)

        async def go() -> int:
            round_ = asyncio.ensure_future(worker.run_once())
            while not journal.events("late") or len(journal.events("late")) < 2:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)  # the re-run is in its pause
            uninstrument()
            return await round_

        assert asyncio.run(asyncio.wait_for(go(), 60)) == 1
        requests = [e for e in journal.events("late") if e.kind.value == "llm"]
        assert len({e.key for e in requests}) == 2, "the re-run's second request went unjournaled"
        assert len(requests_logged(log)) == 2
        assert not is_instrumented()
    finally:
        uninstrument()
        journal.close()


@MODES
def test_sigterm_while_runs_work_in_threads_exits_promptly(
    tmp_path: Path, loop_per_run: bool
) -> None:
    """Runs whose threads work for a long while get SIGTERM: each releases its lease at once
    and the worker exits without waiting for work its runs let go."""
    db = str(tmp_path / "j.db")
    with Journal(db) as journal:
        for n in range(6):
            replay.submit(wf.thread_sleeper, 25.0, journal=journal, run_id=f"t{n}")
    extra = ["--loop-per-run"] if loop_per_run else []
    worker = _worker(db, tmp_path / "effects", "--concurrency", "6", *extra)
    _wait_until_it_handles_sigterm(worker)
    deadline = time.monotonic() + 60
    with Journal(db, read_only=True) as journal:
        while not all(journal.events(f"t{n}") for n in range(6)):
            assert time.monotonic() < deadline
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.05)
    time.sleep(0.3)  # in their threads
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    released_at = None
    with Journal(db, read_only=True) as journal:
        while time.monotonic() - began < 30 and released_at is None:
            if all(journal.run(f"t{n}").owner is None for n in range(6)):
                released_at = time.monotonic() - began
            time.sleep(0.05)
    try:
        _, err = worker.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        err = "still running 12 s after SIGTERM (its runs' threads are joined at exit)"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    exited_at = time.monotonic() - began
    assert released_at is not None and released_at < 10, released_at
    assert worker.returncode == 0 and exited_at < 12, (exited_at, err)


@MODES
def test_runs_that_suspend_are_woken_and_finish_on_a_running_worker(
    tmp_path: Path, loop_per_run: bool
) -> None:
    """Twenty runs wait for a signal and twenty take a durable nap, all on one worker: each
    suspends (its lease released), is woken (its signal sent, its nap over) and finishes."""
    from tests import fleet_workflows as fleet

    journal = Journal(tmp_path / "j.db")
    for n in range(20):
        replay.submit(fleet.approve_refund, n, journal=journal, run_id=f"a{n}")
        replay.submit(fleet.nap, 0.3, journal=journal, run_id=f"z{n}")
    worker = replay.Worker(journal, concurrency=16, poll_seconds=0.05, loop_per_run=loop_per_run)

    async def go() -> None:
        runner = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + 60
        while any(journal.run(f"a{n}").status is not RunStatus.WAITING for n in range(20)):
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.05)
        for n in range(20):
            journal.signal(f"a{n}", "approval", {"approved": n % 2 == 0})
        ids = [f"{p}{n}" for p in "az" for n in range(20)]
        while any(journal.run(i).status is not RunStatus.COMPLETED for i in ids):
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.05)
        worker.stop()
        await runner

    asyncio.run(asyncio.wait_for(go(), 90))
    for n in range(20):
        expected = f'"refunded {n}"' if n % 2 == 0 else '"declined"'
        assert journal.run(f"a{n}").result == expected.encode()
        assert journal.run(f"z{n}").result == b'"rested"'
    journal.close()


@MODES
def test_a_journal_error_in_one_run_of_run_once_releases_the_others_before_it_raises(
    tmp_path: Path, loop_per_run: bool
) -> None:
    from journal import ChainKeyMismatch

    path = tmp_path / "j.db"
    with Journal(path, hmac_key="k" * 32) as signed:
        replay.submit(wf.threaded, 1, 2, journal=signed, run_id="signed")
    journal = Journal(path)
    for n in range(3):
        replay.submit(wf.slow, 60.0, journal=journal, run_id=f"long{n}")
    worker = replay.Worker(journal, concurrency=4, loop_per_run=loop_per_run)

    async def go() -> None:
        with pytest.raises(ChainKeyMismatch):
            await worker.run_once()
        runs = [journal.run(f"long{n}") for n in range(3)]
        assert all(r.owner is None for r in runs), runs

    began = time.monotonic()
    asyncio.run(asyncio.wait_for(go(), 60))
    assert time.monotonic() - began < 20
    journal.close()


def test_a_users_default_executor_still_serves_outside_runs_and_two_loops_work(
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    journal = Journal(tmp_path / "j.db")
    worker = replay.Worker(journal, concurrency=8)
    for round_ in range(2):
        for n in range(8):
            replay.submit(wf.fanout, n, 4, journal=journal, run_id=f"f{round_}-{n}")

        async def go() -> tuple[int, str]:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(2, thread_name_prefix="mine"))
            done = await worker.run_once()
            name = await asyncio.to_thread(lambda: threading.current_thread().name)
            return done, name

        done, name = asyncio.run(asyncio.wait_for(go(), 60))
        assert done == 8 and name.startswith("mine")
    for round_ in range(2):
        for n in range(8):
            assert (
                journal.run(f"f{round_}-{n}").result == str(asyncio.run(wf.fanout(n, 4))).encode()
            )
    journal.close()


def test_fifty_crashed_runs_replayed_at_once_on_postgres_equal_clean_runs(pg_schema: str) -> None:
    journal = Journal(store=postgres_store(pg_schema))
    count, width = 50, 6
    expected = {}
    for n in range(count):
        expected[f"i{n}"] = asyncio.run(wf.interleaved(n, width))
        wf.CRASH_AT[0] = 102
        try:
            with pytest.raises(wf.Crash):
                asyncio.run(replay.run(wf.interleaved, n, width, journal=journal, run_id=f"i{n}"))
        finally:
            wf.CRASH_AT[0] = -1
    worker = replay.Worker(journal, concurrency=count)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 120)) == count
    assert worker.stats.completed == count, worker.stats
    for run_id, value in expected.items():
        assert journal.run(run_id).result == str(value).encode(), run_id
    journal.close()


def test_a_store_subclassing_the_protocol_before_get_runs_is_read_a_run_at_a_time() -> None:
    """The protocol's stub of `get_runs` (a store subclassing JournalStore inherits it)
    returns None: the worker reads that store a run at a time, as any store without it,
    instead of failing on None with a TypeError that ended `Worker.run`."""
    journal = Journal(store=store_from_before("get_runs"))
    for n in range(10):
        replay.submit(chain, n, 1, journal=journal, run_id=f"r{n}")
    worker = replay.Worker(journal, concurrency=2, poll_seconds=0.01)

    async def until_done() -> replay.WorkerStats:
        runner = asyncio.ensure_future(worker.run())
        while len(journal.runs(status=RunStatus.COMPLETED)) < 10:
            assert not runner.done(), runner.result()
            await asyncio.sleep(0.01)
        worker.stop()
        return await runner

    stats = asyncio.run(asyncio.wait_for(until_done(), 30))
    assert stats.completed == 10


def test_a_failed_read_again_leaves_the_backlog_as_it_was(tmp_path: Path) -> None:
    """The journal out of reach while the worker reads again what its last look found: the
    runs it had taken off its backlog for that read go back on it, in their order. Lost, they
    waited for the whole backlog to drain and a new look (up to 2 x concurrency + 6 runs a
    blip, where a read a run lost one)."""
    with Journal(str(tmp_path / "j.db")) as journal:
        for n in range(40):
            replay.submit(chain, n, 1, journal=journal, run_id=f"r{n:02d}")
        worker = replay.Worker(journal, concurrency=4)
        first = worker._next({}, 4)
        before = [run.run_id for run in worker._backlog]
        store = journal.store
        get_runs = store.get_runs

        def unreachable(ids: object) -> list[object]:
            raise JournalUnavailable("the server went away")

        store.get_runs = unreachable  # type: ignore[method-assign,assignment]
        with pytest.raises(JournalUnavailable):
            worker._next({run.run_id: None for run in first}, 4)
        store.get_runs = get_runs  # type: ignore[method-assign]
        assert [run.run_id for run in worker._backlog] == before
        taken = worker._next({run.run_id: None for run in first}, 4)
        assert [run.run_id for run in taken] == before[::-1][:4]
