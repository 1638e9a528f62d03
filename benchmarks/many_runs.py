"""Many runs at once on one journal: steps per second, commits per step, and the loop's stalls.

    python benchmarks/many_runs.py [--runs 100 1000] [--steps 10] [--reps 3] [--wait 0.001]
                                    [--postgres postgresql://user@host/db]

N runs are started together (`asyncio.gather` over `run(...)`), each a workflow of steps that
await `asyncio.sleep(0.001)` (`--wait`) as I/O would and return a dict of about 150 bytes; each step
writes two rows (its start before the wait, its outcome after). Printed per storage and N:

- steps/s and µs/step over the whole gather, run start-up included (best / median);
- the ratio of µs/step to one plain INSERT + COMMIT of a 150-byte row on the same storage;
- commits per step: SQLite's statement trace on the journal's connection counts COMMITs, on
  PostgreSQL the rows' distinct `xmin` counts the transactions that wrote them;
- the longest single callback the event loop ran (a stall: nothing else ran meanwhile), found
  by timing every callback; the same without the garbage collector's time inside it; and the
  longest collection (a full one walks every object of the process);
- the CPU the loop's thread used a step (the committer's thread is left out), and of it, what
  went into the runs' creations and ends (`create_run`, `finish` called on the loop).

The plain asyncio line runs the same workload without a journal: the floor of the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from journal import Journal
from replay import run, step

IO_WAIT = 0.001
_wait = [IO_WAIT]
"""What a step awaits (`--wait`): 0 yields to the loop once, as the shortest I/O would."""
TEXT = "x" * 100


def payload(i: int) -> dict[str, Any]:
    return {"step": i, "text": TEXT, "ok": True}


@step
async def io_step(i: int) -> dict[str, Any]:
    await asyncio.sleep(_wait[0])
    return payload(i)


async def workflow(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += (await io_step(i))["step"]
    return total


async def plain_workflow(steps: int) -> int:
    async def plain_step(i: int) -> dict[str, Any]:
        await asyncio.sleep(_wait[0])
        return payload(i)

    total = 0
    for i in range(steps):
        total += (await plain_step(i))["step"]
    return total


class Stalls:
    """Times every callback the loop runs: the longest, and the longest once the time the
    garbage collector took inside it is left out (a full collection walks the whole heap,
    whoever allocated it)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_without_gc = 0.0
        self.longest_gc = 0.0
        self._gc_started = 0.0
        self._gc_time = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            self._gc_time += took
            self.longest_gc = max(self.longest_gc, took)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        original = asyncio.events.Handle._run
        stalls = self

        def timed(handle: asyncio.events.Handle) -> None:
            gc_before = stalls._gc_time
            start = time.perf_counter()
            original(handle)
            took = time.perf_counter() - start
            stalls.longest = max(stalls.longest, took)
            without = took - (stalls._gc_time - gc_before)
            stalls.longest_without_gc = max(stalls.longest_without_gc, without)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        try:
            yield
        finally:
            gc.callbacks.remove(self._gc)
            asyncio.events.Handle._run = original  # type: ignore[method-assign]


def _sqlite_raw(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    body = b"x" * 150
    start = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took / n * 1e6


def _pg_raw(url: str, n: int) -> float:
    import psycopg

    table = f"raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, body bytea)")
        conn.commit()
        body = b"x" * 150
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (body,))
            conn.commit()
        took = time.perf_counter() - start
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    return took / n * 1e6


def _pg_transactions(url: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(DISTINCT xmin::text) FROM {schema}.events").fetchone()
    return int(row[0]) if row else 0


async def _gather(journal: Journal | None, runs: int, steps: int, tag: str) -> float:
    start = time.perf_counter()
    if journal is None:
        results = await asyncio.gather(*(plain_workflow(steps) for _ in range(runs)))
    else:
        results = await asyncio.gather(
            *(run(workflow, steps, journal=journal, run_id=f"{tag}-{k}") for k in range(runs))
        )
    took = time.perf_counter() - start
    assert results == [sum(range(steps))] * runs
    return took


class RunCalls:
    """The loop's CPU in a run's creation and end (`create_run`, `finish`): the part of a run's
    own cost that is store calls on the loop, not Python around them."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def watch(self, journal: Journal) -> None:
        store, loop_thread = journal.store, threading.get_ident()
        for name in ("create_run", "finish"):
            call = getattr(store, name)

            def timed(*args: Any, _call: Any = call, **kwargs: Any) -> Any:
                if threading.get_ident() != loop_thread:
                    return _call(*args, **kwargs)
                start = time.thread_time()
                try:
                    return _call(*args, **kwargs)
                finally:
                    self.cpu += time.thread_time() - start

            setattr(store, name, timed)


def measure(
    storage: str, journal_of: Any, runs: int, steps: int, reps: int, raw_us: float | None
) -> dict[str, Any]:
    samples: list[float] = []
    commits: list[float] = []
    loop_cpu: list[float] = []
    run_calls: list[float] = []
    stalls = Stalls()
    for rep in range(reps):
        gc.collect()
        journal, count = journal_of()
        calls = RunCalls()
        if journal is not None:
            calls.watch(journal)
        try:
            cpu = time.thread_time()
            with stalls.watching():
                took = asyncio.run(_gather(journal, runs, steps, f"r{rep}"))
            loop_cpu.append((time.thread_time() - cpu) / (runs * steps) * 1e6)
            run_calls.append(calls.cpu / (runs * steps) * 1e6)
            samples.append(took)
            if count is not None:
                commits.append(count() / (runs * steps))
        finally:
            if journal is not None:
                journal.close()
    total = runs * steps
    best, median = min(samples), statistics.median(samples)
    us = best / total * 1e6
    return {
        "storage": storage,
        "runs": runs,
        "steps/s": (total / best, total / median),
        "µs/step": (us, median / total * 1e6),
        "x raw": None if raw_us is None else us / raw_us,
        "commits/step": min(commits) if commits else None,
        "loop cpu": min(loop_cpu),
        "run calls": None if journal_of is _no_journal else min(run_calls),
        "longest callback ms": stalls.longest * 1e3,
        "without gc ms": stalls.longest_without_gc * 1e3,
        "longest gc ms": stalls.longest_gc * 1e3,
    }


def _no_journal() -> tuple[None, None]:
    """The plain asyncio rows' "journal": none."""
    return None, None


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def _sqlite_journal(where: Path) -> Any:
    def make() -> tuple[Journal, Any]:
        path = where / f"j-{uuid.uuid4().hex[:8]}.db"
        journal = Journal(path)
        seen: list[int] = []
        conn: sqlite3.Connection = journal.store._conn  # type: ignore[attr-defined]

        def traced(sql: str) -> None:  # a COMMIT, or a write outside BEGIN (its own commit)
            alone = not conn.in_transaction and sql.lstrip()[:6].upper() in _WRITES
            if sql == "COMMIT" or alone:
                seen.append(1)

        conn.set_trace_callback(traced)
        return journal, lambda: len(seen)

    return make


def _pg_journal(url: str, schemas: list[str]) -> Any:
    from journal.stores import PostgresStore

    def make() -> tuple[Journal, Any]:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        schemas.append(schema)
        journal = Journal(store=PostgresStore(url, schema=schema))
        return journal, lambda: _pg_transactions(url, schema)

    return make


def _drop(url: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _print(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'storage':<28} {'runs':>5} {'steps/s (best / median)':>24} {'µs/step':>12} "
        f"{'x raw':>6} {'commits/step':>13} {'longest callback':>17} {'without gc':>11} "
        f"{'longest gc':>11} {'loop CPU µs/step':>17} {'of which create+end':>20}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = f"{row['steps/s'][0]:,.0f} / {row['steps/s'][1]:,.0f}"
        us = f"{row['µs/step'][0]:.0f} / {row['µs/step'][1]:.0f}"
        ratio = "" if row["x raw"] is None else f"{row['x raw']:.1f}x"
        commits = "" if row["commits/step"] is None else f"{row['commits/step']:.3f}"
        calls = "" if row["run calls"] is None else f"{row['run calls']:.0f}"
        print(
            f"{row['storage']:<28} {row['runs']:>5} {rate:>24} {us:>12} {ratio:>6} "
            f"{commits:>13} {row['longest callback ms']:>14.1f} ms "
            f"{row['without gc ms']:>8.1f} ms {row['longest gc ms']:>8.1f} ms "
            f"{row['loop cpu']:>17.0f} {calls:>20}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument(
        "--wait", type=float, default=IO_WAIT, help="seconds each step awaits (0: one yield)"
    )
    args = parser.parse_args()
    _wait[0] = args.wait
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        raw_sqlite = min(_sqlite_raw(where / "raw.db", 2000) for _ in range(3))
        print(f"plain sqlite3 INSERT + COMMIT (WAL, synchronous=NORMAL): {raw_sqlite:.1f} µs")
        for runs in args.runs:
            rows.append(
                measure("plain asyncio (no journal)", _no_journal, runs, args.steps,
                        args.reps, None)
            )  # fmt: skip
            rows.append(
                measure("SQLite WAL, NORMAL", _sqlite_journal(where), runs, args.steps,
                        args.reps, raw_sqlite)
            )  # fmt: skip
        if args.postgres:
            raw_pg = min(_pg_raw(args.postgres, 500) for _ in range(3))
            print(f"plain psycopg INSERT + COMMIT: {raw_pg:.1f} µs")
            schemas: list[str] = []
            try:
                for runs in args.runs:
                    rows.append(
                        measure("PostgreSQL", _pg_journal(args.postgres, schemas), runs,
                                args.steps, args.reps, raw_pg)
                    )  # fmt: skip
            finally:
                _drop(args.postgres, schemas)
    print()
    _print(rows)


if __name__ == "__main__":
    main()
