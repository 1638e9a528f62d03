"""Step identity: which journaled run the running code belongs to, and at which key.

A key is the task path plus a per-task counter: `0:3` is the third step of the workflow's own
task, `0/2:1` the first step of its second child task. A child's path is fixed when its parent
creates it (through a task factory on the loop), never by when it happens to run, so
`asyncio.gather` and TaskGroups get the same keys live and on replay.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._session import Session


class TaskScope:
    """The journaling position of one task inside one run."""

    __slots__ = ("children", "path", "retries", "session", "steps")

    def __init__(self, session: Session, path: str) -> None:
        self.session = session
        self.path = path
        self.steps = 0
        self.children = 0
        self.retries: dict[str, Any] | None = None
        """Integrations' retry bookkeeping: a call's fingerprint -> the key its next attempt
        continues (an SDK retrying a request is one step with several attempts)."""

    def next_key(self) -> str:
        self.steps += 1
        return f"{self.path}:{self.steps}"

    def child(self) -> TaskScope:
        self.children += 1
        return TaskScope(self.session, f"{self.path}/{self.children}")


current_scope: contextvars.ContextVar[TaskScope | None] = contextvars.ContextVar(
    "replay_current_scope", default=None
)
"""None outside any run, and inside a step's live execution (its inner work is its own)."""

live_step_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "replay_live_step_key", default=None
)
"""`run_id:key` of the step whose body is running live, for idempotency keys."""


class _Factory:
    """Task factory giving each task created inside a run its own child scope.

    Chains whatever factory the loop had, and is removed when the last run on the loop ends.
    """

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.users = 0

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        scope = current_scope.get()
        if scope is not None:
            context = kwargs.get("context") or contextvars.copy_context()
            context.run(current_scope.set, scope.child())
            kwargs["context"] = context
        if self.previous is None:
            return asyncio.Task(coro, loop=loop, **kwargs)
        task: asyncio.Task[Any] = self.previous(loop, coro, **kwargs)
        return task


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    current: Any = loop.get_task_factory()
    if isinstance(current, _Factory):
        factory = current
    else:
        factory = _Factory(current)
        loop.set_task_factory(factory)  # type: ignore[arg-type]
    factory.users += 1


def uninstall_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    factory = loop.get_task_factory()
    if isinstance(factory, _Factory):
        factory.users -= 1
        if factory.users <= 0:
            loop.set_task_factory(factory.previous)
