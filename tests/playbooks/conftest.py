"""tests/playbooks/ runs in the fourth environment only: Playbooks, which pins pytest-asyncio.

`make test-playbooks` builds `.venv-playbooks` from tests/envs/playbooks.txt (plus this project
with its `playbooks` extra) and runs this directory there; `make test` runs every environment.
The others leave the directory out (tests/conftest.py), so nothing here is skipped: it either
runs here, or the wrong environment is an error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from tests.playbooks.api import PROGRAM, PlaybooksAPI

try:
    version("playbooks")
except PackageNotFoundError:
    raise RuntimeError(
        "tests/playbooks/ needs Playbooks. Run it with `make test-playbooks`."
    ) from None


@pytest.fixture(scope="session", autouse=True)
def _close_litellm_sessions() -> Iterator[None]:
    """The runs made in this process leave litellm's HTTP sessions (route_litellm's) open,
    with a pooled connection: closed at the end, not left to a ResourceWarning at exit."""
    yield
    litellm = sys.modules.get("litellm")
    if litellm is not None and litellm.client_session is not None:
        litellm.client_session.close()


@pytest.fixture
def api() -> Iterator[PlaybooksAPI]:
    """The stand-in API, one per test: a journal's fingerprints hold its URL, so a run is
    recorded, resumed and replayed against the same one."""
    server = PlaybooksAPI()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path: Path, api: PlaybooksAPI, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder, the working directory: hello.pb, and a journal.toml that puts the
    journal in journal/runs.db. The environment points Playbooks at the stand-in API, with
    Playbooks' own LLM cache asked for (the command must keep it off)."""
    (tmp_path / "hello.pb").write_text(PROGRAM)
    (tmp_path / "journal.toml").write_text(
        'url = "journal/runs.db"\ndurability = "full"\n\n[playbooks]\non_divergence = "raise"\n'
    )
    for name, value in {
        "OPENAI_API_KEY": "sk-test-not-real",
        "OPENAI_BASE_URL": api.base_url,
        "OPENAI_API_BASE": api.base_url,
        "MODEL": "gpt-4o-mini",
        "LLM_CACHE_ENABLED": "true",
        "LLM_CACHE_PATH": str(tmp_path / "llm-cache"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("JOURNAL_URL", "JOURNAL_DURABILITY", "JOURNAL_MAX_PAYLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
