"""tests/crewai/ runs in the third environment only: crewai on openai 2.x over legacy httpx.

`make test-crewai` builds `.venv-crewai` from tests/envs/crewai.txt (plus this project) and
runs this directory there; `make test` runs every environment. The others leave the directory
out (tests/conftest.py), so nothing here is skipped: it either runs here, or the wrong
environment is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import pytest

from tests.frameworks.harness import Drivers, session_forks


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "missing"


if _version("crewai") == "missing" or not _version("openai").startswith("2."):
    raise RuntimeError(
        f"tests/crewai/ needs crewai on openai 2.x (found crewai {_version('crewai')}, "
        f"openai {_version('openai')}). Run it with `make test-crewai`."
    )


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drivers]:
    """`forks("crewai")`: the crewai driver (tests/frameworks/drivers/), in `--forks` mode,
    ready to fork a run. crewai writes app data under XDG_DATA_HOME (the last kickoff's task
    outputs) and a credentials key under ~/.local/share: both go to a temporary home here."""
    home = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in ("HOME", "XDG_DATA_HOME")}
    os.environ.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    try:
        yield from session_forks(tmp_path_factory.mktemp)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
