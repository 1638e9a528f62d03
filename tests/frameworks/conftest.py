"""Framework drivers in `--forks` mode, started once per session and per framework."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.frameworks.harness import Forks


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Forks]]:
    """`forks("smolagents")`: that framework's driver, ready to fork a run."""
    started: dict[str, Forks] = {}

    def get(driver: str) -> Forks:
        if driver not in started:
            started[driver] = Forks(driver, tmp_path_factory.mktemp(driver))
        return started[driver]

    yield get
    for running in started.values():
        running.close()
