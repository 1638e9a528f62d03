"""Debug a failed production run offline, then ask "what if the model had answered X?".

    python examples/support_triage.py      # records two tickets, one fails; then a what-if

1. Two support tickets run through a triage agent on an SQLite journal. A fake LLM proposes an
   action; tools look up the order and issue refunds. Ticket 102 fails in "production": the
   model proposed a refund above the limit and the refund tool refused it.
2. The failed run is replayed offline (no LLM, no tools): the journal alone reproduces the
   same failure, so it can be stepped through locally.
3. Counterfactual replay: the run is forked with the model's answer overridden (a refund within
   the limit) and the fork is resumed: the recorded lookup is served, the refund and the reply
   run live. The parent run stays as it was; `Journal.diff` shows what changed.
4. Every run verifies: hash chains and seals intact. The API key sent to the LLM is redacted
   before it reaches the journal.

docs/debugging.md and docs/audit.md walk through the same journal with the `journal` command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from journal import Journal
from replay import replay_run, resume_run, run, step

OFFLINE_ENV = "SUPPORT_TRIAGE_OFFLINE"
REFUND_LIMIT = 200.0


class Proposal(BaseModel):
    """What the model proposes for a ticket."""

    action: str
    amount: float = 0.0
    reply: str


class RefundRefused(Exception):
    """The payments tool refused a refund."""


def _live(what: str) -> None:
    if os.environ.get(OFFLINE_ENV):
        raise RuntimeError(f"{what} was called live while the example is offline")


@step(kind="llm")
async def propose(ticket: str, order: dict[str, float], headers: dict[str, str]) -> Proposal:
    """A stand-in for a chat completion: a fixed policy, but journaled like a real call."""
    _live("the LLM")
    await asyncio.sleep(0.05)
    if "broken" in ticket:
        return Proposal(action="refund", amount=order["total"], reply="Sorry! Refunded in full.")
    return Proposal(action="answer", reply="Your parcel leaves the warehouse today.")


@step(kind="tool")
async def lookup_order(order_id: str) -> dict[str, float]:
    _live("the orders tool")
    await asyncio.sleep(0.02)
    return {"total": 250.0 if order_id == "A-102" else 40.0, "items": 2.0}


@step(kind="tool")
async def issue_refund(order_id: str, amount: float) -> str:
    _live("the payments tool")
    await asyncio.sleep(0.02)
    if amount > REFUND_LIMIT:
        raise RefundRefused(f"refund of {amount:.2f} is above the {REFUND_LIMIT:.2f} limit")
    return f"refund-{order_id}-{amount:.0f}"


@step(kind="tool")
def send_reply(ticket_id: str, text: str) -> str:
    _live("the mail tool")
    return f"sent to {ticket_id}: {text}"


async def triage(ticket_id: str, order_id: str, ticket: str) -> str:
    """The workflow: look up the order, ask the model, act, reply."""
    order = await lookup_order(order_id)
    api_key = os.environ.get("LLM_API_KEY", "sk-demo-not-a-real-key-1234")
    proposal = await propose(ticket, order, {"Authorization": f"Bearer {api_key}"})
    if proposal.action == "refund":
        await issue_refund(order_id, proposal.amount)
    return send_reply(ticket_id, proposal.reply)


def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()  # a fresh journal each time, so the walkthrough's output holds
    with Journal(db) as journal:
        print("1. production")
        answer = asyncio.run(
            run(triage, "T-101", "A-101", "where is my parcel?", journal=journal, run_id="T-101")
        )
        print(f"   T-101 completed: {answer}")
        try:
            asyncio.run(
                run(
                    triage,
                    "T-102",
                    "A-102",
                    "the blender arrived broken",
                    journal=journal,
                    run_id="T-102",
                )
            )
        except RefundRefused as exc:
            print(f"   T-102 failed: RefundRefused: {exc}")

        os.environ[OFFLINE_ENV] = "1"  # from here on, any live LLM or tool call raises
        print("2. replay of T-102 offline, every tool switched off")
        try:
            asyncio.run(replay_run(journal, "T-102", entry=f"{__file__}:triage"))
        except RefundRefused as exc:
            print(f"   reproduced the failure from the journal alone: {exc}")

        print("3. what if the model had proposed a refund within the limit?")
        recorded = journal.events("T-102")
        key = next(e.key for e in recorded if e.name.endswith("propose"))
        fork = journal.fork(
            "T-102",
            new_run_id="T-102-what-if",
            overrides={key: {"action": "refund", "amount": 150.0, "reply": "Refunded 150."}},
        )
        print(f"   forked T-102 at seq {fork.fork_seq} with step {key} overridden")
        del os.environ[OFFLINE_ENV]  # the fork continues live from the fork point
        outcome = asyncio.run(resume_run(journal, "T-102-what-if", entry=f"{__file__}:triage"))
        print(f"   {outcome.summary}")
        print(f"   result: {outcome.result}")
        diff = journal.diff("T-102", "T-102-what-if")
        for step_diff in diff.steps:
            if step_diff.change != "same":
                print(f"   diff {step_diff.key}: {step_diff.change} {list(step_diff.fields)}")

        print("4. audit")
        for verdict in journal.verify():
            print(f"   {verdict}")
        proposal_call = next(e for e in recorded if e.key == key)
        secret_kept = b"sk-demo" in (proposal_call.payload or b"")
        print(f"   the API key is in the journal: {secret_kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "support" / "journal.db")
    demo(parser.parse_args().db)


if __name__ == "__main__":
    main()
