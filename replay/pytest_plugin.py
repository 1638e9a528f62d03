"""Replay tests in pytest: record a workflow run once, replay it offline on every later run.

Loaded by pytest through the `pytest11` entry point named `journal` (`-p journal` when plugin
autoloading is off). The `journal_replay` fixture runs a workflow against a journal file kept
beside the test, `journals/<test module>/<test name>.db`:

    def test_triage(journal_replay):
        assert journal_replay.run(triage, "T-101") == "sent to T-101: ..."

The first run records it live (LLM calls, tools and the HTTP requests the fixture journals are paid
once); commit the file. Every later run replays it offline, with no keys and no network, and
fails with the divergence diff where the code now asks for something else, or with the
difference where it returns something else. `--journal-record` (or `--journal-mode=record`,
or `@pytest.mark.journal(mode="record")`) records again; `--journal-mode=replay` fails where a
journal is missing (for CI). Precedence: command line, then marker, then the `journal_mode`
ini key, then `once`.

A test's file is `<test>.db`, `<Class>.<test>.db` in a class; a name that loses characters a
file name cannot hold, or is long, gets a short hash of the whole name so two tests never
share a file (two tests that name the same file with the marker fail, naming each other).
Before a replay the run's hash chain is verified: a file edited by hand fails the test.

This module imports only pytest and the standard library, and the engine when a test asks
for the fixture (importing the `replay` package itself loads nothing: its names load lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

Mode = Literal["once", "record", "replay"]
MODES: tuple[Mode, ...] = ("once", "record", "replay")
R = TypeVar("R")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
"""Longest file name (before `.db`) kept whole: paths stay well under file systems' limits."""
_CLAIMS = pytest.StashKey[dict[str, list[str]]]()
"""Each journal file (case-folded: one file on macOS and Windows) -> the tests that use it."""
_CALL_FAILED = pytest.StashKey[bool]()
"""Whether the test's own body failed: then runs it did not get to are not a second error."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("journal", "journal-replay: replay tests of recorded workflow runs")
    group.addoption(
        "--journal-mode",
        choices=MODES,
        default=None,
        help="once: record a test's run if its journal file is missing, else replay it "
        "offline (the default); record: record every run again, live; replay: replay only, "
        "and fail where a journal file is missing (for CI).",
    )
    group.addoption(
        "--journal-record",
        action="store_true",
        default=False,
        help="Record every journal_replay run again, live (the same as --journal-mode=record).",
    )
    parser.addini(
        "journal_dir", "Folder, beside each test file, of recorded journals.", default="journals"
    )
    parser.addini("journal_mode", "once, record or replay (see --journal-mode).", default="once")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "journal(name=None, mode=None): the journal file of this test's journal_replay runs "
        "(default: the test's name) and its mode (once, record, replay).",
    )
    ini_mode = config.getini("journal_mode")
    if ini_mode and ini_mode not in MODES:
        raise pytest.UsageError(
            f"the journal_mode ini key is {ini_mode!r}; it must be once, record or replay "
            "(see --journal-mode)."
        )
    chosen = config.getoption("--journal-mode")
    if config.getoption("--journal-record") and chosen not in (None, "record"):
        raise pytest.UsageError(
            f"--journal-record and --journal-mode={chosen} ask for different modes: give "
            "one of them."
        )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Which tests use which journal file, so that a file two tests would share is refused
    before either writes it (in every xdist worker too: each collects every test)."""
    claims: dict[str, list[str]] = {}
    for item in items:
        if "journal_replay" not in getattr(item, "fixturenames", ()):
            continue
        try:
            path = _journal_path(item, _marker_options(item))
        except _MarkerError:
            continue  # the test itself fails with the marker's error
        claims.setdefault(str(path).casefold(), []).append(item.nodeid)
    config.stash[_CLAIMS] = claims


@contextlib.contextmanager
def _http_journaled() -> Iterator[None]:
    """HTTP requests made in the test's runs (outside steps) are journaled while it records
    and served while it replays, as `instrument()` does: a replay never reaches the network,
    and a request the recording did not journal fails it rather than being sent."""
    from replay.integrations._instrument import instrument, is_instrumented, uninstrument

    already = is_instrumented()
    instrument()
    try:
        yield
    finally:
        if not already:
            uninstrument()


class JournalReplay:
    """A test's recorded journal: runs workflows live into it (recording) or offline from it
    (replaying). Given by the `journal_replay` fixture."""

    def __init__(self, path: Path, mode: Mode, test_name: str) -> None:
        self.path = path
        """The journal file (commit it with the test)."""
        self.mode = mode
        self.recording = mode == "record" or (mode == "once" and not path.exists())
        """True when this test records live now; False when it replays offline."""
        self._test_name = test_name
        self._journal: Any = None
        self._started = 0
        self._replayed: set[str] = set()
        self.summaries: list[Any] = []
        """The `RunSummary` of each run, in order (what was served, what ran live)."""

    @property
    def journal(self) -> Any:
        """The `Journal` on the file: writable while recording, read-only while replaying."""
        if self._journal is None:
            from journal import Journal

            if self.mode == "record":  # replaced now that it records, not when the test began
                for old in (self.path, *_sidecars(self.path)):
                    old.unlink(missing_ok=True)
            self._journal = Journal(self.path, read_only=not self.recording)
        return self._journal

    def run(
        self,
        workflow: Callable[..., Awaitable[R]],
        *args: Any,
        run_id: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> R:
        """`workflow(*args, **kwargs)` as a journaled run, from a test that is not async."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # none: run one (not in this handler, or its error would chain to a failure)
        else:
            raise RuntimeError(
                "journal_replay.run() was called inside a running event loop (an async test, "
                "or code under asyncio.run). Fix: there, await journal_replay.arun(...) instead."
            )
        return asyncio.run(self.arun(workflow, *args, run_id=run_id, kwargs=kwargs))

    async def arun(
        self,
        workflow: Callable[..., Awaitable[R]],
        *args: Any,
        run_id: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> R:
        """The same, awaited (for a test that runs its own event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "journal_replay.arun() runs on asyncio, and no asyncio event loop runs here "
                "(trio?). Fix: run the test on asyncio, or call journal_replay.run(...) from a "
                "test that is not async."
            ) from None
        from journal import RunConflict, RunStatus
        from replay import run_with_summary

        self._started += 1  # counts runs that raised too: the next run gets an id of its own
        run_id = run_id or f"{self._test_name}-{self._started}"
        if self.recording:
            with _http_journaled():
                outcome = await run_with_summary(
                    workflow, *args, kwargs=kwargs, journal=self.journal, run_id=run_id
                )
        else:
            self._replayed.add(run_id)
            recorded = self._recorded_run(run_id)
            from replay import FrontierReached, NonDeterminismError, NotJournalable

            changed: str | None = None
            try:
                with _http_journaled():
                    outcome = await run_with_summary(
                        workflow,
                        *args,
                        kwargs=kwargs,
                        journal=self.journal,
                        run_id=run_id,
                        mode="replay",
                    )
            # NotJournalable: a recorded value no longer decodes as the step's return type.
            except (NonDeterminismError, FrontierReached, RunConflict, NotJournalable) as exc:
                # NotJournalable ends with no fix of its own, so a "Fix:" in it is the value's.
                changed = str(exc) if isinstance(exc, NotJournalable) else _without_fix(str(exc))
            if changed is not None:  # failed outside the handler: one error, not a chain
                pytest.fail(
                    f"{changed}\nReplayed from {_shown(self.path)}. Fix: if the change is meant, "
                    "record the test again with --journal-record (live: it pays for what it "
                    "calls).",
                    pytrace=False,
                )
            summary = outcome.summary
            if summary.unconsumed:
                pytest.fail(
                    f"run {run_id!r} replayed from {_shown(self.path)} no longer asks for recorded "
                    f"steps {', '.join(summary.unconsumed[:10])}. If the change is meant, "
                    "record it again with --journal-record.",
                    pytrace=False,
                )
            if summary.result_matches_recorded is False:
                pytest.fail(
                    f"run {run_id!r} replayed from {_shown(self.path)} returns {outcome.result!r}, "
                    "not what it returned when it was recorded. If the change is meant, record "
                    "it again with --journal-record.",
                    pytrace=False,
                )
            if recorded.status is RunStatus.FAILED:
                from replay._session import rebuild_error

                error = rebuild_error(recorded.error)
                pytest.fail(
                    f"run {run_id!r} replayed from {_shown(self.path)} returns "
                    f"{outcome.result!r}, but it failed when it was recorded: "
                    f"{type(error).__name__}: {error}. If the change is meant, record it again "
                    "with --journal-record.",
                    pytrace=False,
                )
        self.summaries.append(outcome.summary)
        return outcome.result

    def _recorded_run(self, run_id: str) -> Any:
        """The recorded run `run_id`, finished and not edited since; the test fails if not."""
        from journal import JournalError, RunNotFound, RunStatus

        shown = _shown(self.path)
        unreadable: str | None = None
        try:
            recorded = self.journal.run(run_id)
            # The run's own chain; not the journal's head, which is broken for a key other
            # than the recording's (the run itself is then `key_needed`: not an edit).
            verdicts = self.journal.verify(run_id)
            broken = [v for v in verdicts if v.run_id == run_id and v.verdict == "broken"]
        except RunNotFound:
            unreadable = (
                f"{shown} holds no run {run_id!r}: this test's runs changed since it was "
                "recorded. Record it again with --journal-record."
            )
        except JournalError as exc:
            unreadable = (
                f"{shown} cannot be read as a journal: {_without_fix(str(exc))} Fix: if it "
                "is a Git LFS pointer, fetch the file (git lfs pull); else record the test "
                "again with --journal-record."
            )
        if unreadable is not None:  # failed outside the handler: one error, not a chain
            pytest.fail(unreadable, pytrace=False)
        if recorded.status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            pytest.fail(
                f"the recording of run {run_id!r} in {shown} did not finish (it is "
                f"{recorded.status.value}): the test stopped before the run ended. Record it "
                "again with --journal-record.",
                pytrace=False,
            )
        if broken:
            found = "; ".join(f"run {v.run_id!r} {v.describe()}" for v in broken)
            pytest.fail(
                f"{shown} was edited after it was recorded: {found}. Fix: restore the file "
                "from version control, or record the test again with --journal-record.",
                pytrace=False,
            )
        return recorded

    def unstarted_runs(self) -> list[str]:
        """Runs the recording made (not a child run's or a fork) that this replay never
        started: the test no longer makes them."""
        if self.recording or not self.path.exists():
            return []
        runs = self.journal.runs()
        return sorted(
            r.run_id for r in runs if r.parent_run_id is None and r.run_id not in self._replayed
        )

    def close(self) -> None:
        opened = self._journal is not None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self.recording and opened and self.path.exists():  # a file it did not write: as is
            # One file to commit: fold the write-ahead log in and leave no -wal/-shm beside it.
            with sqlite3.connect(self.path) as conn:
                conn.execute("PRAGMA journal_mode = DELETE")
            conn.close()


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _without_fix(message: str) -> str:
    """An engine error's text without its closing `Fix:` (the plugin gives its own). The
    last one: a recorded argument may hold "Fix:" too."""
    text, found, _ = message.rpartition("Fix:")
    return text.rstrip() if found else message


class _MarkerError(Exception):
    """A `journal` marker with arguments it does not take."""


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    """The closest `journal` marker's arguments, checked."""
    marker = node.get_closest_marker("journal")
    if marker is None:
        return {}
    if marker.args:
        raise _MarkerError(
            f"the journal marker takes keywords only, not {marker.args!r}. Fix: "
            f"@pytest.mark.journal(name={marker.args[0]!r})"
        )
    unknown = ", ".join(f"{k}={v!r}" for k, v in marker.kwargs.items() if k not in ("name", "mode"))
    if unknown:
        raise _MarkerError(
            f"the journal marker got {unknown}; it takes name and mode: "
            "@pytest.mark.journal(name=..., mode=...)"
        )
    mode = marker.kwargs.get("mode")
    if mode is not None and mode not in MODES:
        raise _MarkerError(
            f"journal mode {mode!r} (from the journal marker) is not one of {', '.join(MODES)}."
        )
    name = marker.kwargs.get("name")
    if name is not None and not _file_stem(str(name), exact=True):
        raise _MarkerError(
            f"the journal marker's name {name!r} leaves no file name once the characters a "
            "file name cannot hold are dropped. Fix: use letters, digits, '.', '_' or '-'."
        )
    return dict(marker.kwargs)


def _journal_path(node: pytest.Item, options: Mapping[str, Any]) -> Path:
    """`<test dir>/<journal_dir>/<module>/<name>.db`: the marker's name, else the test's, with
    its class (`TestX.test_y`): two classes' `test_y` are two tests."""
    test_file = Path(str(node.path))
    folder = test_file.parent / str(node.config.getini("journal_dir")) / test_file.stem
    if options.get("name") is not None:
        return folder / f"{_file_stem(str(options['name']), exact=True)}.db"
    names: list[str] = []
    part: Any = node
    while part is not None and not isinstance(part, pytest.File):
        names.append(part.name)
        part = part.parent
    return folder / f"{_file_stem('.'.join(reversed(names)), exact=False)}.db"


def _file_stem(raw: str, *, exact: bool) -> str:
    """`raw` as a file name: characters a file name cannot hold become `-`. A test's own
    name that loses more than a case's brackets that way, and any long name, end in a hash
    of the whole name: `test[what?]` and `test[what!]` are two files."""
    stem = _UNSAFE.sub("-", raw).strip("-")
    if not stem:
        return stem
    kept = raw.replace("[", "-").removesuffix("]")
    if (not exact and stem != kept) or len(stem) > _MAX_NAME:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        stem = f"{stem[: _MAX_NAME - 9]}-{digest}"
    return stem


def _shown(path: Path) -> str:
    """`path` relative to where pytest runs, when it is below it (messages read the same on
    every machine)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@pytest.fixture
def journal_replay(request: pytest.FixtureRequest) -> Iterator[JournalReplay]:
    """Run workflows against this test's recorded journal: recorded live the first time (or
    with --journal-record), replayed offline after that."""
    node = request.node
    try:
        options = _marker_options(node)
    except _MarkerError as exc:
        marked: str | None = f"{node.nodeid}: {exc}"
    else:
        marked = None
    if marked is not None:  # failed outside the handler: one error, not a chain
        pytest.fail(marked, pytrace=False)
    config = request.config
    mode: Mode = (  # each source is checked: --journal-mode's choices, the ini key, the marker
        ("record" if config.getoption("--journal-record") else None)
        or config.getoption("--journal-mode")
        or options.get("mode")
        or config.getini("journal_mode")
        or "once"
    )
    path = _journal_path(node, options)
    others = [
        nodeid
        for nodeid in config.stash.get(_CLAIMS, {}).get(str(path).casefold(), [])
        if nodeid != node.nodeid
    ]
    if others:
        pytest.fail(
            f"{_shown(path)} is also the journal of {', '.join(others)}: one file holds one "
            "test's runs (recording one would replace the other's). Fix: give each test its "
            "own @pytest.mark.journal(name=...).",
            pytrace=False,
        )
    if mode == "replay" and not path.exists():
        pytest.fail(
            f"no recorded journal at {_shown(path)}. Fix: run this test once with --journal-record "
            "(live: it pays for what it calls) and commit the file.",
            pytrace=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = JournalReplay(path, mode, _UNSAFE.sub("-", node.name).strip("-"))
    try:
        yield recorded
        unstarted = [] if node.stash.get(_CALL_FAILED, True) else recorded.unstarted_runs()
    finally:
        recorded.close()
    if unstarted:
        pytest.fail(
            f"the test no longer starts recorded run{'s' if len(unstarted) > 1 else ''} "
            f"{', '.join(repr(r) for r in unstarted[:10])} of {_shown(path)}: it has changed "
            "since it was recorded. If the change is meant, record it again with "
            "--journal-record.",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report
