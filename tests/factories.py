"""Rows for tests that talk to a store directly: a run, an owner, an event, a dead pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import replay
from journal import Event, EventKind, EventStatus, Journal, JournalStore, Owner, Run, RunStatus
from journal.stores._ownership import HOSTNAME


def make_run(run_id: str, created: datetime | None = None) -> Run:
    now = created or datetime.now(UTC)
    return Run(
        run_id=run_id,
        workflow="app:wf",
        inputs=b'{"args":[],"kwargs":{}}',
        inputs_fingerprint="fp",
        status=RunStatus.RUNNING,
        created_at=now,
        updated_at=now,
    )


def make_owner(
    token: str = "t1", *, host: str = HOSTNAME, pid: int | None = None, ttl: float = 60
) -> Owner:
    """An owner whose lease ends `ttl` seconds from now (negative: already expired)."""
    now = datetime.now(UTC)
    return Owner(
        token=token,
        host=host,
        pid=os.getpid() if pid is None else pid,
        since=now,
        lease_expires_at=now + timedelta(seconds=ttl),
    )


def make_event(
    seq: int,
    key: str = "0:1",
    *,
    run_id: str = "r",
    name: str = "f",
    status: EventStatus = EventStatus.COMPLETED,
    payload: bytes | None = b'"v"',
) -> Event:
    return Event(
        run_id=run_id,
        seq=seq,
        key=key,
        kind=EventKind.STEP,
        name=name,
        fingerprint="ab",
        status=status,
        attempt=1,
        payload=payload,
        created_at=datetime(2026, 1, 1, 12, 0, seq % 60, tzinfo=UTC),
    )


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped) on this host."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run_in_block(
    journal: Journal, run_id: str, agent: Callable[[], Awaitable[Any]], mode: str = "resume"
) -> Any:
    """`agent()` inside `replay.journaled(journal, run_id, mode=mode)`, on a new event loop."""

    async def go() -> Any:
        async with replay.journaled(journal, run_id, mode=mode):  # type: ignore[arg-type]
            return await agent()

    return asyncio.run(go())


def suspend_then_shrink(
    journal: Journal,
    workflow: Callable[[], Awaitable[Any]],
    run_id: str,
    pools: dict[str, Any],
    smaller: Any,
) -> None:
    """Run `workflow` until it waits for the signal "go", with the pool in `pools["now"]`;
    then put `smaller` in its place (as on a machine with fewer cores) and send the signal,
    ready for the resume the test makes."""
    import pytest

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(workflow, journal=journal, run_id=run_id))
    pools["now"].shutdown()
    pools["now"] = smaller
    journal.signal(run_id, "go", "went")


def resume_in_a_smaller_pool(
    journal: Journal,
    run_id: str,
    job: Callable[[int], Any],
    count: int,
    recorded: Any,
    resumed: Any,
    between: Callable[[], None] = lambda: None,
) -> Any:
    """A run that maps `job` over `range(count)` in the pool `recorded` (from a thread), then
    waits for the signal "go": recorded, then resumed with the pool `resumed` in its place,
    `between` called before the resume. What the resume returns (or raises); `resumed` is
    shut down afterwards."""
    pools = {"now": recorded}

    async def workflow() -> list[object]:
        done = await asyncio.to_thread(lambda: list(pools["now"].map(job, range(count))))
        return [done, await replay.signal("go")]

    suspend_then_shrink(journal, workflow, run_id, pools, resumed)
    between()
    try:
        return asyncio.run(replay.run(workflow, journal=journal, run_id=run_id))
    finally:
        resumed.shutdown(wait=False, cancel_futures=True)


def store_from_before(method: str) -> Any:
    """A store of another package written before `method` was added to the protocol, that
    declares the protocol it implements (subclasses `JournalStore`, as docs/deployment.md
    asks): every other method goes to a `MemoryStore`, `method` is the protocol's own stub,
    which returns None."""
    from journal import JournalStore, MemoryStore

    class Older(JournalStore):
        def __init__(self) -> None:
            self.inner = MemoryStore()
            self.head_chain = None

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    for name, member in vars(JournalStore).items():
        if callable(member) and not name.startswith("_") and name != method:
            setattr(Older, name, _delegate(name))
    return Older()


def _delegate(name: str) -> Callable[..., Any]:
    return lambda self, *args, **kwargs: getattr(self.inner, name)(*args, **kwargs)


def edit_owner(store: JournalStore, run_id: str, owner: str | None) -> None:
    """Write `owner` as the run's owner record by hand, past the store, as someone editing
    the database would (its token is left as it was)."""
    path = getattr(store, "path", None)
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (owner, run_id))
        return
    import psycopg  # the PostgreSQL extra

    from tests.conftest import PG_URL

    with psycopg.connect(PG_URL, autocommit=True) as pg:
        pg.execute(
            f"UPDATE {getattr(store, 'schema')}.runs SET owner = %s WHERE run_id = %s",  # noqa: B009
            (owner, run_id),
        )
