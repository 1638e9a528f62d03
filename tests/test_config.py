"""Configuration: arguments, then environment, then journal.toml, then [tool.journal]."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import replay
from journal import Journal, JournalUnavailable
from journal._config import load_config
from replay._cli import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as the working directory, with no JOURNAL_* variables."""
    for variable in ("JOURNAL_URL", "JOURNAL_DURABILITY", "JOURNAL_MAX_PAYLOAD_BYTES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_then_pyproject_then_journal_toml_then_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source overrides the one below it, and the config says where each value came from."""
    assert load_config().url == ".journal/journal.db"
    assert load_config().sources["url"] == "default"
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\n[tool.journal]\nurl = "from-pyproject.db"\ndurability = "full"\n'
    )
    assert load_config().url == "from-pyproject.db" and load_config().durability == "full"
    (project / "journal.toml").write_text('url = "from-journal-toml.db"\n')
    config = load_config()
    assert config.url == "from-journal-toml.db" and config.durability == "full"
    assert config.sources["url"].endswith("journal.toml")
    assert config.sources["durability"].endswith("pyproject.toml")
    monkeypatch.setenv("JOURNAL_URL", "from-env.db")
    assert load_config().url == "from-env.db" and load_config().sources["url"] == "JOURNAL_URL"
    nested = project / "src" / "app"
    nested.mkdir(parents=True)
    assert load_config(nested).url == "from-env.db"  # files are found from subdirectories too


def test_journal_uses_the_configuration_and_arguments_win(project: Path) -> None:
    """Journal() opens the configured file with its payload limit; explicit arguments win."""
    (project / "journal.toml").write_text('url = "configured.db"\nmax_payload_bytes = 2048\n')
    with Journal() as journal:
        assert journal.max_payload_bytes == 2048
    assert (project / "configured.db").exists()
    with Journal("explicit.db", max_payload_bytes=4096) as journal:
        assert journal.max_payload_bytes == 4096
    assert (project / "explicit.db").exists()


def test_playbooks_settings_come_from_journal_toml_or_pyproject(project: Path) -> None:
    """`journal playbooks run` reads [playbooks] (journal.toml) or [tool.journal.playbooks]
    (pyproject.toml); journal.toml's table wins whole, as [retention] does."""
    assert load_config().playbooks == {}
    (project / "pyproject.toml").write_text(
        '[tool.journal.playbooks]\non_divergence = "fork"\napplication = "my.app"\n'
    )
    assert load_config().playbooks == {"on_divergence": "fork", "application": "my.app"}
    (project / "journal.toml").write_text('[playbooks]\non_divergence = "raise"\n')
    config = load_config()
    assert config.playbooks == {"on_divergence": "raise"}
    assert config.sources["playbooks"].endswith("journal.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('colour = "blue"\n', "unknown journal settings ['colour']"),
        ('durability = "sometimes"\n', "must be 'normal' or 'full'"),
        ('max_payload_bytes = "lots"\n', "whole number of bytes"),
        ("[retention]\nkeep = 3\n", "may hold"),
        ("url = \n", "cannot read the journal settings"),
        ('playbooks = "agent_chat"\n', "must be a table"),
        ('[playbooks]\non_divergence = "skip"\n', "must be 'raise' .stop at the first call"),
        ('[playbooks]\napplication = "my app"\n', "must be the dotted name of a Python module"),
        ("[playbooks]\nretries = 3\n", "unknown [playbooks] settings ['retries']"),
    ],
)
def test_bad_settings_say_what_and_where(project: Path, text: str, message: str) -> None:
    """A wrong setting names itself, the file it is in, and what is allowed."""
    (project / "journal.toml").write_text(text)
    with pytest.raises(JournalUnavailable, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config()


def test_gc_applies_the_configured_retention(project: Path) -> None:
    """`journal gc` with no limits uses [retention]; without one it still refuses."""

    async def noop() -> int:
        return 1

    (project / "journal.toml").write_text('url = "j.db"\n[retention]\nkeep_last = 1\n')
    with Journal() as journal:
        for run_id in ("a", "b", "c"):
            asyncio.run(replay.run(noop, journal=journal, run_id=run_id))
    result = CliRunner().invoke(app, ["gc"])
    assert result.exit_code == 0 and "removed 2 runs" in result.output, result.output
    (project / "journal.toml").write_text('url = "j.db"\n')
    result = CliRunner().invoke(app, ["gc"])
    assert result.exit_code == 1 and "never removes every run" in result.output


def test_third_party_stores_register_by_entry_point(tmp_path: Path) -> None:
    """A package registering `fake = module:factory` in `journal.stores` serves fake:// URLs."""
    site = tmp_path / "site"
    dist = site / "fakestore-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakestore\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[journal.stores]\nfake = fakestore:open_fake\n")
    (site / "fakestore.py").write_text(
        "from journal import MemoryStore\n"
        "opened = []\n"
        "def open_fake(url):\n"
        "    opened.append(url)\n"
        "    return MemoryStore()\n"
    )
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import fakestore
        from journal import Journal, MemoryStore
        journal = Journal("fake://anything")
        assert isinstance(journal.store, MemoryStore), journal.store
        print(fakestore.opened)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(site)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['fake://anything']"
