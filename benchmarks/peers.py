"""The same workloads on journal-replay, DBOS and LangGraph's functional API, side by side.

    make bench-peers                         # builds .venv-peers, runs the full set
    python benchmarks/peers.py [--quick] [--durability normal|full] [--only NAME ...]

Needs the peers installed (`benchmarks/requirements-peers.txt`); a peer that is not installed
is left out. Runs offline. Each system runs in a fresh interpreter. Every database file is
created in one fresh temporary directory (`--dir`, default ./.bench), so all systems write to
the same disk; it is removed afterwards.

Workloads (wall time, `time.perf_counter`, best and median of the repetitions; each
repetition uses a new workflow / run / thread id):

* sequential  one workflow of N steps awaited one after the other, live; each step returns a
              dict of about 150 bytes. µs per step, whole call included.
* concurrent  100 workflows started at once (asyncio.gather) x 10 steps, each step awaiting
              asyncio.sleep(0.001) as I/O would. Steps per second and µs per step.
* resume      a workflow of N steps interrupted by a BaseException in its last step (as Ctrl+C
              would), then resumed the way each system documents: time until the resumed
              workflow has returned (the N-1 recorded steps served, the last one run); and,
              apart, the time from the workflow body's restart to its last step's body
              running, per served step (DBOS's recovery first waits on launch and its queue).
* re-invoke   the finished workflow called again with the same id: each system hands back
              the recorded result without running a step. µs per call.
* replay      journal-replay only: the finished workflow re-run on its recorded results
              (`mode="replay"`), every step served. µs per step. The peers have no such mode.
* raw         a plain sqlite3 INSERT + COMMIT of one 150-byte row per transaction, same
              directory, same pragmas: the floor for one durable write.

Durability: every SQLite database is in WAL mode with the same `synchronous` setting
(`--durability`, default normal: a commit survives a process crash, not a power loss; `full`
adds an fsync per commit). journal-replay and LangGraph's saver get it through their own
connection options; DBOS through a `system_database_engine` built like its own (IMMEDIATE
transactions, busy timeout, foreign keys) plus the two pragmas. Rows marked "as shipped" run
a peer with its defaults instead (DBOS: rollback journal, synchronous=FULL; LangGraph:
synchronous=FULL, durability="async"), sequential workload only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import journal  # noqa: F401
except ImportError:  # a checkout that is not installed: import the packages next to us
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from journal import Journal
from replay import run, run_with_summary, step

CONCURRENT_WORKFLOWS = 100
CONCURRENT_STEPS = 10
IO_WAIT = 0.001


@dataclass(frozen=True)
class Config:
    n: int  # steps in the sequential, resume and replay workflows
    reps: int
    concurrent_reps: int
    shipped_n: int  # steps for the "as shipped" rows (DBOS's default costs ~10 ms a commit)


FULL = Config(n=1_000, reps=5, concurrent_reps=3, shipped_n=100)
QUICK = Config(n=200, reps=3, concurrent_reps=2, shipped_n=30)


# -- the workload, the same for every system ---------------------------------------------------

_TEXT = (
    "a result of about one hundred and fifty bytes once serialized, as a small tool call gives back"
)


def payload(i: int) -> dict[str, Any]:
    """What every step returns: a dict of about 150 bytes as JSON."""
    return {"step": i, "name": f"step-{i:06d}", "ok": True, "text": _TEXT}


assert 140 <= len(orjson.dumps(payload(123))) <= 160, len(orjson.dumps(payload(123)))


class Interrupt(BaseException):
    """Stands in for Ctrl+C: not an `Exception`, so no system records it as the step's error."""


class _Switch:
    armed = False


class _Marks:
    """When the workflow's body last started, and when its last step's body last ran."""

    entered = 0.0
    frontier = 0.0


def _enter() -> None:
    _Marks.entered = time.perf_counter()


def _maybe_interrupt(i: int, n: int) -> None:
    if i == n - 1:
        _Marks.frontier = time.perf_counter()
        if _Switch.armed:
            raise Interrupt


# -- systems -----------------------------------------------------------------------------------


class System:
    """One library configured for the run. Subclasses implement the workloads."""

    name = ""
    storage = ""
    has_replay = False
    pg_url: str | None = None  # a scratch PostgreSQL database instead of a SQLite file

    async def open(self, workdir: Path, durability: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    async def sequential(self, n: int, wid: str) -> Any:
        raise NotImplementedError

    async def concurrent(self, wids: list[str], steps: int) -> Any:
        raise NotImplementedError

    async def interrupted(self, n: int, wid: str) -> None:
        _Switch.armed = True
        try:
            await self.sequential(n, wid)
        except Interrupt:
            pass
        else:
            raise AssertionError(f"{self.name}: the workflow was expected to be interrupted")
        finally:
            _Switch.armed = False

    async def resume(self, n: int, wid: str) -> Any:
        raise NotImplementedError

    async def reinvoke(self, n: int, wid: str) -> Any:
        raise NotImplementedError

    async def replay(self, n: int, wid: str) -> Any:
        raise NotImplementedError


# journal-replay


@step
async def jr_step(i: int, n: int) -> dict[str, Any]:
    _maybe_interrupt(i, n)
    return payload(i)


@step
async def jr_io_step(i: int) -> dict[str, Any]:
    await asyncio.sleep(IO_WAIT)
    return payload(i)


async def jr_workflow(n: int) -> int:
    _enter()
    total = 0
    for i in range(n):
        total += (await jr_step(i, n))["step"]
    return total


async def jr_io_workflow(n: int) -> int:
    total = 0
    for i in range(n):
        total += (await jr_io_step(i))["step"]
    return total


class JournalReplay(System):
    name = "journal-replay"
    has_replay = True

    def __init__(self, pg_url: str | None = None) -> None:
        self.pg_url = pg_url

    async def open(self, workdir: Path, durability: str) -> None:
        if self.pg_url:
            from journal.stores import PostgresStore

            self.storage = PG_STORAGE
            self.journal = Journal(store=PostgresStore(self.pg_url, schema="journal"))
            return
        self.storage = f"SQLite WAL, synchronous={durability.upper()}"
        self.journal = Journal(workdir / "journal-replay.db", durability=durability)  # type: ignore[arg-type]

    async def close(self) -> None:
        self.journal.close()

    async def sequential(self, n: int, wid: str) -> Any:
        return await run(jr_workflow, n, journal=self.journal, run_id=wid)

    async def concurrent(self, wids: list[str], steps: int) -> Any:
        return await asyncio.gather(
            *(run(jr_io_workflow, steps, journal=self.journal, run_id=w) for w in wids)
        )

    async def resume(self, n: int, wid: str) -> Any:
        outcome = await run_with_summary(jr_workflow, n, journal=self.journal, run_id=wid)
        assert (outcome.summary.served, outcome.summary.reexecuted) == (n - 1, 1), outcome
        return outcome.result

    async def reinvoke(self, n: int, wid: str) -> Any:
        return await self.sequential(n, wid)

    async def replay(self, n: int, wid: str) -> Any:
        outcome = await run_with_summary(
            jr_workflow, n, journal=self.journal, run_id=wid, mode="replay"
        )
        assert outcome.summary.served == n, outcome.summary
        return outcome.result


# DBOS: its decorators register in a process-wide registry, so they are defined once, when the
# module is importable, and every configuration launches and destroys DBOS around them.

try:
    from dbos import DBOS, SetWorkflowID
except ImportError:  # pragma: no cover - the peer is optional
    DBOS = None

if DBOS is not None:

    @DBOS.step()
    async def dbos_step(i: int, n: int) -> dict[str, Any]:
        _maybe_interrupt(i, n)
        return payload(i)

    @DBOS.step()
    async def dbos_io_step(i: int) -> dict[str, Any]:
        await asyncio.sleep(IO_WAIT)
        return payload(i)

    @DBOS.workflow()
    async def dbos_workflow(n: int) -> int:
        _enter()
        total = 0
        for i in range(n):
            total += (await dbos_step(i, n))["step"]
        return total

    @DBOS.workflow()
    async def dbos_io_workflow(n: int) -> int:
        total = 0
        for i in range(n):
            total += (await dbos_io_step(i))["step"]
        return total


def _dbos_engine(path: Path, durability: str) -> Any:
    """A system-database engine as DBOS builds its own for SQLite, plus WAL and `synchronous`."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={durability.upper()}")

    return engine


class Dbos(System):
    name = "DBOS"

    def __init__(self, shipped: bool = False, pg_url: str | None = None) -> None:
        self.shipped = shipped
        self.pg_url = pg_url
        if shipped:
            self.name = "DBOS (as shipped)"

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": "peers-bench",
            "system_database_url": self.pg_url or f"sqlite:///{self.path}",
            "log_level": "WARNING",
        }
        if not self.shipped and not self.pg_url:
            config["system_database_engine"] = _dbos_engine(self.path, self.durability)
        return config

    def _launch(self) -> None:
        DBOS(config=self._config())  # type: ignore[misc,call-arg]
        DBOS.launch()  # type: ignore[union-attr]

    async def open(self, workdir: Path, durability: str) -> None:
        self.durability = durability
        self.path = workdir / ("dbos-shipped.sqlite" if self.shipped else "dbos.sqlite")
        if self.pg_url:
            self.storage = PG_STORAGE
        elif self.shipped:
            self.storage = "SQLite rollback journal, synchronous=FULL"
        else:
            self.storage = f"SQLite WAL, synchronous={durability.upper()}"
        self._launch()
        logging.getLogger("dbos").setLevel(logging.WARNING)

    async def close(self) -> None:
        DBOS.destroy(destroy_registry=False)  # type: ignore[union-attr]

    async def sequential(self, n: int, wid: str) -> Any:
        with SetWorkflowID(wid):
            return await dbos_workflow(n)

    async def concurrent(self, wids: list[str], steps: int) -> Any:
        async def one(wid: str) -> int:
            with SetWorkflowID(wid):
                return await dbos_io_workflow(steps)

        return await asyncio.gather(*(one(w) for w in wids))

    async def interrupted(self, n: int, wid: str) -> None:
        await super().interrupted(n, wid)
        # The process that ran it goes away; DBOS recovers pending workflows when it launches.
        DBOS.destroy(destroy_registry=False)  # type: ignore[union-attr]

    async def resume(self, n: int, wid: str) -> Any:
        self._launch()
        handle = await DBOS.retrieve_workflow_async(wid)  # type: ignore[union-attr]
        return await handle.get_result()

    async def reinvoke(self, n: int, wid: str) -> Any:
        return await self.sequential(n, wid)

    async def launch_only(self) -> float:
        DBOS.destroy(destroy_registry=False)  # type: ignore[union-attr]
        start = time.perf_counter()
        self._launch()
        return time.perf_counter() - start


# LangGraph's functional API: the entrypoint takes its checkpointer when it is decorated, so
# the workflows are built for each saver.

try:
    from langgraph.func import entrypoint, task
except ImportError:  # pragma: no cover - the peer is optional
    entrypoint = task = None

if task is not None:

    @task
    async def lg_step(i: int, n: int) -> dict[str, Any]:
        _maybe_interrupt(i, n)
        return payload(i)

    @task
    async def lg_io_step(i: int) -> dict[str, Any]:
        await asyncio.sleep(IO_WAIT)
        return payload(i)


class LangGraph(System):
    name = "LangGraph"

    def __init__(self, shipped: bool = False, pg_url: str | None = None) -> None:
        self.shipped = shipped
        self.pg_url = pg_url
        self.durability_mode = "async" if shipped else "sync"
        if shipped:
            self.name = "LangGraph (as shipped)"

    async def open(self, workdir: Path, durability: str) -> None:
        self.stack = contextlib.AsyncExitStack()
        if self.pg_url:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            saver: Any = await self.stack.enter_async_context(
                AsyncPostgresSaver.from_conn_string(self.pg_url)
            )
            self.storage = f"{PG_STORAGE}, durability={self.durability_mode!r}"
        else:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = workdir / ("langgraph-shipped.db" if self.shipped else "langgraph.db")
            conn = await self.stack.enter_async_context(aiosqlite.connect(path))
            sync = "FULL" if self.shipped else durability.upper()
            if not self.shipped:
                await conn.execute(f"PRAGMA synchronous={sync}")
            saver = AsyncSqliteSaver(conn)
            self.storage = f"SQLite WAL, synchronous={sync}, durability={self.durability_mode!r}"
        await saver.setup()  # SQLite: sets journal_mode=WAL
        self.saver = saver

        @entrypoint(checkpointer=self.saver)
        async def workflow(n: int) -> int:
            _enter()
            total = 0
            for i in range(n):
                total += (await lg_step(i, n))["step"]
            return total

        @entrypoint(checkpointer=self.saver)
        async def io_workflow(n: int) -> int:
            total = 0
            for i in range(n):
                total += (await lg_io_step(i))["step"]
            return total

        self.workflow, self.io_workflow = workflow, io_workflow

    async def close(self) -> None:
        await self.stack.aclose()

    @staticmethod
    def _config(wid: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": wid}}

    async def sequential(self, n: int, wid: str) -> Any:
        return await self.workflow.ainvoke(n, self._config(wid), durability=self.durability_mode)

    async def concurrent(self, wids: list[str], steps: int) -> Any:
        return await asyncio.gather(
            *(
                self.io_workflow.ainvoke(steps, self._config(w), durability=self.durability_mode)
                for w in wids
            )
        )

    async def resume(self, n: int, wid: str) -> Any:
        # Resuming after an error: invoke the thread again with None as the input.
        return await self.workflow.ainvoke(None, self._config(wid), durability=self.durability_mode)

    async def reinvoke(self, n: int, wid: str) -> Any:
        # A finished thread invoked with None returns its last output without running a task.
        return await self.resume(n, wid)


# -- raw baseline ------------------------------------------------------------------------------


def raw_commit(workdir: Path, durability: str, n: int) -> float:
    """Seconds for `n` transactions of one INSERT of a 150-byte row, a COMMIT after each."""
    conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS rows (run_id TEXT, seq INTEGER, payload BLOB,"
        " PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
    )
    run_id = uuid.uuid4().hex
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO rows VALUES (?, ?, ?)", (run_id, i, orjson.dumps(payload(i))))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Result:
    system: str
    storage: str
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # best, median
    notes: list[str] = field(default_factory=list)


async def _timed(make: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


def _cell(samples: list[float], scale: float) -> tuple[float, float]:
    return min(samples) * scale, statistics.median(samples) * scale


async def bench_system(
    system: System, cfg: Config, workdir: Path, durability: str, full_set: bool
) -> Result:
    await system.open(workdir, durability)
    result = Result(system.name, system.storage)
    tag = uuid.uuid4().hex[:6]
    n = cfg.n if full_set else cfg.shipped_n
    try:
        await system.sequential(3, f"warmup-{tag}")
        samples = [
            await _timed(lambda r=r: system.sequential(n, f"seq-{tag}-{r}"))
            for r in range(cfg.reps)
        ]
        result.cells["sequential"] = _cell(samples, 1e6 / n)
        if not full_set:
            result.notes.append(f"sequential with N={n}")
            return result

        samples = []
        total = CONCURRENT_WORKFLOWS * CONCURRENT_STEPS
        for r in range(cfg.concurrent_reps):
            wids = [f"conc-{tag}-{r}-{k}" for k in range(CONCURRENT_WORKFLOWS)]
            samples.append(
                await _timed(lambda wids=wids: system.concurrent(wids, CONCURRENT_STEPS))
            )
        best, median = _cell(samples, 1.0)
        result.cells["concurrent steps/s"] = (total / best, total / median)
        result.cells["concurrent"] = _cell(samples, 1e6 / total)

        samples, serving = [], []
        for r in range(cfg.reps):
            wid = f"resume-{tag}-{r}"
            await system.interrupted(n, wid)
            samples.append(await _timed(lambda wid=wid: system.resume(n, wid)))
            serving.append(_Marks.frontier - _Marks.entered)
        result.cells["resume"] = _cell(samples, 1e3)  # ms per resume
        result.cells["resume serve"] = _cell(serving, 1e6 / (n - 1))  # µs per served step

        wids = [f"seq-{tag}-{r}" for r in range(cfg.reps)]
        samples = [await _timed(lambda w=w: system.reinvoke(n, w)) for w in wids]
        result.cells["re-invoke"] = _cell(samples, 1e6)  # µs per call
        if system.has_replay:
            samples = [await _timed(lambda w=w: system.replay(n, w)) for w in wids]
            result.cells["replay"] = _cell(samples, 1e6 / n)
        if isinstance(system, Dbos):
            launch = [await system.launch_only() for _ in range(3)]
            result.notes.append(
                f"resume includes DBOS.launch() ({min(launch) * 1e3:.0f} ms on its own) and "
                "the internal queue's polling (up to 1 s): recovery re-enqueues the workflow"
            )
    finally:
        await system.close()
    return result


def bench_raw(cfg: Config, workdir: Path, durability: str) -> Result:
    samples = [raw_commit(workdir, durability, cfg.n) for _ in range(cfg.reps)]
    result = Result("plain sqlite3 (baseline)", f"SQLite WAL, synchronous={durability.upper()}")
    result.cells["sequential"] = _cell(samples, 1e6 / cfg.n)
    result.notes.append("sequential = one INSERT + COMMIT of a 150-byte row")
    return result


# -- output ------------------------------------------------------------------------------------

COLUMNS = [
    ("sequential", "sequential µs/step"),
    ("concurrent steps/s", "concurrent steps/s"),
    ("concurrent", "concurrent µs/step"),
    ("resume", "resume ms"),
    ("resume serve", "resume: served µs/step"),
    ("re-invoke", "re-invoke µs"),
    ("replay", "replay µs/step"),
]


def _create_database(url: str) -> str:
    """A scratch database on the server of `url`; its URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"peers_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(url)
    params["dbname"] = name
    user = params.get("user", "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    password = f":{params['password']}" if params.get("password") else ""
    return f"postgresql://{user}{password}@{host}:{port}/{name}"


def _drop_database(url: str, scratch: str) -> None:
    import psycopg

    name = scratch.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "journal-replay": _version("journal-replay"),
        "dbos": _version("dbos"),
        "langgraph": _version("langgraph"),
        "langgraph-checkpoint-sqlite": _version("langgraph-checkpoint-sqlite"),
        "sqlalchemy": _version("sqlalchemy"),
        "aiosqlite": _version("aiosqlite"),
    }


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def render(results: list[Result], cfg: Config, env: dict[str, str], durability: str) -> str:
    lines = [
        "Peers: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "platform"),
        f"{env['platform']}; N={cfg.n} steps (sequential, resume, replay); concurrent = "
        f"{CONCURRENT_WORKFLOWS} workflows x {CONCURRENT_STEPS} steps, each awaiting "
        f"{IO_WAIT * 1e3:g} ms; best / median of {cfg.reps} ({cfg.concurrent_reps} concurrent)",
        f"durability: WAL, synchronous={durability.upper()} unless the storage column says "
        "otherwise",
        "",
    ]
    header = ["system", "storage"] + [title for _, title in COLUMNS]
    table = [header]
    for r in results:
        row = [r.system, r.storage]
        for key, _ in COLUMNS:
            if key in r.cells:
                best, median = r.cells[key]
                row.append(f"{_fmt(best)} / {_fmt(median)}")
            else:
                row.append("-")
        table.append(row)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for k, line in enumerate(table):
        cells = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"{r.system}: {note}" for r in results for note in r.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


PG_STORAGE = "PostgreSQL, synchronous_commit=on"


def _systems(only: list[str] | None, pg: bool) -> list[str]:
    """The keys of the systems to run, each in a process of its own."""
    keys = ["journal-replay"]
    if DBOS is not None:
        keys += ["dbos", "dbos-shipped"]
    if entrypoint is not None:
        keys += ["langgraph", "langgraph-shipped"]
    if pg:
        keys.append("journal-replay-pg")
        if DBOS is not None:
            keys.append("dbos-pg")
        if entrypoint is not None and _version("langgraph-checkpoint-postgres") != "not installed":
            keys.append("langgraph-pg")
    if only:
        wanted = {name.lower() for name in only}
        keys = [k for k in keys if k.removesuffix("-pg").removesuffix("-shipped") in wanted]
    return keys


def _make(key: str, pg_url: str | None) -> tuple[System, bool]:
    """The system for `key`, and whether it runs every workload (not only sequential)."""
    shipped = key.endswith("-shipped")
    url = pg_url if key.endswith("-pg") else None
    if key.startswith("journal-replay"):
        return JournalReplay(pg_url=url), True
    if key.startswith("dbos"):
        return Dbos(shipped=shipped, pg_url=url), not shipped
    return LangGraph(shipped=shipped, pg_url=url), not shipped


def _run_child(key: str, args: argparse.Namespace, pg_url: str | None, workdir: Path) -> Result:
    """Run one system in a fresh interpreter, so no library's threads or pools outlive it."""
    command = [sys.executable, __file__, "--child", key, "--durability", args.durability]
    command += ["--dir", str(workdir)]
    if args.quick:
        command.append("--quick")
    if pg_url:
        command += ["--postgres", pg_url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{key}: the benchmark failed (exit {done.returncode})")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(
        data["system"],
        data["storage"],
        {k: (v[0], v[1]) for k, v in data["cells"].items()},
        data["notes"],
    )


def _child(key: str, args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else FULL
    logging.getLogger("dbos").setLevel(logging.WARNING)
    system, full_set = _make(key, args.postgres)
    result = asyncio.run(bench_system(system, cfg, Path(args.dir), args.durability, full_set))
    print(json.dumps(asdict(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument(
        "--durability",
        choices=("normal", "full"),
        default="normal",
        help="SQLite synchronous setting for every system (default normal)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="journal-replay, dbos and/or langgraph"
    )
    parser.add_argument("--dir", default=".bench", help="where the temporary directory goes")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run every system on PostgreSQL, in a scratch database created on this server"
        " and dropped afterwards",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one system, in its own process
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args)
    cfg = QUICK if args.quick else FULL
    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)

    parent = Path(args.dir)
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="peers-", dir=parent))
    results: list[Result] = []
    started = time.perf_counter()
    pg_url = _create_database(args.postgres) if args.postgres else None
    try:
        results.append(bench_raw(cfg, workdir, args.durability))
        for key in _systems(args.only, bool(pg_url)):
            print(f"running {key} ...", file=sys.stderr, flush=True)
            results.append(_run_child(key, args, pg_url, workdir))
    finally:
        if args.postgres and pg_url:
            _drop_database(args.postgres, pg_url)
        shutil.rmtree(workdir, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                parent.rmdir()
    print(render(results, cfg, env, args.durability))
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
