"""Ownership: one live owner per run, RunLocked for the others, takeover of dead or expired
owners, and fencing: a process that lost its lease cannot write to the journal.

Multi-process cases run tests/workers/owner_worker.py, whose `hold` step keeps the run (and its
lease) until the test creates a gate file. In-process cases craft owners through the store API.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from journal import (
    Event,
    EventStatus,
    Journal,
    LeaseLost,
    Owner,
    RunLocked,
    RunStatus,
    SQLiteStore,
)
from journal.stores._ownership import HOSTNAME
from replay import OwnershipLost, journaled, run, run_with_summary, step
from tests.factories import dead_pid, make_event, make_owner, make_run

WORKER = Path(__file__).parent / "workers" / "owner_worker.py"
LOCKED_EXIT = 3
DEADLINE = 10.0
GATED_RESULT = [9, len("gate"), (9 + len("gate")) ** 2]  # owner_worker.guarded(3, ".../gate")


class Interrupt(BaseException):
    """Stands in for a crash of the process between two steps."""


# -- helpers --------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def _forged(seq: int, key: str) -> Event:
    """An event of run `r` that only its current owner may append."""
    return make_event(seq, key, name="forged", payload=b"1")


def _steal_after_expiry(db_path: Path, run_id: str, token: str) -> Owner:
    """From a second connection (as another process would), wait without yielding to the
    event loop, so the current owner's heartbeat cannot renew, until the owner's lease has
    expired; then claim the run for a new owner `token` (alive: this process, 60 s lease)."""
    with Journal(db_path) as other:
        current = other.run(run_id).owner
        assert current is not None and current.token != token
        deadline = time.monotonic() + DEADLINE
        while datetime.now(UTC) <= current.lease_expires_at:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        thief = make_owner(token)
        other.store.claim(run_id, thief, resuming=True)
    return thief


def _outcomes(events: list[Event]) -> list[tuple[str, int]]:
    """(key, attempt) of each completed attempt, in journal order."""
    return [(e.key, e.attempt) for e in events if e.status is EventStatus.COMPLETED]


class Workers:
    """Spawns owner_worker.py processes in one tmp_path; kills the ones left at teardown."""

    def __init__(self, where: Path) -> None:
        self.db = where / "journal.db"
        self.gate = where / "gate"
        self.effects = where / "effects.log"
        self.start = where / "start"
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *, barrier: bool = False) -> subprocess.Popen[bytes]:
        args = [str(self.db), "run-1", str(self.gate), str(self.effects)]
        if barrier:
            args.append(str(self.start))
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.procs.append(proc)
        return proc

    def report(self, proc: subprocess.Popen[bytes], code: int = 0) -> dict[str, Any]:
        stdout, stderr = proc.communicate(timeout=DEADLINE * 2)
        assert proc.returncode == code, stderr.decode()
        result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        return result

    def executions(self) -> list[tuple[int, str]]:
        """(pid, step key) for every step body that ran, in order."""
        if not self.effects.exists():
            return []
        lines = self.effects.read_text().split("\n")[:-1]
        return [(int(pid), key.removeprefix("run-1:")) for pid, key in map(str.split, lines)]

    def holding(self, pid: int) -> bool:
        """Whether process `pid` is inside the `hold` step (the workflow's second step)."""
        return (pid, "0:2") in self.executions()

    def owner(self) -> Owner | None:
        with Journal(self.db) as j:
            return j.run("run-1").owner

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=DEADLINE)  # reaped: the pid is dead, not a zombie

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=DEADLINE)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.close()


# -- several processes ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["start", "resume"])
def test_two_processes_racing_for_a_run_one_runs_the_other_gets_run_locked(
    workers: Workers, how: str
) -> None:
    """Two processes start (or resume a SIGKILLed) run at the same moment: exactly one runs
    it; the other gets RunLocked naming the winner's pid, host and since, runs no step, and
    leaves the winner's lease and journal intact. The winner then finishes normally."""
    dead_pid = None
    # The journal file exists before the race: two processes creating a fresh file at once
    # can fail in `PRAGMA journal_mode = WAL` with "database is locked" (a separate issue).
    Journal(workers.db).close()
    if how == "resume":
        first = workers.spawn()
        wait_for(lambda: workers.holding(first.pid), "the first owner to reach `hold`")
        workers.kill(first)
        dead_pid = first.pid
        assert workers.owner() is not None  # the dead owner's lease is still recorded
    before = datetime.now(UTC)
    procs = [workers.spawn(barrier=True), workers.spawn(barrier=True)]
    wait_for(lambda: len(list(workers.db.parent.glob("start.ready.*"))) == 2, "both workers")
    workers.start.touch()

    wait_for(lambda: any(p.poll() is not None for p in procs), "one worker to give up")
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    locked = workers.report(loser, LOCKED_EXIT)
    assert winner.poll() is None, "the winner still holds the run (its gate is closed)"
    wait_for(lambda: workers.holding(winner.pid), "the winner to reach `hold`")

    assert locked["locked"] is True and locked["pid"] == loser.pid
    assert locked["owner_pid"] == winner.pid != dead_pid
    assert locked["owner_host"] == HOSTNAME
    since = datetime.fromisoformat(locked["owner_since"])
    assert before <= since <= datetime.now(UTC)
    message = locked["message"]
    assert f"pid {winner.pid} " in message
    assert f"host {HOSTNAME!r}" in message
    assert f"since {since.isoformat(timespec='seconds')}" in message
    owner = workers.owner()
    assert owner is not None and (owner.pid, owner.since) == (winner.pid, since)
    assert loser.pid not in {pid for pid, _ in workers.executions()}

    workers.gate.touch()
    done = workers.report(winner)
    assert done["pid"] == winner.pid and done["result"] == GATED_RESULT
    if how == "start":
        assert (done["served"], done["executed"], done["reexecuted"]) == (0, 3, 0)
    else:  # square served, hold re-executed (in flight at the kill), the last square live
        assert (done["served"], done["executed"], done["reexecuted"]) == (1, 1, 1)
    with Journal(workers.db) as j:
        finished = j.run("run-1")
        events = j.events("run-1")
    assert finished.status is RunStatus.COMPLETED and finished.owner is None
    if how == "resume":
        assert finished.resumes == 1  # the winner's takeover; the loser's refused claim: none
    else:  # 1 when the winner found the run already created by the loser
        assert finished.resumes <= 1
    assert sorted(e.key for e in events if e.status is EventStatus.COMPLETED) == [
        "0:1",
        "0:2",
        "0:3",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert loser.pid not in {pid for pid, _ in workers.executions()}


def test_sigkilled_owner_is_taken_over_at_once_on_the_same_host(workers: Workers) -> None:
    """An owner killed with SIGKILL leaves its lease behind (60 s, unexpired); a new process
    on the same host sees the pid is dead and takes the run over without waiting for the
    lease, re-runs the step that was in flight and completes with the right result."""
    holder = workers.spawn()
    wait_for(lambda: workers.holding(holder.pid), "the first owner to reach `hold`")
    workers.kill(holder)
    stale = workers.owner()
    assert stale is not None and stale.pid == holder.pid
    assert stale.lease_expires_at > datetime.now(UTC) + timedelta(seconds=30)

    workers.gate.touch()
    resumer = workers.spawn()
    done = workers.report(resumer)
    assert datetime.now(UTC) < stale.lease_expires_at, "taken over before the lease expired"
    assert done["result"] == GATED_RESULT
    assert (done["served"], done["executed"], done["reexecuted"]) == (1, 1, 1)
    assert workers.executions() == [
        (holder.pid, "0:1"),
        (holder.pid, "0:2"),
        (resumer.pid, "0:2"),
        (resumer.pid, "0:3"),
    ]
    with Journal(workers.db) as j:
        finished = j.run("run-1")
    assert finished.status is RunStatus.COMPLETED and finished.owner is None
    assert finished.resumes == 1


# -- in one process -------------------------------------------------------------------------


def test_two_runs_of_one_run_id_in_one_event_loop(sqlite_journal: Journal) -> None:
    """asyncio.gather of two run() calls with the same run_id: one runs the workflow, the
    other raises RunLocked naming this process, while the first is still inside its step,
    which then completes; only one set of events is written."""
    gave_up: list[BaseException] = []
    executions = Counter[int]()

    @step
    async def slow(n: int) -> int:
        executions[n] += 1
        async with asyncio.timeout(DEADLINE):  # both inside this step would wait forever
            while not gave_up:
                await asyncio.sleep(0.005)
        return n * 2

    async def job(n: int) -> int:
        return await slow(n) + 1

    async def contender() -> int:
        try:
            return await run(job, 4, journal=sqlite_journal, run_id="shared")
        except RunLocked as exc:
            gave_up.append(exc)
            raise

    async def both() -> list[int | BaseException]:
        return await asyncio.gather(contender(), contender(), return_exceptions=True)

    outcomes = asyncio.run(both())
    assert sorted(outcomes, key=lambda o: isinstance(o, BaseException))[0] == 9
    locked = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(locked) == 1 and isinstance(locked[0], RunLocked)
    assert locked[0].owner.pid == os.getpid() and locked[0].owner.host == HOSTNAME
    assert f"pid {os.getpid()} " in str(locked[0])
    assert executions == {4: 1}
    finished = sqlite_journal.run("shared")
    assert finished.status is RunStatus.COMPLETED and finished.owner is None
    events = sqlite_journal.events("shared")
    assert {e.key for e in events} == {"0:1"}
    assert _outcomes(events) == [("0:1", 1)]  # one attempt, written by one owner


def test_live_lease_on_another_host_locks_the_run_until_it_expires(db_path: Path) -> None:
    """An owner on another host with an unexpired lease keeps the run even though its pid
    does not exist here (pids are per host): RunLocked names it and nothing runs. Once its
    lease has expired the run is taken over, completes, and the old owner is fenced out."""
    crash = [True]
    executions = Counter[int]()

    @step
    async def inc(n: int) -> int:
        executions[n] += 1
        return n + 1

    async def wf(n: int) -> int:
        first = await inc(n)
        if crash[0]:
            raise Interrupt
        return await inc(first)

    with Journal(db_path) as j:
        with pytest.raises(Interrupt):
            asyncio.run(run(wf, 1, journal=j, run_id="r"))
        assert j.run("r").owner is None
        foreign = make_owner("foreign", host="other-host", pid=dead_pid(), ttl=3600)
        j.store.claim("r", foreign, resuming=True)
        crash[0] = False
        recorded = j.events("r")

        with pytest.raises(RunLocked) as info:
            asyncio.run(run(wf, 1, journal=j, run_id="r"))
        assert info.value.owner == foreign
        message = str(info.value)
        assert f"pid {foreign.pid} on host 'other-host'" in message
        assert f"since {foreign.since.isoformat(timespec='seconds')}" in message
        assert j.events("r") == recorded and executions == {1: 1}
        assert j.run("r").owner == foreign

        # The other host stops renewing: its lease runs out.
        assert j.store.heartbeat("r", "foreign", datetime.now(UTC) - timedelta(seconds=1))
        outcome = asyncio.run(run_with_summary(wf, 1, journal=j, run_id="r"))
        assert outcome.result == 3
        assert (outcome.summary.served, outcome.summary.executed) == (1, 1)
        assert executions == {1: 1, 2: 1}
        done = j.run("r")
        assert done.status is RunStatus.COMPLETED and done.owner is None
        assert done.resumes == 2  # the foreign claim and the takeover
        with pytest.raises(LeaseLost):
            j.store.append(
                "r",
                "foreign",
                [_forged(len(j.events("r")) + 1, "0:9")],
            )
        assert not j.store.heartbeat("r", "foreign", datetime.now(UTC) + timedelta(hours=1))
        assert j.run("r").owner is None


def test_stale_owner_is_fenced_out_after_a_takeover(db_path: Path) -> None:
    """Two connections to one file, as two processes: once owner B took the run over from A
    (A's lease expired), A's appends raise LeaseLost and write nothing (a whole batch), its
    heartbeat and finish are refused, its release leaves B in place, and B writes on."""
    with Journal(db_path) as setup:
        setup.store.create_run(make_run("r"))
    a, b = SQLiteStore(db_path), SQLiteStore(db_path)
    try:
        a.claim("r", make_owner("a"), resuming=False)
        a.append(
            "r",
            "a",
            [
                _forged(1, "0:1"),
                _forged(2, "0:2"),
            ],
        )
        with pytest.raises(RunLocked):  # A is alive and its lease runs: B must wait
            b.claim("r", make_owner("b"), resuming=True)
        assert a.heartbeat("r", "a", datetime.now(UTC) - timedelta(seconds=1))  # A stalls

        b.claim("r", make_owner("b"), resuming=True)
        with pytest.raises(LeaseLost, match="no longer owns"):
            a.append(
                "r",
                "a",
                [
                    _forged(3, "0:3"),
                    _forged(4, "0:4"),
                ],
            )
        assert [e.seq for e in b.read_events("r")] == [1, 2]
        assert not a.heartbeat("r", "a", datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(LeaseLost):
            a.finish("r", "a", RunStatus.COMPLETED, result=b"1")
        a.release("r", "a")
        current = b.get_run("r")
        assert current is not None and current.status is RunStatus.RUNNING
        assert current.owner is not None and current.owner.token == "b"
        with pytest.raises(RunLocked):  # and A cannot simply claim it back
            a.claim("r", make_owner("a"), resuming=True)

        b.append("r", "b", [_forged(3, "0:3")])
        assert [e.seq for e in a.read_events("r")] == [1, 2, 3]
        b.finish("r", "b", RunStatus.COMPLETED, result=b"1")
    finally:
        a.close()
        b.close()


# -- the engine when its lease is taken over --------------------------------------------------

LEASE = 0.5


def test_step_result_written_after_a_takeover_raises_ownership_lost(db_path: Path) -> None:
    """A live run stalls inside a step (no heartbeat) past its lease; another owner takes the
    run over. When the step returns, its completion is refused: OwnershipLost (caused by
    LeaseLost) is raised through the workflow, which `except Exception` cannot swallow, and
    run() surfaces it; the journal holds nothing of that step and the new owner keeps the
    run. Resuming later re-runs that step and completes."""
    executions = Counter[str]()
    stealing = [True]

    @step
    async def first(n: int) -> int:
        executions["first"] += 1
        return n + 1

    @step
    async def stalls(n: int) -> int:
        executions["stalls"] += 1
        if stealing[0]:
            stealing[0] = False
            _steal_after_expiry(db_path, "r", "thief")
        return n * 10

    async def wf(n: int) -> int:
        a = await first(n)
        try:
            b = await stalls(a)
        except Exception:  # an engine signal must not end up here
            return -1
        return b + 1

    with Journal(db_path) as j:
        with pytest.raises(OwnershipLost) as info:
            asyncio.run(run(wf, 1, journal=j, run_id="r", lease_seconds=LEASE))
        assert isinstance(info.value.__cause__, LeaseLost)
        assert "no longer owns" in str(info.value)
        events = j.events("r")
        assert {e.key for e in events} == {"0:1"}, "no row of the refused step, not even its start"
        assert _outcomes(events) == [("0:1", 1)]
        stolen = j.run("r")
        assert stolen.status is RunStatus.RUNNING and stolen.result is None
        assert stolen.owner is not None and stolen.owner.token == "thief"

        j.store.release("r", "thief")  # the new owner goes away without doing anything
        outcome = asyncio.run(run_with_summary(wf, 1, journal=j, run_id="r"))
        assert outcome.result == 21
        assert (outcome.summary.served, outcome.summary.executed) == (1, 1)
        assert executions == {"first": 1, "stalls": 2}
        assert j.run("r").status is RunStatus.COMPLETED


def test_heartbeat_notices_a_takeover_and_the_next_step_does_not_run(db_path: Path) -> None:
    """A live run stalls between steps past its lease and is taken over. Its heartbeat then
    finds the lease gone, so the next step raises OwnershipLost before its body runs; the
    journal gets nothing more from the old owner."""
    executions = Counter[str]()

    @step
    async def tick(n: int) -> int:
        executions[f"tick{n}"] += 1
        return n + 1

    async def wf(n: int) -> int:
        a = await tick(n)
        _steal_after_expiry(db_path, "r", "thief")  # the process stalls, then is replaced
        await asyncio.sleep(LEASE)  # the heartbeat, overdue, runs first and fails
        try:
            return await tick(a)
        except Exception:
            return -1

    with Journal(db_path) as j:
        with pytest.raises(OwnershipLost) as info:
            asyncio.run(run(wf, 1, journal=j, run_id="r", lease_seconds=LEASE))
        assert isinstance(info.value.__cause__, LeaseLost)
        assert executions == {"tick1": 1}
        events = j.events("r")
        assert {e.key for e in events} == {"0:1"}
        assert _outcomes(events) == [("0:1", 1)]
        stolen = j.run("r")
        assert stolen.owner is not None and stolen.owner.token == "thief"
        assert stolen.status is RunStatus.RUNNING


def test_a_run_taken_over_after_its_last_step_cannot_record_its_result(db_path: Path) -> None:
    """Lease lost after the last step, while the workflow computes its result: finishing the
    run is refused (the run stays `running`, owned by the new owner, with no result) and run()
    raises instead of returning a result the journal does not hold."""

    @step
    async def tick(n: int) -> int:
        return n + 1

    async def wf(n: int) -> int:
        a = await tick(n)
        _steal_after_expiry(db_path, "r", "thief")
        return a

    with Journal(db_path) as j:
        # The same error as a lease lost mid-run, whichever write is refused.
        with pytest.raises(OwnershipLost) as info:
            asyncio.run(run(wf, 1, journal=j, run_id="r", lease_seconds=LEASE))
        assert isinstance(info.value.__cause__, LeaseLost)
        stolen = j.run("r")
        assert stolen.status is RunStatus.RUNNING and stolen.result is None
        assert stolen.finished_at is None
        assert stolen.owner is not None and stolen.owner.token == "thief"
        assert _outcomes(j.events("r")) == [("0:1", 1)]


def _look_after_each_creation(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of the runs `journal.interrupted()` lists right after each run's creation (what
    a worker in another process would find needing it), one list per creation."""
    seen: list[list[str]] = []
    real_create = journal.store.create_run

    def create_then_look(new_run: Any) -> Any:
        stored = real_create(new_run)
        seen.append([r.run_id for r in journal.interrupted()])
        return stored

    monkeypatch.setattr(journal.store, "create_run", create_then_look)
    return seen


def test_a_new_run_is_owned_from_the_moment_it_exists(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run()` creates a new run already owned by its sitting, in one transaction: there is no
    moment when another process's worker (or `journal resume`) sees it as interrupted and
    takes it, and the sitting does not claim it again."""
    store = journal.store
    seen_from_outside = _look_after_each_creation(journal, monkeypatch)
    claims: list[str] = []
    real_claim = store.claim

    def counted_claim(run_id: str, owner: Owner, *, resuming: bool) -> Any:
        claims.append(run_id)
        return real_claim(run_id, owner, resuming=resuming)

    monkeypatch.setattr(store, "claim", counted_claim)

    @step
    async def double(n: int) -> int:
        return n * 2

    async def workflow(n: int) -> int:
        return await double(n) + await double(n + 1)

    outcome = asyncio.run(run_with_summary(workflow, 3, journal=journal, run_id="fresh"))
    assert outcome.result == 14
    assert seen_from_outside == [[]]
    assert claims == []
    assert [e.status for e in journal.events("fresh")] == [EventStatus.COMPLETED] * 2
    finished = store.get_run("fresh")
    assert finished is not None and finished.status is RunStatus.COMPLETED
    assert finished.owner is None and finished.resumes == 0
    # Called again, the finished run is read, not created: the rule holds for new runs only.
    assert asyncio.run(run(workflow, 3, journal=journal, run_id="fresh")) == 14
    assert claims == []


def test_a_new_journaled_block_is_owned_from_the_moment_it_exists(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a `journaled(...)` block's run: created owned, never claimed."""
    store = journal.store
    seen_from_outside = _look_after_each_creation(journal, monkeypatch)
    monkeypatch.setattr(store, "claim", _no_claim)

    @step
    async def double(n: int) -> int:
        return n * 2

    async def main() -> int:
        async with journaled(journal, run_id="block"):
            return await double(2) + await double(3)

    assert asyncio.run(main()) == 10
    assert seen_from_outside == [[]]
    assert [e.status for e in journal.events("block")] == [EventStatus.COMPLETED] * 2
    ended = store.get_run("block")
    assert ended is not None and ended.status is RunStatus.COMPLETED and ended.owner is None


def _no_claim(run_id: str, owner: Owner, *, resuming: bool) -> Any:
    raise AssertionError(f"run {run_id!r} was claimed: a run created here is owned already")


def test_a_run_another_process_created_first_is_claimed_as_before(
    sqlite_journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating one run id at once: the one whose creation lost the race finds
    the run the other owns, claims it as any resume would, and gets `RunLocked`."""
    store = sqlite_journal.store
    rival = make_owner(token="rival-token", pid=os.getpid())
    real_create = store.create_run

    def the_other_process_came_first(new_run: Any) -> Any:
        real_create(new_run.model_copy(update={"owner": rival}))
        return real_create(new_run)

    monkeypatch.setattr(store, "create_run", the_other_process_came_first)

    async def workflow() -> int:
        return 1

    with pytest.raises(RunLocked):
        asyncio.run(run(workflow, journal=sqlite_journal, run_id="raced"))
    raced = store.get_run("raced")
    assert raced is not None and raced.owner is not None
    assert raced.owner.token == "rival-token"


@pytest.fixture(params=["sqlite", "postgres"])
def durable_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """A journal whose database can be edited by hand (the memory store keeps models)."""
    if request.param == "postgres":
        from tests.conftest import postgres_store

        j = Journal(store=postgres_store(request.getfixturevalue("pg_schema")))
    else:
        j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def _delete_run_row_by_hand(journal: Journal, run_id: str) -> None:
    """DELETE the run's row past the store, as someone "resetting" a run would (its events
    cannot be deleted: the journal's triggers refuse it, so they stay)."""
    path = getattr(journal.store, "path", None)
    if path is not None:
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return
    import psycopg

    from tests.conftest import PG_URL

    schema = getattr(journal.store, "schema")  # noqa: B009
    with psycopg.connect(PG_URL, autocommit=True) as pg:
        pg.execute(f"DELETE FROM {schema}.runs WHERE run_id = %s", (run_id,))  # type: ignore[arg-type]


def test_a_new_run_whose_id_has_events_left_serves_them_and_runs_no_recorded_step_again(
    durable_journal: Journal,
) -> None:
    """A run's row deleted by hand leaves its events behind. Calling the run again creates it
    anew, owned: the sitting must still read what the journal holds for that id, not assume
    it is empty. Otherwise a step whose outcome is recorded runs live again (its side effect
    repeated) and its row then collides with the recorded one (`JournalWriteFailed`)."""
    executed: list[int] = []

    @step
    async def effect(n: int) -> int:
        executed.append(n)
        return n + 1

    async def workflow(n: int) -> int:
        return await effect(n) + await effect(n + 1)

    assert asyncio.run(run(workflow, 1, journal=durable_journal, run_id="reset")) == 5
    assert executed == [1, 2]
    _delete_run_row_by_hand(durable_journal, "reset")
    assert durable_journal.store.get_run("reset") is None

    assert asyncio.run(run(workflow, 1, journal=durable_journal, run_id="reset")) == 5
    assert executed == [1, 2], "a step whose outcome the journal holds ran live again"
    again = durable_journal.store.get_run("reset")
    assert again is not None and again.status is RunStatus.COMPLETED and again.owner is None
    assert _outcomes(durable_journal.events("reset")) == [("0:1", 1), ("0:2", 1)]
