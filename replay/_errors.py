"""Errors raised while re-running code against a journal.

    ReplayError (BaseException)     root; raised *through* workflow code, so a workflow's
    │                               `except Exception` cannot swallow the engine's signals
    ├── NonDeterminismError         the code asked for a different step than the journal holds
    ├── FrontierReached             replay mode reached a call the journal never recorded
    ├── NotJournalable              a step's value or the workflow's result cannot be journaled
    ├── OwnershipLost               another process took the run over; this one must stop
    ├── JournalWriteFailed          the store refused a write (disk full, database locked...)
    ├── Suspended                   the run waits (a long sleep, a signal): left `waiting`
    └── StepFailed (also Exception) a step's exception whose type cannot be rebuilt

SignalTimeout (an Exception, journaled like any step failure): a signal did not come in time.

Errors about the journal itself (`RunLocked`, `RunNotFound`, `RunConflict`) come from
`journal` and are re-exported by `replay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ReplayError(BaseException):
    """Root of the replay engine's errors."""


@dataclass(frozen=True)
class CallDescription:
    """One side of a divergence: what was (or is now) called, with what, from where."""

    name: str
    arguments: dict[str, Any] | None
    site: str | None

    def render(self) -> str:
        if self.arguments is None:
            args = "..."
        else:
            args = ", ".join(f"{k}={_short(v)}" for k, v in self.arguments.items())
        where = f"   at {self.site}" if self.site else ""
        return f"{self.name}({args}){where}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def argument_changes(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """Human lines naming each argument whose canonical value differs: for a long value (a
    prompt, a request body), the first place inside it where the two differ, and that part of
    each side, so that two long values never look alike in the message."""
    if recorded is None or now is None:
        return []
    lines = []
    for name in sorted(set(recorded) | set(now), key=lambda n: (n not in now, n)):
        if name not in recorded:
            lines.append(f"{name}: (absent) -> {_short(now[name])}")
        elif name not in now:
            lines.append(f"{name}: {_short(recorded[name])} -> (absent)")
        elif recorded[name] != now[name]:
            where, before, after = first_difference(recorded[name], now[name], name)
            lines.append(f"{where}: {before} -> {after}")
    return lines


def first_difference(a: Any, b: Any, path: str) -> tuple[str, str, str]:
    """(where, a's part, b's part) at the first place two JSON values differ: a key, an item,
    or a character of a string (shown with some of the text around it)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            inner = f"{path}.{key}" if str(key).isidentifier() else f"{path}[{key!r}]"
            if key not in a:
                return inner, "(absent)", _short(b[key])
            if key not in b:
                return inner, _short(a[key]), "(absent)"
            if a[key] != b[key]:
                return first_difference(a[key], b[key], inner)
    if isinstance(a, list) and isinstance(b, list):
        for index, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return first_difference(x, y, f"{path}[{index}]")
        return f"{path} (length)", f"{len(a)} items", f"{len(b)} items"
    if isinstance(a, str) and isinstance(b, str) and max(len(repr(a)), len(repr(b))) > 60:
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        at = min(len(a), len(b)) if at is None else at
        return f"{path}, at character {at}", _window(a, at), _window(b, at)
    return path, _short(a), _short(b)


def _window(text: str, at: int, before: int = 20, after: int = 30) -> str:
    start = max(0, at - before)
    part = text[start : at + after]
    return ("..." if start else "") + repr(part) + ("..." if at + after < len(text) else "")


class NonDeterminismError(ReplayError):
    """The workflow asked for a different step than the journal recorded at this point."""

    def __init__(
        self, run_id: str, key: str, recorded: CallDescription, now: CallDescription
    ) -> None:
        self.run_id = run_id
        self.key = key
        self.recorded = recorded
        self.now = now
        self.changed_arguments = argument_changes(recorded.arguments, now.arguments)
        lines = [
            f"Run {run_id!r} diverged from its journal at step {key}.",
            f"  recorded: {recorded.render()}",
            f"  now:      {now.render()}",
        ]
        if recorded.name != now.name:
            lines.append(f"  the step name changed: {recorded.name!r} -> {now.name!r}")
        if self.changed_arguments:
            lines.append("  changed arguments:")
            lines.extend(f"    {line}" for line in self.changed_arguments)
        lines += [
            "Likely cause: the workflow code or its inputs changed since the run was recorded, "
            "or the code depends on something the journal does not hold (the clock, randomness, "
            "set or dict ordering, environment).",
            "Fix: use replay.now() / replay.uuid4() / replay.random() for such values; keep old "
            "runs on the code path they recorded (if replay.patched('change-id'): the new code, "
            "else: the old); or resume with on_divergence='fork' to keep the journal up to "
            "this step and continue live from here.",
        ]
        super().__init__("\n".join(lines))

    @classmethod
    def out_of_order(
        cls,
        run_id: str,
        key: str,
        recorded: CallDescription | None,
        what: str,
        held: str,
    ) -> NonDeterminismError:
        """The code cannot go on in the order the run was recorded: `what` happened instead,
        and `held` names the steps that wait for a turn that cannot come."""
        error = cls.__new__(cls)
        error.run_id = run_id
        error.key = key
        error.recorded = recorded or CallDescription("?", None, None)
        error.now = CallDescription("(not asked)", None, None)
        error.changed_arguments = []
        lines = [
            f"Run {run_id!r} cannot go on in the order it was recorded: {what}.",
        ]
        if recorded is not None:
            lines.append(f"  recorded next: {recorded.render()}")
        if held:
            lines.append(f"  waiting for their recorded turn: {held}")
        lines += [
            "Results are handed to the workflow in the order it received them live, so code "
            "that reacts to which result came first takes the same path.",
            "Likely cause: the workflow code changed since the run was recorded, or it depends "
            "on something the journal does not hold (a plain asyncio timer, a thread the "
            "engine does not know, the clock, randomness).",
            "Fix: use replay.timeout() / replay.wait_for() for timeouts that decide the path; "
            "keep old runs on the code path they recorded; or fork the run before this step.",
        ]
        ReplayError.__init__(error, "\n".join(lines))
        return error


class FrontierReached(ReplayError):
    """Replay mode reached a call whose result the journal does not hold."""

    def __init__(self, run_id: str, key: str, name: str, detail: str, nearest: str) -> None:
        self.run_id = run_id
        self.key = key
        self.name = name
        super().__init__(
            f"Run {run_id!r}: replay reached step {key} ({name}) and {detail}. Replay mode never "
            f"calls live. {nearest}Fix: run with mode='resume' to continue live from here."
        )


class NotJournalable(ReplayError):
    """A value cannot be journaled; nothing was recorded for it."""

    def __init__(self, run_id: str, key: str, name: str, reason: str) -> None:
        self.run_id = run_id
        self.key = key
        super().__init__(f"Run {run_id!r}, step {key} ({name}): {reason}")


class OwnershipLost(ReplayError):
    """Another process took the run over; this process's writes are refused."""


class JournalWriteFailed(ReplayError):
    """The store refused a write; the step's result was not returned to the workflow."""


class Suspended(ReplayError):
    """The run waits: for a durable sleep to end, or for a signal not sent yet.

    Raised through the workflow to `run()`'s caller after the run was marked `waiting` and its
    lease released, so the process may exit. A worker (or `journal resume`) continues the run
    once it is due: at `wake_at`, or when signal `waiting_for` arrives.
    """

    def __init__(
        self, run_id: str, *, wake_at: datetime | None, waiting_for: str | None = None
    ) -> None:
        self.run_id = run_id
        self.wake_at = wake_at
        self.waiting_for = waiting_for
        what = f"signal {waiting_for!r}" if waiting_for else "its sleep to end"
        until = f" (due by {wake_at.isoformat(timespec='seconds')})" if wake_at else ""
        super().__init__(
            f"Run {run_id!r} is waiting for {what}{until}. It is recorded as waiting and no "
            "process owns it; `journal worker` continues it when it is due"
            + (f", after `journal signal {run_id} {waiting_for} JSON`." if waiting_for else ".")
        )


class SignalTimeout(Exception):
    """A signal did not arrive before its deadline. Journaled, so a replay raises it too."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(name, timeout)  # args a replay rebuilds it from

    def __str__(self) -> str:
        return f"signal {self.name!r} did not arrive within {self.timeout:g} seconds"


class StepFailed(ReplayError, Exception):
    """A step raised an exception whose type cannot be rebuilt from the journal.

    Raised live and on replay alike, so both see the same thing. Carries the original type's
    import path, its message and the recorded traceback text.
    """

    def __init__(self, type_name: str, message: str, traceback: str | None = None) -> None:
        self.type_name = type_name
        self.message = message
        self.recorded_traceback = traceback
        super().__init__(f"{type_name}: {message}")


class VersionNotAccepted(ReplayError):
    """The run was started by another version of the code than this process runs, and this
    process was not told that it can continue that version's runs."""

    def __init__(self, run_id: str, recorded: str, current: str | None, workflow: str) -> None:
        self.run_id = run_id
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"Run {run_id!r} was started by version {recorded!r} of its code, and this process "
            f"runs version {current!r} of {workflow}; nothing was resumed. Resumed by other "
            "code, its recorded steps may no longer replay. Fix: check it with `journal "
            "upgrade-check`, then continue it here with accept_versions=["
            f"{recorded!r}] (replay.resume_run, replay.Worker), or move it to this code "
            "with a fork."
        )
