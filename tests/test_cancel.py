"""Cancelling a run (`replay.cancel`, `journal cancel`): an unowned run at once, an owned one by
its owner at its next heartbeat; cancelled is final, sealed, and replays to the same place."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import replay
from journal import (
    Journal,
    RecordedError,
    RunCancelled,
    RunFinished,
    RunNotFound,
    RunStatus,
)
from replay import step
from tests.factories import dead_pid, make_owner

ran: list[str] = []


@step
async def approve_draft(text: str) -> str:
    ran.append(f"approve:{text}")
    return text.upper()


async def waits_for_approval(text: str) -> str:
    draft = await approve_draft(text)
    answer = await replay.signal("approval")
    return f"{draft}: {answer}"


def _intact(journal: Journal) -> None:
    verdicts = journal.verify()
    assert {v.verdict for v in verdicts} == {"intact"}, verdicts


def test_a_waiting_run_is_cancelled_at_once_and_stays_cancelled(journal: Journal) -> None:
    ran.clear()
    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(waits_for_approval, "hi", journal=journal, run_id="w"))
    assert journal.run("w").status is RunStatus.WAITING

    cancelled = replay.cancel(journal, "w", "the customer withdrew")
    assert cancelled.status is RunStatus.CANCELLED and cancelled.owner is None
    error = RecordedError.decode(cancelled.error or b"")
    assert error.type.endswith("RunCancelled") and "the customer withdrew" in error.message
    _intact(journal)  # sealed like any outcome, and the head knows it
    heads = [h.reason for h in journal.store.read_heads() if h.run_id == "w"]
    assert heads[-1] == "finished"

    with pytest.raises(RunCancelled, match="the customer withdrew"):
        asyncio.run(replay.run(waits_for_approval, "hi", journal=journal, run_id="w"))
    with pytest.raises(RunFinished, match="would never be read"):
        journal.signal("w", "approval", "yes")
    journal.store.send_signal("w", "approval", b'"yes"')  # one that raced the cancel in
    worker = replay.Worker(journal)
    assert asyncio.run(worker.run_once()) == 0
    assert journal.run("w").status is RunStatus.CANCELLED
    assert ran == ["approve:hi"]
    with pytest.raises(RunFinished, match="already finished \\(cancelled\\)"):
        replay.cancel(journal, "w")
    with pytest.raises(replay.RunNotFailed, match="cancelled"):
        asyncio.run(replay.retry(waits_for_approval, "hi", journal=journal, run_id="w"))


def test_an_interrupted_run_whose_owner_died_is_cancelled_at_once(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        replay.submit(waits_for_approval, "x", journal=journal, run_id="queued")
        journal.store.claim("queued", make_owner("gone", pid=dead_pid()), resuming=False)
        assert replay.cancel(journal, "queued").status is RunStatus.CANCELLED
        _intact(journal)
        with pytest.raises(RunNotFound):
            replay.cancel(journal, "no-such-run")


@pytest.mark.parametrize("in_step", [True, False], ids=["in-a-step", "between-steps"])
def test_a_running_run_is_stopped_by_its_owner_with_cancelled_error(
    journal: Journal, in_step: bool
) -> None:
    """The owner sees the request at its next heartbeat: the workflow gets CancelledError where
    it waits, may clean up (a step called while unwinding runs nothing), and the run ends
    cancelled; the caller of run() gets RunCancelled."""
    seen: list[str] = []

    @step
    async def slow_llm_call(n: int) -> int:
        seen.append(f"call:{n}")
        await asyncio.sleep(30 if in_step else 0)
        return n

    @step
    async def cleanup() -> None:
        seen.append("cleanup ran")

    async def agent() -> int:
        total = 0
        try:
            for n in range(1000):
                total += await slow_llm_call(n)
                if not in_step:
                    await asyncio.sleep(0.01)  # workflow code between steps
        except asyncio.CancelledError:
            seen.append("cancelled")
            try:
                await cleanup()
            except asyncio.CancelledError:
                seen.append("cleanup refused")
            raise
        return total

    async def scenario() -> None:
        task = asyncio.create_task(
            replay.run(agent, journal=journal, run_id="live", lease_seconds=0.6)
        )
        await asyncio.sleep(0.3)
        asked = replay.cancel(journal, "live", "operator stop")
        assert asked.status is RunStatus.RUNNING  # its owner is alive: asked, not done
        with pytest.raises(RunCancelled, match="operator stop"):
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert "cancelled" in seen and "cleanup refused" in seen and "cleanup ran" not in seen
    run = journal.run("live")
    assert run.status is RunStatus.CANCELLED and run.owner is None
    _intact(journal)

    # Replayed offline, it stops where the cancellation reached it live.
    seen.clear()
    with pytest.raises(RunCancelled, match="operator stop"):
        asyncio.run(replay.run(agent, journal=journal, run_id="live", mode="replay"))
    assert "cancelled" in seen
    assert not [s for s in seen if s.startswith("call:")]  # served, or cancelled unrun


def test_a_request_left_by_a_dead_owner_is_honoured_by_the_next_one(tmp_path: Path) -> None:
    ran.clear()
    with Journal(tmp_path / "j.db") as journal:
        replay.submit(waits_for_approval, "y", journal=journal, run_id="r")
        journal.store.claim("r", make_owner("alive"), resuming=False)  # this process: alive
        assert replay.cancel(journal, "r", "too late").status is RunStatus.RUNNING
        journal.store.release("r", "alive")  # the owner dies before its next heartbeat
        with pytest.raises(RunCancelled, match="too late"):
            asyncio.run(replay.resume_run(journal, "r"))
        assert ran == []  # nothing ran
        assert journal.run("r").status is RunStatus.CANCELLED
        _intact(journal)


_AGENT = """\
import asyncio, sys
from journal import Journal
from replay import run, step

@step
async def think(n: int) -> int:
    print("step", n, flush=True)
    await asyncio.sleep(0.2)
    return n

async def forever() -> int:
    n = 0
    while True:
        n += await think(n)

if __name__ == "__main__":
    with Journal(sys.argv[1]) as j:
        asyncio.run(run(forever, journal=j, run_id="forever", lease_seconds=1.5))
"""


def test_journal_cancel_stops_a_run_in_another_process(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(_AGENT)
    db = str(tmp_path / "runs.db")
    agent = subprocess.Popen(
        [sys.executable, "agent.py", db],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        agent.stdout.readline()  # it has started its first step
        script = str(Path(sys.executable).with_name("journal"))
        started = time.monotonic()
        done = subprocess.run(
            [script, "cancel", "forever", "--reason", "runaway loop", "--wait", "20", "--db", db,
             "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        shown = json.loads(done.stdout)
        assert shown["cancelled"] is True and shown["status"] == "cancelled"
        assert time.monotonic() - started < 10  # a third of the lease, plus the step's wait
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 1 and "RunCancelled" in err and "runaway loop" in err
    finally:
        if agent.poll() is None:
            agent.kill()
    listed = subprocess.run(
        [script, "runs", "--status", "cancelled", "--db", db, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["forever"]
    again = subprocess.run(
        [script, "cancel", "forever", "--db", db], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already finished (cancelled)" in again.stderr
    assert "Traceback" not in again.stderr
    verified = subprocess.run(
        [script, "verify", "--db", db], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout
    replayed = subprocess.run(
        [script, "replay", "forever", "--entry", "agent.py:forever", "--db", db],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "reproduced up to where the run was cancelled: runaway loop" in replayed.stdout
    assert os.path.exists(db)


async def asks_a_person(topic: str) -> str:
    return f"{topic}: {await replay.signal('answer')}"


async def delegates(topic: str) -> str:
    return await replay.run(asks_a_person, topic, journal=_journals[0])


_journals: list[Journal] = []


def test_cancelling_a_parent_cancels_its_unfinished_children(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        _journals[:] = [journal]
        with pytest.raises(replay.Suspended):
            asyncio.run(replay.run(delegates, "cats", journal=journal, run_id="parent"))
        child = next(r for r in journal.runs() if r.parent_run_id == "parent")
        assert child.status is RunStatus.WAITING
        replay.cancel(journal, "parent", "not needed")
        assert journal.run("parent").status is RunStatus.CANCELLED
        assert journal.run(child.run_id).status is RunStatus.CANCELLED
        error = RecordedError.decode(journal.run(child.run_id).error or b"")
        assert "its parent run 'parent' was cancelled: not needed" in error.message
        with pytest.raises(RunFinished, match="would never be read"):
            journal.signal(child.run_id, "answer", "late")
        journal.store.send_signal(child.run_id, "answer", b'"late"')  # raced the cancel in
        assert asyncio.run(replay.Worker(journal).run_once()) == 0
        _intact(journal)


def test_engine_signal_names_cannot_be_sent_by_hand(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        replay.submit(waits_for_approval, "z", journal=journal, run_id="s")
        with pytest.raises(ValueError, match="keeps for its own signals"):
            journal.signal("s", "replay.cancel", "just data")
    script = str(Path(sys.executable).with_name("journal"))
    sent = subprocess.run(
        [script, "signal", "s", "replay.child:x", "null", "--db", str(tmp_path / "j.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sent.returncode == 1 and "keeps for its own signals" in sent.stderr
    assert "Traceback" not in sent.stderr


def test_a_cancel_asked_just_before_the_run_suspends_is_not_lost(journal: Journal) -> None:
    """Found by the second adversarial round: the owner suspended (a long durable sleep)
    before its next look for requests, and the run stayed waiting for the hour."""

    @step
    async def draft() -> str:
        await asyncio.sleep(0.4)
        return "draft"

    async def sleeps_on_it() -> str:
        text = await draft()
        await replay.sleep(3600)
        return text

    async def scenario() -> None:
        task = asyncio.create_task(replay.run(sleeps_on_it, journal=journal, run_id="nap"))
        await asyncio.sleep(0.2)  # in `draft`; the owner looks for requests every 2 s
        assert replay.cancel(journal, "nap", "not worth the wait").status is RunStatus.RUNNING
        with pytest.raises(RunCancelled, match="not worth the wait"):
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert journal.run("nap").status is RunStatus.CANCELLED
    _intact(journal)
