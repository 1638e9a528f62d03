"""Group commit: concurrent runs on one store share commits, and nothing is seen uncommitted.

Real SQLite files (commits counted with the connection's own statement trace) and a real
PostgreSQL (commits counted by the server). The SIGKILL law for group commit is in
tests/test_crash_group.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journal import EventStatus, Journal, RunStatus
from replay import OwnershipLost, idempotency_key, run, step
from tests.conftest import PG_URL, postgres_store

RUNS = 40
STEPS = 5


@step
async def waits(run: int, i: int) -> dict[str, Any]:
    await asyncio.sleep(0.001 * (1 + (run * 7 + i) % 3))
    return {"run": run, "i": i, "text": "x" * 100}


async def several(run: int, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += (await waits(run, i))["i"]
    return total


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def _count_commits(journal: Journal) -> list[str]:
    """Every commit the store's own connection makes from now on: the name of the thread that
    made it. A COMMIT, or a write outside BEGIN (one statement is its own transaction)."""
    commits: list[str] = []
    conn: sqlite3.Connection = journal.store._conn  # type: ignore[attr-defined]

    def traced(sql: str) -> None:
        alone = not conn.in_transaction and sql.lstrip()[:6].upper() in _WRITES
        if sql == "COMMIT" or alone:
            commits.append(threading.current_thread().name)

    conn.set_trace_callback(traced)
    return commits


def _rows(journal: Journal) -> int:
    return sum(len(journal.events(r.run_id)) for r in journal.runs())


def test_concurrent_runs_share_commits(tmp_path: Path) -> None:
    """40 runs x 5 steps that wait: each step writes two rows (its start before the wait,
    its outcome after), and the runs' rows go in far fewer commits than there are rows."""
    with Journal(tmp_path / "j.db") as journal:

        async def main() -> list[int]:
            return await asyncio.gather(
                *(run(several, k, STEPS, journal=journal, run_id=f"r{k}") for k in range(RUNS))
            )

        commits = _count_commits(journal)
        assert asyncio.run(main()) == [sum(range(STEPS))] * RUNS
        rows = _rows(journal)
        assert rows == RUNS * STEPS * 2
        step_commits = len(commits) - 2 * RUNS  # a run's creation (owned) and end commit alone
        assert step_commits < rows / 4, (len(commits), rows)
        assert "journal-group-commit" in commits
        verdicts = journal.verify()
        assert len(verdicts) == RUNS and all(v.ok for v in verdicts), verdicts


def test_one_run_alone_commits_on_the_spot(tmp_path: Path) -> None:
    """A single run has nobody to share a commit with: each write commits at once, on the
    loop, as it did before group commit (no hand-off to the committer's thread)."""
    with Journal(tmp_path / "j.db") as journal:
        journal.redactor()  # the journal's salt, written once on first use: not the run's
        commits = _count_commits(journal)
        assert asyncio.run(run(several, 0, STEPS, journal=journal, run_id="alone")) == 10
        # Its creation (owned from then on: no claim), two per step, its end.
        assert commits == ["MainThread"] * (2 + STEPS * 2)


def test_a_value_is_seen_only_after_its_row_is_committed(tmp_path: Path) -> None:
    """Under group commit, each workflow checks from a second connection, right after a
    step returns, that the step's completed row is in the file."""
    db = tmp_path / "j.db"
    unseen: list[tuple[int, int]] = []

    async def checking(run_no: int) -> int:
        reader = sqlite3.connect(db)
        try:
            for i in range(STEPS):
                await waits(run_no, i)
                key = f"0:{i + 1}"
                row = reader.execute(
                    "SELECT status FROM events WHERE run_id = ? AND key = ? AND status = ?",
                    (f"c{run_no}", key, EventStatus.COMPLETED.value),
                ).fetchone()
                if row is None:
                    unseen.append((run_no, i))
        finally:
            reader.close()
        return run_no

    with Journal(db) as journal:
        commits = _count_commits(journal)

        async def main() -> list[int]:
            return await asyncio.gather(
                *(run(checking, k, journal=journal, run_id=f"c{k}") for k in range(RUNS))
            )

        assert asyncio.run(main()) == list(range(RUNS))
        assert len(commits) - 3 * RUNS < RUNS * STEPS  # grouped: the check was not vacuous
    assert unseen == []


@step
async def finds_its_start(db: str, run_no: int, i: int) -> bool:
    """Whether this step's `started` row is in the file (read from a second connection) once
    its body's first wait has begun (a run alone commits it then, on the loop)."""
    key = idempotency_key()
    assert key is not None
    run_id, _, step_key = key.partition(":")
    await asyncio.sleep(0)
    reader = sqlite3.connect(db)
    try:
        row = reader.execute(
            "SELECT 1 FROM events WHERE run_id = ? AND key = ? AND status = ?",
            (run_id, step_key, EventStatus.STARTED.value),
        ).fetchone()
    finally:
        reader.close()
    await asyncio.sleep(0.001 * (1 + (run_no + i) % 3))
    return row is not None


def test_a_started_row_is_committed_before_the_body_runs(tmp_path: Path) -> None:
    """Under group commit as alone, a step's `started` row is committed by the time its first
    wait is under way: a crash during the call then finds the call in flight. (In a group,
    the body does not even begin before.)"""
    db = tmp_path / "j.db"

    async def starts(run_no: int) -> list[bool]:
        return [await finds_its_start(str(db), run_no, i) for i in range(STEPS)]

    with Journal(db) as journal:
        commits = _count_commits(journal)

        async def main() -> list[list[bool]]:
            return await asyncio.gather(
                *(run(starts, k, journal=journal, run_id=f"s{k}") for k in range(RUNS))
            )

        assert asyncio.run(main()) == [[True] * STEPS] * RUNS
        assert "journal-group-commit" in commits


@step
async def long_wait(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def test_a_run_that_lost_its_lease_does_not_fail_the_others(tmp_path: Path) -> None:
    """The rows of several runs go in one transaction. A run whose owner was replaced meanwhile
    has its rows refused (OwnershipLost in that run only); the rows of the others commit."""
    db = tmp_path / "j.db"

    async def victim() -> str:
        await long_wait(0.3)  # its lease is taken while this waits
        return await long_wait(0.0)

    def steal() -> None:
        """Once the victim's first step is under way, as another owner taking the run would."""
        conn = sqlite3.connect(db, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):  # no table yet
                if conn.execute("SELECT 1 FROM events WHERE run_id = 'victim'").fetchone():
                    break
            time.sleep(0.005)
        with conn:
            conn.execute("UPDATE runs SET owner_token = 'someone-else' WHERE run_id = 'victim'")
        conn.close()

    with Journal(db) as journal:

        async def main() -> list[Any]:
            thief = threading.Thread(target=steal)
            thief.start()
            try:
                return await asyncio.gather(
                    run(victim, journal=journal, run_id="victim"),
                    *(run(several, k, 12, journal=journal, run_id=f"o{k}") for k in range(RUNS)),
                    return_exceptions=True,
                )
            finally:
                thief.join()

        commits = _count_commits(journal)
        outcomes = asyncio.run(main())
        assert isinstance(outcomes[0], OwnershipLost), outcomes[0]
        assert outcomes[1:] == [sum(range(12))] * RUNS
        assert len(commits) - 3 * RUNS < RUNS * 12  # the others' rows were grouped
        for k in range(RUNS):
            assert journal.run(f"o{k}").status is RunStatus.COMPLETED
        assert all(v.ok for v in journal.verify() if v.run_id != "victim")
        assert [e.status for e in journal.events("victim")] == [EventStatus.STARTED]


HOLDER: list[threading.Thread] = []


@step
async def locks_the_file(db: str) -> int:
    """Returns while another connection holds the file's write lock: its outcome row waits
    for the lock, and the run's task is cancelled meanwhile (then the lock goes)."""
    locked, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        conn = sqlite3.connect(db, timeout=10, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    HOLDER.append(holder)
    locked.wait(10)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_later(0.05, task.cancel)
    threading.Timer(0.3, release.set).start()  # as another process would, on its own
    return 1


def test_a_cancellation_while_the_commit_is_on_its_way_comes_after_the_value(
    tmp_path: Path,
) -> None:
    """A step's row is queued for the group commit, and its task is cancelled before the row
    lands (another connection holds the file's write lock meanwhile). The row commits, so
    the step's value is the workflow's: it sees the value, then the cancellation at its next
    wait, as it would had the row been committed on the spot."""
    db = tmp_path / "j.db"
    seen: list[Any] = []

    async def cancelled_while_landing() -> str:
        try:
            seen.append(await locks_the_file(str(db)))
            seen.append("after the value")
            await asyncio.sleep(1)
            seen.append("not cancelled")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "unreachable"

    async def neighbour() -> int:
        return (await long_wait(0.5)) and 0  # a step in flight elsewhere: group mode

    with Journal(db) as journal:

        async def main() -> list[Any]:
            return await asyncio.gather(
                run(cancelled_while_landing, journal=journal, run_id="cancelled"),
                run(neighbour, journal=journal, run_id="neighbour"),
                return_exceptions=True,
            )

        outcomes = asyncio.run(main())
        for holder in HOLDER:
            holder.join()
        assert isinstance(outcomes[0], asyncio.CancelledError), outcomes
        assert seen == [1, "after the value", "cancelled"]
        completed = [
            e.key for e in journal.events("cancelled") if e.status is EventStatus.COMPLETED
        ]
        assert completed == ["0:1"]


@pytest.fixture
def pg_journal(pg_schema: str) -> Iterator[Journal]:
    journal = Journal(store=postgres_store(pg_schema))
    yield journal
    journal.close()


def _inserting_transactions(schema: str) -> int:
    """How many transactions inserted the events: rows written together share their xmin."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(DISTINCT xmin::text) FROM {schema}.events").fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_concurrent_runs_share_commits(pg_journal: Journal, pg_schema: str) -> None:
    """The same on PostgreSQL, counted by the server: the rows of one transaction share
    their `xmin`."""

    async def main() -> list[int]:
        return await asyncio.gather(
            *(run(several, k, STEPS, journal=pg_journal, run_id=f"p{k}") for k in range(RUNS))
        )

    assert asyncio.run(main()) == [sum(range(STEPS))] * RUNS
    rows = _rows(pg_journal)
    assert rows == RUNS * STEPS * 2
    transactions = _inserting_transactions(pg_schema)
    assert transactions < rows / 4, (transactions, rows)
    assert all(v.ok for v in pg_journal.verify())


def test_a_store_subclassing_the_protocol_before_append_many_commits_a_run_at_a_time() -> None:
    """A store of another package that subclasses JournalStore (as docs/deployment.md asks it
    to implement the protocol) but was written before `append_many` inherits the protocol's
    stub, which returns None: the committer appends its runs one by one, as for a store
    without it, instead of failing all but the first runs of a group with JournalWriteFailed."""
    from tests.factories import store_from_before
    from tests.fleet_workflows import chain

    journal = Journal(store=store_from_before("append_many"))

    async def together() -> list[int]:
        return await asyncio.gather(
            *(run(chain, n, 5, journal=journal, run_id=f"g{n}") for n in range(20))
        )

    assert asyncio.run(together()) == [asyncio.run(chain(n, 5)) for n in range(20)]
    assert all(r.status is RunStatus.COMPLETED for r in journal.runs())
