"""Errors raised by the journal (the log), independent of how code is re-run.

JournalError                    root of everything the journal raises
├── RunNotFound                 no run with that id in this journal
├── RunConflict                 a run id reused for another workflow or other inputs
├── RunLocked                   another live process owns the run
├── LeaseLost                   this process no longer owns the run it is writing
├── RunNotFailed                a retry asked of a run that has not failed
├── RunFinished                 a cancel asked of a run that has already finished
├── RunCancelled                the run was cancelled (`journal cancel`, `Journal.cancel`)
├── ValueNotJournalable         a value or exception cannot be encoded as JSON and back
│   └── PayloadTooLarge         one event's payload is over the journal's size limit
├── ChainKeyMismatch            a run is signed with an HMAC key this process does not have
├── ForkRefused                 a fork cannot be made as asked (seq, step, broken parent)
├── JournalUnavailable          the store cannot be opened or is not a journal
└── JournalDamaged              stored content a replay needs is missing or was edited
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import Owner


class JournalError(Exception):
    """Root of every error the journal raises."""


class RunNotFound(JournalError):
    """No run with this id exists in the journal."""

    def __init__(self, run_id: str, *, hint: str = "") -> None:
        self.run_id = run_id
        message = f"No run {run_id!r} in this journal."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class RunConflict(JournalError):
    """A run id was reused for a different workflow or with different inputs."""

    def __init__(self, run_id: str, what: str, recorded: str, given: str) -> None:
        self.run_id = run_id
        self.what = what
        super().__init__(
            f"Run {run_id!r} was recorded with {what} {_clip(recorded)}, but was called now "
            f"with {what} {_clip(given)}. A run id names one execution of one workflow with "
            f"one set of inputs. Fix: pass the original {what} to resume it, or choose a new "
            "run_id for a new run."
        )


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunLocked(JournalError):
    """Another live process owns the run; resuming it here would interleave two writers."""

    def __init__(self, run_id: str, owner: Owner) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(
            f"Run {run_id!r} is owned by pid {owner.pid} on host {owner.host!r} "
            f"since {owner.since.isoformat(timespec='seconds')} (lease until "
            f"{owner.lease_expires_at.isoformat(timespec='seconds')}). "
            "Fix: wait for that process to finish or stop it; a dead owner's lease is taken "
            "over automatically (at once on the same host, after the lease expires elsewhere)."
        )


class LeaseLost(JournalError):
    """This process tried to write to a run it no longer owns (another process took it over)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"Run {run_id!r}: this process no longer owns the run (its lease was taken over), "
            "so its writes were rejected and the journal is unchanged. Another process is "
            "continuing the run; stop this one."
        )


class RunNotFailed(JournalError):
    """Only a failed run can be retried in place."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        hint = {
            "completed": "To run it again from a step, fork it (Journal.fork(run_id, at=N)); "
            "for new work, use a new run_id.",
            "cancelled": "A cancelled run stays cancelled. To start over, use a new run_id, "
            "or fork it (Journal.fork(run_id, at=N)).",
        }.get(
            status,
            "It has not failed, so it can simply be resumed: call run() again with its run_id.",
        )
        super().__init__(f"Run {run_id!r} is {status}, not failed: nothing to retry. {hint}")


class RunFinished(JournalError):
    """The run has already finished for good: it cannot be cancelled, or sent a signal."""

    def __init__(
        self, run_id: str, status: str, consequence: str = "there is nothing to cancel."
    ) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"Run {run_id!r} has already finished ({status}): {consequence}")


class RunCancelled(JournalError):
    """The run was cancelled: it runs no further, and resuming it raises this again."""

    def __init__(self, run_id: str, reason: str = "") -> None:
        self.run_id = run_id
        self.reason = reason
        because = f": {reason}" if reason else " (no reason given)"
        super().__init__(
            f"Run {run_id!r} was cancelled{because}. A cancelled run is finished: it is not "
            "resumed or retried. To do its work anyway, start a new run_id, or fork it "
            "(Journal.fork(run_id, at=N))."
        )


class ValueNotJournalable(JournalError):
    """A value cannot be encoded to JSON and decoded back to the declared type."""


class PayloadTooLarge(ValueNotJournalable):
    """A payload is over the journal's per-event limit; nothing was written for it."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is {format_size(size)}, over the journal's limit of {format_size(limit)} "
            "per event; nothing was written for it. Fix: journal a reference (a file path, a "
            "URL, an object id) instead of the content, or raise the limit with "
            "Journal(..., max_payload_bytes=...)."
        )


def format_size(size: int) -> str:
    """Bytes as people read them: 812 B, 3.4 kB, 12.6 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class ChainKeyMismatch(JournalError):
    """A run's hash chain uses an HMAC key this process does not have (or has none)."""


class ForkRefused(JournalError):
    """A fork cannot be made as asked (seq out of range, unknown step, broken parent)."""


class JournalUnavailable(JournalError):
    """The journal store cannot be opened, or the file is not a journal."""


class JournalDamaged(JournalError):
    """Stored content a replay needs is missing or no longer what was recorded (a chunk of a
    long call record deleted or edited): the run is not served from a journal that lies."""
