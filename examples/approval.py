"""A refund that waits for a person's approval, with no process kept waiting.

    python examples/approval.py

1. The agent drafts a refund and asks for approval with `replay.signal("approval")`. Nobody has
   answered yet, so the run is left `waiting`, its lease released, and this process moves on:
   it could exit, and nothing would be lost.
2. A person approves from the command line: `journal signal refund-7 approval '{...}'`.
3. A worker process (`journal worker`) sees the run is due, resumes it (the draft is served from
   the journal, not made again) and finishes it.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from journal import Journal
from replay import Suspended, run, signal, step

HERE = Path(__file__).resolve().parent


@step(kind="llm")
async def draft_refund(order: str) -> dict[str, object]:
    """Stands in for an LLM that reads the ticket and proposes a refund."""
    print(f"   drafting a refund for {order} (an LLM call, paid once)")
    return {"order": order, "amount": 42.5, "reason": "arrived broken"}


@step(kind="tool")
async def pay_refund(order: str, amount: float) -> str:
    print(f"   paying {amount} for {order}")
    return f"refund-{order}-{amount}"


async def refund(order: str) -> str:
    proposal = await draft_refund(order)
    decision = await signal("approval")  # waits for a person: the run may suspend here
    if not decision.get("approved"):
        return f"declined by {decision.get('by')}"
    receipt = await pay_refund(order, float(str(proposal["amount"])))
    return f"{receipt}, approved by {decision.get('by')}"


def journal_command(*args: str) -> str:
    script = Path(sys.executable).with_name("journal")
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, cwd=HERE, check=True
    )
    return done.stdout.strip()


def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    from approval import refund as importable  # recorded as `approval:refund`, for workers

    print("1. the agent starts and asks for approval")
    with Journal(db) as journal:
        try:
            asyncio.run(run(importable, "order-7", journal=journal, run_id="refund-7"))
        except Suspended as waiting:
            print(f"   suspended: waiting for {waiting.waiting_for!r}; the process may exit")
        state = journal.run("refund-7")
        print(f"   run status: {state.status.value}, owner: {state.owner}")

    print("2. a person approves from the command line")
    approval = '{"approved": true, "by": "dana"}'
    print(f"   $ journal signal refund-7 approval '{approval}'")
    print("   " + journal_command("signal", "refund-7", "approval", approval, "--db", str(db)))

    print("3. a worker resumes what is due")
    print("   $ journal worker --once --import approval")
    print("   " + journal_command("worker", "--once", "--import", "approval", "--db", str(db)))
    with Journal(db) as journal:
        finished = journal.run("refund-7")
        print(f"   run status: {finished.status.value}, result: {finished.result!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "approval" / "journal.db")
    demo(parser.parse_args().db.resolve())


if __name__ == "__main__":
    main()
