"""Shared fixtures: real journals (SQLite files in tmp_path, and the in-memory store)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

import replay
from journal import Journal, JournalStore, JournalUnavailable, MemoryStore

# `replay` loads its names on first use (PEP 562), and pytest rewrites the package's modules
# as they load (it is a pytest plugin's distribution): with `ast.parse`, whose state CPython
# 3.11 does not keep per thread. A test whose first `replay.wait_for` came while another
# thread was parsing failed with "SystemError: AST constructor recursion depth mismatch".
# Loaded here, once, before any test starts a thread.
for _name in replay.__all__:
    getattr(replay, _name)

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


def _openai_major() -> str | None:
    try:
        return version("openai").split(".", 1)[0]
    except PackageNotFoundError:
        return None


def _environment() -> str:
    """Which test environment this is: `crewai` (`make test-crewai`), `playbooks` (`make
    test-playbooks`), `openai2` (`make test-openai2`: openai 2.x on legacy httpx) or `main`
    (openai 3 on httpx2)."""
    for framework in ("crewai", "playbooks"):
        try:
            version(framework)
            return framework
        except PackageNotFoundError:
            pass
    return "openai2" if _openai_major() == "2" else "main"


# tests/openai2/, tests/crewai/ and tests/playbooks/ belong to environments of their own; the
# others leave them out rather than skipping them.
collect_ignore = [
    directory for directory in ("openai2", "crewai", "playbooks") if directory != _environment()
]

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


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """A fresh journal on each built-in store; the engine must behave the same on all."""
    if request.param == "sqlite":
        j = Journal(tmp_path / "journal.db")
    elif request.param == "postgres":
        j = Journal(store=postgres_store(request.getfixturevalue("pg_schema")))
    else:
        j = Journal(store=MemoryStore())
    yield j
    j.close()


@pytest.fixture
def sqlite_journal(db_path: Path) -> Iterator[Journal]:
    j = Journal(db_path)
    yield j
    j.close()


PG_URL = os.environ.get("JOURNAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_store(schema: str) -> JournalStore:
    """A PostgresStore in its own fresh schema; under CI a missing server fails, never skips."""
    from journal.stores import PostgresStore

    try:
        return PostgresStore(PG_URL, schema=schema, max_size=4)
    except JournalUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL} ({exc}); CI runs these tests")


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A unique schema name, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(schema)


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium per test module (selenium driving Debian's chromium and
    chromedriver); missing, it skips locally and fails on CI."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium is not installed: pip install 'selenium>=4.25'"
    else:
        absent = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
        missing = (
            f"{' and '.join(absent)} not found: apt-get install chromium chromium-driver "
            "(or set CHROMIUM / CHROMEDRIVER to their paths)"
            if absent
            else ""
        )
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run on CI: {missing}")
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The local OpenAI-compatible server (tests/llm_server.py): its base URL and request log."""
    from tests.llm_server import serve

    log = tmp_path / "requests.log"
    running = serve(log)
    yield f"http://127.0.0.1:{running.server_port}/v1", log
    running.shutdown()
    running.server_close()


@pytest.fixture
def instrumented() -> Iterator[None]:
    """`instrument()` in force for the test, undone after it."""
    from replay.integrations import instrument, uninstrument

    instrument()
    yield
    uninstrument()
