"""Framework drivers in `--forks` mode, started once per session and per framework."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.frameworks.harness import Drivers, session_forks


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drivers]:
    """`forks("smolagents")`: that framework's driver, ready to fork a run."""
    yield from session_forks(tmp_path_factory.mktemp)
