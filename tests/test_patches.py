"""`replay.patched` / `replay.deprecate_patch`: new code deployed under runs in flight, the old
runs keep their old branch and the new ones take the new branch, in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import replay
from journal import EventKind, Journal, RunStatus

_FLOWS = """\
import replay
from replay import step

CALLS = "calls.txt"

def _ran(name: str) -> None:
    with open(CALLS, "a") as f:
        f.write(name + "\\n")

@step
async def draft(topic: str) -> str:
    _ran("draft")
    return f"draft about {{topic}}"

@step
async def careful_draft(topic: str) -> str:
    _ran("careful_draft")
    return f"careful draft about {{topic}}"

@step
async def publish(text: str) -> str:
    _ran("publish")
    return f"published: {{text}}"

async def article(topic: str) -> str:
{body}
    approval = await replay.signal("approval")
    return await publish(f"{{text}} ({{approval}})")
"""
_V1 = "    text = await draft(topic)"
_V2 = """\
    if replay.patched("careful-drafts"):
        text = await careful_draft(topic)
    else:
        text = await draft(topic)"""
_V3 = """\
    replay.deprecate_patch("careful-drafts")
    text = await careful_draft(topic)"""

_DRIVER = """\
import asyncio, os, sys
import replay
from journal import Journal
import flows

async def main(action: str, run_id: str) -> None:
    with Journal("runs.db") as journal:
        if action == "start":
            try:
                await replay.run(flows.article, "owls", journal=journal, run_id=run_id)
            except replay.Suspended:
                print("waiting")
        elif action == "approve":
            journal.signal(run_id, "approval", "ok")
            accepted = [v for v in os.environ.get("ACCEPT", "").split(",") if v]
            try:
                outcome = await replay.resume_run(journal, run_id, accept_versions=accepted)
            except replay.VersionNotAccepted as exc:
                print("refused:", exc.recorded, exc.current)
                return
            print(outcome.result)
        else:
            outcome = await replay.replay_run(journal, run_id)
            print("replayed", outcome.result)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _deploy(folder: Path, body: str) -> None:
    (folder / "flows.py").write_text(_FLOWS.format(body=body))
    (folder / "driver.py").write_text(_DRIVER)


def _drive(folder: Path, action: str, run_id: str, version: str, accept: str = "") -> str:
    """The driver run as the deploy of `version` would run it (`JOURNAL_VERSION`), continuing
    runs of the versions in `accept` too."""
    done = subprocess.run(
        [sys.executable, "driver.py", action, run_id],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "JOURNAL_VERSION": version, "ACCEPT": accept},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def _calls(folder: Path) -> list[str]:
    calls, path = [], folder / "calls.txt"
    if path.exists():
        calls = path.read_text().split()
        path.unlink()
    return calls


def test_old_runs_keep_their_branch_after_a_patched_deploy(tmp_path: Path) -> None:
    _deploy(tmp_path, _V1)
    assert _drive(tmp_path, "start", "old", "v1") == "waiting"  # suspended on its approval
    assert _calls(tmp_path) == ["draft"]

    _deploy(tmp_path, _V2)  # the new code, while "old" waits
    assert _drive(tmp_path, "start", "new", "v2") == "waiting"
    assert _calls(tmp_path) == ["careful_draft"]
    # v2 continues v1's runs only once it says it can (it branches with patched()).
    assert _drive(tmp_path, "approve", "old", "v2") == "refused: v1 v2"
    assert _calls(tmp_path) == []
    assert _drive(tmp_path, "approve", "old", "v2", accept="v1") == (
        "published: draft about owls (ok)"
    )
    assert _drive(tmp_path, "approve", "new", "v2") == "published: careful draft about owls (ok)"
    assert _calls(tmp_path) == ["publish", "publish"]  # the drafts were served
    for run_id in ("old", "new"):
        assert _drive(tmp_path, "replay", run_id, "v2").startswith("replayed published")
    assert _calls(tmp_path) == []

    _deploy(tmp_path, _V3)  # once no run needs the old branch
    assert _drive(tmp_path, "replay", "new", "v3") == (
        "replayed published: careful draft about owls (ok)"
    )
    assert _drive(tmp_path, "start", "newest", "v3") == "waiting"
    assert _calls(tmp_path) == ["careful_draft"]
    with Journal(tmp_path / "runs.db") as journal:
        kinds = {run: [e.kind for e in journal.events(run)] for run in ("old", "new", "newest")}
        assert EventKind.PATCH not in kinds["old"] and EventKind.PATCH not in kinds["newest"]
        assert kinds["new"][:2] == [EventKind.PATCH, EventKind.PATCH]  # started, completed
        assert {v.verdict for v in journal.verify()} == {"intact"}
        assert journal.run("old").status is RunStatus.COMPLETED
        versions = {run: journal.run(run).version for run in ("old", "new", "newest")}
        assert versions == {"old": "v1", "new": "v2", "newest": "v3"}


def test_patched_is_true_outside_a_run_and_the_same_for_a_whole_sitting(tmp_path: Path) -> None:
    assert replay.patched("anything") is True
    answers: list[bool] = []

    @replay.step
    async def work() -> int:
        return 1

    async def flow() -> int:
        answers.append(replay.patched("x"))
        total = await work()
        answers.append(replay.patched("x"))  # asked again: the same, no new marker
        return total

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(flow, journal=journal, run_id="p"))
        names = [e.name for e in journal.events("p")]
    assert answers == [True, True]
    assert names.count("replay.patched:x") == 2  # one marker: its started and completed rows


def test_a_patch_id_must_name_the_change() -> None:
    with pytest.raises(ValueError, match="non-empty string naming the change"):
        replay.patched("")
    with pytest.raises(ValueError, match="non-empty string"):
        replay.deprecate_patch("  ")


def test_a_replay_past_the_journal_end_takes_the_new_branch_without_recording(
    tmp_path: Path,
) -> None:
    @replay.step
    async def old() -> str:
        return "old"

    @replay.step
    async def new() -> str:
        return "new"

    version = [1]

    async def flow() -> str:
        first = await old()
        if version[0] == 2 and replay.patched("second"):
            return first + await new()
        return first

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(flow, journal=journal, run_id="r"))
        version[0] = 2
        with pytest.raises(replay.FrontierReached):  # the new branch's step is not recorded
            asyncio.run(replay.run(flow, journal=journal, run_id="r", mode="replay"))
        assert len(journal.events("r")) == 1
        assert json.loads(journal.run("r").result or b"") == "old"
