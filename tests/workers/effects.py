"""What the worker scripts do outside the journal: one durable line per step-body execution."""

from __future__ import annotations

import os


def append_line(path: str, line: str) -> None:
    """Append `line` with O_APPEND and fsync, so a SIGKILL right after cannot lose it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
