"""Subprocess worker for tests/test_postgres_store.py's zombie test (paused with SIGSTOP).

    python zombie_worker.py URL RUN_ID LEASE_SECONDS EFFECTS [stop-in-transaction [TIMES]]

Runs `count` (six steps that each wait 0.1 s) as RUN_ID on the journal at URL with a short
lease. Prints `step N` after each step, flushed. Each step body appends "PID KEY" to EFFECTS.
Exits 0 with a JSON report, or 4 with `ownership lost` when another process took the run over.

With `stop-in-transaction`, the process stops itself (SIGSTOP) inside the transaction that
appends step 3's first row, after the insert and before the commit: a process paused while it
holds the run row's lock, as a GC pause, a frozen VM or a debugger would leave it; TIMES
(default 1) times, if the transaction is run again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

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


def stop_inside_the_third_steps_transaction(times: int) -> None:
    from journal.stores import PostgresStore

    insert = PostgresStore._insert_events  # type: ignore[attr-defined]
    stops = [times]
    # An append of one statement commits with it, outside any transaction: this process sends
    # every call in a transaction, as the calls of several statements are (a run's end with
    # its head entry, an append with its chunks), to stop inside one.
    PostgresStore._statement = PostgresStore._transaction  # type: ignore[attr-defined]

    def insert_then_stop(
        self: Any, cur: Any, run_id: str, token: str, events: Any, *rest: Any
    ) -> None:
        insert(self, cur, run_id, token, events, *rest)
        if stops[0] and any(e.key == "0:3" for e in events):
            stops[0] -= 1
            print("stopping in the transaction", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    PostgresStore._insert_events = insert_then_stop  # type: ignore[attr-defined]


def main() -> None:
    global EFFECTS
    url, run_id, lease, EFFECTS = sys.argv[1:5]
    if sys.argv[5:6] == ["stop-in-transaction"]:
        stop_inside_the_third_steps_transaction(int((sys.argv[6:] or ["1"])[0]))
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
