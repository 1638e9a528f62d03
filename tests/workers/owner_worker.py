"""Subprocess worker for tests/test_ownership.py: a run that holds its lease until told.

    python owner_worker.py DB RUN_ID GATE EFFECTS [START]

Runs `guarded` as the journaled run RUN_ID on the SQLite journal DB. Each step body appends
"PID KEY" to EFFECTS; the `hold` step does so once its `started` row is committed, then waits
until the file GATE exists. With START,
the worker first touches `START.ready.PID` and waits for START to exist (a start barrier),
and only then opens the journal, so two workers race from the same moment.

On success prints one JSON line (pid, result, summary numbers) and exits 0. On RunLocked
prints {"locked": true, "message": ..., "owner_pid": ...} and exits 3.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from effects import append_line, print_outcome  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import RunLocked, idempotency_key, run_with_summary, step

LOCKED_EXIT = 3
EFFECTS = ""


def record_effect() -> None:
    append_line(EFFECTS, f"{os.getpid()} {idempotency_key()}")


@step
async def square(n: int) -> int:
    record_effect()
    return n * n


@step
async def hold(gate: str) -> int:
    await asyncio.sleep(0)  # the first wait: the engine's loop callback commits `started`
    record_effect()  # so once the test sees this effect, the step is durably in flight
    while not os.path.exists(gate):
        await asyncio.sleep(0.01)
    return len(os.path.basename(gate))


async def guarded(n: int, gate: str) -> list[int]:
    first = await square(n)
    waited = await hold(gate)
    return [first, waited, await square(first + waited)]


def wait_for_start(start: str) -> None:
    Path(f"{start}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 20
    while not os.path.exists(start):
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.001)


def main() -> None:
    global EFFECTS
    db, run_id, gate, EFFECTS = sys.argv[1:5]
    if len(sys.argv) > 5:
        wait_for_start(sys.argv[5])
    with Journal(db) as j:
        try:
            outcome = asyncio.run(run_with_summary(guarded, 3, gate, journal=j, run_id=run_id))
        except RunLocked as exc:
            report = {
                "locked": True,
                "pid": os.getpid(),
                "message": str(exc),
                "owner_pid": exc.owner.pid,
                "owner_host": exc.owner.host,
                "owner_since": exc.owner.since.isoformat(),
            }
            print(json.dumps(report), flush=True)
            sys.exit(LOCKED_EXIT)
    print_outcome(outcome)


if __name__ == "__main__":
    main()
