"""Bytes a journal keeps per turn of a long conversation, with chunks and with records whole.

    python benchmarks/conversation.py [--turns 50] [--system-bytes 2000] [--postgres URL]

An agent talks to the local OpenAI-compatible test server through the real OpenAI SDK,
journaled by `replay.integrations.instrument()`: each turn adds a user message of about 200
bytes and the answer, and sends the whole conversation again, with a system prompt and four
tool definitions. Printed for both ways of keeping a request (`chunks`, the default since
SQLite schema 6, and `whole`, as before: chunking switched off in this process):

- bytes the journal holds (events' payload and args, and the chunk tables' rows) after the
  whole run, and per turn on average;
- what turn 10 and the last turn each added (a journal that grows with its length adds more
  at the end);
- the SQLite file's size after a checkpoint;
- the time to read the run back (`read_rows`, what a replay reads) and ms per turn live.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai

import journal.stores._chunked as chunked
import replay
from journal import Journal, SQLiteStore
from replay.integrations import instrument, uninstrument
from tests.llm_server import serve

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{n}",
            "description": f"Looks up fact number {n} in the reference tables. " * 4,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for n in range(4)
]


async def _agent(base_url: str, turns: int, system: str, after_turn: Callable[[], None]) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    async with openai.AsyncOpenAI(api_key="sk-bench-0000", base_url=base_url) as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": f"question {turn}: " + "why? " * 38})
            completion = await client.chat.completions.create(
                model="gpt-bench", messages=cast(Any, messages), tools=cast(Any, TOOLS)
            )
            messages.append({"role": "assistant", "content": completion.choices[0].message.content})
            after_turn()


def _stored_bytes(conn: sqlite3.Connection) -> int:
    (events,) = conn.execute(
        "SELECT coalesce(sum(length(payload)), 0) + coalesce(sum(length(args)), 0) FROM events"
    ).fetchone()
    (blobs,) = conn.execute(
        "SELECT coalesce(sum(length(name) + length(body)), 0) FROM chunk_blobs"
    ).fetchone()
    (nodes,) = conn.execute(
        "SELECT coalesce(sum(length(name) + coalesce(length(prev), 0) + length(item)), 0)"
        " FROM chunk_nodes"
    ).fetchone()
    return int(events + blobs + nodes)


def measure(base_url: str, turns: int, system: str, whole: bool, folder: Path) -> dict[str, Any]:
    chunked.SPLIT_FROM = 1 << 62 if whole else SPLIT_FROM
    db = folder / ("whole.db" if whole else "chunks.db")
    journal = Journal(store=SQLiteStore(db))
    peek = sqlite3.connect(db)
    sizes: list[int] = []

    async def go() -> None:
        async with replay.journaled(journal, "talk"):
            await _agent(base_url, turns, system, lambda: sizes.append(_stored_bytes(peek)))

    started = time.perf_counter()
    asyncio.run(go())
    live = time.perf_counter() - started
    reads = []
    for _ in range(5):
        began = time.perf_counter()
        journal.store.read_rows("talk")
        reads.append(time.perf_counter() - began)
    journal.close()
    peek.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    peek.close()
    return {
        "total": sizes[-1],
        "per_turn": sizes[-1] / turns,
        "turn_10": sizes[9] - sizes[8],
        "last": sizes[-1] - sizes[-2],
        "file": db.stat().st_size,
        "read_ms": min(reads) * 1000,
        "live_ms_per_turn": live * 1000 / turns,
    }


SPLIT_FROM = chunked.SPLIT_FROM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--system-bytes", type=int, default=2000)
    args = parser.parse_args()
    system = ("You are a careful agent. " * (args.system_bytes // 25 + 1))[: args.system_bytes]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = serve(folder / "requests.log")
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        instrument()
        try:
            results = {
                name: measure(base_url, args.turns, system, name == "whole", folder)
                for name in ("whole", "chunks")
            }
        finally:
            uninstrument()
            server.shutdown()
            server.server_close()
    print(f"{args.turns}-turn conversation, system prompt {args.system_bytes} B, 4 tools")
    print(
        f"{'kept':8} {'bytes':>11} {'bytes/turn':>11} {'turn 10':>9} {'last turn':>10}"
        f" {'file':>11} {'read run':>9} {'live/turn':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:8} {r['total']:>11,} {r['per_turn']:>11,.0f} {r['turn_10']:>9,}"
            f" {r['last']:>10,} {r['file']:>11,} {r['read_ms']:>7.2f}ms"
            f" {r['live_ms_per_turn']:>8.2f}ms"
        )
    ratio = results["whole"]["total"] / results["chunks"]["total"]
    print(f"whole / chunks: {ratio:.1f}x the bytes")


if __name__ == "__main__":
    main()
