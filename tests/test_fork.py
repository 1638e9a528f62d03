"""Forks: retry from step N, and counterfactual replay with an overridden result."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

import replay
from journal import EventKind, ForkRefused, Journal, RunConflict, RunStatus

calls: Counter[str] = Counter()


@replay.step(kind="llm")
async def classify(ticket: str) -> str:
    calls["classify"] += 1
    await asyncio.sleep(0)
    return "refund" if "money back" in ticket else "question"


@replay.step(kind="tool")
def issue_refund(ticket: str) -> dict[str, Any]:
    calls["issue_refund"] += 1
    return {"refunded": True, "ticket": ticket}


@replay.step(kind="llm")
async def answer(ticket: str) -> str:
    calls["answer"] += 1
    return f"Here is help with: {ticket}"


async def support_agent(ticket: str) -> str:
    label = await classify(ticket)
    if label == "refund":
        receipt = issue_refund(ticket)
        return f"refunded={receipt['refunded']}"
    return await answer(ticket)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def record(journal: Journal, ticket: str = "I want my money back", run_id: str = "t1") -> str:
    return asyncio.run(replay.run(support_agent, ticket, journal=journal, run_id=run_id))


def test_fork_at_a_seq_copies_the_prefix_and_resumes_live_from_there(journal: Journal) -> None:
    """A fork keeps the events before `at`; resuming it serves them and re-runs the rest."""
    assert record(journal) == "refunded=True"
    parent_events = journal.events("t1")
    refund_seq = next(e.seq for e in parent_events if e.name.endswith("issue_refund"))
    fork = journal.fork("t1", at=refund_seq, new_run_id="t1-retry")
    assert (fork.parent_run_id, fork.fork_seq, fork.status) == ("t1", refund_seq, RunStatus.RUNNING)
    events = journal.events("t1-retry")
    assert [e.payload for e in events[:-1]] == [e.payload for e in parent_events[: refund_seq - 1]]
    marker = events[-1]
    assert marker.kind is EventKind.FORK and marker.seq == refund_seq
    assert orjson.loads(marker.payload or b"")["parent_seal"] == journal.run("t1").seal

    calls.clear()
    outcome = asyncio.run(replay.resume_run(journal, "t1-retry"))
    assert outcome.result == "refunded=True"
    assert calls == Counter({"issue_refund": 1})  # classify was served, the refund ran again
    assert outcome.summary.served == 1 and outcome.summary.executed == 1
    assert [v.verdict for v in journal.verify("t1-retry")] == ["intact"]
    assert journal.verify("t1-retry")[0].sealed


def test_a_forks_duration_counts_from_its_own_first_step(tmp_path: Any) -> None:
    """The events a fork copies keep their parent's times: `journal runs` measured a fork from
    its parent's first step (a fork cancelled before it ran showed the parent's age)."""
    import time

    with Journal(tmp_path / "j.db") as journal:
        record(journal)
        parent = journal.events("t1")
        time.sleep(0.3)
        idle = journal.fork("t1", at=parent[-1].seq, new_run_id="idle")
        replay.cancel(journal, idle.run_id)
        resumed = journal.fork("t1", at=parent[-1].seq, new_run_id="resumed")
        time.sleep(0.3)
        asyncio.run(replay.resume_run(journal, resumed.run_id))
        digests = {d.run.run_id: d for d in journal.digests()}
        assert digests["idle"].duration.total_seconds() == 0
        own = [e for e in journal.events("resumed") if e.seq > parent[-1].seq]
        run = journal.run("resumed")
        assert run.finished_at is not None
        assert digests["resumed"].duration == run.finished_at - own[0].created_at
        assert digests["resumed"].duration.total_seconds() < 0.3


def test_override_replaces_a_recorded_result_and_the_code_takes_the_other_path(
    journal: Journal,
) -> None:
    """Counterfactual replay: 'what if the model had said question'. The fork serves the
    overridden answer, so the workflow answers instead of refunding; the parent is unchanged."""
    record(journal)
    classify_key = journal.events("t1")[0].key
    fork = journal.fork("t1", overrides={classify_key: "question"}, new_run_id="what-if")
    calls.clear()
    outcome = asyncio.run(replay.resume_run(journal, "what-if"))
    assert outcome.result == "Here is help with: I want my money back"
    assert calls == Counter({"answer": 1})
    assert fork.fork_seq == 3  # classify waited: started at 1, completed at 2
    marker = journal.events("what-if")[2]
    assert orjson.loads(marker.payload or b"")["overrides"] == [classify_key]
    assert journal.run("t1").result == b'"refunded=True"'
    assert all(v.ok for v in journal.verify())


def test_fork_refuses_what_it_cannot_do(journal: Journal) -> None:
    """Bad seqs, unknown keys, a non-completed override target and a taken id are refused."""
    record(journal)
    with pytest.raises(ForkRefused, match="between 1"):
        journal.fork("t1", at=99)
    with pytest.raises(ForkRefused, match="no step '0:9'.*Its steps: 0:1, 0:2"):
        journal.fork("t1", overrides={"0:9": 1})
    with pytest.raises(ForkRefused, match="ends in a started row"):
        journal.fork("t1", at=2, overrides={"0:1": "question"})
    journal.fork("t1", new_run_id="taken")
    with pytest.raises(RunConflict):
        journal.fork("t1", new_run_id="taken")
    nothing = journal.fork("t1", at=1)
    assert [e.kind for e in journal.events(nothing.run_id)] == [EventKind.FORK]
    assert nothing.run_id.startswith("t1~fork-")


def test_a_fork_of_a_tampered_run_is_refused(db_path: Any) -> None:
    """Copying edited events into a fork would launder them: the fork is refused."""
    import sqlite3

    with Journal(db_path) as journal:
        record(journal)
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute("UPDATE events SET payload = CAST('\"question\"' AS BLOB) WHERE seq = 2")
    conn.commit()
    conn.close()
    with Journal(db_path) as journal, pytest.raises(ForkRefused, match="does not verify"):
        journal.fork("t1")


def test_resume_run_finishes_an_interrupted_run_and_returns_a_finished_one(
    journal: Journal,
) -> None:
    """resume_run continues a run that stopped mid-way; on a finished run nothing runs."""

    async def stops_after_classify(ticket: str) -> str:
        await classify(ticket)
        raise KeyboardInterrupt

    stops_after_classify.__qualname__ = support_agent.__qualname__
    stops_after_classify.__module__ = support_agent.__module__
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(stops_after_classify, "money back", journal=journal, run_id="t2"))
    calls.clear()
    outcome = asyncio.run(replay.resume_run(journal, "t2"))
    assert outcome.result == "refunded=True" and calls == Counter({"issue_refund": 1})
    again = asyncio.run(replay.resume_run(journal, "t2"))
    assert again.summary.already_finished and again.result == "refunded=True"
