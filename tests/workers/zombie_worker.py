"""Subprocess worker for tests/test_postgres_store.py's zombie test (paused with SIGSTOP).

    python zombie_worker.py URL RUN_ID LEASE_SECONDS EFFECTS

Runs `count` (six steps that each wait 0.1 s) as RUN_ID on the journal at URL with a short
lease. Prints `step N` after each step, flushed. Each step body appends "PID KEY" to EFFECTS.
Exits 0 with a JSON report, or 4 with `ownership lost` when another process took the run over.
"""

from __future__ import annotations

import asyncio
import os
import sys

from effects import append_line, print_outcome  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import OwnershipLost, idempotency_key, run_with_summary, step

EFFECTS = ""


@step
async def tick(n: int) -> int:
    await asyncio.sleep(0.1)
    append_line(EFFECTS, f"{os.getpid()} {idempotency_key()}")
    return n + 1


async def count(steps: int) -> int:
    total = 0
    for n in range(steps):
        total = await tick(total)
        print(f"step {n + 1}", flush=True)
    return total


def main() -> None:
    global EFFECTS
    url, run_id, lease, EFFECTS = sys.argv[1:5]
    with Journal(url) as journal:
        try:
            outcome = asyncio.run(
                run_with_summary(
                    count, 6, journal=journal, run_id=run_id, lease_seconds=float(lease)
                )
            )
        except OwnershipLost as exc:
            print(f"ownership lost: {exc}", flush=True)
            sys.exit(4)
    print_outcome(outcome)


if __name__ == "__main__":
    main()
