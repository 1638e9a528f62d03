"""A run recorded by a `journaled(...)` block is replayed, resumed and retried from the CLI
without a hand-written entry: the function that holds the block is recorded and called again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import replay
from journal import Journal, RunStatus
from replay import journaled, step

_AGENT = """\
import asyncio, os, sys
from journal import Journal
from replay import journaled, step

@step
async def ask(q: str) -> str:
    with open("calls.txt", "a") as f:
        f.write(q + "\\n")
    if q == os.environ.get("BROKEN"):
        raise ValueError(q + " is broken")
    if q == os.environ.get("HANG"):
        print("hanging", flush=True)
        await asyncio.sleep(60)
    return q.upper()

async def main() -> None:
    with Journal("runs.db") as j:
        async with journaled(j, "block-1"):
            answers = [await ask(q) for q in ("one", "two", "three")]
            print(*answers)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).with_name("journal"))
    return subprocess.run(
        [script, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _calls(folder: Path) -> list[str]:
    path = folder / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_a_block_replays_from_the_cli_without_an_entry(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(_AGENT)
    subprocess.run([sys.executable, "agent.py"], cwd=tmp_path, check=True, capture_output=True)
    assert _calls(tmp_path) == ["one", "two", "three"]

    replayed = _cli("replay", "block-1", "--db", "runs.db", "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    shown = json.loads(replayed.stdout[replayed.stdout.index("{") :])
    assert shown["reproduced"] and shown["summary"]["served"] == 3
    assert _calls(tmp_path) == ["one", "two", "three"]  # offline: nothing ran

    # The replay reads the journal the CLI names, not the file the function opens.
    (tmp_path / "runs.db").rename(tmp_path / "copy.db")
    replayed = _cli("replay", "block-1", "--db", "copy.db", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "3 served" in replayed.stdout

    edited = _AGENT.replace('("one", "two", "three")', '("one", "TWO", "three")')
    (tmp_path / "agent.py").write_text(edited)
    diverged = _cli("replay", "block-1", "--db", "copy.db", cwd=tmp_path)
    assert diverged.returncode == 3
    assert "q: 'two' -> 'TWO'" in diverged.stderr


def test_an_interrupted_block_resumes_and_a_failed_one_retries_from_the_cli(
    tmp_path: Path,
) -> None:
    (tmp_path / "agent.py").write_text(_AGENT)
    env = {**os.environ, "HANG": "two"}
    agent = subprocess.Popen(
        [sys.executable, "agent.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=env
    )
    assert agent.stdout is not None and agent.stdout.readline().strip() == "hanging"
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    agent.stdout.close()
    resumed = _cli("resume", "block-1", "--db", "runs.db", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 served from the journal" in resumed.stdout and "ONE TWO THREE" in resumed.stdout
    assert _calls(tmp_path) == ["one", "two", "two", "three"]  # two was in flight: again

    (tmp_path / "calls.txt").unlink()
    broken = {**os.environ, "BROKEN": "three"}
    script = _AGENT.replace('"block-1"', '"block-2"')
    (tmp_path / "agent.py").write_text(script)
    failed = subprocess.run(
        [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, env=broken
    )
    assert failed.returncode == 1 and "three is broken" in failed.stderr
    retried = _cli("retry", "block-2", "--db", "runs.db", cwd=tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert _calls(tmp_path) == ["one", "two", "three", "three"]
    with Journal(tmp_path / "runs.db") as journal:
        assert journal.run("block-2").status is RunStatus.COMPLETED
        assert {v.verdict for v in journal.verify()} == {"intact"}


def test_a_block_in_a_function_with_arguments_asks_for_an_entry(tmp_path: Path) -> None:
    script = _AGENT.replace("def main() -> None:", "def main(db: str = 'runs.db') -> None:")
    (tmp_path / "agent.py").write_text(script)
    subprocess.run([sys.executable, "agent.py"], cwd=tmp_path, check=True, capture_output=True)
    replayed = _cli("replay", "block-1", "--db", "runs.db", cwd=tmp_path)
    assert replayed.returncode == 1
    assert "takes arguments" in replayed.stderr and "--entry" in replayed.stderr
    assert "Traceback" not in replayed.stderr


@step
async def shout(text: str) -> str:
    shouted.append(text)
    return text.upper()


shouted: list[str] = []
journal_path: list[Path] = []


async def holds_a_block() -> None:
    with Journal(journal_path[0]) as j:
        async with journaled(j, "held"):
            await shout("a")
            await shout("b")


async def holds_another_block() -> None:
    with Journal(journal_path[0]) as j:
        async with journaled(j, "not-the-recorded-one"):
            await shout("x")


def test_the_holder_is_recorded_and_called_again_in_python(tmp_path: Path) -> None:
    journal_path[:] = [tmp_path / "j.db"]
    shouted.clear()
    asyncio.run(holds_a_block())
    with Journal(tmp_path / "j.db") as journal:
        held = json.loads(journal.run("held").inputs or b"")["block"]
        assert held["function"] == f"{__name__}:holds_a_block"
        assert held["file"].endswith("test_block_reentry.py")
        outcome = asyncio.run(replay.replay_run(journal, "held"))
        assert outcome.summary.served == 2 and shouted == ["a", "b"]
        assert {v.verdict for v in journal.verify()} == {"intact"}

        # A holder that enters another run while re-entering this one is refused: it would
        # run live.
        from replay._blocks import BlockCall, WorkflowNotFound
        from replay._rerun import _call_holder

        with pytest.raises(WorkflowNotFound, match="not the one recorded"):
            asyncio.run(
                _call_holder(
                    journal, "held", f"{__name__}:holds_another_block",
                    BlockCall("held", journal, "replay"),
                )
            )  # fmt: skip
        assert shouted == ["a", "b"]
        assert journal.store.get_run("not-the-recorded-one") is None


def test_json_output_is_json_alone_and_a_holder_that_fails_first_says_so(tmp_path: Path) -> None:
    """Found by the second adversarial round: what the holder printed came before the JSON on
    stdout, and a holder that raised before its block was "the workflow raised"."""
    (tmp_path / "agent.py").write_text(_AGENT)
    subprocess.run([sys.executable, "agent.py"], cwd=tmp_path, check=True, capture_output=True)
    replayed = _cli("replay", "block-1", "--db", "runs.db", "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["reproduced"] is True
    assert "ONE TWO THREE" in replayed.stderr  # the holder's own print, out of the way

    early = _AGENT.replace(
        "    with Journal(", "    raise RuntimeError('no config here')\n    with Journal("
    )
    (tmp_path / "agent.py").write_text(early)
    failed = _cli("replay", "block-1", "--db", "runs.db", cwd=tmp_path)
    assert failed.returncode == 1
    assert "raised RuntimeError: no config here before it entered" in failed.stderr
    assert "does not reproduce" not in failed.stderr
