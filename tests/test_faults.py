"""Faults the trusted stores' own suites inject: a full disk, a read-only file, a lock held
past the busy timeout, a -wal cut mid-frame, a PostgreSQL backend killed mid-step. In each:
nothing recorded is lost, the error names the cause, resume completes, verify is intact."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import replay
from journal import Journal, JournalUnavailable
from journal.stores._sqlite_file import _switch_to_wal
from tests.disk_and_locks import small_tmpfs

calls: Counter[int] = Counter()


@replay.step(kind="tool")
async def produce(i: int) -> str:
    calls[i] += 1
    await asyncio.sleep(0)
    return f"{i}:" + "x" * 20_000


async def fill(n: int) -> int:
    total = 0
    for i in range(n):
        total += len(await produce(i))
    return total


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 kB tmpfs."""
    with small_tmpfs(tmp_path / "small", "700k") as where:
        yield where


def test_a_full_disk_says_so_keeps_what_was_written_and_resumes(small_disk: Path) -> None:
    calls.clear()
    db = small_disk / "j.db"
    journal = Journal(db)
    with pytest.raises(replay.JournalWriteFailed) as err:
        asyncio.run(replay.run(fill, 100, journal=journal, run_id="full"))
    assert "disk holding" in str(err.value) and "is full" in str(err.value), err.value
    assert "cannot rollback" not in str(err.value)
    recorded = [e for e in journal.events("full") if e.status.value == "completed"]
    assert recorded and all(v.ok for v in journal.verify())
    journal.close()
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    done_before = {int(e.payload.decode().split(":")[0].strip('"')) for e in recorded if e.payload}
    calls.clear()
    with Journal(db) as journal:
        total = asyncio.run(replay.run(fill, 100, journal=journal, run_id="full"))
        assert total == sum(len(f"{i}:") + 20_000 for i in range(100))
        assert all(v.verdict == "intact" and v.sealed for v in journal.verify())
    assert not done_before & {i for i, n in calls.items() if n}  # nothing recorded ran again


def test_an_upgrade_the_disk_has_no_room_for_says_so_and_leaves_the_journal(
    tmp_path: Path,
) -> None:
    """Upgrading a schema-6 journal rebuilds its events table, which needs room for a second
    copy of them: on a disk without it, the error says the disk is full and what to do (it
    said the file "cannot be opened as a journal", and to point the journal at a new file),
    the journal stays schema 6 and readable, and with room it upgrades."""
    golden = Path(__file__).parent / "data" / "golden" / "v0.1.0-schema6-chunks" / "unsigned.db"
    big = tmp_path / "big.db"
    big.write_bytes(golden.read_bytes())
    conn = sqlite3.connect(big)
    fields = "seq, key, kind, name, fingerprint, status, attempt, payload, created_at, args"
    conn.execute(f"CREATE TEMP TABLE base AS SELECT run_id, {fields} FROM events")
    for copy in range(60):  # more runs' events (insertion is what the triggers allow)
        conn.execute(
            f"INSERT INTO events (run_id, {fields}) SELECT ? || run_id, {fields} FROM base",
            (f"copy-{copy}-",),
        )
    conn.commit()
    conn.close()
    with small_tmpfs(tmp_path / "small", "4m") as where:
        db = where / "j.db"
        db.write_bytes(big.read_bytes())
        with pytest.raises(JournalUnavailable) as err:
            Journal(db)
        assert "full" in str(err.value) and "Fix: free" in str(err.value), err.value
        assert "new file" not in str(err.value)
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone() == (6,)
        conn.close()
        with Journal(db, read_only=True) as journal:
            assert journal.runs()
        subprocess.run(["mount", "-o", "remount,size=20m", str(where)], check=True)
        Journal(db).close()
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone() == (7,)
        conn.close()


def test_a_read_only_file_is_journal_unavailable_with_the_fix(tmp_path: Path) -> None:
    """Opened read-only (a file the user may not write, as `mode=ro` makes it for root too):
    a live run is refused with the cause and the fix; finished runs are still served."""
    db = tmp_path / "j.db"
    with Journal(db) as journal:
        asyncio.run(replay.run(fill, 2, journal=journal, run_id="done"))
    with Journal(db, read_only=True) as journal:
        assert asyncio.run(replay.run(fill, 2, journal=journal, run_id="done")) > 0
        with pytest.raises(JournalUnavailable, match="read-only") as err:
            asyncio.run(replay.run(fill, 2, journal=journal, run_id="new"))
    assert "Fix:" in str(err.value)


def test_a_lock_held_past_the_busy_timeout_is_journal_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds a write transaction open: starting a run waits out the busy
    timeout, then says what holds it and how to fix it (not a raw 'database is locked')."""
    db = tmp_path / "j.db"
    Journal(db).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        journal = Journal(db)
        journal.store._conn.execute("PRAGMA busy_timeout = 200")  # type: ignore[attr-defined]
        with pytest.raises(JournalUnavailable, match="stayed locked") as err:
            asyncio.run(replay.run(fill, 1, journal=journal, run_id="locked"))
        assert "Fix:" in str(err.value)
        journal.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_postgres_backend_killed_mid_step_names_the_lost_connection(pg_schema: str) -> None:
    """pg_terminate_backend on every connection of the run while a step is in flight: the
    write fails naming the lost connection (not psycopg's AdminShutdown from the lease's
    release); resume completes without running a recorded step again; verify is intact."""
    import psycopg

    from journal.stores import PostgresStore

    from .conftest import PG_URL, postgres_store

    def own_store() -> PostgresStore:  # its connections carry a name only this test uses
        return PostgresStore(f"{PG_URL}?application_name={pg_schema}", schema=pg_schema)

    calls.clear()
    killed = {"done": False}

    @replay.step(kind="tool")
    async def slow(i: int) -> int:
        calls[i] += 1
        if i == 1 and not killed["done"]:
            killed["done"] = True
            with psycopg.connect(PG_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (pg_schema,),
                )
        await asyncio.sleep(0)
        return i

    async def workflow() -> list[int]:
        return [await slow(i) for i in range(3)]

    journal = Journal(store=own_store())
    with pytest.raises((replay.JournalWriteFailed, JournalUnavailable)) as err:
        asyncio.run(replay.run(workflow, journal=journal, run_id="killed"))
    assert "connection to PostgreSQL" in str(err.value) and "lost" in str(err.value), err.value
    assert "AdminShutdown" not in type(err.value).__name__
    journal.close()
    calls.clear()
    with Journal(store=postgres_store(pg_schema)) as journal:
        # The lease of the killed sitting may still be held: wait it out as a worker would.
        run = journal.run("killed")
        if run.owner is not None:
            journal.store.release("killed", run.owner.token)
        assert asyncio.run(replay.run(workflow, journal=journal, run_id="killed")) == [0, 1, 2]
        assert all(v.verdict == "intact" for v in journal.verify())
    assert calls[0] == 0  # recorded before the kill: served


class _CuttingProxy:
    """A TCP proxy to PostgreSQL that drops a connection right after the client sent bytes
    holding `cut_after` (once): the server gets all of it and commits, the client never hears
    back, as when the network fails after a COMMIT left."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_after: bytes | None = None
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            muted = threading.Event()
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up, muted), daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, up: bool, muted: threading.Event
    ) -> None:
        try:
            while data := src.recv(65536):
                if not up and muted.is_set():
                    continue  # the server's answer never reaches the client
                if up and self.cut_after is not None and self.cut_after in data:
                    self.cut_after = None
                    self.cuts += 1
                    # Muted before the bytes go on: a quick answer must not slip back first.
                    muted.set()
                    # What the client sends next (its COMMIT) still goes through, for a while.
                    threading.Timer(0.5, self._drop, (src, dst)).start()
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src, dst)

    @staticmethod
    def _drop(*ends: socket.socket) -> None:
        for each in ends:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    def close(self) -> None:
        self.listener.close()


def test_a_postgres_connection_lost_as_a_new_run_commits_leaves_the_run_to_a_retry(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the server committed a new run (created owned by this
    process) and before the answer came back: `run()` fails naming the lost connection, and
    running it again from this process, as the error says, runs it at once. The owner the
    creation wrote is one nobody here holds: it must not lock the run out for a whole lease
    (`RunLocked` naming this very process) as a live process's would."""
    from urllib.parse import urlsplit

    from journal.stores import PostgresStore

    from .conftest import PG_URL

    monkeypatch.setenv("PGSSLMODE", "disable")  # the proxy reads the statements it passes on
    where = urlsplit(PG_URL)
    proxy = _CuttingProxy((where.hostname or "127.0.0.1", where.port or 5432))
    through = where._replace(netloc=f"{where.username}@127.0.0.1:{proxy.port}").geturl()
    calls.clear()

    @replay.step(kind="tool")
    async def once() -> int:
        calls[0] += 1
        return 1

    async def workflow() -> int:
        return await once()

    journal = Journal(store=PostgresStore(through, schema=pg_schema, max_size=4))
    try:
        journal.redactor()  # the journal's salt, written before the cut
        proxy.cut_after = f"INSERT INTO {pg_schema}.heads".encode()  # a creation's 2nd trip
        with pytest.raises(JournalUnavailable, match="lost"):
            asyncio.run(replay.run(workflow, journal=journal, run_id="cut"))
        assert proxy.cuts == 1
        assert journal.run("cut").status.value == "running"  # committed, unheard of
        assert calls[0] == 0
        # Again from this process, on connections of its own (the cut one may still be pooled).
        with Journal(store=PostgresStore(PG_URL, schema=pg_schema)) as again:
            assert asyncio.run(replay.run(workflow, journal=again, run_id="cut")) == 1
            assert calls[0] == 1
            assert again.run("cut").owner is None
    finally:
        journal.close()
        proxy.close()


def test_a_wal_cut_mid_frame_loses_only_the_torn_write(tmp_path: Path) -> None:
    """The -wal file cut in the middle of its last frame (a torn write at power loss): SQLite
    drops the torn transaction, nothing committed before it is lost, the chain verifies, and
    resume completes the run."""
    import shutil

    calls.clear()
    db = tmp_path / "live.db"
    journal = Journal(db)

    interrupt = {"on": True}

    async def stops_after(n: int) -> int:
        total = 0
        for i in range(n):
            total += len(await produce(i))
        if interrupt["on"]:
            raise KeyboardInterrupt  # leaves the run unfinished, the WAL not checkpointed
        return total

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(stops_after, 6, journal=journal, run_id="torn"))
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)  # the writer is still open: its WAL holds the frames
    wal = Path(str(db) + "-wal").read_bytes()
    assert len(wal) > 4096, "the run's rows are still in the WAL"
    Path(str(copy) + "-wal").write_bytes(wal[: len(wal) - 1000])  # the last frame torn
    journal.close()
    with Journal(copy) as torn:
        kept = [e.seq for e in torn.events("torn")]
        assert kept == list(range(1, len(kept) + 1)) and len(kept) >= 5
        assert all(v.ok for v in torn.verify())
        owner = torn.run("torn").owner  # the torn frame was the lease's release
        if owner is not None:  # its process is this one, alive: let go as its death would
            torn.store.release("torn", owner.token)
        calls.clear()
        interrupt["on"] = False
        assert asyncio.run(replay.run(stops_after, 6, journal=torn, run_id="torn")) > 0
        assert sum(calls.values()) <= 6 - len(kept) // 2 + 1  # only what was torn runs again
        assert all(v.verdict == "intact" for v in torn.verify())
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_switching_to_wal_waits_out_a_lock_but_no_other_error(tmp_path: Path) -> None:
    """Two processes creating one journal race for WAL mode: "locked" is waited out. Any
    other error (here, a file opened read-only) is raised at the first try, not retried for
    the whole timeout."""
    db = tmp_path / "plain.db"
    plain = sqlite3.connect(db)
    plain.execute("CREATE TABLE t (x)")
    plain.commit()
    plain.close()
    reader = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, isolation_level=None)
    tries: list[str] = []
    reader.set_trace_callback(tries.append)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        _switch_to_wal(reader, timeout=1.0)
    assert tries == ["PRAGMA journal_mode = WAL"]
    reader.close()

    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(db, isolation_level=None, timeout=0.0)  # no busy handler
    released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    released.start()
    _switch_to_wal(writer, timeout=10.0)
    released.join()
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    writer.close()
    holder.close()


@pytest.mark.parametrize("how", ["submitted", "new"])
def test_a_postgres_connection_lost_at_a_sittings_first_read_leaves_the_run_to_a_retry(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The sitting owns the run (claimed, or created owned) and its first read of the run's
    rows loses the connection: `run()` fails naming it, and running it again from this
    process runs it at once, not after a whole lease of `RunLocked` naming this process."""
    from urllib.parse import urlsplit

    from journal.stores import PostgresStore

    from .conftest import PG_URL

    monkeypatch.setenv("PGSSLMODE", "disable")  # the proxy reads the statements it passes on
    where = urlsplit(PG_URL)
    proxy = _CuttingProxy((where.hostname or "127.0.0.1", where.port or 5432))
    through = where._replace(netloc=f"{where.username}@127.0.0.1:{proxy.port}").geturl()
    calls.clear()
    journal = Journal(store=PostgresStore(through, schema=pg_schema, max_size=4))
    try:
        journal.redactor()  # the journal's salt, written before the cut
        if how == "submitted":
            replay.submit(fill, 1, journal=journal, run_id="cut")
        proxy.cut_after = b"AND seq > 0 ORDER BY seq"  # the sitting's read of the run's rows
        with pytest.raises(JournalUnavailable, match="lost"):
            asyncio.run(replay.run(fill, 1, journal=journal, run_id="cut"))
        assert proxy.cuts == 1 and calls[0] == 0
        # Again from this process, on connections of its own: the cut one may still be in the
        # first pool, which is not what this test is about.
        with Journal(store=PostgresStore(PG_URL, schema=pg_schema)) as again:
            assert asyncio.run(replay.run(fill, 1, journal=again, run_id="cut")) == len(
                "0:" + "x" * 20_000
            )
            assert calls[0] == 1
            assert again.run("cut").owner is None
    finally:
        journal.close()
        proxy.close()
