"""Shared fixtures: real journals (SQLite files in tmp_path, and the in-memory store)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from journal import Journal, MemoryStore

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=False,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture(params=["sqlite", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """A fresh journal on each built-in store; the engine must behave the same on both."""
    if request.param == "sqlite":
        j = Journal(tmp_path / "journal.db")
    else:
        j = Journal(store=MemoryStore())
    yield j
    j.close()


@pytest.fixture
def sqlite_journal(db_path: Path) -> Iterator[Journal]:
    j = Journal(db_path)
    yield j
    j.close()
