"""Where a step was called from: `file:line` of the user's code, for divergence reports."""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._steps import StepSpec

_site_names: dict[str, str | None] = {}
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


def call_site(depth: int) -> str | None:
    """`file:line` of the frame `depth` levels up, path relative to the working directory.

    None when the step is the root coroutine of a task (gather, create_task): its caller is
    the event loop, which says nothing about where the step was called.
    """
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return None
    filename = frame.f_code.co_filename
    shown = _site_names.get(filename, "")
    if shown is None:
        return None
    if shown == "":
        if filename.startswith(_ASYNCIO_DIR):
            _site_names[filename] = None
            return None
        try:
            relative = os.path.relpath(filename)
        except ValueError:
            relative = filename
        shown = _site_names[filename] = filename if relative.startswith("..") else relative
    return f"{shown}:{frame.f_lineno}"


_LIBRARY_DIRS = tuple(
    {os.path.dirname(os.__file__), os.path.dirname(__file__) + os.sep}
    | {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
)


def caller_site(depth: int) -> str | None:
    """Like `call_site`, for a call made deep inside libraries (an SDK's HTTP request): the
    first frame at or above `depth` that is not in the standard library, an installed
    package or this engine, i.e. the user's line that made the call."""
    try:
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:
        return None
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame = frame.f_back
    if frame is None:
        return None
    try:
        relative = os.path.relpath(frame.f_code.co_filename)
    except ValueError:
        relative = frame.f_code.co_filename
    shown = frame.f_code.co_filename if relative.startswith("..") else relative
    return f"{shown}:{frame.f_lineno}"


def site_of(spec: StepSpec, depth: int) -> str | None:
    """The call site of a step's call: its caller's line, or the first user frame for calls
    made inside libraries (`spec.called_from_library`)."""
    finder = caller_site if spec.called_from_library else call_site
    return finder(depth + 1)
