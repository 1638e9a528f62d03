"""Sequential steps with realistic results: what a step costs live and on replay, next to
plain `sqlite3` writing and reading rows of the same size.

    python benchmarks/step_values.py            # n = 2,000 steps per run, 5 repetitions
    python benchmarks/step_values.py --quick    # n = 500, 3 repetitions
    python benchmarks/step_values.py --check    # exit 1 if a target is missed

Three results an agent's steps return:

* `dict`   a tool's answer, about 150 bytes of JSON (`dict[str, Any]`);
* `str`    an LLM's text, about 4 KB;
* `model`  a pydantic model of about 150 bytes (a parsed reply), typed by its annotation.

Each workload is one run of n steps awaited one after the other, steps that finish without
yielding (one commit each, its start and outcome in one row). The floors, same file system,
same pragmas (WAL, synchronous=NORMAL):

* live    one INSERT + COMMIT per step of a row holding the same bytes the journal keeps
          (the call's arguments and the result's JSON);
* replay  one SELECT of the run's rows in order and the decode of each result into the same
          type: `orjson.loads` for the dict and the str, `model_validate_json` for the model.

Targets: live at most 1.5x the raw insert+commit, replay at most 3x the
raw select+decode.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import pydantic

from benchmarks.overhead import (
    LIVE_LIMIT,
    REPLAY_LIMIT,
    Row,
    _ratio,
    _raw_connect,
    _row,
    environment,
    render,
)
from journal import Journal
from replay import run_with_summary, step


class Reply(pydantic.BaseModel):
    role: str
    content: str
    tokens: int
    finish: str
    tool_calls: list[str]


def tool_answer(i: int) -> dict[str, Any]:
    return {
        "id": f"call_{i:08d}",
        "status": "ok",
        "rows": 3,
        "source": "inventory",
        "text": "widget A in stock; widget B on order; widget C discontinued",
    }


def llm_text(i: int) -> str:
    return f"answer {i}: " + "The quick brown fox jumps over the lazy dog. " * 91


def reply(i: int) -> Reply:
    return Reply(
        role="assistant",
        content=f"Reply number {i}: the order ships on Tuesday from the north depot.",
        tokens=40 + i % 7,
        finish="stop",
        tool_calls=["lookup_order"],
    )


@step
async def dict_step(i: int) -> dict[str, Any]:
    return tool_answer(i)


@step
async def str_step(i: int) -> str:
    return llm_text(i)


@step
async def model_step(i: int) -> Reply:
    return reply(i)


async def run_dicts(n: int) -> int:
    return sum([len(await dict_step(i)) for i in range(n)])


async def run_strs(n: int) -> int:
    return sum([len(await str_step(i)) for i in range(n)])


async def run_models(n: int) -> int:
    return sum([(await model_step(i)).tokens for i in range(n)])


WORKLOADS: list[tuple[str, Callable[[int], Any], Callable[[int], Any], Callable[[bytes], Any]]] = [
    ("dict ~150 B", run_dicts, lambda i: orjson.dumps(tool_answer(i)), orjson.loads),
    ("str ~4 KB", run_strs, lambda i: orjson.dumps(llm_text(i)), orjson.loads),
    (
        "pydantic model ~150 B",
        run_models,
        lambda i: reply(i).model_dump_json().encode(),
        Reply.model_validate_json,
    ),
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,
    fingerprint TEXT NOT NULL, status TEXT NOT NULL, payload BLOB, args BLOB,
    created_at TEXT NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID
"""


def raw_write(
    conn: sqlite3.Connection, run_id: str, n: int, value: Callable[[int], bytes]
) -> float:
    """Seconds for n transactions of one INSERT of a row like the journal's, and a COMMIT."""
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        args = orjson.dumps({"args": {"i": i}, "site": "workflow.py:12"})
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        conn.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, i + 1, f"0:{i + 1}", "step", "5f1d2c3b4a5968778695a4b3", "completed",
             value(i), args, created),
        )  # fmt: skip
        conn.execute("COMMIT")
    return time.perf_counter() - start


def raw_read(conn: sqlite3.Connection, run_id: str, decode: Callable[[bytes], Any]) -> float:
    """Seconds to select the run's rows in seq order and decode each result."""
    gc.collect()
    start = time.perf_counter()
    rows = conn.execute(
        "SELECT seq, key, name, fingerprint, status, payload FROM results"
        " WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ).fetchall()
    for row in rows:
        decode(row[5])
    return time.perf_counter() - start


async def measure(n: int, reps: int, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    raw = _raw_connect(workdir / "raw.db")
    raw.execute(_SCHEMA)
    with Journal(workdir / "engine.db") as j:
        await run_with_summary(run_dicts, 10, journal=j, run_id="warmup")
        for label, workflow, value, decode in WORKLOADS:
            live: list[float] = []
            write: list[float] = []
            replay: list[float] = []
            read: list[float] = []
            for rep in range(reps):  # engine and floor alternate: the same disk weather
                run_id = f"{label}-{rep}"
                gc.collect()
                start = time.perf_counter()
                await run_with_summary(workflow, n, journal=j, run_id=run_id)
                live.append(time.perf_counter() - start)
                write.append(raw_write(raw, run_id, n, value))
            for rep in range(reps):
                run_id = f"{label}-{rep}"
                gc.collect()
                start = time.perf_counter()
                await run_with_summary(workflow, n, journal=j, run_id=run_id, mode="replay")
                replay.append(time.perf_counter() - start)
                read.append(raw_read(raw, run_id, decode))
            live_row = _row("live", f"{label}: journaled step", n, live, "µs/step")
            write_row = _row("live", f"{label}: raw insert+commit", n, write, "µs/row")
            replay_row = _row("replay", f"{label}: served step", n, replay, "µs/step")
            read_row = _row("replay", f"{label}: raw select+decode", n, read, "µs/row")
            rows += [
                live_row,
                write_row,
                replay_row,
                read_row,
                _ratio(f"{label}: live / raw", live_row, write_row, LIVE_LIMIT),
                _ratio(f"{label}: replay / raw", replay_row, read_row, REPLAY_LIMIT),
            ]
    raw.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="n = 500, 3 repetitions")
    parser.add_argument("--n", type=int, default=None, help="steps per run (default 2,000)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5)")
    parser.add_argument("--dir", default=None, help="where the db files go (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 2_000)
    reps = args.reps or (3 if args.quick else 5)
    workdir = Path(tempfile.mkdtemp(prefix="step-values-", dir=args.dir))
    try:
        started = time.perf_counter()
        rows = asyncio.run(measure(n, reps, workdir))
        elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(rows, environment(), elapsed, str(workdir)))
    return 1 if args.check and any(r.mark == "MISS" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
