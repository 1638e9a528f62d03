"""Nested runs: run() inside a running workflow is a child run, linked to its parent and served
to the parent on replay; it never shifts the parent's step keys."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import replay
from journal import EventKind, Journal, RunStatus

executions: Counter[str] = Counter()
crash = {"inside_child": False}


@replay.step(kind="tool")
async def research(topic: str) -> str:
    executions[f"research {topic}"] += 1
    await asyncio.sleep(0.01)
    if crash["inside_child"]:
        crash["inside_child"] = False
        raise KeyboardInterrupt  # the process is stopped inside the child run
    return f"notes on {topic}"


@replay.step(kind="llm")
async def write(text: str) -> str:
    executions[f"write {text}"] += 1
    return f"report: {text}"


async def child(topic: str) -> str:
    return await research(topic)


class ChildFailed(Exception):
    pass


async def failing_child(topic: str) -> str:
    await research(topic)
    raise ChildFailed(f"no sources for {topic}")


async def parent(topic: str, journal_url: str) -> list[str]:
    with Journal(journal_url) as journal:
        first = await write("intro")
        notes = await replay.run(child, topic, journal=journal)
        after = asyncio.create_task(write("outro"))  # its key must not move
        return [first, notes, await after]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    executions.clear()
    crash["inside_child"] = False


def test_a_child_run_is_linked_served_on_replay_and_shifts_no_key(tmp_path: object) -> None:
    """The child gets its own run (id derived from the parent's and the step's key,
    parent_run_id set); for the parent it is one `run` step. Replaying the parent serves the
    child's result without running it, and the task after it keeps its key."""
    url = str(tmp_path) + "/j.db"  # type: ignore[operator]
    with Journal(url) as journal:
        live = asyncio.run(replay.run(parent, "owls", url, journal=journal, run_id="p"))
        assert live == ["report: intro", "notes on owls", "report: outro"]
        kid = journal.run("p/0:2")
        assert kid.parent_run_id == "p" and kid.status is RunStatus.COMPLETED
        steps = [(e.key, e.kind) for e in journal.events("p") if e.status.value == "completed"]
        assert steps == [("0:1", EventKind.LLM), ("0:2", EventKind.RUN), ("0/1:1", EventKind.LLM)]
        executions.clear()
        replayed = asyncio.run(
            replay.run_with_summary(parent, "owls", url, journal=journal, run_id="p", mode="replay")
        )
        assert replayed.result == live and executions == Counter()
        assert replayed.summary.unconsumed == ()


def test_a_crash_inside_the_child_resumes_both_runs_paying_nothing_twice(tmp_path: object) -> None:
    """Stopped inside the child: resuming the parent resumes the child (its finished steps
    served), then the parent goes on."""
    url = str(tmp_path) + "/j.db"  # type: ignore[operator]
    crash["inside_child"] = True
    with Journal(url) as journal:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(replay.run(parent, "bats", url, journal=journal, run_id="p"))
        assert journal.run("p/0:2").status is RunStatus.RUNNING
        executions.clear()
        result = asyncio.run(replay.run(parent, "bats", url, journal=journal, run_id="p"))
    assert result == ["report: intro", "notes on bats", "report: outro"]
    assert executions == Counter({"research bats": 1, "write outro": 1})


def test_a_child_failure_is_the_parent_steps_failure_live_and_on_replay(tmp_path: object) -> None:
    """The child's exception reaches the parent as its own type, live and on replay."""
    url = str(tmp_path) + "/j.db"  # type: ignore[operator]

    async def careful(journal_url: str) -> str:
        with Journal(journal_url) as journal:
            try:
                return await replay.run(failing_child, "moles", journal=journal, run_id="kid")
            except ChildFailed as exc:
                return f"handled: {exc}"

    with Journal(url) as journal:
        live = asyncio.run(replay.run(careful, url, journal=journal, run_id="c"))
        assert live == "handled: no sources for moles"
        assert journal.run("kid").status is RunStatus.FAILED
        assert journal.run("kid").parent_run_id == "c"
        replayed = asyncio.run(replay.run(careful, url, journal=journal, run_id="c", mode="replay"))
    assert replayed == live


async def approval_child() -> str:
    return "approved" if await replay.signal("approve") else "refused"


async def waiting_parent(journal_url: str) -> str:
    with Journal(journal_url) as journal:
        verdict = await replay.run(approval_child, journal=journal, run_id="approval")
        return await write(verdict)


def test_a_waiting_child_leaves_its_parent_waiting_until_it_finishes(tmp_path: object) -> None:
    """The child waits for a signal: the parent is left waiting for the child. The signal makes
    the child due; a worker finishes it, which makes the parent due; a worker finishes that."""
    url = str(tmp_path) + "/j.db"  # type: ignore[operator]
    with Journal(url) as journal:
        with pytest.raises(replay.Suspended) as err:
            asyncio.run(replay.run(waiting_parent, url, journal=journal, run_id="wp"))
        assert err.value.run_id == "wp"
        assert journal.run("wp").status is RunStatus.WAITING
        assert journal.run("approval").status is RunStatus.WAITING
        journal.signal("approval", "approve", True)

        async def two_rounds() -> None:
            worker = replay.Worker(journal)
            await worker.run_once()  # the child is due: finished, and the parent woken
            assert journal.run("approval").status is RunStatus.COMPLETED
            await worker.run_once()

        asyncio.run(two_rounds())
        assert journal.run("wp").status is RunStatus.COMPLETED
        assert journal.run("wp").result == b'"report: approved"'
