"""The public surface is small and deliberate; these tests pin it."""

from __future__ import annotations

import ast
from pathlib import Path

import journal
import replay

ROOT = Path(__file__).resolve().parent.parent


def test_replay_exports() -> None:
    """`replay` exports exactly the names users are promised, each one present."""
    assert sorted(replay.__all__) == sorted(
        [
            "FrontierReached",
            "JournalWriteFailed",
            "JournaledRun",
            "MissingRunId",
            "NonDeterminismError",
            "NotJournalable",
            "OwnershipLost",
            "ReplayError",
            "RetryPolicy",
            "RunCancelled",
            "RunConflict",
            "RunLocked",
            "RunNotFailed",
            "RunNotFound",
            "RunOutcome",
            "RunSummary",
            "StepFailed",
            "as_completed",
            "cancel",
            "deprecate_patch",
            "idempotency_key",
            "journaled",
            "now",
            "patched",
            "random",
            "replay_run",
            "resume_run",
            "retry",
            "retry_run",
            "submit",
            "signal",
            "Suspended",
            "SignalTimeout",
            "Worker",
            "WorkerStats",
            "run",
            "run_with_summary",
            "sleep",
            "step",
            "Timeout",
            "timeout",
            "upgrade_check",
            "UpgradeVerdict",
            "VersionNotAccepted",
            "uuid4",
            "wait_for",
        ]
    )
    for name in replay.__all__:
        assert getattr(replay, name) is not None


def test_journal_exports() -> None:
    """`journal` exports its models, stores, codec entry points and errors."""
    assert sorted(journal.__all__) == sorted(
        [
            "ABSENT",
            "Break",
            "ChainKeyMismatch",
            "Event",
            "EventKind",
            "EventStatus",
            "ForkRefused",
            "HeadEntry",
            "Journal",
            "JournalDamaged",
            "JournalError",
            "JournalStore",
            "JournalUnavailable",
            "LeaseLost",
            "MemoryStore",
            "Owner",
            "PayloadTooLarge",
            "RecordedError",
            "Redaction",
            "Run",
            "RunCancelled",
            "RunConflict",
            "RunFinished",
            "RunNotFailed",
            "RunDiff",
            "RunDigest",
            "RunLocked",
            "RunNotFound",
            "RunStatus",
            "RunVerification",
            "SQLiteStore",
            "StepDiff",
            "StepSide",
            "TimelineEntry",
            "ValueCodec",
            "ValueNotJournalable",
            "canonical_json",
            "fingerprint",
            "head_text",
            "parse_since",
        ]
    )
    for name in journal.__all__:
        assert getattr(journal, name) is not None


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_journal_never_imports_replay() -> None:
    """The log knows nothing of re-execution: `journal/` never imports `replay/`."""
    assert "replay" not in _imports("journal")


def test_no_pickle_anywhere() -> None:
    """A journal is data: no pickle (or its relatives) in either package."""
    banned = {"pickle", "dill", "cloudpickle", "marshal", "shelve"}
    assert not (_imports("journal") | _imports("replay")) & banned


def test_engine_signals_escape_except_exception() -> None:
    """Errors raised through workflow code are BaseExceptions; StepFailed is an Exception."""
    for signal in (replay.NonDeterminismError, replay.FrontierReached, replay.OwnershipLost):
        assert issubclass(signal, replay.ReplayError)
        assert not issubclass(signal, Exception)
    assert issubclass(replay.StepFailed, Exception)
    assert issubclass(replay.StepFailed, replay.ReplayError)
    assert issubclass(replay.RunLocked, journal.JournalError)


def test_both_packages_say_they_are_typed() -> None:
    """PEP 561: type checkers read our hints only if each package ships a `py.typed`, and the
    built wheel (hatchling takes every file in a package) carries it."""
    for package in (journal, replay):
        assert (Path(package.__file__).parent / "py.typed").is_file(), package.__name__
    project = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"Typing :: Typed"' in project
