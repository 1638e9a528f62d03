"""Subprocess worker for tests/test_soak.py (run as a script, killed with SIGKILL at random).

    python soak_worker.py URL EFFECTS RUN_ID ROUNDS

Runs a workflow of gathered async steps, sync steps in threads, a retrying step and child
tasks on the journal at URL (an SQLite path or a PostgreSQL URL with ?schema=). Every body
execution appends `KEY` to EFFECTS (O_APPEND + fsync) before it returns. Prints one JSON line
with the result when the run finishes.
"""

from __future__ import annotations

import asyncio
import sys
import time

from effects import append_line, print_outcome  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import idempotency_key, run_with_summary, step

EFFECTS = ""


class Flaky(Exception):
    """The first attempt of every retrying step fails (the first ever: resumes do not repeat it)."""


def record_effect() -> str:
    key = idempotency_key()
    assert key is not None
    append_line(EFFECTS, key)
    return key


@step
async def work(tag: str, x: int) -> int:
    await asyncio.sleep(0.003)
    record_effect()
    await asyncio.sleep(0.01)
    return (x * 31 + len(tag) * 7 + ord(tag[0])) % 1009


@step(kind="tool")
def compute(tag: str, x: int) -> int:
    time.sleep(0.003)
    record_effect()
    time.sleep(0.01)
    return (x * 17 + ord(tag[-1])) % 1009


@step(kind="tool", retries=2, retry_delay=0.0, retry_on=(Flaky,))
async def flaky(tag: str, x: int) -> int:
    key = record_effect()
    with open(EFFECTS) as seen:
        attempts = sum(1 for line in seen if line.strip() == key)
    if attempts == 1:  # only the first attempt ever made fails
        raise Flaky(f"{tag}: attempt {attempts} fails")
    await asyncio.sleep(0.005)
    return (x + 3) % 1009


async def pair(tag: str, x: int) -> int:
    first = await work(f"{tag}a", x)
    return await work(f"{tag}b", first)


async def workflow(rounds: int) -> list[int]:
    acc = 7
    trace: list[int] = []
    for r in range(rounds):
        acc = await work(f"s{r}", acc)
        values = await asyncio.gather(
            work(f"g{r}", acc),
            asyncio.to_thread(compute, f"t{r}", acc),
            pair(f"p{r}", acc + 2),
            flaky(f"f{r}", acc),
        )
        trace.extend(values)
        acc = sum(values) % 1009
    return trace


def main() -> None:
    global EFFECTS
    url, EFFECTS, run_id, rounds = sys.argv[1:5]
    with Journal(url) as j:
        outcome = asyncio.run(run_with_summary(workflow, int(rounds), journal=j, run_id=run_id))
    print_outcome(outcome)


if __name__ == "__main__":
    main()
