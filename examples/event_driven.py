"""An event-driven agent, killed mid-run, resumed paying nothing twice, replayed offline.

    python examples/event_driven.py [--db PATH]

The agent reacts to results as they arrive, the way agent frameworks do:

* three searches run at once (sync tools, handed to threads with `asyncio.to_thread`);
* as each search answers, a follow-up task is started to read that source: which follow-up
  gets which step key depends on the order the searches answered in;
* the slowest reader is given up on after a journaled timeout (`replay.wait_for`);
* a child run (`replay.run` inside the workflow) writes the summary.

1. A child process runs the agent live. The parent kills it with SIGKILL while the last reader
   is still working.
2. The parent resumes the run. The searches are served from the journal at once, and handed
   back in the order they answered live (not in the order they were started), so each reader
   task gets the key it had: nothing diverges, and only the read in flight runs again.
3. The finished run is replayed offline, tools switched off: the same report, at once (the
   timeout is not waited for again), nothing paid.

Every tool call that really runs appends a line to a ledger, the stand-in for a provider's bill.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

import replay
from journal import Journal

RUN_ID = "sources-1"
LEDGER_ENV, OFFLINE_ENV = "EVENTS_LEDGER", "EVENTS_OFFLINE"
SOURCES = ["archive", "news", "wiki"]


def _pay(what: str) -> None:
    if os.environ.get(OFFLINE_ENV):
        raise RuntimeError(f"{what} ran during an offline replay")
    with open(os.environ[LEDGER_ENV], "a") as ledger:
        ledger.write(what + "\n")


@replay.step(kind="tool")
def search(source: str) -> str:
    """A sync tool (a search client without an async API): run in a thread."""
    _pay(f"search {source}")
    time.sleep({"archive": 0.4, "news": 0.05, "wiki": 0.2}[source])  # not in creation order
    return f"{source}-hit"


@replay.step(kind="tool")
async def read(hit: str) -> str:
    _pay(f"read {hit}")
    await asyncio.sleep(3.0 if hit.startswith("wiki") else 0.2)
    return f"facts from {hit}"


@replay.step(kind="llm")
async def summarise(facts: list[str]) -> str:
    _pay("summarise")
    await asyncio.sleep(0.1)
    return " | ".join(facts)


async def writer(facts: list[str]) -> str:
    """The child run: its own journal, served to the parent on replay."""
    return await summarise(facts)


async def agent(journal_path: str) -> str:
    answers: asyncio.Queue[str] = asyncio.Queue()

    async def one_search(source: str) -> None:
        await answers.put(await asyncio.to_thread(search, source))

    async def one_read(hit: str) -> str:
        try:
            return await replay.wait_for(read(hit), 1.0)
        except TimeoutError:
            return f"{hit}: no answer in time"

    searches = [asyncio.create_task(one_search(source)) for source in SOURCES]
    readers = []
    for _ in SOURCES:  # a reader per answer, in the order the answers arrive
        readers.append(asyncio.create_task(one_read(await answers.get())))
    await asyncio.gather(*searches)
    facts = sorted(await asyncio.gather(*readers))
    with Journal(journal_path) as journal:
        return await replay.run(writer, facts, journal=journal)


def child(db: Path, mode: str) -> None:
    """One sitting of the run, in this process."""
    with Journal(db) as journal:
        outcome = asyncio.run(
            replay.run_with_summary(agent, str(db), journal=journal, run_id=RUN_ID, mode=mode)
        )
    print(f"  {outcome.summary}")
    print(f"  report: {outcome.result}")


def _spawn(db: Path, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--db", str(db), "--child", mode],
        env={**os.environ, **env},
        text=True,
    )


def _answered_reads(db: Path) -> int:
    if not db.exists():
        return 0
    with Journal(db) as journal:
        events = journal.events(RUN_ID) if journal.store.get_run(RUN_ID) else []
    return sum(1 for e in events if e.name == "read" and e.status.value == "completed")


def _answer_order(db: Path) -> list[str]:
    with Journal(db) as journal:
        done = [e for e in journal.events(RUN_ID) if e.name == "search" and e.payload]
    return [orjson.loads(e.payload or b"null") for e in done if e.status.value == "completed"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, default=Path(".journal") / "events.db")
    parser.add_argument("--child", choices=["resume", "replay"])
    args = parser.parse_args()
    if args.child:
        child(args.db, args.child)
        return
    args.db.parent.mkdir(parents=True, exist_ok=True)
    for stale in args.db.parent.glob(args.db.name + "*"):
        stale.unlink()
    ledger = args.db.parent / "ledger.txt"
    ledger.unlink(missing_ok=True)
    env = {LEDGER_ENV: str(ledger)}

    print("1. live, killed with SIGKILL while the slow reader works")
    running = _spawn(args.db, "resume", env)
    while _answered_reads(args.db) < 2:  # the fast readers are done, the slow one works
        time.sleep(0.02)
    running.send_signal(signal.SIGKILL)
    running.wait()
    paid_before = ledger.read_text().splitlines()
    print(f"  paid so far: {len(paid_before)} tool calls")
    print(f"  the searches answered in this order: {_answer_order(args.db)}")

    print("2. resumed")
    _spawn(args.db, "resume", env).wait()
    paid = ledger.read_text().splitlines()
    print(f"  paid on resume: {paid[len(paid_before) :]}")

    print("3. replayed offline, tools switched off")
    started = time.monotonic()
    _spawn(args.db, "replay", {**env, OFFLINE_ENV: "1"}).wait()
    print(f"  took {time.monotonic() - started:.1f} s; tool calls paid in all: {len(paid)}")


if __name__ == "__main__":
    main()
