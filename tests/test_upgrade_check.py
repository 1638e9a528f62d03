"""`journal upgrade-check` / `replay.upgrade_check`: the runs in flight replayed offline against
the code about to be deployed, in real processes, over a real journal file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import replay
from journal import Journal

_ORDERS = """\
import replay
from replay import step

@step
async def quote(order: int) -> int:
    return order * 10

@step
async def charge(order: int, amount: int) -> str:
    return f"charged {{order}}: {{amount}}"

async def checkout(order: int) -> str:
{body}
    approved = await replay.signal("approval")
    return await charge(order, amount if approved else 0)
"""
_V1 = "    amount = await quote(order)"
_V2 = """\
    if order == 42:  # a change that reaches one run in flight
        amount = await quote(order + 1)
    else:
        amount = await quote(order)"""

_RECORD = """\
import asyncio, sys
import replay
from journal import Journal
import orders

async def main() -> None:
    with Journal("runs.db") as journal:
        for order in range(100):
            try:
                await replay.run(orders.checkout, order, journal=journal, run_id=f"order-{order}")
            except replay.Suspended:
                pass
        journal.signal("order-7", "approval", True)
        await replay.resume_run(journal, "order-7")  # one run finished

asyncio.run(main())
"""


def _deploy(folder: Path, body: str) -> None:
    (folder / "orders.py").write_text(_ORDERS.format(body=body))


def _journal_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from replay._cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_the_one_run_that_would_diverge_among_100_is_found(tmp_path: Path) -> None:
    """100 runs recorded by v1 in a real process (99 waiting for approval, one finished). v2
    changes the path of order 42 only: the check, in another process, names that run, the
    step and the changed argument, and exits 3; the v1 code passes it."""
    _deploy(tmp_path, _V1)
    recorded = subprocess.run(
        [sys.executable, "-c", _RECORD], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert recorded.returncode == 0, recorded.stderr

    passed = _journal_cli(tmp_path, "upgrade-check", "--import", "orders", "--db", "runs.db")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "99 interrupted or waiting runs of orders checked: 99 continue" in passed.stdout

    _deploy(tmp_path, _V2)
    checked = _journal_cli(
        tmp_path, "upgrade-check", "--import", "orders", "--db", "runs.db", "--json"
    )
    assert checked.returncode == 3, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert (report["checked"], report["diverging"], report["unchecked"]) == (99, 1, 0)
    (diverging,) = [run for run in report["runs"] if run["verdict"] != "continues"]
    assert diverging["run_id"] == "order-42" and diverging["status"] == "waiting"
    assert "diverged from its journal at step 0:1" in diverging["detail"]
    assert "order: 42 -> 43" in diverging["detail"]
    assert all(
        "goes live at step 0:2 (replay.signal)" in run["detail"]
        for run in report["runs"]
        if run["run_id"] != "order-42"
    )

    words = _journal_cli(tmp_path, "upgrade-check", "--import", "orders", "--db", "runs.db")
    assert words.returncode == 3
    assert "diverges order-42 (orders:checkout, waiting, 0 steps served)" in words.stdout
    assert "on_divergence='fork'" not in words.stdout  # the hint in CLI words
    assert "98 continue on this code, 1 would diverge" in words.stdout

    finished = _journal_cli(
        tmp_path, "upgrade-check", "--db", "runs.db", "--status", "completed", "--json"
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    (done,) = json.loads(finished.stdout)["runs"]
    assert done["run_id"] == "order-7" and done["detail"] == "reproduced to its recorded end"
    with Journal(tmp_path / "runs.db") as journal:  # nothing was written by the checks
        assert {run.status.value for run in journal.runs(limit=None)} == {"waiting", "completed"}
        assert len(journal.events("order-42")) == 2  # the quote, the wait begun


@replay.step
async def _double(n: int) -> int:
    return 2 * n


async def _adds(n: int) -> int:
    return await _double(n) + 1


async def _fails(n: int) -> int:
    await _double(n)
    raise ValueError("no stock")


def test_each_kind_of_recorded_run_gets_its_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the code still raises continues; a finished run whose result now differs
    diverges; a run whose workflow is gone cannot be checked (and fails the gate)."""
    journal = Journal(tmp_path / "j.db")
    assert asyncio.run(replay.run(_adds, 1, journal=journal, run_id="adds")) == 3
    with pytest.raises(ValueError):
        asyncio.run(replay.run(_fails, 1, journal=journal, run_id="fails"))
    statuses = ["completed", "failed"]
    verdicts = {v.run_id: v for v in asyncio.run(replay.upgrade_check(journal, statuses=statuses))}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "adds": "continues",
        "fails": "continues",
    }
    assert verdicts["fails"].detail.startswith("reproduced the recorded failure: ValueError")
    assert verdicts["adds"].served == 1 and verdicts["adds"].ok

    async def changed(n: int) -> int:
        return await _double(n) + 2

    changed.__qualname__ = "_adds"  # what a new version of the module would hold
    with monkeypatch.context() as patch:
        patch.setattr(sys.modules[__name__], "_adds", changed)  # the same import path, new code
        (verdict,) = asyncio.run(replay.upgrade_check(journal, statuses=["completed"]))
    assert verdict.verdict == "diverges" and "the result differs" in verdict.detail, verdict

    journal.store.create_run(
        journal.run("adds").model_copy(update={"run_id": "gone", "workflow": "nowhere:flow"})
    )
    listed = asyncio.run(replay.upgrade_check(journal, statuses=["completed"], modules=["tests"]))
    assert [v.run_id for v in listed] == ["adds"]  # only workflows of the modules named
    (gone,) = [
        v
        for v in asyncio.run(replay.upgrade_check(journal, statuses=["completed"]))
        if v.run_id == "gone"
    ]
    assert gone.verdict == "unchecked" and "cannot import 'nowhere'" in gone.detail
    journal.close()


def test_bad_statuses_and_an_empty_journal_say_so(tmp_path: Path) -> None:
    Journal(tmp_path / "j.db").close()
    empty = _journal_cli(tmp_path, "upgrade-check", "--db", "j.db")
    assert empty.returncode == 0 and "no interrupted or waiting runs to check" in empty.stdout
    bad = _journal_cli(tmp_path, "upgrade-check", "--db", "j.db", "--status", "paused")
    assert bad.returncode == 1 and "unknown run status 'paused'" in bad.stderr
    assert "interrupted" in bad.stderr
    missing = _journal_cli(tmp_path, "upgrade-check", "--db", "j.db", "--import", "no_such_mod")
    assert missing.returncode == 1 and "cannot import 'no_such_mod'" in missing.stderr


_FLOWS_V1 = """\
import replay
from replay import step

@step
async def pick(n: int) -> int:
    return n + 1

async def fails(n: int) -> int:
    await pick(n)
    raise ValueError("boom")

async def waits(n: int) -> int:
    m = await pick(n)
    await replay.signal("go")
    return m

async def done(n: int) -> int:
    return await pick(n)
"""

_RECORD_FLOWS = """\
import asyncio, contextlib
import replay, flows
from journal import Journal

async def main() -> None:
    with Journal("runs.db") as journal:
        with contextlib.suppress(ValueError):
            await replay.run(flows.fails, 1, journal=journal, run_id="fails")
        with contextlib.suppress(replay.Suspended):
            await replay.run(flows.waits, 1, journal=journal, run_id="waits")
        await replay.run(flows.done, 1, journal=journal, run_id="done")

asyncio.run(main())
"""

_CHANGES = {
    "the same code": ({}, {"fails": "continues", "waits": "continues", "done": "continues"}),
    "another error, an early return, one more step": (
        {
            '    raise ValueError("boom")': '    raise RuntimeError("other")',
            '    await replay.signal("go")\n    return m': "    return m",
            "    return await pick(n)\n": "    return await pick(await pick(n))\n",
        },
        {"fails": "diverges", "waits": "diverges", "done": "diverges"},
    ),
    "a failure that now returns": (
        {'    raise ValueError("boom")': "    return 0"},
        {"fails": "diverges", "waits": "continues", "done": "continues"},
    ),
    "code that does not compile": (
        {"async def done(n: int) -> int:": "async def done(n: int -> int:"},
        {"fails": "unchecked", "waits": "unchecked", "done": "unchecked"},
    ),
}


@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_finished_and_failed_runs_pass_only_when_they_end_the_same(
    tmp_path: Path, change: str
) -> None:
    """A failed run passes only if the new code fails with the same error; one that now
    returns, or raises another error, diverges. A waiting run whose recorded wait the new code
    skips diverges (a resume would leave it behind); so does a finished run for which the new
    code asks one more step. Code that does not import cannot be checked, and fails the gate."""
    (tmp_path / "flows.py").write_text(_FLOWS_V1)
    recorded = subprocess.run(
        [sys.executable, "-c", _RECORD_FLOWS], cwd=tmp_path, capture_output=True, text=True
    )
    assert recorded.returncode == 0, recorded.stderr
    edits, expected = _CHANGES[change]
    source = _FLOWS_V1
    for old, new in edits.items():
        assert old in source
        source = source.replace(old, new)
    (tmp_path / "flows.py").write_text(source)
    statuses = "failed,waiting,completed"
    checked = _journal_cli(
        tmp_path, "upgrade-check", "--db", "runs.db", "--status", statuses, "--json"
    )
    report = json.loads(checked.stdout)
    assert {run["run_id"]: run["verdict"] for run in report["runs"]} == expected, report
    assert checked.returncode == (0 if set(expected.values()) == {"continues"} else 3)


_BLOCK = """\
import asyncio, os
import replay
from journal import Journal

async def main() -> None:
    with Journal(os.environ.get("BLOCK_DB", "elsewhere.db")) as journal:
        async with replay.journaled(journal, run_id="block-1"):
            await replay.sleep(0)
            raise SystemExit(0)  # interrupted inside the block

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_block_run_is_skipped_and_nothing_is_written(tmp_path: Path) -> None:
    """Replaying a journaled(...) block calls the function that holds it, which would run its
    own code (here: opening another journal) live: the check skips such runs and says so."""
    (tmp_path / "blocks.py").write_text(_BLOCK)
    made = subprocess.run(
        [sys.executable, "blocks.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "BLOCK_DB": "runs.db"},
    )
    assert made.returncode == 0, made.stderr
    checked = _journal_cli(tmp_path, "upgrade-check", "--db", "runs.db")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "skipped 1 journaled(...) block runs (block-1)" in checked.stdout
    assert not (tmp_path / "elsewhere.db").exists()  # the holder never ran


_FAILING = """\
import asyncio, os
import replay
from replay import step

@step
async def call_api(api_key: str, n: int) -> int:
    return n

async def leaks(n: int) -> int:
    key = os.environ["SHOP_API_KEY"]
    await call_api(key, n)
    raise RuntimeError(f"the API refused key {key}")

async def _fail(message: str) -> None:
    raise ValueError(message)

async def group(n: int) -> None:
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_fail("a"))
        tasks.create_task(_fail("b"))

@step(retries=1, retry_delay=0)
async def flaky(n: int) -> int:
    raise ConnectionError(f"down {n}")

async def gives_up(n: int) -> int:
    return await flaky(n)
"""

_RECORD_FAILING = """\
import asyncio, contextlib
import replay, failing
from journal import Journal

async def main() -> None:
    with Journal("runs.db") as journal:
        for name in ("leaks", "group", "gives_up"):
            with contextlib.suppress(Exception):
                await replay.run(getattr(failing, name), 1, journal=journal, run_id=name)

asyncio.run(main())
"""

_FAILING_CHANGES = {
    "the same code": ({}, {"leaks": "continues", "group": "continues", "gives_up": "continues"}),
    "other errors in the group, the failing step skipped": (
        {
            'tasks.create_task(_fail("a"))': 'tasks.create_task(_fail("other"))',
            "    return await flaky(n)": '    raise ConnectionError(f"down {n}")',
        },
        {"leaks": "continues", "group": "diverges", "gives_up": "diverges"},
    ),
}


@pytest.mark.parametrize("change", sorted(_FAILING_CHANGES))
def test_failed_runs_match_their_whole_recorded_failure_and_secrets_stay_redacted(
    tmp_path: Path, change: str
) -> None:
    """A failure whose message held a secret (redacted in the journal) matches the same
    failure again, and the check's output never shows the secret; an exception group matches
    member by member; a failure the new code reaches without the recorded failing step
    diverges."""
    secret = "sk-live-0123456789abcdef0123"
    env = {**os.environ, "SHOP_API_KEY": secret}
    (tmp_path / "failing.py").write_text(_FAILING)
    recorded = subprocess.run(
        [sys.executable, "-c", _RECORD_FAILING], cwd=tmp_path, capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert secret.encode() not in (tmp_path / "runs.db").read_bytes()
    edits, expected = _FAILING_CHANGES[change]
    source = _FAILING
    for old, new in edits.items():
        assert old in source
        source = source.replace(old, new)
    (tmp_path / "failing.py").write_text(source)
    command = [sys.executable, "-c", "from replay._cli import main; main()"]
    checked = subprocess.run(
        [*command, "upgrade-check", "--db", "runs.db", "--status", "failed", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    report = json.loads(checked.stdout)
    assert {run["run_id"]: run["verdict"] for run in report["runs"]} == expected, report
    assert secret not in checked.stdout + checked.stderr
