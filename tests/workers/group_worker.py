"""Subprocess worker for tests/test_crash_group.py (run as a script, killed with SIGKILL).

    python group_worker.py DB EFFECTS SEEN RUNS STEPS

Runs RUNS journaled runs at once (`g0`, `g1`, ...) on the SQLite journal DB, each a workflow of
STEPS steps that wait a few milliseconds: their rows go through the group committer. A step
body appends `RUN:I` to EFFECTS when it has its effect; the workflow appends `RUN:I` to SEEN
once the step's value reached it. Both are single O_APPEND writes (a SIGKILL cannot undo a
write that returned). Prints the runs' results as one JSON line when every run has finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from journal import Journal
from replay import run, step

EFFECTS = ""
SEEN = ""


def note(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@step
async def work(run_id: str, i: int) -> int:
    await asyncio.sleep(0.001 * (1 + (int(run_id[1:]) * 7 + i) % 4))
    note(EFFECTS, f"{run_id}:{i}")
    await asyncio.sleep(0.001)
    return i * 3 + len(run_id)


async def workflow(run_id: str, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await work(run_id, i)
        note(SEEN, f"{run_id}:{i}")
    return total


def main() -> None:
    global EFFECTS, SEEN
    db, EFFECTS, SEEN, runs, steps = sys.argv[1:6]
    run_ids = [f"g{k}" for k in range(int(runs))]
    with Journal(db) as journal:

        async def everything() -> list[int]:
            return await asyncio.gather(
                *(run(workflow, r, int(steps), journal=journal, run_id=r) for r in run_ids)
            )

        results = asyncio.run(everything())
    print(json.dumps(dict(zip(run_ids, results, strict=True))), flush=True)


if __name__ == "__main__":
    main()
