"""Workers resume runs that need it: submitted ones, and ones whose process died."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

import replay
import replay._history
import replay._pools
import replay._run
from journal import Journal, RunStatus
from replay._rerun import recorded_inputs
from replay.integrations import instrument, uninstrument
from replay.integrations._instrument import is_instrumented
from tests import fleet_workflows
from tests.conftest import PG_URL, postgres_store
from tests.factories import edit_owner, make_owner, make_run
from tests.fleet_workflows import (
    TOGETHER,
    Order,
    chain,
    describe_at,
    describe_order,
    describe_when,
    meet,
    pair,
    slow,
)
from tests.llm_server import requests_logged

ROOT = Path(__file__).resolve().parents[1]


def test_a_worker_starts_submitted_runs_and_skips_what_it_cannot_run(
    journal: Journal,
) -> None:
    """submit() records runs without running them; one worker round completes them. A run
    a live process owns elsewhere is left alone; a script's run is skipped with a reason."""
    ids = [replay.submit(chain, n, 3, journal=journal, run_id=f"s{n}") for n in range(3)]
    assert replay.submit(chain, 0, 3, journal=journal, run_id="s0") == "s0"  # idempotent
    assert [r.run_id for r in journal.interrupted()] == ["s2", "s1", "s0"]
    busy = journal.store.create_run(journal.run("s0").model_copy(update={"run_id": "busy"}))
    journal.store.claim(
        busy.run_id,
        make_owner("x", host="elsewhere", pid=1, ttl=300),
        resuming=False,
    )  # fmt: skip
    journal.store.create_run(
        journal.run("s1").model_copy(update={"run_id": "script", "workflow": "__main__:chain"})
    )
    worker = replay.Worker(journal)
    assert asyncio.run(worker.run_once()) == 3
    for n, run_id in enumerate(ids):
        run = journal.run(run_id)
        assert run.status is RunStatus.COMPLETED
        assert run.result == str(asyncio.run(chain(n, 3))).encode()
    assert worker.stats.completed == 3 and worker.stats.skipped == 1
    assert journal.run("busy").status is RunStatus.RUNNING
    with pytest.raises(ValueError, match="defined in a script"):

        async def local() -> None: ...

        local.__module__ = "__main__"
        replay.submit(local, journal=journal)


def test_a_worker_looks_at_a_bounded_sample_of_a_long_queue_and_finishes_it(
    journal: Journal,
) -> None:
    """With more runs queued than a look takes (256 for a worker of few slots), each look
    reads a sample of them, not every run of the journal, and the worker still finishes them
    all; a round (`run_once`) still tries every one."""
    _finish_a_long_queue(journal)


def test_a_long_queue_is_finished_when_its_last_runs_take_long(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same when the last runs the worker starts are still going once none is left to
    claim (a loaded machine): the worker is stopped after they end, not while they go on."""
    body, started = replay._run.workflow_body, itertools.count(1)

    async def last_ones_slow(session: object, workflow: object) -> object:
        if next(started) > 296:
            await asyncio.sleep(0.5)
        return await body(session, workflow)  # type: ignore[arg-type]

    monkeypatch.setattr(replay._run, "workflow_body", last_ones_slow)
    with Journal(db_path) as journal:
        _finish_a_long_queue(journal)


def _finish_a_long_queue(journal: Journal) -> None:
    for n in range(300):
        replay.submit(chain, n, 0, journal=journal, run_id=f"q{n:03d}")
    store = journal.store
    sample = store.sample_resumable
    looked: list[int] = []

    def counted(now: datetime, host: str, limit: int) -> list[replay.Run]:
        found = sample(now, host, limit)
        looked.append(len(found))
        return found

    store.sample_resumable = counted  # type: ignore[method-assign]
    worker = replay.Worker(journal, poll_seconds=0.01, concurrency=4)

    async def until_done() -> None:
        runner = asyncio.ensure_future(worker.run())
        # Not until none is left to claim: the last ones claimed may still be going.
        while journal.store.list_runs(status=RunStatus.RUNNING):
            await asyncio.sleep(0.05)
        worker.stop()
        await runner

    asyncio.run(asyncio.wait_for(until_done(), 60))
    assert looked and max(looked) == 256, looked
    assert worker.stats.completed == 300
    assert all(journal.run(f"q{n:03d}").result == orjson.dumps(n) for n in range(300))
    for n in range(300):
        replay.submit(chain, n, 0, journal=journal, run_id=f"again{n:03d}")
    looked.clear()
    assert asyncio.run(replay.Worker(journal, concurrency=8).run_once()) == 300
    assert looked == []


def test_a_look_whose_sample_it_cannot_take_reads_every_run(journal: Journal) -> None:
    """Runs a worker has found it cannot take (another version's, an unimportable workflow's)
    may fill a whole sample: the look then reads every run rather than find nothing, so one
    run it can take among a thousand it cannot is found at every look, not by chance."""
    for n in range(1000):
        journal.store.create_run(make_run(f"other{n:04d}"))
    replay.submit(chain, 7, 0, journal=journal, run_id="mine")
    worker = replay.Worker(journal, concurrency=2)
    worker._unresolvable.update(f"other{n:04d}" for n in range(1000))  # as found by its tries
    for _ in range(5):  # a sample of 256 of the 1,001 holds "mine" one time in four
        assert [run.run_id for run in worker._candidates({})] == ["mine"]


def test_a_look_with_many_runs_going_on_this_host_and_none_free_reads_no_whole_list(
    journal: Journal,
) -> None:
    """Runs going on in the other workers of this host (live processes, live leases) are in
    every sample (the worker checks their pids) but are no work: with a sample's worth of them
    and nothing to take, a look is not "a full sample it cannot take" and must not read every
    run of the journal (eight workers of 32 slots on one host hold 256 runs at all times)."""
    store = journal.store
    for n in range(300):
        store.create_run(make_run(f"going{n:03d}"))
        store.claim(f"going{n:03d}", make_owner(f"g{n}", pid=os.getppid()), resuming=False)
    whole: list[object] = []
    list_runs = store.list_runs

    def counted(**kwargs: object) -> list[replay.Run]:
        whole.append(kwargs)
        return list_runs(**kwargs)  # type: ignore[arg-type]

    store.list_runs = counted  # type: ignore[method-assign]
    worker = replay.Worker(journal, concurrency=2)
    assert worker._candidates({}) == []
    assert whole == []


def _work_on(journal: Journal, run_id: str, *, seconds: float) -> None:
    """A worker that goes on (`run()`, its looks sampled) until `run_id` is no longer running,
    it stops by itself (a failure is raised here), or `seconds` pass."""
    worker = replay.Worker(journal, poll_seconds=0.02, concurrency=2)

    async def for_a_while() -> None:
        runner = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + seconds
        while journal.run(run_id).status is RunStatus.RUNNING and time.monotonic() < deadline:
            if runner.done():
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await runner

    asyncio.run(for_a_while())


def test_stopping_a_worker_releases_the_run_it_was_on(journal: Journal) -> None:
    """stop() cancels the run in progress and releases its lease: it is interrupted again,
    for another worker, with its first step kept."""
    replay.submit(slow, 30.0, journal=journal, run_id="long")
    worker = replay.Worker(journal, poll_seconds=0.01)

    async def stop_soon() -> replay.WorkerStats:
        runner = asyncio.ensure_future(worker.run())
        while not journal.events("long"):
            await asyncio.sleep(0.01)
        worker.stop()
        return await runner

    stats = asyncio.run(asyncio.wait_for(stop_soon(), 20))
    assert stats.completed == 0
    run = journal.run("long")
    assert run.status is RunStatus.RUNNING and run.owner is None
    assert [r.run_id for r in journal.interrupted()] == ["long"]
    assert journal.events("long")[0].status.value in ("completed", "started")


def test_a_worker_reads_what_its_last_look_found_again_in_one_read(journal: Journal) -> None:
    """A slot frees up: the worker takes the next runs its last look found, read again first
    (another worker may have taken them). Those it passes over, taken meanwhile, cost no read
    each: with four workers, three of every four runs a look found were taken by another,
    and each was a round trip to the server before the worker found one to take."""
    for n in range(20):
        replay.submit(chain, n, 1, journal=journal, run_id=f"r{n:02d}")
    worker = replay.Worker(journal, concurrency=4)
    first = worker._next({}, 4)  # a look: 20 found, 4 taken
    taken_elsewhere = [run.run_id for run in worker._backlog[-12:]]
    for run_id in taken_elsewhere:  # the next 12 it would reach, claimed by others
        journal.store.claim(run_id, make_owner("x", host="elsewhere", pid=1), resuming=False)
    reads: list[str] = []
    store = journal.store
    get_run, get_runs = store.get_run, store.get_runs
    store.get_run = lambda run_id: reads.append(run_id) or get_run(run_id)  # type: ignore[method-assign]
    store.get_runs = lambda ids: reads.append(f"{len(ids)} at once") or get_runs(ids)  # type: ignore[method-assign]
    again = worker._next({run.run_id: None for run in first}, 3)
    assert len(again) == 3 and not {run.run_id for run in again} & set(taken_elsewhere)
    assert all(run.owner is None for run in again)
    assert len(reads) <= 2 and all(read.endswith("at once") for read in reads), reads


def test_resumed_runs_get_their_arguments_back_as_the_types_declared(journal: Journal) -> None:
    """A worker rebuilds each recorded argument as its parameter's type, a model from its
    JSON, for every run of a workflow (what it learns of a workflow's parameters is kept
    across runs), and each workflow by its own parameters, whatever their names."""
    placed = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    for n in range(3):
        replay.submit(describe_order, Order(sku=f"s{n}", placed=placed), n, journal=journal,
                      run_id=f"order{n}")  # fmt: skip
    replay.submit(describe_when, placed, "2", journal=journal, run_id="when")
    assert asyncio.run(replay.Worker(journal).run_once()) == 4
    for n in range(3):
        assert journal.run(f"order{n}").result == orjson.dumps(f"Order 2026 x{n}")
    assert journal.run("when").result == orjson.dumps("datetime str")


def test_a_parameter_left_to_its_default_needs_no_validator(journal: Journal) -> None:
    """Only the recorded arguments are rebuilt as their types: an optional parameter of a
    type pydantic has no schema for (a client, a session), never recorded, is no reason to
    fail the run, whichever run of the workflow it is."""
    when = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    for n in range(2):
        replay.submit(describe_at, when, journal=journal, run_id=f"at{n}")
    worker = replay.Worker(journal)
    assert asyncio.run(worker.run_once()) == 2
    assert worker.stats.failed == 0, worker.stats
    for n in range(2):
        assert journal.run(f"at{n}").result == orjson.dumps("datetime True")


def test_a_function_that_copied_a_workflows_attributes_learns_its_own_parameters() -> None:
    """What is learnt of a workflow's parameters is kept on the function; a wrapper given its
    attributes (functools.update_wrapper copies `__dict__`) with parameters of its own must
    not be handed the wrapped one's."""
    placed = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    order_inputs = orjson.dumps({"args": [{"sku": "s", "placed": placed.isoformat()}, 1]})
    order, copies = recorded_inputs(describe_order, order_inputs)[0]
    assert (type(order), type(copies)) == (Order, int)

    async def describe(order: datetime, copies: str) -> str:
        return ""

    functools.update_wrapper(describe, describe_order, assigned=("__doc__",))
    del describe.__wrapped__  # its own signature, as a wrapper that rewrites it has
    assert recorded_inputs(describe, orjson.dumps({"args": [placed.isoformat(), "1"]})) == (
        [placed, "1"],
        {},
    )
    order, copies = recorded_inputs(describe_order, order_inputs)[0]
    assert (order, copies) == (Order(sku="s", placed=placed), 1)


def test_a_worker_continues_up_to_its_concurrency_of_runs_at_once(journal: Journal) -> None:
    """Eight runs whose step waits until its wave of four runs is inside it: a worker of
    concurrency 4 has four going at a time, never more, and finishes them all (with fewer at
    once, a wave would never fill)."""
    for n in range(8):
        replay.submit(meet, 4, journal=journal, run_id=f"m{n}")
    TOGETHER.update(inside=0, peak=0, entered=0)
    worker = replay.Worker(journal, concurrency=4)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 60)) == 8
    assert TOGETHER["peak"] == 4  # reached, never exceeded
    assert {journal.run(f"m{n}").result for n in range(8)} == {b"4"}
    with pytest.raises(ValueError, match="at least 1"):
        replay.Worker(journal, concurrency=0)


@pytest.mark.parametrize("loop_per_run", [False, True])
def test_concurrent_runs_do_not_starve_each_other_of_pool_threads(
    tmp_path: Path, loop_per_run: bool
) -> None:
    """Twelve interrupted runs whose first thread, continued, waits for its turn after a second
    thread's step: a worker whose own loop has a pool of two threads continues all twelve at
    once (each run has threads of its own in the worker, whether its tasks run on the
    worker's loop or on a loop of its own)."""
    count = 12
    journal = Journal(tmp_path / "j.db")
    fleet_workflows.CRASH_IN_S2[0] = True
    try:
        for n in range(count):
            with pytest.raises(fleet_workflows.Crash):
                asyncio.run(replay.run(pair, n, journal=journal, run_id=f"pair{n}"))
    finally:
        fleet_workflows.CRASH_IN_S2[0] = False
    assert len(journal.interrupted()) == count
    worker = replay.Worker(journal, concurrency=count, loop_per_run=loop_per_run)

    async def continue_all() -> int:
        # The worker's own loop with a small default pool, as a small machine has: runs that
        # shared it would take each other's threads.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        return await worker.run_once()

    assert asyncio.run(asyncio.wait_for(continue_all(), 60)) == count
    assert (worker.stats.completed, worker.stats.skipped) == (count, 0)
    assert {journal.run(f"pair{n}").result for n in range(count)} == {
        str(6 * n).encode() for n in range(count)
    }
    journal.close()


def test_work_a_run_hands_to_threads_runs_on_threads_of_its_own(tmp_path: Path) -> None:
    """Runs going at once on the worker's loop: what each hands to `asyncio.to_thread` runs on
    that run's own threads (named after it), never on the loop's shared pool or another
    run's; outside any run, the loop's pool still serves."""
    journal = Journal(tmp_path / "j.db")
    for n in range(3):
        replay.submit(fleet_workflows.thread_names, 2, journal=journal, run_id=f"t{n}")
    worker = replay.Worker(journal, concurrency=3)

    async def continue_all() -> str:
        assert await worker.run_once() == 3
        return await asyncio.to_thread(lambda: threading.current_thread().name)

    outside = asyncio.run(asyncio.wait_for(continue_all(), 60))
    for n in range(3):
        names = orjson.loads(journal.run(f"t{n}").result or b"")
        assert len(names) == 2 and all(name.startswith(f"journal-run t{n}_") for name in names)
    assert not outside.startswith("journal-run")
    journal.close()


@pytest.mark.parametrize("loop_per_run", [False, True])
def test_runs_sharing_a_small_pool_of_the_users_continue_together(
    tmp_path: Path, loop_per_run: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 runs hand steps to one two-thread pool of the user's, before and after a signal.
    Continued together, each served step waits in a pool thread for its run's recorded turn,
    which may belong to work queued behind the other runs' waiting steps: with nothing to
    take that work, the worker hung (shared loop) or called runs stuck (a loop each). Every
    run completes with the result a run of its own gives, and no step body runs twice."""
    _continue_runs_sharing_a_small_pool(tmp_path, loop_per_run, monkeypatch)


@pytest.mark.parametrize("loop_per_run", [False, True])
def test_runs_sharing_a_small_pool_continue_when_its_waiting_threads_look_late(
    tmp_path: Path, loop_per_run: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same 32 runs on a loaded machine: the pool threads that wait for their turns get
    the CPU too late to start a stand-in for the queued work before the run's own check
    gives up on it (IDLE_SECONDS). Seen in a full suite run: two runs of 32 were called stuck
    and skipped. Made certain here by having the waiting threads look only every 0.7 s; the
    run's check starts the stand-in itself."""
    late = replay._history.IDLE_SECONDS + 0.2
    for module, name in [
        (replay._history, "GLANCE_SECONDS"),
        (replay._history, "_PARK_SECONDS"),
        (replay._pools, "GLANCE_SECONDS"),
        (replay._pools, "_LOOK_SECONDS"),
    ]:
        monkeypatch.setattr(module, name, late)
    _continue_runs_sharing_a_small_pool(tmp_path, loop_per_run, monkeypatch)


def _continue_runs_sharing_a_small_pool(
    tmp_path: Path, loop_per_run: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLEET_EFFECTS", str(effects))
    journal = Journal(tmp_path / "j.db")
    count = 32
    for n in range(count):
        replay.submit(fleet_workflows.shared_pool, n, journal=journal, run_id=f"p{n}")
    worker = replay.Worker(journal, concurrency=count, loop_per_run=loop_per_run)
    asyncio.run(asyncio.wait_for(worker.run_once(), 60))
    assert worker.stats.suspended == count, worker.stats
    for n in range(count):
        journal.signal(f"p{n}", "go", True)
    asyncio.run(asyncio.wait_for(worker.run_once(), 60))
    assert (worker.stats.completed, worker.stats.skipped) == (count, 0), worker.stats
    for n in range(count):  # 3n+3, 3(n+1)+3 and 3(n+2)+3: every step's value in place
        assert journal.run(f"p{n}").result == str(9 * n + 18).encode()
    lines = effects.read_text().splitlines()
    assert len(lines) == count * 9 and len(set(lines)) == len(lines)  # each step body once
    journal.close()


@pytest.mark.parametrize("loop_per_run", [False, True])
def test_runs_resumed_together_keep_their_requests_journaled(
    tmp_path: Path, loop_per_run: bool, server: tuple[str, Path]
) -> None:
    """Two interrupted runs whose requests were journaled, continued at once: the one that
    ends first must not take the journaling of requests away from the other (its second
    request, made after the first run ended, is journaled and reaches the server once)."""
    base_url, log = server
    journal = Journal(tmp_path / "j.db")
    try:
        instrument()
        fleet_workflows.CRASH_AFTER_FIRST_CALL[0] = True
        try:
            for run_id, pause in (("quick", 0.0), ("late", 1.0)):
                with pytest.raises(fleet_workflows.Crash):
                    asyncio.run(
                        replay.run(
                            fleet_workflows.ask_twice, base_url, pause, journal=journal,
                            run_id=run_id,
                        )
                    )  # fmt: skip
        finally:
            fleet_workflows.CRASH_AFTER_FIRST_CALL[0] = False
            uninstrument()
        assert len(requests_logged(log)) == 2
        worker = replay.Worker(journal, concurrency=2, loop_per_run=loop_per_run)
        assert asyncio.run(asyncio.wait_for(worker.run_once(), 60)) == 2
        assert not is_instrumented()  # as it was before
        for run_id in ("quick", "late"):
            requests = [e for e in journal.events(run_id) if e.kind.value == "llm"]
            assert len({e.key for e in requests}) == 2, run_id  # both journaled
        assert len(requests_logged(log)) == 4  # the first calls served, the second made once
    finally:
        journal.close()


@pytest.mark.parametrize("loop_per_run", [False, True])
def test_a_run_that_blocks_the_loop_holds_up_the_others_unless_each_has_its_own(
    tmp_path: Path, loop_per_run: bool
) -> None:
    """Four runs that each block their event loop for 0.3 s: on the worker's one loop they
    block one after another; with a loop per run they block at the same time."""
    journal = Journal(tmp_path / "j.db")
    for n in range(4):
        replay.submit(fleet_workflows.blocking, 0.3, journal=journal, run_id=f"b{n}")
    fleet_workflows.BLOCKED.clear()
    worker = replay.Worker(journal, concurrency=4, loop_per_run=loop_per_run)
    assert asyncio.run(asyncio.wait_for(worker.run_once(), 60)) == 4
    spans = sorted(fleet_workflows.BLOCKED)
    assert len(spans) == 4
    overlapping = any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    assert overlapping is loop_per_run, spans
    journal.close()


def test_sigterm_stops_every_run_a_worker_has_going(tmp_path: Path) -> None:
    """A worker with four long runs going gets SIGTERM: it stops all four, each releases its
    lease (interrupted again, for another worker), and it exits cleanly."""
    db = str(tmp_path / "j.db")
    with Journal(db) as journal:
        for n in range(4):
            replay.submit(slow, 60.0, journal=journal, run_id=f"long{n}")
    worker = _worker(db, tmp_path / "effects", "--concurrency", "4")
    try:
        _wait_until_it_handles_sigterm(worker)
        deadline = time.monotonic() + 30
        with Journal(db, read_only=True) as journal:
            while not all(journal.events(f"long{n}") for n in range(4)):
                assert time.monotonic() < deadline, "the worker did not start all four"
                time.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    with Journal(db, read_only=True) as journal:
        runs = [journal.run(f"long{n}") for n in range(4)]
        assert all(r.status is RunStatus.RUNNING and r.owner is None for r in runs), runs
        assert len(journal.interrupted()) == 4


def _worker(db: str, effects: Path, *options: str) -> subprocess.Popen[str]:
    script = str(Path(sys.executable).with_name("journal"))
    return subprocess.Popen(
        [
            script,
            "worker",
            "--import",
            "tests.fleet_workflows",
            "--db",
            db,
            "--poll",
            "0.05",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FLEET_EFFECTS": str(effects)},
    )


def _wait_until_it_handles_sigterm(worker: subprocess.Popen[str], limit: float = 30.0) -> None:
    """A worker started moments ago may not have installed its SIGTERM handler yet, and would
    die of the signal instead of stopping: wait until the kernel lists SIGTERM as caught."""
    bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + limit
    while worker.poll() is None and time.monotonic() < deadline:
        status = Path(f"/proc/{worker.pid}/status").read_text()
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if caught & bit:
            return
        time.sleep(0.02)


@pytest.mark.parametrize(("runs", "steps"), [(50, 20)])
def test_four_workers_killed_at_random_finish_every_run_exactly(
    pg_schema: str, tmp_path: Path, runs: int, steps: int
) -> None:
    """4 worker processes on PostgreSQL share 50 runs of 20 steps while workers are SIGKILLed
    at random and replaced. Every run completes with the result of a clean run; no step that
    completed ran again; no run was worked on by two processes at once; every chain verifies."""
    postgres_store(pg_schema).close()  # skips (or fails under CI) when there is no server
    db = f"{PG_URL}?schema={pg_schema}"
    effects = tmp_path / "effects"
    with Journal(db) as journal:
        for n in range(runs):
            replay.submit(chain, n, steps, journal=journal, run_id=f"fleet-{n:02d}")
    expected = {f"fleet-{n:02d}": asyncio.run(chain(n, steps)) for n in range(runs)}
    rng = random.Random(7)
    workers = [_worker(db, effects) for _ in range(4)]
    kills, deadline = 0, time.monotonic() + 120
    try:
        with Journal(db) as journal:
            while time.monotonic() < deadline:
                done = len(journal.runs(status=RunStatus.COMPLETED))
                if done == runs:
                    break
                time.sleep(0.3)
                if kills < 8 and done < runs - 5:
                    victim = rng.randrange(len(workers))
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].communicate()
                    workers[victim] = _worker(db, effects)
                    kills += 1
    finally:
        for worker in workers:
            _wait_until_it_handles_sigterm(worker)
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=30) for worker in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert kills >= 3

    with Journal(db) as journal:
        finished = {r.run_id: r for r in journal.runs(status=RunStatus.COMPLETED)}
        assert set(finished) == set(expected)
        for run_id, run in finished.items():
            assert run.result == str(expected[run_id]).encode(), run_id
        attempts = {
            f"{run_id}:{e.key}": e.attempt
            for run_id in finished
            for e in journal.events(run_id)
            if e.status.value == "completed"
        }
        assert all(v.sealed for v in journal.verify())
    lines = [line.split() for line in effects.read_text().splitlines()]
    executions = Counter(key for _, key in lines)
    # A step ran more than once only when it was in flight at a kill: its attempts say so.
    assert all(count <= attempts[key] for key, count in executions.items())
    assert set(executions) == set(attempts)
    owners: dict[str, list[str]] = defaultdict(list)
    for pid, key in lines:
        run_id = key.split(":", 1)[0]
        if not owners[run_id] or owners[run_id][-1] != pid:
            owners[run_id].append(pid)
    # Handovers only, never back and forth: no two processes worked on a run at once.
    assert all(len(pids) == len(set(pids)) for pids in owners.values()), owners


def test_a_worker_used_from_two_event_loops_resumes_runs_in_both(journal: Journal) -> None:
    """asyncio.run(worker.run_once()) twice with one Worker: the second round resumes its runs
    too (its stop signal used to belong to the first loop, so the run was cancelled at once
    and only logged as released)."""
    worker = replay.Worker(journal)
    replay.submit(chain, 1, 2, journal=journal, run_id="first")
    assert asyncio.run(worker.run_once()) == 1
    replay.submit(chain, 2, 2, journal=journal, run_id="second")
    assert asyncio.run(worker.run_once()) == 1
    assert journal.run("second").status is RunStatus.COMPLETED
    assert worker.stats.completed == 2


def test_a_worker_logs_what_it_serves_when_it_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its store (a file, or a PostgreSQL schema: never a URL that may hold a password), the
    modules it imported, and how many runs it works on at once."""
    caplog.set_level(logging.INFO, logger="replay")
    with Journal(tmp_path / "j.db") as opened:
        worker = replay.Worker(opened, imports=["tests.fleet_workflows"], poll_seconds=0.01)

        async def briefly() -> None:
            asyncio.get_running_loop().call_later(0.05, worker.stop)
            await worker.run()

        asyncio.run(briefly())
    (line,) = [r.getMessage() for r in caplog.records if "worker.started" in r.getMessage()]
    assert f"store='sqlite:{tmp_path / 'j.db'}'" in line
    assert "imports=['tests.fleet_workflows']" in line and "concurrency=32" in line


def test_a_journal_error_in_one_run_lets_the_other_runs_go_at_once(tmp_path: Path) -> None:
    """One run the worker cannot continue for a reason of the journal (signed with a key this
    worker lacks) among runs that take long: the worker raises the error at once and the
    other runs are stopped, their leases released, not carried on unseen."""
    from journal import ChainKeyMismatch

    path = tmp_path / "j.db"
    with Journal(path) as journal:
        for n in range(3):
            replay.submit(slow, 60.0, journal=journal, run_id=f"long{n}")
    with Journal(path, hmac_key="k" * 32) as signed:
        replay.submit(chain, 1, 2, journal=signed, run_id="signed")
    journal = Journal(path)
    worker = replay.Worker(journal, concurrency=4, poll_seconds=0.05)

    async def go() -> None:
        runner = asyncio.ensure_future(worker.run())
        while not all(journal.events(f"long{n}") for n in range(3)) and not runner.done():
            await asyncio.sleep(0.02)
        await runner

    began = time.monotonic()
    with pytest.raises(ChainKeyMismatch):
        asyncio.run(asyncio.wait_for(go(), 30))
    assert time.monotonic() - began < 20  # not after the 60 s runs
    runs = [journal.run(f"long{n}") for n in range(3)]
    assert all(r.status is RunStatus.RUNNING and r.owner is None for r in runs), runs
    journal.close()


def test_a_worker_takes_runs_from_its_last_look_and_reads_each_again(journal: Journal) -> None:
    """A worker whose slot frees up takes the next run its last look found, read again: one
    finished meanwhile by another process, or claimed by a live owner, is passed over, and a
    new look is taken only when the last one is used up."""
    for n in range(4):
        replay.submit(chain, n, 2, journal=journal, run_id=f"b{n}")
    worker = replay.Worker(journal)
    first = worker._next({}, 1)  # a look: every run that needs work, one of them taken
    assert len(first) == 1
    left = sorted(r.run_id for r in worker._backlog)
    assert len(left) == 3
    finished, claimed, free = left
    asyncio.run(replay.run(chain, int(finished[1:]), 2, journal=journal, run_id=finished))
    journal.store.claim(claimed, make_owner("x", host="elsewhere", pid=1, ttl=300), resuming=True)
    assert [r.run_id for r in worker._next({first[0].run_id: None}, 3)] == [free]
    assert worker._backlog == []
    replay.submit(chain, 9, 2, journal=journal, run_id="late")
    later = worker._next({}, 5)  # used up: a new look finds what came since
    assert "late" in {r.run_id for r in later}


def test_a_waiting_run_from_the_last_look_is_taken_only_once_due(journal: Journal) -> None:
    """A waiting run found due at the last look may have been continued by another worker
    and put back to sleep since: read again, it is taken only if its time has come."""
    from datetime import UTC, datetime, timedelta

    for run_id, wake in (("asleep", timedelta(hours=1)), ("due", -timedelta(seconds=1))):
        replay.submit(chain, 1, 2, journal=journal, run_id=run_id)
        journal.store.claim(run_id, make_owner(f"t-{run_id}"), resuming=False)
        journal.store.suspend(
            run_id, f"t-{run_id}", wake_at=datetime.now(UTC) + wake, waiting_for=None
        )
    worker = replay.Worker(journal)
    worker._backlog = [journal.run("asleep"), journal.run("due"), journal.run("due")]
    worker._backlog.pop()  # as if the first was taken: what is left is a stale look
    assert [r.run_id for r in worker._next({}, 5)] == ["due"]


@pytest.mark.parametrize("owner", ["{}", '{"host": "elsewhere"}', "null", "[1]"])
def test_a_worker_takes_over_a_run_whose_owner_record_lost_its_lease_on_postgres(
    owner: str, pg_schema: str
) -> None:
    """An owner's record edited by hand into JSON without a lease reads as ownerless
    (`get_run`, `interrupted()`): a worker that goes on takes the run over, as a round does,
    though its look's sample is not full (the sample's lease test is NULL there)."""

    journal = Journal(store=postgres_store(pg_schema))
    try:
        replay.submit(chain, 3, 0, journal=journal, run_id="edited")
        journal.store.claim("edited", make_owner("x", host="elsewhere", ttl=300), resuming=False)
        edit_owner(journal.store, "edited", owner)
        assert [run.run_id for run in journal.interrupted()] == ["edited"]
        _work_on(journal, "edited", seconds=3)
        assert journal.run("edited").status is RunStatus.COMPLETED
    finally:
        journal.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_owner_record_with_a_lease_without_offset_neither_kills_a_worker_nor_hides_the_run(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An owner's record edited by hand whose lease has no UTC offset (long past) reads as an
    owner whose lease ran out: a worker that goes on takes the run over instead of dying on
    comparing a naive moment with an aware one (TypeError out of `Worker.run()`)."""

    if kind == "sqlite":
        journal = Journal(tmp_path / "j.db")
    else:
        schema = request.getfixturevalue("pg_schema")
        journal = Journal(store=postgres_store(schema))
    owner = (
        '{"token": "x", "host": "elsewhere", "pid": 1, "since": "2020-01-01T00:00:00",'
        ' "lease_expires_at": "2020-01-01T00:00:00"}'
    )
    try:
        replay.submit(chain, 3, 0, journal=journal, run_id="naive")
        journal.store.claim("naive", make_owner("x", host="elsewhere", ttl=300), resuming=False)
        edit_owner(journal.store, "naive", owner)
        _work_on(journal, "naive", seconds=3)
        assert journal.run("naive").status is RunStatus.COMPLETED
    finally:
        journal.close()
