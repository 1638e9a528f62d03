"""The WAL of an SQLite journal is checkpointed by the store's own thread, never by a commit:
it stays bounded under steady writes, a long reader elsewhere does not hold writers back, and
a process killed while a checkpoint runs loses nothing it committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from journal import Journal, SQLiteStore
from journal.stores import _sqlite_checkpoint
from tests.factories import make_event, make_owner, make_run

ROOT = Path(__file__).resolve().parent.parent


def _store_with_run(path: Path) -> SQLiteStore:
    store = SQLiteStore(path)
    store.create_run(make_run("r"))
    store.claim("r", make_owner(), resuming=False)
    return store


def _append(store: SQLiteStore, seq: int) -> None:
    payload = b'{"text":"' + b"x" * 600 + b'"}'
    store.append("r", "t1", [make_event(seq, f"0:{seq}", payload=payload)])


def _wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def _eventually(done: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether `done()` came true within `seconds` (the checkpoint thread works on its own)."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return done()


def _checkpointer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "journal-checkpoint"]


def test_commits_do_not_checkpoint_the_store_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = _store_with_run(path)
    (autocheckpoint,) = store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert autocheckpoint == 0  # no commit copies the WAL back (and waits on the disk)
    for seq in range(1, 2 * _sqlite_checkpoint.COMMITS_PER_CHECKPOINT + 1):
        _append(store, seq)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    assert _eventually(lambda: checkpointer.checkpoints >= 2)
    assert _checkpointer_threads()
    store.close()
    assert not _checkpointer_threads()  # closing the store ends its thread
    reopened = SQLiteStore(path, read_only=True)
    assert len(reopened.read_rows("r")) == 2 * _sqlite_checkpoint.COMMITS_PER_CHECKPOINT
    reopened.close()


def _wal_high_water(path: Path, commits: int) -> tuple[int, SQLiteStore]:
    """The WAL file's largest size in pages (a WAL started over is written from its
    beginning again, so the file's size is its high-water mark) over `commits` commits."""
    store = _store_with_run(path)
    for seq in range(1, commits + 1):
        _append(store, seq)
    return _wal_pages(path), store


def test_the_wal_stays_bounded_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PASSIVE checkpoint never catches up with a writer that does not pause, and SQLite
    starts a WAL over only once one has: without the RESTART the file grows for good."""
    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 10**9)
    unchecked, store = _wal_high_water(tmp_path / "unchecked.db", 4_000)
    store.close()
    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 20)
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 200)
    bounded, store = _wal_high_water(tmp_path / "j.db", 4_000)
    checkpointer = store._checkpointer
    assert checkpointer is not None and checkpointer.restarts > 0
    assert bounded < unchecked / 2, (bounded, unchecked)
    assert [row[0] for row in store.read_rows("r")] == list(range(1, 4_001))
    store.close()


def test_a_reader_on_an_old_snapshot_does_not_hold_writers_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RESTART checkpoint blocks writers while it waits for readers: another process's long
    read (a browser on the journal) must cost them at most the checkpoint's short wait, not
    the 30 s of a busy timeout."""
    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 10)
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 50)
    path = tmp_path / "j.db"
    store = _store_with_run(path)
    _append(store, 1)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)  # a snapshot held
    slowest = 0.0
    for seq in range(2, 602):
        started = time.monotonic()
        _append(store, seq)
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 2.0, slowest  # RESTART_WAIT_MS at a time, not a busy timeout
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)  # still its own
    reader.execute("COMMIT")
    reader.close()
    for seq in range(602, 1_002):
        _append(store, seq)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 10
    while checkpointer.restarts == 0 and time.monotonic() < deadline:
        _append(store, checkpointer.commits + 1)
    assert checkpointer.restarts > 0  # once the reader is gone the WAL starts over
    store.close()


WRITER = """
import sys
from journal import SQLiteStore
from journal.stores import _sqlite_checkpoint
from tests.factories import make_event, make_owner, make_run

_sqlite_checkpoint.COMMITS_PER_CHECKPOINT = 5
_sqlite_checkpoint.RESTART_PAGES = 40
store = SQLiteStore(sys.argv[1])
store.create_run(make_run("r"))
store.claim("r", make_owner(), resuming=False)
seq = 0
while True:
    seq += 1
    store.append("r", "t1", [make_event(seq, f"0:{seq}", payload=b'"' + b"y" * 900 + b'"')])
    print(seq, flush=True)
"""


@pytest.mark.parametrize("after", [0.1, 0.35, 0.6])
def test_a_kill_while_checkpointing_loses_no_commit(tmp_path: Path, after: float) -> None:
    path = tmp_path / "j.db"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # started writing (the interpreter's start-up is not timed)
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    reported = [int(line) for line in (first + out).split()]
    assert reported, "the writer committed nothing before the kill"
    with Journal(path) as journal:
        seqs = [row[0] for row in journal.store.read_rows("r")]
    # Every commit it reported is there, in order; at most the one in flight beyond them.
    assert seqs[: len(reported)] == reported
    assert len(seqs) - len(reported) <= 1


def test_the_thread_checkpoints_the_store_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal opened by a relative path, then the process changes directory: the thread
    still checkpoints the journal's file, and never creates an empty database in the new
    directory (which a later `Journal("journal.db")` there would take for a new journal)."""
    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 10)
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 50)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    store = _store_with_run(Path("j.db"))
    monkeypatch.chdir(tmp_path / "b")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 10
    seq = 0
    while checkpointer.restarts == 0 and time.monotonic() < deadline:
        seq += 1
        _append(store, seq)
    store.close()
    assert list((tmp_path / "b").iterdir()) == []
    assert checkpointer.restarts > 0  # the journal's own WAL was started over


def test_writes_other_than_events_are_checkpointed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits turn SQLite's own checkpoint off, so every write must count towards the
    thread's: a process that only sends signals (`journal ui --allow-actions`), heartbeats a
    long step, claims or removes runs would otherwise grow the WAL for as long as it runs."""
    from datetime import UTC, datetime

    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 10)
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 50)
    path = tmp_path / "j.db"
    store = SQLiteStore(path)
    store.create_run(make_run("r"))
    owner = make_owner()
    store.claim("r", owner, resuming=False)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    before = checkpointer.commits
    store.send_signal("r", "go", b'"' + b"z" * 2000 + b'"')
    assert store.heartbeat("r", owner.token, datetime.now(UTC))
    store.release("r", owner.token)
    store.claim("r", owner, resuming=True)
    store.create_run(make_run("gone"))
    assert store.delete_runs(["gone"]) == 1
    assert checkpointer.commits - before == 6
    deadline = time.monotonic() + 10
    while checkpointer.restarts == 0 and time.monotonic() < deadline:
        store.send_signal("r", "go", b'"' + b"z" * 2000 + b'"')
        store.heartbeat("r", owner.token, datetime.now(UTC))
    assert checkpointer.restarts > 0
    store.close()


def test_large_commits_ask_for_a_checkpoint_before_the_200th(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps whose results are large (a file, a long model answer) write much more per
    commit: counting commits alone let the WAL reach 200 of them (200 MB at 1 MB each), where
    SQLite checkpoints every 4 MB and the docs promise about 20 MB."""
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 200)
    path = tmp_path / "j.db"
    store = _store_with_run(path)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    # Each request is let through before the next commit: what is measured is when the store
    # asks, not how soon a thread gets a busy machine's CPU.
    asks: list[int] = []
    ask = checkpointer.ask
    monkeypatch.setattr(checkpointer, "ask", lambda: (asks.append(1), ask())[1])
    done_before = checkpointer.checkpoints
    written = high_water = 0
    commits = _sqlite_checkpoint.COMMITS_PER_CHECKPOINT - 10  # not one of the 200th
    for seq in range(1, commits + 1):
        payload = b'"' + os.urandom(64 * 1024).hex().encode() + b'"'  # no two alike
        store.append("r", "t1", [make_event(seq, f"0:{seq}", payload=payload)])
        written += len(payload)
        high_water = max(high_water, _wal_pages(path) * 4096)
        assert _eventually(lambda: checkpointer.checkpoints >= done_before + len(asks))
    assert asks  # asked by bytes: no commit count reached a checkpoint's
    assert checkpointer.commits < _sqlite_checkpoint.COMMITS_PER_CHECKPOINT
    assert high_water < written / 2, (high_water, written)
    assert len(store.read_rows("r")) == commits
    store.close()


LEAVER = """
import os, sys
from journal import SQLiteStore
from journal.stores import _sqlite_checkpoint
from tests.factories import make_event, make_owner, make_run

_sqlite_checkpoint.COMMITS_PER_CHECKPOINT = 10**9
_sqlite_checkpoint.ASK_BYTES = 10**12
store = SQLiteStore(sys.argv[1])
store.create_run(make_run("r"))
store.claim("r", make_owner(), resuming=False)
for seq in range(1, 301):
    store.append("r", "t1", [make_event(seq, f"0:{seq}", payload=b'"' + b"z" * 20_000 + b'"')])
os._exit(0)  # as a kill would: the WAL is left as it is
"""


def test_a_long_wal_left_behind_is_checkpointed_on_open(tmp_path: Path) -> None:
    """A WAL a process left (killed before its checkpoint, or an upgrade's rebuild) is copied
    back once the journal is opened to write, before any commit asks for it."""
    path = tmp_path / "j.db"
    subprocess.run(
        [sys.executable, "-c", LEAVER, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert _wal_pages(path) * 4096 > _sqlite_checkpoint.ASK_BYTES
    store = SQLiteStore(path)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    assert _eventually(lambda: checkpointer.checkpoints >= 1)
    assert checkpointer.commits == 0
    assert len(store.read_rows("r")) == 300
    store.close()


def test_a_wal_a_long_reader_let_grow_is_cut_back_once_it_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite starts a WAL over from its beginning but keeps the file at its largest; the
    store keeps at most `WAL_SIZE_LIMIT` of it. And while the reader holds its snapshot, a
    RESTART that found it busy is not tried again at every request (each try holds the store)."""
    monkeypatch.setattr(_sqlite_checkpoint, "COMMITS_PER_CHECKPOINT", 10)
    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 50)
    monkeypatch.setattr(_sqlite_checkpoint, "WAL_SIZE_LIMIT", 256 * 1024)
    path = tmp_path / "j.db"
    store = _store_with_run(path)
    _append(store, 1)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()
    for seq in range(2, 1_002):
        _append(store, seq)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    _eventually(lambda: False, seconds=0.2)  # the thread answers what was asked
    grown = _wal_pages(path)
    assert grown * 4096 > 4 * 256 * 1024  # held by the reader's snapshot
    tries = checkpointer.checkpoints
    assert tries < 1.5 * (checkpointer.commits // 10), tries  # no RESTART at every request
    reader.execute("COMMIT")
    reader.close()
    seq = 1_001
    deadline = time.monotonic() + 10
    while checkpointer.restarts == 0 and time.monotonic() < deadline:
        seq += 1
        _append(store, seq)
    assert checkpointer.restarts > 0
    for _ in range(20):  # the next commits write the WAL from its beginning, then cut it back
        seq += 1
        _append(store, seq)
    assert _wal_pages(path) * 4096 <= 256 * 1024, _wal_pages(path)
    store.close()
