"""Subprocess worker for tests/test_crash_sigkill.py (run as a script, killed with SIGKILL).

    python crash_worker.py DB EFFECTS RUN_ID DURABILITY SEED ROUNDS

Runs a multi-step workflow (sequential steps, a gather of steps, a gather of child tasks that
each await two steps) as the journaled run RUN_ID on the SQLite journal DB. Every execution of
a step body appends its idempotency key (`RUN_ID:KEY`) as one line to EFFECTS, opened with
O_APPEND and fsync'd, so the test can count body executions outside the journal. When the run
finishes, prints one JSON line on stdout: the result and the sitting's RunSummary numbers.
"""

from __future__ import annotations

import asyncio
import sys

from effects import append_line, print_outcome  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import idempotency_key, run_with_summary, step

EFFECTS = ""


def record_effect() -> None:
    key = idempotency_key()
    assert key is not None, "a step body always runs with an idempotency key"
    append_line(EFFECTS, key)


@step
async def work(tag: str, x: int) -> int:
    await asyncio.sleep(0.005)  # window: `started` is durable, the effect has not happened
    record_effect()
    await asyncio.sleep(0.03)  # window: the effect happened, the completion is not durable
    return (x * 31 + len(tag) * 7 + ord(tag[0])) % 1009


async def pair(tag: str, x: int) -> int:
    first = await work(f"{tag}a", x)
    return await work(f"{tag}b", first)


async def workflow(seed: int, rounds: int) -> list[int]:
    acc = seed
    trace: list[int] = []
    for r in range(rounds):
        acc = await work(f"s{r}", acc)
        trace.append(acc)
        values = await asyncio.gather(
            work(f"g{r}", acc), work(f"g{r}", acc + 1), pair(f"p{r}", acc + 2)
        )
        trace.extend(values)
        acc = sum(values) % 1009
    return trace


def main() -> None:
    global EFFECTS
    db, EFFECTS, run_id, durability, seed, rounds = sys.argv[1:7]
    with Journal(db, durability=durability) as j:  # type: ignore[arg-type]
        outcome = asyncio.run(
            run_with_summary(workflow, int(seed), int(rounds), journal=j, run_id=run_id)
        )
        synchronous = j.store._conn.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[attr-defined]
    print_outcome(outcome, synchronous=synchronous)


if __name__ == "__main__":
    main()
