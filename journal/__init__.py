"""journal: the append-only log of workflow runs. Knows nothing of coroutines or replay."""

from ._codec import ValueCodec, canonical_json, fingerprint
from ._diff import ABSENT, RunDiff, StepDiff, StepSide
from ._errors import (
    ChainKeyMismatch,
    ForkRefused,
    JournalDamaged,
    JournalError,
    JournalUnavailable,
    LeaseLost,
    PayloadTooLarge,
    RunCancelled,
    RunConflict,
    RunFinished,
    RunLocked,
    RunNotFailed,
    RunNotFound,
    ValueNotJournalable,
)
from ._events import Event, EventKind, EventStatus, Owner, Run, RunStatus
from ._exceptions import RecordedError
from ._heads import HeadEntry, head_text
from ._inspect import RunDigest, TimelineEntry, parse_since
from ._journal import Journal
from ._redact import Redaction
from ._verify import Break, RunVerification
from .stores import JournalStore, MemoryStore, SQLiteStore

__all__ = [
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
    "RunDiff",
    "RunDigest",
    "RunFinished",
    "RunLocked",
    "RunNotFailed",
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
