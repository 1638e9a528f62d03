"""`journal playbooks run` where Playbooks is not installed (the main test environment): the
command is there, and says how to install what it needs. The command itself is tested with
real Playbooks in tests/playbooks/, in an environment of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replay._cli import app


def test_without_playbooks_the_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1 with the pip command and why Playbooks needs an environment of its own; no
    journal is created."""
    assert importlib.util.find_spec("playbooks") is None  # this environment has no Playbooks
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOURNAL_URL", raising=False)
    (tmp_path / "hello.pb").write_text("# HelloAgent\n## Main\n- Say hello\n")
    result = CliRunner().invoke(app, ["playbooks", "run", "hello.pb"], prog_name="journal")
    assert result.exit_code == 1
    assert "Playbooks is not installed in this environment" in result.stderr
    assert "pip install 'journal-replay[playbooks]'" in result.stderr
    assert "pytest-asyncio" in result.stderr
    assert not (tmp_path / ".journal").exists()


def test_the_playbooks_group_has_help() -> None:
    """`journal playbooks -h` lists `run`; `journal playbooks run -h` names every option."""
    runner = CliRunner()
    group = runner.invoke(app, ["playbooks", "-h"], prog_name="journal")
    assert group.exit_code == 0 and "run" in group.stdout
    command = runner.invoke(app, ["playbooks", "run", "-h"], prog_name="journal")
    assert command.exit_code == 0
    for option in ("--run-id", "--resume", "--replay", "--db", "[playbooks]"):
        assert option in command.stdout
