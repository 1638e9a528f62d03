"""Throughput of `journal worker` processes sharing one PostgreSQL journal.

    python benchmarks/workers.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                 [--runs 40] [--steps 50] [--workers 1 4 8]
    python benchmarks/workers.py --llm [--runs 800] [--steps 10] [--workers 4]
                                 [--concurrency 50] [--loop-per-run]

For each worker count: a scratch schema, `runs` submitted runs of `steps` steps each, that
many `journal worker` processes started together, and the wall time until every run has
completed (worker start-up included).

Default: steps that finish without waiting (one commit each); prints steps per second.
`--llm`: steps that wait 50-200 ms, like an LLM call (the same waits in every measurement);
prints runs per second against the ideal, the sum of all waits spread perfectly over
workers x concurrency slots.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from journal import Journal
from journal.stores import PostgresStore
from replay import step, submit

ROOT = Path(__file__).resolve().parent.parent


@step
async def add(i: int) -> int:
    return i + 1


async def count(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await add(i)
    return total


def waits_ms(run: int, steps: int) -> list[int]:
    """The waits of run `run`'s steps: 50-200 ms, fixed by the run's number."""
    return [50 + (run * 7919 + i * 104_729) % 151 for i in range(steps)]


@step(kind="llm")
async def call_llm(i: int, ms: int) -> int:
    await asyncio.sleep(ms / 1000)
    return i


async def agent(run: int, steps: int) -> int:
    total = 0
    for i, ms in enumerate(waits_ms(run, steps)):
        total += await call_llm(i, ms)
    return total


def measure(
    url: str,
    runs: int,
    steps: int,
    workers: int,
    *,
    llm: bool = False,
    concurrency: int = 1,
    loop_per_run: bool = False,
) -> Measured:
    """`workers` processes finishing `runs` x `steps`: seconds from their start, and from the
    first step any of them journaled (worker start-up left out) to the last run's end; with
    `llm`, where the time beyond the ideal went."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    db = f"{url}?schema={schema}"
    journal = Journal(store=PostgresStore(url, schema=schema))
    procs: list[subprocess.Popen[bytes]] = []
    # The workers' CPU: what this process's reaped children used, read before and after
    # reaping them (Popen may reap a worker itself, e.g. terminate() one already exited).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before: ServerUsage | None = None
    _compile_once()
    try:
        from benchmarks import workers as importable  # workers import it by this name

        for n in range(runs):
            if llm:
                submit(importable.agent, n, steps, journal=journal, run_id=f"run-{n:04d}")
            else:
                submit(importable.count, steps, journal=journal, run_id=f"run-{n:04d}")
        script = str(Path(sys.executable).with_name("journal"))
        command = [script, "worker", "--import", "benchmarks.workers", "--db", db, "--poll", "0.02"]
        command += ["--concurrency", str(concurrency)]
        command += ["--loop-per-run"] if loop_per_run else []
        server_before = _server_usage(url)  # the runs' submission left out
        began = time.perf_counter()
        for _ in range(workers):
            procs.append(
                subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=dict(os.environ))
            )
        # Counted by one cheap query: listing every run each time (Run models for all of
        # them) took a tenth of the two cores from the workers being measured.
        with psycopg.connect(url, autocommit=True) as poll:
            done = f"SELECT count(*) FROM {schema}.runs WHERE status = 'completed'"
            while _count(poll, done) < runs:
                time.sleep(0.05)
            elapsed = time.perf_counter() - began
            row = poll.execute(
                f"SELECT extract(epoch FROM (SELECT max(finished_at) FROM {schema}.runs)"
                f" - (SELECT min(created_at) FROM {schema}.events))"
            ).fetchone()
            working = float(row[0]) if row else elapsed
            # Each run's first event and end, in seconds from the first step journaled.
            lived = [
                (str(run_id), float(start), float(end))
                for run_id, start, end in poll.execute(
                    f"WITH r AS (SELECT r.run_id, min(e.created_at) AS start, r.finished_at"
                    f" FROM {schema}.runs r JOIN {schema}.events e USING (run_id)"
                    " GROUP BY r.run_id, r.finished_at)"
                    " SELECT run_id, extract(epoch FROM start - min(start) OVER ()),"
                    " extract(epoch FROM finished_at - min(start) OVER ()) FROM r"
                ).fetchall()
            ]
    finally:
        codes = _end(procs)  # on every path: no worker left polling a dropped schema
        server = None if server_before is None else _server_usage(url).since(server_before)
        journal.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if any(codes):
        print(f"   worker exit codes {codes}: a worker failed or was killed", file=sys.stderr)
    run_seconds = sum(end - start for _, start, end in lived)
    waited = sum(sum(waits_ms(int(run_id[4:]), steps)) for run_id, _, _ in lived) / 1000
    # Until the last run started, every slot had a run to take; after it, slots empty as the
    # last runs end (the drain), whatever the workers do.
    last_start = max(start for _, start, _ in lived)
    filling = sum(max(0.0, min(end, last_start) - start) for _, start, end in lived)
    assert server is not None  # measured once the workers started
    return Measured(elapsed, working, run_seconds, waited, cpu, last_start, filling, server)


@dataclass
class ServerUsage:
    """What the PostgreSQL server did, read from its statistics views and, when it runs on
    this machine and its processes can be read, from /proc (None where it could not be read).
    Other sessions of the server count too: measure on an otherwise idle server."""

    cpu: float | None
    """CPU seconds of the server's processes."""
    commits: int
    """Transactions committed in the database."""
    wal_syncs: int | None
    """Times the server waited for its write-ahead log to reach the disk."""

    def since(self, before: ServerUsage) -> ServerUsage:
        def minus(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        syncs = minus(self.wal_syncs, before.wal_syncs)
        return ServerUsage(
            minus(self.cpu, before.cpu),
            self.commits - before.commits,
            None if syncs is None else int(syncs),
        )


def _server_usage(url: str) -> ServerUsage:
    # The statistics are flushed by each backend when idle, at most once a second.
    time.sleep(1.1)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        commits = int(row[0]) if row else 0
        try:
            wal = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            syncs = int(wal[0]) if wal else None
        except psycopg.Error:  # before PostgreSQL 14
            syncs = None
    return ServerUsage(_postgres_cpu(), commits, syncs)


def _postgres_cpu() -> float | None:
    """CPU seconds of this machine's `postgres` processes and of those that ended, or None if
    none can be read."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for proc in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # ended meanwhile, or not a process
            continue
        # utime, stime, and cutime, cstime: the postmaster's reaped backends (their
        # connections closed) count there.
        total += sum(int(field) for field in fields[11:15])
        found = True
    return total / ticks if found else None


@dataclass
class Measured:
    elapsed: float
    """Seconds from the workers' start to the last run's end."""
    working: float
    """Seconds from the first step journaled to the last run's end."""
    run_seconds: float
    """The runs' times added up, each from its first event to its end."""
    waited: float
    """The waits of the runs' steps added up (`--llm`)."""
    cpu: float
    """CPU seconds the worker processes used, start-up included."""
    last_start: float
    """Seconds from the first step journaled to the last run's first event."""
    filling: float
    """The runs' times added up, each cut at `last_start`."""
    server: ServerUsage
    """What the PostgreSQL server did meanwhile."""


def _compile_once() -> None:
    """Compile the project's modules before the workers start, as an installed wheel comes
    compiled: where PYTHONDONTWRITEBYTECODE is set, an editable install's workers would each
    compile them again at start-up (about 0.1 s of CPU), and nobody deploys workers so."""
    for package in ("journal", "replay", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def _end(procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> list[int]:
    """SIGTERM every worker, wait for each (killed if not exited `timeout` s after the
    SIGTERM); their exit codes."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [proc.returncode for proc in procs]


def _count(conn: psycopg.Connection[tuple[int]], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return 0 if row is None else int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=None, help="Default: 40 (--llm: 800).")
    parser.add_argument("--steps", type=int, default=None, help="Default: 50 (--llm: 10).")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--llm", action="store_true", help="Steps that wait 50-200 ms.")
    parser.add_argument("--concurrency", type=int, default=None, help="Runs per worker at once.")
    parser.add_argument(
        "--loop-per-run", action="store_true", help="Each run on an event loop of its own."
    )
    args = parser.parse_args()
    if args.llm:
        runs, steps = args.runs or 800, args.steps or 10
        concurrency = args.concurrency or 50
        waited = sum(sum(waits_ms(n, steps)) for n in range(runs)) / 1000
        loops = ", a loop per run" if args.loop_per_run else ""
        print(
            f"PostgreSQL, {runs} runs x {steps} steps waiting 50-200 ms, concurrency "
            f"{concurrency}{loops}; % of ideal from the workers' start, and from the first step"
        )
        for workers in args.workers or [4]:
            m = measure(
                args.url,
                runs,
                steps,
                workers,
                llm=True,
                concurrency=concurrency,
                loop_per_run=args.loop_per_run,
            )
            slots = workers * concurrency
            ideal = waited / slots
            print(
                f"{workers:>2} workers x {concurrency}: {runs / m.elapsed:7.1f} runs/s, ideal "
                f"{runs / ideal:7.1f} ({100 * ideal / m.elapsed:.0f}% of ideal, {m.elapsed:.1f} s;"
                f" {100 * ideal / m.working:.0f}% once working, {m.working:.1f} s)"
            )
            # Where the rest went: each step ending later than its wait (the loop busy, the
            # CPU shared), slots left empty between runs, and the CPU the workers used.
            print(
                f"   a run took {m.run_seconds / m.waited:.2f}x its waits "
                f"(+{1000 * (m.run_seconds - m.waited) / (runs * steps):.1f} ms a step); "
                f"slots busy {100 * m.run_seconds / (slots * m.working):.0f}% "
                f"once working ({100 * m.filling / (slots * m.last_start or 1):.0f}% "
                f"until the last run started, then {m.working - m.last_start:.1f} s of drain); "
                f"workers' CPU {1000 * m.cpu / runs:.1f} ms a run "
                f"({m.cpu:.1f} s, {100 * m.cpu / (m.elapsed * (os.cpu_count() or 1)):.0f}% of "
                f"{os.cpu_count()} cores)"
            )
            server = m.server
            cpu = "" if server.cpu is None else f"CPU {1000 * server.cpu / runs:.1f} ms a run, "
            syncs = (
                "" if server.wal_syncs is None else f", {server.wal_syncs / runs:.1f} WAL flushes"
            )
            print(f"   PostgreSQL: {cpu}{server.commits / runs:.1f} commits a run{syncs}")
        return
    runs, steps = args.runs or 40, args.steps or 50
    print(f"PostgreSQL, {runs} runs x {steps} steps, one commit per step")
    for workers in args.workers or [1, 4, 8]:
        elapsed = measure(
            args.url,
            runs,
            steps,
            workers,
            concurrency=args.concurrency or 1,
            loop_per_run=args.loop_per_run,
        ).elapsed
        print(f"{workers:>2} worker processes: {runs * steps / elapsed:8.0f} steps/s")


if __name__ == "__main__":
    main()
