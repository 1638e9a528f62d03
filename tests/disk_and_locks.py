"""Real conditions the fault tests make: a small filesystem that fills up, a SQLite file whose
write lock another connection holds."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (needs root, as CI has; under CI a failed mount
    fails the test, elsewhere it skips)."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; CI runs as root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"cannot mount a tmpfs: {mounted.stderr.decode()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def hold_write_lock(db: str, seconds: float) -> threading.Thread:
    """Another connection takes the file's write lock now and keeps it for `seconds`; the
    thread holding it (join it before the test ends)."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, timeout=10, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        threading.Event().wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    return holder
