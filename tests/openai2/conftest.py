"""tests/openai2/ runs in the second environment only: openai 2.x over legacy httpx 0.28.

`make test-openai2` builds `.venv-openai2` from tests/envs/openai2.txt (plus this project) and
runs this directory there; `make test` runs both environments. The main environment (openai 3 on
httpx2) leaves the directory out (tests/conftest.py), so nothing here is skipped: it either runs
here, or the wrong environment is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import pytest

from tests.frameworks.harness import Drivers, session_forks


def _major(distribution: str) -> str:
    try:
        return version(distribution).split(".", 1)[0]
    except PackageNotFoundError:
        return "missing"


if (_major("openai"), version("httpx").rsplit(".", 1)[0]) != ("2", "0.28"):
    raise RuntimeError(
        f"tests/openai2/ needs openai 2.x and httpx 0.28 (found openai {version('openai')}, "
        f"httpx {version('httpx')}). Run it with `make test-openai2`."
    )


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drivers]:
    """`forks("llamaindex")`: that framework's driver (tests/frameworks/drivers/), in
    `--forks` mode, ready to fork a run."""
    yield from session_forks(tmp_path_factory.mktemp)
