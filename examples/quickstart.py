"""Crash, resume, replay: a research agent killed with SIGKILL mid-run loses nothing.

    python examples/quickstart.py          # what `make demo` runs

1. A child process starts the agent live on an SQLite journal: a fake LLM (0.3 s per call)
   plans the research, a search tool runs three queries concurrently, the LLM writes notes.
2. Part-way through, the parent kills the child with SIGKILL: no clean-up, no flush.
3. The parent resumes the same run: every step that completed is served from the journal
   (not paid for again), the step that was in flight runs again, the rest runs live.
4. The finished run is replayed offline: the LLM and the tool are switched off, and the
   journal alone reproduces the same report.

Every LLM or tool call that really executes appends a line to a ledger file, the stand-in for
your provider's bill, so the demo can show what each phase paid for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

from journal import EventStatus, Journal
from replay import now, run, run_with_summary, step, uuid4

RUN_ID = "research-cats-1"
TOPIC = "cats"
LEDGER_ENV = "QUICKSTART_LEDGER"
OFFLINE_ENV = "QUICKSTART_OFFLINE"


class Hit(BaseModel):
    title: str
    score: float


class Report(BaseModel):
    topic: str
    started: datetime
    report_id: UUID
    plan: list[str]
    hits: list[Hit]
    notes: list[str]
    summary: str


def _pay(what: str) -> None:
    """Record a real (billable) call: one line per execution, durable before we return."""
    if os.environ.get(OFFLINE_ENV):
        raise RuntimeError(f"offline replay must not call the outside world, but {what} ran")
    ledger = os.environ.get(LEDGER_ENV)
    if ledger:
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what}\n".encode())
        finally:
            os.close(fd)


@step(kind="llm")
async def ask_llm(prompt: str) -> str:
    """A stand-in for a chat-completion call: slow, billed, deterministic for the demo."""
    await asyncio.sleep(0.3)
    _pay(f"llm: {prompt[:40]}")
    if prompt.startswith("plan"):
        return "whiskers, purring, naps"
    if prompt.startswith("write"):
        return f"Cats, in {prompt.count(';') + 1} findings: " + prompt.split(":", 1)[1].strip()
    return f"notes on {prompt.split(':', 1)[-1].strip()}"


@step(name="search", kind="tool", retries=3)
async def search(query: str) -> list[Hit]:
    """A stand-in for a search tool; typed results come back as `Hit` models on replay too."""
    await asyncio.sleep(0.2)
    _pay(f"tool: search {query}")
    return [Hit(title=f"{query} #{n}", score=round(1 / n, 3)) for n in (1, 2)]


async def research(topic: str) -> Report:
    started = await now()  # the journaled clock: replay sees the time the live run saw
    report_id = await uuid4()
    plan = [q.strip() for q in (await ask_llm(f"plan research on {topic}")).split(",")]
    results = await asyncio.gather(*(search(q) for q in plan))  # concurrent, replays identically
    hits = sorted((hit for found in results for hit in found), key=lambda h: -h.score)
    notes = [await ask_llm(f"summarise: {hit.title}") for hit in hits[:3]]
    summary = await ask_llm(f"write the report: {'; '.join(notes)}")
    return Report(
        topic=topic,
        started=started,
        report_id=report_id,
        plan=plan,
        hits=hits,
        notes=notes,
        summary=summary,
    )


def _completed_steps(db: Path) -> int:
    """Completed steps in the journal so far (read by the parent while the child runs)."""
    if not db.exists():
        return 0
    with Journal(db) as j:
        if j.store.get_run(RUN_ID) is None:
            return 0
        return sum(e.status is EventStatus.COMPLETED for e in j.events(RUN_ID))


def _paid(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def _worker(db: Path) -> None:
    """The child: run the agent live until it finishes, or until it is killed."""
    with Journal(db) as j:
        asyncio.run(run(research, TOPIC, journal=j, run_id=RUN_ID))


def demo(db: Path) -> None:
    """The parent: start, kill, resume, replay; print what each phase served and paid for."""
    ledger = db.with_name(db.name + ".ledger")
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), ledger):
        stale.unlink(missing_ok=True)  # a fresh demo each time
    db.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, LEDGER_ENV: str(ledger)}
    os.environ[LEDGER_ENV] = str(ledger)

    print(f"1. start: the agent runs live in a child process (journal: {db})")
    child = subprocess.Popen([sys.executable, __file__, "--worker", "--db", str(db)], env=env)
    deadline = time.monotonic() + 30
    while _completed_steps(db) < 6 and time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the child exited early with code {child.returncode}")
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = _paid(ledger)
    print(
        f"2. kill -9 after {_completed_steps(db)} journaled steps "
        f"({len(before)} LLM/tool calls paid so far)"
    )

    with Journal(db) as j:
        resumed = asyncio.run(run_with_summary(research, TOPIC, journal=j, run_id=RUN_ID))
    paid_on_resume = _paid(ledger)[len(before) :]
    summary = resumed.summary
    print(
        f"3. resume: {summary.served} steps served from the journal, "
        f"{summary.reexecuted} re-executed (in flight at the kill), "
        f"{summary.executed} executed live; {len(paid_on_resume)} calls paid"
    )
    print(f"   report: {resumed.result.summary!r}")

    os.environ[OFFLINE_ENV] = "1"  # from here on, any real LLM or tool call raises
    with Journal(db) as j:
        replayed = asyncio.run(
            run_with_summary(research, TOPIC, journal=j, run_id=RUN_ID, mode="replay")
        )
        again = asyncio.run(run(research, TOPIC, journal=j, run_id=RUN_ID))
    assert replayed.result == resumed.result == again
    print(
        f"4. replay offline: {replayed.summary.served} steps served, "
        f"{replayed.summary.executed} executed; same report: {replayed.result == resumed.result}"
    )
    total = len(_paid(ledger))
    print(
        f"   calls paid in all: {total} "
        "(an uncrashed run pays 8; a step in flight at the kill may pay twice)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "quickstart" / "journal.db")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.db)
    else:
        demo(args.db)


if __name__ == "__main__":
    main()
