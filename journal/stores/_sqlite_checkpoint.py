"""The WAL of an SQLite journal, copied back into the file by a thread of its own.

SQLite checkpoints a WAL file from inside the commit that makes it long enough (every 1,000
pages by default): that commit copies the pages and waits for the disk (an fsync), some
milliseconds, while the run that committed waits with it, and the event loop with the run
(`replay` commits on the loop). A store that writes turns that off for its connection and has
this thread do it instead, on a connection of its own:

- every so many commits, a PASSIVE checkpoint, which waits for no reader or writer: commits
  go on appending to the WAL meanwhile;
- under steady writes a PASSIVE checkpoint never catches up with the last frame, and SQLite
  starts the WAL over only once one has, so a WAL past `RESTART_PAGES` gets a RESTART
  checkpoint: the store's calls wait while it copies what the PASSIVE one left and syncs the
  file, and the next commit starts the WAL from its beginning. It waits at most
  `RESTART_WAIT_MS` for readers on an older snapshot (another process's long read), and gives
  up rather than hold writers back, trying again once the WAL has grown by as much again.

What a commit promises is unchanged: a checkpoint only moves committed pages from the WAL into
the file, and SQLite keeps that safe against a crash at any point.
"""

from __future__ import annotations

import contextvars
import sqlite3
import threading
from pathlib import Path

from .._log import get_logger

log = get_logger("journal")

COMMITS_PER_CHECKPOINT = 200
"""A checkpoint is asked for every this many commits (a commit adds a few pages to the WAL;
SQLite's own default is a checkpoint every 1,000 pages)."""
ASK_BYTES = 1_000 * 4096
"""A checkpoint is also asked for once commits have written this much since the last request
(SQLite's own default): a few commits of large results would otherwise take the WAL far past
`RESTART_PAGES` before the next so-many commits."""
RESTART_PAGES = 4_000
"""A WAL longer than this (16 MB of 4 KB pages) is started over (a RESTART checkpoint)."""
RESTART_WAIT_MS = 20
"""How long a RESTART checkpoint waits for other processes' writers and readers before giving
up (it holds the store's lock meanwhile)."""
WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes of its WAL file a store keeps once the WAL starts over (`journal_size_limit`): a WAL
that a long reader let grow is cut back, where SQLite would keep the file at its largest."""
IDLE_SECONDS = 5.0
"""The thread ends after this long without a request (a new one starts on the next)."""


class Checkpointer:
    """Checkpoints one journal file's WAL from a thread; `commit()` after each commit."""

    def __init__(self, path: Path, store_lock: threading.Lock) -> None:
        self.path = path.resolve()
        """Absolute: the process may change directory after opening the journal by a relative
        path, and the thread must checkpoint the journal's file, not one of that name there."""
        self.store_lock = store_lock
        """The store's own lock: a RESTART holds it, so the process's writer waits on it (and
        wakes the moment it is free) rather than in SQLite's busy handler, which sleeps in
        steps of up to 100 ms whatever the wait it needs."""
        self.commits = 0
        self.written = 0
        """Bytes of results the commits wrote since the last request."""
        self.checkpoints = 0
        """Checkpoints done (PASSIVE and RESTART alike)."""
        self.restarts = 0
        """RESTART checkpoints that started the WAL over."""
        self.restart_at = RESTART_PAGES
        """A WAL longer than this gets a RESTART checkpoint (further after one that failed)."""
        self._lock = threading.Lock()
        self._asked = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def commit(self, written: int = 0) -> None:
        """Count a commit of the store's connection that wrote `written` bytes of results;
        every so many commits or bytes, ask for a checkpoint."""
        self.commits += 1
        self.written += written
        if self.commits % COMMITS_PER_CHECKPOINT == 0 or self.written >= ASK_BYTES:
            self.written = 0
            self.ask()

    def ask_if_long(self) -> None:
        """Ask now if the WAL is already long (an upgrade's rebuild, a process killed before
        its checkpoint): no commit of this store has counted towards it."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > ASK_BYTES:
            self.ask()

    def ask(self) -> None:
        """Have the thread checkpoint soon (started if it is not running)."""
        with self._lock:
            if self._closed:
                return
            self._asked.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="journal-checkpoint", daemon=True
                )
                # Not the caller's context: this thread is the store's, not a run's work.
                contextvars.Context().run(self._thread.start)

    def close(self) -> None:
        """Stop the thread (after a checkpoint under way) and take no more requests."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._asked.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)

    def _work(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._asked.wait(IDLE_SECONDS)
                with self._lock:  # asked under this lock: no request is missed
                    if self._closed or not self._asked.is_set():
                        self._thread = None
                        return
                    self._asked.clear()
                if conn is None:
                    # mode=rw: a file gone meanwhile is an error, never a new empty database
                    conn = sqlite3.connect(
                        f"{self.path.as_uri()}?mode=rw", uri=True, isolation_level=None
                    )
                    conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                self._checkpoint(conn)
        except sqlite3.Error as exc:  # the file could not be opened: commits go on as they are
            log.warning("journal.checkpoint_failed", path=str(self.path), error=str(exc))
            with self._lock:
                self._thread = None
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if wal_pages > self.restart_at:
                with self.store_lock:  # what the PASSIVE one left, and the file's sync
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.checkpoints += 1
                if busy:  # a reader on an old snapshot: not again until the WAL has grown
                    self.restart_at = wal_pages + RESTART_PAGES  # (each try holds the store)
                else:
                    self.restarts += 1
                    self.restart_at = RESTART_PAGES
        except sqlite3.Error as exc:  # a full disk, a lock held past the wait: next time
            log.warning("journal.checkpoint_failed", path=str(self.path), error=str(exc))
