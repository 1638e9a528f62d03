"""What a journaled step costs on PostgreSQL, next to a raw psycopg insert+commit.

    python benchmarks/postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--n 1000]

Runs in a scratch schema that is dropped afterwards. Prints, best of several repetitions:
the live cost per step (one commit each, as for the SQLite figures), the served cost per step
on replay, and a plain psycopg INSERT + COMMIT of a row the same size, on the same server:
psycopg's default, where BEGIN and COMMIT are round trips of their own. For scale, the same
INSERT in autocommit, one round trip (what a journaled step of one row now costs the server).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from journal import Journal
from journal.stores import PostgresStore
from replay import run_with_summary, step
from replay._session import Mode


@step
async def add(i: int) -> int:
    return i + 1


async def count_up(n: int) -> int:
    total = 0
    for i in range(n):
        total += await add(i)
    return total


def _best(samples: list[float], n: int) -> tuple[float, float]:
    return min(samples) / n * 1e6, statistics.median(samples) / n * 1e6


async def _engine(journal: Journal, n: int, reps: int, mode: Mode) -> list[float]:
    samples = []
    for rep in range(reps):
        gc.collect()
        start = time.perf_counter()
        await run_with_summary(count_up, n, journal=journal, run_id=f"r{rep}", mode=mode)
        samples.append(time.perf_counter() - start)
    return samples


def _raw(url: str, schema: str, n: int, reps: int, *, autocommit: bool = False) -> list[float]:
    payload = b'{"args":{"i":1},"site":"benchmarks/postgres.py:40"}'
    table = f"{schema}.raw_{'auto' if autocommit else 'tx'}"
    samples = []
    with psycopg.connect(url, autocommit=autocommit) as conn:
        conn.execute(
            f"CREATE TABLE {table} (run_id TEXT, seq INT, key TEXT, payload BYTEA,"
            " hash TEXT, created_at TIMESTAMPTZ, PRIMARY KEY (run_id, seq))"
        )
        conn.commit()
        for rep in range(reps):
            gc.collect()
            start = time.perf_counter()
            for seq in range(n):
                conn.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, now())",
                    (f"raw{rep}", seq, f"0:{seq}", payload, "f" * 64),
                )
                conn.commit()  # in autocommit there is nothing to commit: no round trip
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    journal = Journal(store=PostgresStore(args.url, schema=schema))
    try:
        live = _best(asyncio.run(_engine(journal, args.n, args.reps, "resume")), args.n)
        served = _best(asyncio.run(_engine(journal, args.n, args.reps, "replay")), args.n)
        raw = _best(_raw(args.url, schema, args.n, args.reps), args.n)
        one_trip = _best(_raw(args.url, schema, args.n, args.reps, autocommit=True), args.n)
    finally:
        journal.close()
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"PostgreSQL, n={args.n} steps, best (median) of {args.reps}")
    rows = [
        ("live     engine: journaled step, 1 commit/step", live, "µs/step"),
        ("live     raw psycopg: insert+commit", raw, "µs/row"),
        ("info     raw psycopg: insert in autocommit", one_trip, "µs/row"),
        ("replay   engine: served step", served, "µs/step"),
    ]
    for label, (best, median), unit in rows:
        print(f"{label:<48}{best:9.1f} ({median:.1f}) {unit}")
    print(f"{'ratio    live / raw commit':<48}{live[0] / raw[0]:9.2f} x")


if __name__ == "__main__":
    main()
