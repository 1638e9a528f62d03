"""A 40-turn conversation whose journal grows by its new messages only.

    python examples/long_conversation.py    # offline: it starts a local OpenAI-compatible server

Every request of a chat agent sends the whole conversation again (system prompt, tools, every
message so far). The journal keeps each message once, as a content-addressed chunk, so each
turn adds about the same number of bytes however long the conversation has grown. The example
prints what turns 10, 20, 30 and 40 added to the journal and what each request weighed, then
replays the run offline (the server stopped) and verifies it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from pathlib import Path
from typing import Any, cast

import openai
from mock_llm_server import MockLLM  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import journaled
from replay.integrations import instrument

RUN_ID = "long-conversation-1"
SYSTEM = "You are a patient tutor. Explain every step and check the student's reasoning. " * 25


def stored_bytes(db: Path) -> int:
    """What the journal holds: events' payloads and arguments, and the chunks."""
    with sqlite3.connect(db) as conn:
        (events,) = conn.execute(
            "SELECT coalesce(sum(length(payload)), 0) + coalesce(sum(length(args)), 0) FROM events"
        ).fetchone()
        (chunks,) = conn.execute(
            "SELECT (SELECT coalesce(sum(length(name) + length(body)), 0) FROM chunk_blobs)"
            " + (SELECT coalesce(sum(length(name) + coalesce(length(prev), 0) + length(item)),"
            " 0) FROM chunk_nodes)"
        ).fetchone()
    return int(events + chunks)


async def tutor(base_url: str, turns: int, after_turn: Any) -> list[str]:
    """Plain OpenAI SDK code: the whole conversation goes with every request."""
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    answers = []
    async with openai.AsyncOpenAI(api_key="sk-example-not-real", base_url=base_url) as client:
        for turn in range(1, turns + 1):
            messages.append({"role": "user", "content": f"Question {turn}: why? " * 20})
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=cast(Any, messages)
            )
            answer = completion.choices[0].message.content or ""
            messages.append({"role": "assistant", "content": answer})
            answers.append(answer)
            after_turn(turn, len(str(messages)))
    return answers


async def main(db: Path, turns: int) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    instrument()
    server = MockLLM(delay=0.0)
    sizes = [0]

    def after_turn(turn: int, request: int) -> None:
        sizes.append(stored_bytes(db))
        if turn % 10 == 0:
            added = sizes[turn] - sizes[turn - 1]
            print(f"turn {turn}: request about {request:,} bytes, journal +{added:,} bytes")

    with Journal(db) as journal:
        async with journaled(journal, RUN_ID):
            live = await tutor(server.base_url, turns, after_turn)
        server.stop()
        async with journaled(journal, RUN_ID, mode="replay") as run:
            replayed = await tutor(server.base_url, turns, lambda *_: None)
        print(f"journal in all: {sizes[-1]:,} bytes for {turns} turns")
        print(f"replay offline: {run.summary.served} served; same answers: {replayed == live}")
        print(f"verify: {all(v.ok for v in journal.verify(RUN_ID))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "chat" / "journal.db")
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.db, args.turns))
