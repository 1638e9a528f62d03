"""Ctrl+C (SIGINT) on a running workflow: the lease is released and resume loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from journal import EventStatus, Journal, RunStatus
from replay import run_with_summary

WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from journal import Journal
    from replay import run, step

    STALL_FROM = int(os.environ.get("STALL_FROM", "-1"))

    @step
    async def slow(i: int) -> int:
        # In the child, steps from STALL_FROM on wait until the Ctrl+C comes, however slowly
        # a loaded machine starts it; resumed here, each takes 50 ms.
        await asyncio.sleep(60 if 0 <= STALL_FROM <= i else 0.05)
        return i * i

    async def squares(n: int) -> list[int]:
        return [await slow(i) for i in range(n)]

    if __name__ == "__main__":
        with Journal(sys.argv[1]) as j:
            print(asyncio.run(run(squares, 40, journal=j, run_id="sq")))
    """
)


def _completed(db: Path) -> int:
    if not db.exists():
        return 0
    with Journal(db) as j:
        try:
            return sum(e.status is EventStatus.COMPLETED for e in j.events("sq"))
        except Exception:
            return 0


def test_sigint_releases_the_lease_and_resume_serves_completed_steps(tmp_path: Path) -> None:
    """After Ctrl+C the run is `running` with no owner; resume serves what completed."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    db = tmp_path / "j.db"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "STALL_FROM": "5"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl+C as in a terminal: a suite started in the background (`make test &`) passes
        # SIGINT on ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while _completed(db) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert b"KeyboardInterrupt" in stderr

    sys.path.insert(0, str(tmp_path))
    try:
        import worker  # type: ignore[import-not-found]

        with Journal(db) as j:
            interrupted = j.run("sq")
            assert interrupted.status is RunStatus.RUNNING
            assert interrupted.owner is None  # released on the way out, not left to expire
            done_before = _completed(db)
            # Recorded as `__main__:squares` by the script, resumed here as `worker:squares`.
            assert interrupted.workflow == "__main__:squares"
            outcome = asyncio.run(run_with_summary(worker.squares, 40, journal=j, run_id="sq"))
        assert outcome.result == [i * i for i in range(40)]
        assert outcome.summary.served == done_before
        assert outcome.summary.served + outcome.summary.executed + outcome.summary.reexecuted == 40
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("worker", None)
