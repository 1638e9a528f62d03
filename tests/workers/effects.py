"""What the worker scripts share: a durable line per step-body execution, a JSON report."""

from __future__ import annotations

import json
import os
from typing import Any


def append_line(path: str, line: str) -> None:
    """Append `line` with O_APPEND and fsync, so a SIGKILL right after cannot lose it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def print_outcome(outcome: Any, **extra: Any) -> None:
    """One JSON line for the test: this pid, the result and the sitting's summary numbers."""
    summary = outcome.summary
    report = {
        "pid": os.getpid(),
        "result": outcome.result,
        "served": summary.served,
        "executed": summary.executed,
        "reexecuted": summary.reexecuted,
        "unconsumed": list(summary.unconsumed),
        **extra,
    }
    print(json.dumps(report), flush=True)
