"""Per-step overhead of journal-replay against plain SQLite, on the same file system.

What it measures (wall time, `time.perf_counter`, best and median of a few repetitions; every
repetition uses a fresh run id):

* live      `run_with_summary(wf, n)` on a new run: each step appends its `started` and
            `completed` rows in one transaction, so one commit per step. Reported as µs per
            step, whole call included (run creation, claim, finish).
* replay    `run_with_summary(wf, n, mode="replay")` on a finished run: every step served from
            the journal (read, fold, decode). µs per served step.
* raw       the floor for the same work with the stdlib `sqlite3` module, same pragmas
            (WAL, synchronous=NORMAL): one INSERT + COMMIT per row of a comparable row
            (run_id, seq, key, name, fingerprint, status, ~35-byte payload, created_at text);
            and one SELECT of a run's rows ordered by seq with `orjson.loads` of each payload.
* ratios    live / raw commit (target <= 1.5x) and replay / raw read+decode (target <= 3x),
            the targets of the throughput work (the first version's live target was 2x).
* resume    a 100,000-step run interrupted before its last step, resumed: wall time of the
            whole `run_with_summary` (target < 0.5 s; the first version's was 1 s); of
            `store.read_rows` alone (what the engine reads), and of `store.read_events` (the
            same rows as pydantic Events).

How to read it: "best" is the least disturbed repetition and is what the ratios and targets
use; "median" shows the spread. PASS/MISS marks compare against the targets. The `info` rows
have no target: they locate where the time goes (fixed cost of a run, a step that yields to
the loop and so commits its start separately, the engine's own rows read raw).

    python benchmarks/overhead.py            # full run (about 20 s)
    python benchmarks/overhead.py --quick    # smaller sizes, about 3 s
    python benchmarks/overhead.py --json     # one JSON document instead of the table
    python benchmarks/overhead.py --check    # exit 1 if a target is missed
    python benchmarks/overhead.py --profile replay   # cProfile of one run, per-step µs

Database files go to a fresh directory under `--dir` (default `./.bench`, on the same file
system as the working directory) that is removed afterwards unless `--keep` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

try:
    import journal  # noqa: F401
except ImportError:  # a checkout that is not installed: import the packages next to us
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import pydantic

from journal import Journal
from replay import run_with_summary, step

Mode = Literal["resume", "replay"]

LIVE_LIMIT = 1.5
"""A journaled step live, at most this many times one raw insert+commit."""
REPLAY_LIMIT = 3.0
"""A served step, at most this many times one raw select+decode."""
RESUME_LIMIT_S = 0.5
"""Seconds to resume a 100,000-step run."""

# -- workloads -------------------------------------------------------------------------------


@step
async def add(i: int) -> int:
    """A step that finishes without yielding: its start and end share one commit."""
    return i + 1


@step
async def add_after_io(i: int) -> int:
    """A step that yields to the loop once, as real I/O does: its start commits on its own."""
    await asyncio.sleep(0)
    return i + 1


async def count_up(n: int) -> int:
    total = 0
    for i in range(n):
        total += await add(i)
    return total


async def count_up_with_io(n: int) -> int:
    total = 0
    for i in range(n):
        total += await add_after_io(i)
    return total


async def fan_out(n: int) -> int:
    """`n` concurrent tasks, one step each: on replay their outcomes are handed back one at a
    time, in the order they arrived live."""
    return sum(await asyncio.gather(*(add_after_io(i) for i in range(n))))


class Interrupt(BaseException):
    """Stands in for Ctrl+C: not an `Exception`, so the run is left unfinished (resumable)."""


class _Switch:
    armed = False


@step
async def checkpoint(n: int) -> int:
    if _Switch.armed:
        raise Interrupt
    return n


async def count_up_then_checkpoint(n: int) -> int:
    total = await count_up(n)
    return total + await checkpoint(n)


# -- measurements ----------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    metric: str
    n: int
    best: float
    median: float
    unit: str
    target: str = ""
    mark: str = ""


def _row(section: str, metric: str, n: int, samples: list[float], unit: str) -> Row:
    """A row from wall times in seconds: whole seconds if `unit` is "s", else µs per step."""
    scale = 1.0 if unit == "s" else 1e6 / max(n, 1)
    return Row(section, metric, n, min(samples) * scale, statistics.median(samples) * scale, unit)


def _ratio(metric: str, engine: Row, raw: Row, limit: float) -> Row:
    best = engine.best / raw.best
    mark = "PASS" if best <= limit else "MISS"
    median = engine.median / raw.median
    return Row("ratio", metric, engine.n, best, median, "x", f"<= {limit:g}x", mark)


def _runs(
    j: Journal, workflow: Callable[[int], Awaitable[int]], n: int, prefix: str, mode: Mode
) -> Callable[[int], Awaitable[Any]]:
    """`make(rep)`: one run of `workflow(n)` as run id `{prefix}-{rep}`."""

    def make(rep: int) -> Awaitable[Any]:
        return run_with_summary(workflow, n, journal=j, run_id=f"{prefix}-{rep}", mode=mode)

    return make


async def _timed(make: Callable[[int], Awaitable[Any]], reps: int) -> list[float]:
    """Wall times in seconds of `reps` awaits of `make(rep)`."""
    samples = []
    for rep in range(reps):
        gc.collect()
        start = time.perf_counter()
        await make(rep)
        samples.append(time.perf_counter() - start)
    return samples


_RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID
"""
_RAW_INSERT = "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_RAW_SELECT = (
    "SELECT seq, key, name, fingerprint, status, payload, created_at FROM rows"
    " WHERE run_id = ? ORDER BY seq"
)
_ENGINE_SELECT = (
    "SELECT seq, key, kind, name, fingerprint, status, attempt, payload, created_at"
    " FROM events WHERE run_id = ? ORDER BY seq"
)
_FINGERPRINT = "5f1d2c3b4a5968778695a4b3"


def _raw_connect(path: Path) -> sqlite3.Connection:
    """A plain connection with the journal's pragmas: WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_RAW_SCHEMA)
    return conn


def _raw_insert(conn: sqlite3.Connection, run_id: str, n: int, rows_per_commit: int) -> float:
    """Seconds for `n` transactions of `rows_per_commit` INSERTs each, a COMMIT after each."""
    gc.collect()
    seq = 0
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        for _ in range(rows_per_commit):
            seq += 1
            payload = orjson.dumps({"args": {"i": i}, "result": i + 1})
            created = datetime.now(UTC).isoformat()
            row = (run_id, seq, f"0:{i + 1}", "add", _FINGERPRINT, "completed", payload, created)
            conn.execute(_RAW_INSERT, row)
        conn.execute("COMMIT")
    return time.perf_counter() - start


def _raw_read(conn: sqlite3.Connection, sql: str, run_id: str, payload_column: int) -> float:
    """Seconds to select a run's rows in seq order and `orjson.loads` each payload."""
    gc.collect()
    start = time.perf_counter()
    rows = conn.execute(sql, (run_id,)).fetchall()
    loads = orjson.loads
    for row in rows:
        loads(row[payload_column])
    return time.perf_counter() - start


@dataclass
class Config:
    sizes: tuple[int, ...]
    reps: dict[int, int]
    io_n: int
    resume_n: int
    resume_reps: int


FULL = Config(
    sizes=(1_000, 10_000), reps={1_000: 7, 10_000: 3}, io_n=1_000, resume_n=100_000, resume_reps=3
)
QUICK = Config(sizes=(1_000,), reps={1_000: 3}, io_n=300, resume_n=10_000, resume_reps=2)


async def _bench_sizes(cfg: Config, workdir: Path) -> list[Row]:
    """Live and replay per step, the raw baselines, and their ratios, for each size."""
    rows: list[Row] = []
    db = workdir / "engine.db"
    raw = _raw_connect(workdir / "raw.db")
    engine_raw = sqlite3.connect(db, isolation_level=None)
    with Journal(db) as j:
        await run_with_summary(count_up, 0, journal=j, run_id="warmup")
        # What every run pays once (create, claim, read, finish, release).
        empty = await _timed(_runs(j, count_up, 0, "empty", "resume"), 7)
        rows.append(_row("info", "fixed cost of a live run, 0 steps", 0, empty, "µs/run"))
        empty = await _timed(_runs(j, count_up, 0, "empty", "replay"), 7)
        rows.append(_row("info", "fixed cost of a replay, 0 steps", 0, empty, "µs/run"))

        for n in cfg.sizes:
            # Engine and baseline repetitions alternate, so both see the same disk weather.
            live: list[float] = []
            commit: list[float] = []
            commit_2: list[float] = []
            replay: list[float] = []
            read: list[float] = []
            read_engine: list[float] = []
            for rep in range(cfg.reps[n]):
                live += await _timed(_runs(j, count_up, n, f"live-{n}-{rep}", "resume"), 1)
                commit.append(_raw_insert(raw, f"raw-{n}-{rep}", n, 1))
                commit_2.append(_raw_insert(raw, f"raw2-{n}-{rep}", n, 2))
            for rep in range(cfg.reps[n]):
                replay += await _timed(_runs(j, count_up, n, f"live-{n}-{rep}", "replay"), 1)
                read.append(_raw_read(raw, _RAW_SELECT, f"raw-{n}-{rep}", 5))
                read_engine.append(_raw_read(engine_raw, _ENGINE_SELECT, f"live-{n}-{rep}-0", 7))

            live_row = _row("live", "engine: journaled step, 1 commit/step", n, live, "µs/step")
            commit_row = _row(
                "live", "raw sqlite3: insert+commit, 1 row/commit", n, commit, "µs/row"
            )
            replay_row = _row("replay", "engine: served step (mode=replay)", n, replay, "µs/step")
            read_row = _row("replay", "raw sqlite3: select + orjson.loads", n, read, "µs/row")
            rows += [
                live_row,
                commit_row,
                _row("info", "raw sqlite3: insert+commit, 2 rows/commit", n, commit_2, "µs/commit"),
                replay_row,
                read_row,
                _row(
                    "info",
                    "engine's own rows read raw + orjson.loads",
                    n,
                    read_engine,
                    "µs/step",
                ),
                _ratio("live / raw commit", live_row, commit_row, LIVE_LIMIT),
                _ratio("replay / raw read+decode", replay_row, read_row, REPLAY_LIMIT),
            ]

        n = cfg.io_n
        io = await _timed(_runs(j, count_up_with_io, n, f"io-{n}", "resume"), 3)
        rows.append(_row("info", "engine: step that yields once, 2 commits/step", n, io, "µs/step"))
        io = []
        for _ in range(3):  # a step that waited live is handed out once the run's tasks settle
            io += await _timed(_runs(j, count_up_with_io, n, f"io-{n}", "replay"), 1)
        rows.append(_row("info", "engine: served step that waited live", n, io, "µs/step"))
        n = max(cfg.sizes)
        wide = await _timed(_runs(j, fan_out, n, f"gather-{n}", "resume"), 1)
        rows.append(_row("info", "engine: gather of n tasks, 1 step each", n, wide, "µs/task"))
        wide = []
        for _ in range(3):  # the same recorded run, replayed three times
            wide += await _timed(_runs(j, fan_out, n, f"gather-{n}", "replay"), 1)
        rows.append(
            _row("info", "engine: gather of n tasks, served in recorded order", n, wide, "µs/task")
        )
    engine_raw.close()
    raw.close()
    return rows


async def _interrupt(j: Journal, n: int, run_id: str) -> None:
    """Run `n` steps live, then stop at the last one as Ctrl+C would: the run stays resumable."""
    _Switch.armed = True
    try:
        await run_with_summary(count_up_then_checkpoint, n, journal=j, run_id=run_id)
    except Interrupt:
        pass
    else:
        raise AssertionError("the run was expected to be interrupted")
    finally:
        _Switch.armed = False


def _resume(j: Journal, n: int) -> Callable[[int], Awaitable[Any]]:
    async def make(rep: int) -> None:
        run_id = f"resume-{rep}"
        outcome = await run_with_summary(count_up_then_checkpoint, n, journal=j, run_id=run_id)
        summary = outcome.summary
        assert (summary.served, summary.reexecuted) == (n, 1), summary

    return make


async def _bench_resume(cfg: Config, workdir: Path) -> list[Row]:
    """A long run interrupted before its last step: read its events, resume it, replay it."""
    n = cfg.resume_n
    reps = range(cfg.resume_reps)
    with Journal(workdir / "resume.db") as j:
        for rep in reps:
            await _interrupt(j, n, f"resume-{rep}")
        read, read_models = [], []
        for rep in reps:
            gc.collect()
            start = time.perf_counter()
            rows = j.store.read_rows(f"resume-{rep}")
            read.append(time.perf_counter() - start)
            assert len(rows) == n + 1, len(rows)  # one row per step, plus the interrupted start
            del rows
            gc.collect()
            start = time.perf_counter()
            events = j.store.read_events(f"resume-{rep}")
            read_models.append(time.perf_counter() - start)
            del events
        resume = await _timed(_resume(j, n), len(reps))
        replay = await _timed(_runs(j, count_up_then_checkpoint, n, "resume", "replay"), len(reps))
    whole = _row("resume", "whole resume: serve n steps, run the last", n, resume, "s")
    whole.target = f"< {RESUME_LIMIT_S:g} s"
    whole.mark = "PASS" if whole.best < RESUME_LIMIT_S else "MISS"
    return [
        whole,
        _row("resume", "store.read_rows alone (the engine's read)", n, read, "s"),
        _row("resume", "store.read_events (rows as pydantic Events)", n, read_models, "s"),
        _row("resume", "replay of the finished run", n, replay, "s"),
    ]


# -- output ----------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "orjson": orjson.__version__,
        "pydantic": pydantic.VERSION,
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def render(rows: list[Row], env: dict[str, str], elapsed: float, where: str) -> str:
    lines = [
        f"journal-replay overhead: Python {env['python']}, SQLite {env['sqlite']}, "
        f"{env['platform']} ({env['cpus']} CPUs), orjson {env['orjson']}, "
        f"pydantic {env['pydantic']}",
        f"db files in {where} (WAL, synchronous=NORMAL); best and median of repetitions",
        "",
    ]
    header = ("section", "metric", "n", "best", "median", "unit", "target", "")
    table = [header] + [
        (
            r.section,
            r.metric,
            f"{r.n:,}" if r.n else "-",
            _fmt(r.best, r.unit),
            _fmt(r.median, r.unit),
            r.unit,
            r.target,
            r.mark,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {2, 3, 4}
    for k, line in enumerate(table):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    misses = [r for r in rows if r.mark == "MISS"]
    lines += [
        "",
        f"{sum(r.mark == 'PASS' for r in rows)} PASS, {len(misses)} MISS; "
        f"benchmark took {elapsed:.1f} s",
    ]
    return "\n".join(lines)


def _profile(cfg: Config, workdir: Path, which: str) -> None:
    """cProfile one run of the largest size; print the top functions with µs per step."""
    n = max(cfg.sizes)

    async def go() -> cProfile.Profile:
        with Journal(workdir / "profile.db") as j:
            await run_with_summary(count_up, n, journal=j, run_id="p")
            mode: Mode = "replay" if which == "replay" else "resume"
            run_id = "p" if mode == "replay" else "p2"
            profiler = cProfile.Profile()
            profiler.enable()
            await run_with_summary(count_up, n, journal=j, run_id=run_id, mode=mode)
            profiler.disable()
            return profiler

    profiler = asyncio.run(go())
    table: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    entries = sorted(table.items(), key=lambda item: item[1][2], reverse=True)
    print(f"cProfile of one {which} run, n={n:,} (profiler overhead inflates every number)")
    print(f"{'tottime µs/step':>16} {'cumtime µs/step':>16} {'calls/step':>11}  function")
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in entries[:30]:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(
            f"{tottime / n * 1e6:16.2f} {cumtime / n * 1e6:16.2f} {ncalls / n:11.2f}  "
            f"{name} ({where})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--dir", default=".bench", help="where to create the db directory (default ./.bench)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the db files afterwards")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument(
        "--profile", choices=("live", "replay"), help="cProfile one run instead of benchmarking"
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    parent = Path(args.dir)
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="overhead-", dir=parent))
    try:
        if args.profile:
            _profile(cfg, workdir, args.profile)
            return 0
        started = time.perf_counter()
        rows = asyncio.run(_bench_sizes(cfg, workdir))
        rows += asyncio.run(_bench_resume(cfg, workdir))
        elapsed = time.perf_counter() - started
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            if created_parent and not any(parent.iterdir()):
                parent.rmdir()
    env = environment()
    if args.json:
        document = {
            "environment": env,
            "quick": args.quick,
            "elapsed_s": elapsed,
            "results": [asdict(r) for r in rows],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(rows, env, elapsed, str(workdir)))
    return 1 if args.check and any(r.mark == "MISS" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
