"""Workflows the worker attack tests submit; workers import them as `tests.attack_workflows`.

Each step body appends "PID RUN_ID:KEY" to the file named by $FLEET_EFFECTS (fsync'd).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time

import replay
from replay import idempotency_key, step
from tests.workers.effects import append_line


def _effect() -> None:
    path = os.environ.get("FLEET_EFFECTS")
    if path:
        append_line(path, f"{os.getpid()} {idempotency_key()}")


@step
def sync_work(n: int, i: int) -> int:
    _effect()
    return (n * 37 + i * 11) % 1013


@step
async def async_work(n: int, i: int) -> int:
    await asyncio.sleep(0.001)
    _effect()
    return (n * 31 + i * 7) % 1009


def _in_thread(n: int, i: int) -> int:
    time.sleep(0.001)
    return sync_work(n, i)


async def threaded(n: int, steps: int) -> int:
    """Steps in threads (to_thread, run_in_executor(None)) and on the loop, in turn."""
    loop = asyncio.get_running_loop()
    total = n
    for i in range(steps):
        if i % 3 == 0:
            total = (total + await asyncio.to_thread(_in_thread, total, i)) % 100_003
        elif i % 3 == 1:
            total = (total + await loop.run_in_executor(None, _in_thread, total, i)) % 100_003
        else:
            total = (total + await async_work(total, i)) % 100_003
    return total


async def fanout(n: int, width: int) -> int:
    """`width` threads at once, each with a step; then a step on the loop."""
    parts = await asyncio.gather(*(asyncio.to_thread(_in_thread, n, i) for i in range(width)))
    return sum(parts) + await async_work(n, width)


async def thread_sleeper(seconds: float) -> str:
    """A step, then a thread that works for `seconds`."""
    await async_work(0, 0)
    await asyncio.to_thread(time.sleep, seconds)
    return "slept"


async def slow(seconds: float) -> str:
    await async_work(0, 0)
    await asyncio.sleep(seconds)
    return "slept"


TAG: contextvars.ContextVar[str] = contextvars.ContextVar("attack_tag", default="")


async def tagged(name: str, rounds: int) -> str:
    """Sets a context variable and its task's name, and checks both survive the other runs."""
    TAG.set(name)
    task = asyncio.current_task()
    assert task is not None
    for i in range(rounds):
        await async_work(len(name), i)
        await asyncio.sleep(0.001)
        if TAG.get() != name or asyncio.current_task() is not task:
            return f"mixed at {i}: {TAG.get()!r}"
        seen = await asyncio.to_thread(TAG.get)
        if seen != name:
            return f"thread saw {seen!r}"
    return name


async def timed(n: int) -> str:
    """A replay.timeout that expires around a slow step, and one that does not."""
    await async_work(n, 0)
    expired = False
    try:
        async with replay.timeout(0.05):
            await asyncio.sleep(5)
    except TimeoutError:
        expired = True
    value = await replay.wait_for(async_work(n, 1), 10)
    return f"{expired} {value}"


async def failing(n: int) -> int:
    await async_work(n, 0)
    raise ValueError(f"run {n} fails")


BLOCKER = threading.Event()


class Crash(BaseException):
    """Stands in for the process dying inside a step (the run stays interrupted)."""


CRASH_AT = [-1]


@step
def crashing_work(n: int, i: int) -> int:
    if i == CRASH_AT[0]:
        raise Crash
    return (n * 13 + i * 5) % 997


def _crashing_in_thread(n: int, i: int) -> int:
    time.sleep(0.0005 * (n % 4))
    return crashing_work(n, i)


async def interleaved(n: int, width: int) -> int:
    """Waves of `width` threads whose steps finish in an order that depends on timing, then a
    step that may crash: continued, the threads' steps are served in their recorded order."""
    total = n
    for wave in range(3):
        parts = await asyncio.gather(
            *(
                asyncio.to_thread(_crashing_in_thread, total + i, wave * 10 + i)
                for i in range(width)
            )
        )
        total = (total * 7 + sum(p * (k + 1) for k, p in enumerate(parts))) % 100_003
        total = (total + crashing_work(total, 100 + wave)) % 100_003
    return total


def _sleep_then_step(seconds: float) -> int:
    time.sleep(seconds)
    return sync_work(1, 1)


async def thread_then_step(seconds: float) -> int:
    """A step, then a thread that works for `seconds` and then takes a step."""
    await async_work(0, 0)
    return await asyncio.to_thread(_sleep_then_step, seconds)
