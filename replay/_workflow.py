"""A workflow function as the engine sees it: its import path, result codec and parameters."""

from __future__ import annotations

import asyncio
import inspect
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from journal import ValueCodec

from ._session import RunSummary

R = TypeVar("R")


@dataclass(frozen=True)
class RunOutcome(Generic[R]):
    """A workflow's result together with how this sitting obtained it."""

    result: R
    summary: RunSummary


class WorkflowSpec:
    __slots__ = ("codec", "path", "positional")

    def __init__(self, workflow: Callable[..., Any]) -> None:
        if not asyncio.iscoroutinefunction(workflow):
            raise TypeError(
                f"run() needs an async workflow function, got {workflow!r}. Fix: define it "
                "with `async def`, or wrap other code in `async with journaled(...)`."
            )
        self.path = f"{workflow.__module__}:{workflow.__qualname__}"
        try:
            hints = typing.get_type_hints(workflow)
        except Exception:
            hints = {}
        self.codec = ValueCodec(hints.get("return", Any))
        parameters = inspect.signature(workflow).parameters.values()
        self.positional = [
            p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]


_workflow_specs: weakref.WeakKeyDictionary[Callable[..., Any], WorkflowSpec] = (
    weakref.WeakKeyDictionary()
)


def spec_for(workflow: Callable[..., Any]) -> WorkflowSpec:
    spec = _workflow_specs.get(workflow)
    if spec is None:
        spec = _workflow_specs[workflow] = WorkflowSpec(workflow)
    return spec
