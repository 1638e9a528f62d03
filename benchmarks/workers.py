"""Throughput of `journal worker` processes sharing one PostgreSQL journal.

    python benchmarks/workers.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                 [--runs 40] [--steps 50] [--workers 1 4 8]

For each worker count: a scratch schema, `runs` submitted runs of `steps` steps each (a step
that finishes without waiting: one commit), that many `journal worker` processes started
together, and the wall time until every run has completed. Prints steps per second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from journal import Journal, RunStatus
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


def measure(url: str, runs: int, steps: int, workers: int) -> float:
    """Steps per second for `workers` processes to finish `runs` x `steps`."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    db = f"{url}?schema={schema}"
    journal = Journal(store=PostgresStore(url, schema=schema))
    try:
        from benchmarks.workers import count as importable  # workers import it by this name

        for n in range(runs):
            submit(importable, steps, journal=journal, run_id=f"run-{n:03d}")
        script = str(Path(sys.executable).with_name("journal"))
        command = [script, "worker", "--import", "benchmarks.workers", "--db", db, "--poll", "0.02"]
        began = time.perf_counter()
        procs = [
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=dict(os.environ))
            for _ in range(workers)
        ]
        while len(journal.runs(status=RunStatus.COMPLETED)) < runs:
            time.sleep(0.02)
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    finally:
        journal.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return runs * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    print(f"PostgreSQL, {args.runs} runs x {args.steps} steps, one commit per step")
    for workers in args.workers:
        rate = measure(args.url, args.runs, args.steps, workers)
        print(f"{workers:>2} worker processes: {rate:8.0f} steps/s")


if __name__ == "__main__":
    main()
