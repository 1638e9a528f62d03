"""Re-entering a `journaled(...)` block from the CLI: `journal replay|resume|retry RUN`.

A block names no workflow: its code is whatever the `async with` wraps. What can be called
again is the function that holds the block. When a block starts a run, that function is
recorded as the run's inputs (`{"block": {"function": "module:qualname", "file": ...}}`), if
it is an importable `async def` that takes no arguments. Calling it again under `block_call`
makes its `journaled(...)` block open the recorded run on the caller's journal, in the
caller's mode (offline replay, resume, retry): no hand-written entry is needed.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from journal import Journal, JournalError, Run

if TYPE_CHECKING:
    from ._session import Mode, RunSummary

_SKIPPED = (
    str(Path(__file__).parent),
    str(Path(inspect.__file__).parent / "asyncio"),
    str(Path(inspect.__file__).parent / "contextlib.py"),
)


def holder_here() -> dict[str, str] | None:
    """The function whose `async with journaled(...)` is being entered, if it can be called
    again as it is (an importable `async def` with no parameters); else None."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIPPED):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    code = frame.f_code
    qualname = code.co_qualname
    if not code.co_flags & inspect.CO_COROUTINE or "<" in qualname:
        return None  # not an async def, or a local function no import can reach
    if code.co_argcount or code.co_kwonlyargcount or code.co_posonlyargcount:
        return None
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str):
        return None
    try:
        shown = os.path.relpath(code.co_filename)
    except ValueError:
        shown = code.co_filename
    if shown.startswith(".."):
        shown = code.co_filename
    return {"function": f"{module}:{qualname}", "file": shown}


def recorded_holder(run: Run) -> str | None:
    """The entry (`module:qualname`, or `file.py:qualname` for a script) that holds the
    block which recorded `run`, or None if none was recorded."""
    try:
        inputs = orjson.loads(run.inputs or b"null")
    except orjson.JSONDecodeError:
        return None
    block = inputs.get("block") if isinstance(inputs, dict) else None
    if not isinstance(block, dict):
        return None
    function, file = block.get("function"), block.get("file")
    if not isinstance(function, str) or ":" not in function:
        return None
    module, _, qualname = function.partition(":")
    if module == "__main__":
        if not isinstance(file, str) or not file.endswith(".py"):
            return None
        return f"{file}:{qualname}"
    return function


class WorkflowNotFound(JournalError):
    """The workflow a run recorded (or the function holding its block) cannot be called here."""


@dataclass
class BlockCall:
    """A block's holder being called again to re-enter the recorded run `run_id`."""

    run_id: str
    journal: Journal
    mode: Mode
    retry: bool = False
    entered: bool = False
    summary: RunSummary | None = None
    other_runs: list[str] = field(default_factory=list)


block_call: contextvars.ContextVar[BlockCall | None] = contextvars.ContextVar(
    "replay_block_call", default=None
)


def refuse_other_run(run_id: str) -> None:
    """While a block's holder is called again, a run other than the recorded one is refused:
    it would run live, and a replay must never."""
    call = block_call.get()
    if call is not None and run_id != call.run_id:
        raise WorkflowNotFound(
            f"while re-entering run {call.run_id!r}, the function that holds its block "
            f"started run {run_id!r}, which is not the one recorded: nothing of it ran. Fix: "
            "pass --entry module:function naming a function that enters only that block."
        )
