"""Durable time and human input: a run that waits is left `waiting`, and a worker finishes it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

import replay
from journal import Journal, RunFinished, RunStatus
from tests.fleet_workflows import approve_refund, nap

ROOT = Path(__file__).resolve().parents[1]


def _finish(journal: Journal) -> replay.WorkerStats:
    worker = replay.Worker(journal)
    asyncio.run(worker.run_once())
    return worker.stats


def test_a_signal_sent_before_the_run_asks_is_kept(journal: Journal) -> None:
    """Nothing sent is lost: a value sent early is returned the moment the run asks."""
    replay.submit(approve_refund, 30, journal=journal, run_id="early")
    assert journal.signal("early", "approval", {"approved": True}) == 1
    _finish(journal)
    assert journal.run("early").result == b'"refunded 30"'


def test_a_signal_to_a_run_that_never_asks_again_is_refused(journal: Journal) -> None:
    """A completed or cancelled run will never read a signal: sending one is a RunFinished
    saying so (it was accepted, "kept until the run asks for it"), on the CLI an exit 1. A
    failed run still takes one: its retry may ask for it."""
    replay.submit(approve_refund, 30, journal=journal, run_id="done")
    journal.signal("done", "approval", {"approved": True})
    _finish(journal)
    replay.submit(approve_refund, 40, journal=journal, run_id="called-off")
    replay.cancel(journal, "called-off")
    for run_id in ("done", "called-off"):
        with pytest.raises(RunFinished) as err:
            journal.signal(run_id, "approval", {"approved": True})
        assert "would never be read" in str(err.value) and run_id in str(err.value)
    assert journal.store.read_signal("done", "approval", 2) is None  # nothing was kept

    async def fails() -> None:
        raise RuntimeError("not yet")

    with pytest.raises(RuntimeError):
        asyncio.run(replay.run(fails, journal=journal, run_id="failed"))
    assert journal.signal("failed", "approval", True) == 1


def test_the_cli_refuses_a_signal_to_a_finished_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from replay._cli import app

    db = tmp_path / "j.db"
    with Journal(db) as journal:
        replay.submit(approve_refund, 30, journal=journal, run_id="done")
        journal.signal("done", "approval", {"approved": True})
        _finish(journal)
    cli = CliRunner().invoke(app, ["signal", "done", "approval", "true", "--db", str(db)])
    assert cli.exit_code == 1 and "would never be read" in cli.stderr


def test_waiting_for_a_signal_suspends_until_it_is_sent(journal: Journal) -> None:
    """No signal yet: Suspended reaches the caller, the run is waiting with no owner and not
    due; `signal()` makes it due, a worker finishes it, and a replay serves the signal."""
    with pytest.raises(replay.Suspended) as err:
        asyncio.run(replay.run(approve_refund, 50, journal=journal, run_id="r"))
    assert err.value.waiting_for == "approval" and "journal signal r approval" in str(err.value)
    run = journal.run("r")
    assert (run.status, run.owner, run.waiting_for) == (RunStatus.WAITING, None, "approval")
    assert journal.due() == [] and journal.interrupted() == []
    assert _finish(journal).completed == 0
    journal.signal("r", "approval", {"approved": False})
    assert [r.run_id for r in journal.due()] == ["r"]
    assert _finish(journal).completed == 1
    finished = journal.run("r")
    assert finished.status is RunStatus.COMPLETED and finished.result == b'"declined"'
    replayed = asyncio.run(
        replay.run_with_summary(approve_refund, 50, journal=journal, run_id="r", mode="replay")
    )
    assert replayed.result == "declined" and replayed.summary.executed == 0
    assert journal.verify("r")[0].sealed


def test_each_ask_takes_the_next_value_and_a_deadline_times_out(journal: Journal) -> None:
    """Two asks take values 1 and 2; an ask with a timeout and no value raises SignalTimeout
    once the deadline passes, journaled, so the replay raises it too."""

    async def twice_then_wait() -> list[object]:
        got: list[object] = [await replay.signal("vote"), await replay.signal("vote")]
        try:
            got.append(await replay.signal("vote", timeout=0.2))
        except replay.SignalTimeout as exc:
            got.append(str(exc))
        return got

    with pytest.raises(replay.Suspended):
        asyncio.run(replay.run(twice_then_wait, journal=journal, run_id="v"))
    journal.signal("v", "vote", "yes")
    journal.signal("v", "vote", "no")
    with pytest.raises(replay.Suspended) as err:  # the third ask waits, with a deadline
        asyncio.run(replay.run(twice_then_wait, journal=journal, run_id="v"))
    assert err.value.wake_at is not None
    time.sleep(0.25)
    assert [r.run_id for r in journal.due()] == ["v"]
    result = asyncio.run(replay.run(twice_then_wait, journal=journal, run_id="v"))
    assert result == ["yes", "no", "signal 'vote' did not arrive within 0.2 seconds"]
    again = asyncio.run(replay.run(twice_then_wait, journal=journal, run_id="v", mode="replay"))
    assert again == result


def test_a_long_durable_sleep_suspends_and_resumes_when_due(journal: Journal) -> None:
    """sleep() past suspend_after leaves the run waiting until its wake-up time; a worker
    continues it then, and the sleep is not counted again."""

    with pytest.raises(replay.Suspended) as err:
        asyncio.run(replay.run(nap, 0.3, journal=journal, run_id="n", suspend_after=0.05))
    assert err.value.wake_at is not None and err.value.waiting_for is None
    assert journal.due() == []
    time.sleep(0.35)
    assert _finish(journal).completed == 1
    assert journal.run("n").result == b'"rested"'


def test_a_journaled_block_can_wait_for_a_signal(journal: Journal) -> None:
    """Code you do not own may wait for input too: the block's run is left waiting."""

    async def block() -> object:
        async with replay.journaled(journal, "b") as handle:
            value = await replay.signal("go")
        assert handle.summary is not None
        return value

    with pytest.raises(replay.Suspended):
        asyncio.run(block())
    assert journal.run("b").status is RunStatus.WAITING
    journal.signal("b", "go", 7)
    assert asyncio.run(block()) == 7


def test_outside_a_run_signal_says_how_to_use_it() -> None:
    """signal() with no run around it explains itself."""
    with pytest.raises(RuntimeError, match="inside a workflow started with replay.run"):
        asyncio.run(replay.signal("approval"))


def test_a_suspended_process_exits_and_a_later_worker_finishes_the_run(tmp_path: Path) -> None:
    """Three processes: one starts the run and exits once it waits; `journal signal` sends
    the approval; `journal worker --once` continues and finishes the run."""
    db = tmp_path / "journal.db"
    starter = (
        "import asyncio, sys\n"
        "import replay\n"
        "from journal import Journal\n"
        "from tests.fleet_workflows import approve_refund, nap\n"
        "try:\n"
        "    asyncio.run(replay.run(approve_refund, 75, journal=Journal(sys.argv[1]),"
        " run_id='refund-75'))\n"
        "except replay.Suspended as waiting:\n"
        "    print('suspended:', waiting.waiting_for)\n"
    )
    started = subprocess.run(
        [sys.executable, "-c", starter, str(db)], capture_output=True, text=True, cwd=ROOT
    )
    assert started.returncode == 0 and "suspended: approval" in started.stdout, started.stderr
    assert "Traceback" not in started.stderr, started.stderr  # not "Task exception was never
    # retrieved" for the workflow's task: the run merely waits
    script = str(Path(sys.executable).with_name("journal"))
    sent = subprocess.run(
        [script, "signal", "refund-75", "approval", '{"approved": true}', "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert sent.returncode == 0 and "it was waiting for it and is due now" in sent.stdout
    worked = subprocess.run(
        [script, "worker", "--once", "--import", "tests.fleet_workflows", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert worked.returncode == 0 and "1 completed" in worked.stdout, worked.stderr
    with Journal(db) as journal:
        run = journal.run("refund-75")
        assert run.status is RunStatus.COMPLETED and run.result == b'"refunded 75"'
