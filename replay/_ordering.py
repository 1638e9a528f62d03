"""Completion order as a journaled fact: `as_completed` that replays the order it saw live.

`asyncio.as_completed` yields results in the order they finish, and that order is timing. When
workflow code acts on "whichever finished first" (calls the next step with it, or stops early),
replay must see the same winner. Here each "which one finished next?" is itself a journaled step
whose result is the index of the winner; replay serves the index and waits for that awaitable.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TypeVar

from journal import EventKind

from ._context import current_scope
from ._steps import step

T = TypeVar("T")


class _Race:
    """The awaitables of one `as_completed` call and the order in which they finished."""

    __slots__ = ("finished", "tasks")

    def __init__(self, tasks: list[asyncio.Future[Any]]) -> None:
        self.tasks = tasks
        self.finished: list[int] = []
        for index, task in enumerate(tasks):
            task.add_done_callback(functools.partial(self._finished, index))

    def _finished(self, index: int, _: asyncio.Future[Any]) -> None:
        self.finished.append(index)

    def abandon(self) -> None:
        """The race ends early (divergence, cancellation): stop the rest, keep logs quiet."""
        for task in self.tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: asyncio would log it when collected


@step(name="replay.as_completed", kind=EventKind.STEP)
async def _next_completed(pending: list[int], race: _Race) -> int:
    """Live: the index of the next awaitable to finish, in true completion order."""
    while True:
        for index in race.finished:
            if index in pending:
                return index
        waiting = [race.tasks[i] for i in pending]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)


_next_completed.__replay_step__.passive = True  # type: ignore[attr-defined]
"""Live, it only waits for the race's own tasks: it never makes the run busy on its own."""


def as_completed(aws: Iterable[Awaitable[T]]) -> Iterator[Awaitable[T]]:
    """Like `asyncio.as_completed`, but replay yields results in the order the live run saw.

    >>> for next_done in as_completed(search(q) for q in queries):
    ...     hits = await next_done   # the first search to finish, live and on replay
    ...     if hits: break

    The awaitables become tasks at once, in order, so their step keys do not depend on timing.
    Leaving the loop early (break, return) cancels the awaitables still running. Outside a
    journaled run this is `asyncio.as_completed`.
    """
    if current_scope.get() is None:
        return asyncio.as_completed(list(aws))
    race = _Race([asyncio.ensure_future(aw) for aw in aws])
    return _in_recorded_order(race)


def _in_recorded_order(race: _Race) -> Iterator[Awaitable[Any]]:
    pending = list(range(len(race.tasks)))
    try:
        for _ in range(len(race.tasks)):
            yield _next_result(race, pending)
    except GeneratorExit:
        race.abandon()  # the loop stopped early: the losers are not awaited by anyone
        raise


async def _next_result(race: _Race, pending: list[int]) -> Any:
    try:
        index = await _next_completed(list(pending), race)
    except BaseException:
        race.abandon()
        raise
    pending.remove(index)
    return await race.tasks[index]
