"""Workflows the worker tests submit; workers import them as `tests.fleet_workflows`.

Each step body appends "PID RUN_ID:KEY" to the file named by $FLEET_EFFECTS (fsync'd), so a
test can count executions and see which process ran which run, outside the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from datetime import datetime

from pydantic import BaseModel

from replay import idempotency_key, now, signal, sleep, step
from tests.workers.effects import append_line


def _effect() -> None:
    path = os.environ.get("FLEET_EFFECTS")
    if path:
        append_line(path, f"{os.getpid()} {idempotency_key()}")


@step
async def work(n: int, i: int) -> int:
    await asyncio.sleep(0.002)
    _effect()
    return (n * 31 + i * 7) % 1009


async def chain(n: int, steps: int) -> int:
    """`steps` sequential steps; the result depends on every one of them."""
    total = n
    for i in range(steps):
        total = (total + await work(total, i)) % 100_003
    return total


async def slow(seconds: float) -> str:
    await work(0, 0)
    await asyncio.sleep(seconds)
    return "slept"


async def approve_refund(amount: int) -> str:
    """A refund that waits for a person: `journal signal RUN approval '{"approved": true}'`."""
    await work(amount, 0)
    decision = await signal("approval")
    if decision.get("approved"):
        await work(amount, 1)
        return f"refunded {amount}"
    return "declined"


async def nap(seconds: float) -> str:
    """A durable sleep; "rested" if at least `seconds` passed between its two clock reads."""
    before = await now()
    await sleep(seconds)
    return "rested" if (await now() - before).total_seconds() >= seconds else "early"


TOGETHER = {"inside": 0, "peak": 0, "entered": 0}
_TOGETHER_LOCK = threading.Lock()
"""How many `together` steps are running at once in this process, the most there were, and
how many have begun."""


@step
async def together(group: int) -> int:
    """Wait (up to 10 s) until the `group` runs of this one's wave are all inside: the first
    `group` to begin are a wave, the next `group` the next one, and so on."""
    with _TOGETHER_LOCK:  # with `loop_per_run`, each run has a thread and a loop of its own
        TOGETHER["entered"] += 1
        wave_end = -(-TOGETHER["entered"] // group) * group
        TOGETHER["inside"] += 1
        TOGETHER["peak"] = max(TOGETHER["peak"], TOGETHER["inside"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while TOGETHER["entered"] < wave_end and loop.time() < deadline:
        await asyncio.sleep(0.005)
    with _TOGETHER_LOCK:
        TOGETHER["inside"] -= 1
    return TOGETHER["peak"]


async def meet(group: int) -> int:
    return await together(group)


class Crash(BaseException):
    """Stands in for the process dying inside a step (the run stays interrupted)."""


CRASH_IN_S2 = [False]


@step
def s1(n: int) -> int:
    return n


@step
def s2(n: int) -> int:
    if CRASH_IN_S2[0]:
        raise Crash
    return 2 * n


@step
def s3(n: int) -> int:
    return 3 * n


@step
async def mid(n: int) -> int:
    return n


def _thread_a(n: int) -> int:
    first = s1(n)
    time.sleep(0.1)  # live, the second thread's step is done by then
    return first + s2(n)


def _thread_b(n: int) -> int:
    return s3(n)


async def pair(n: int) -> int:
    """Two threads of the loop's default pool; the first thread's second step was recorded
    after the second thread's step. Continued, the first thread waits for that turn while
    it holds a thread of the pool, and the second thread needs one."""
    first = asyncio.ensure_future(asyncio.to_thread(_thread_a, n))
    await mid(n)
    second = asyncio.ensure_future(asyncio.to_thread(_thread_b, n))
    return await first + await second


BLOCKED: list[tuple[float, float]] = []
"""(start, end) of each `blocking` run's blocking section."""


async def blocking(seconds: float) -> str:
    """A workflow that blocks its event loop (a sync call in async code), as some SDK and
    framework code does."""
    await work(0, 0)
    began = time.monotonic()
    time.sleep(seconds)
    BLOCKED.append((began, time.monotonic()))
    return "done"


async def thread_names(calls: int) -> list[str]:
    """The names of the threads `asyncio.to_thread` ran this run's work on."""
    names = []
    for _ in range(calls):
        names.append(await asyncio.to_thread(lambda: threading.current_thread().name))
        await work(len(names), 0)
    return names


CRASH_AFTER_FIRST_CALL = [False]


async def ask_twice(base_url: str, pause: float) -> list[str]:
    """Two model calls through a client this code builds (journaled only by `instrument()`,
    which a resume of a run with recorded requests puts in force), `pause` seconds apart."""
    import openai

    answers = []
    async with openai.AsyncOpenAI(api_key="sk-fleet-0000", base_url=base_url) as client:
        for number in range(2):
            if number:
                await asyncio.sleep(pause)
            completion = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"q{number}"}]
            )
            answers.append(completion.choices[0].message.content or "")
            if CRASH_AFTER_FIRST_CALL[0]:
                raise Crash
    return answers


SHARED_POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="user-shared")
"""A user's own small pool, made at import and used by every run of the process."""


@step
def late_first(n: int, i: int) -> int:
    """Live, the later calls finish first: served, the earlier ones wait for them."""
    time.sleep(0.004 * (3 - i))
    _effect()
    return n + i


def _handoff(n: int) -> int:
    """Work a run hands to a thread, which hands three steps on to the shared pool."""
    parts = [SHARED_POOL.submit(late_first, n, i) for i in range(3)]
    return sum(part.result() for part in parts)


async def shared_pool(n: int) -> int:
    """Steps in a pool every run shares, before and after a signal: resumed together, the
    runs' served steps wait in that pool for their turns."""
    loop = asyncio.get_running_loop()
    first = await asyncio.gather(
        *(loop.run_in_executor(SHARED_POOL, late_first, n, i) for i in range(3))
    )
    second = await asyncio.to_thread(_handoff, n + 1)
    await signal("go")
    third = await asyncio.to_thread(_handoff, n + 2)
    return sum(first) + second + third


class Order(BaseModel):
    sku: str
    placed: datetime


async def describe_order(order: Order, copies: int) -> str:
    """Its arguments as the types they arrive as (a resumed run gets them back from JSON)."""
    return f"{type(order).__name__} {order.placed.year} x{copies}"


async def describe_when(order: datetime, copies: str) -> str:
    """The same parameter names as `describe_order`, other types."""
    return f"{type(order).__name__} {type(copies).__name__}"


class Session:
    """Something a caller may hand a workflow in-process, never recorded (pydantic has no
    schema for it)."""


async def describe_at(when: datetime, session: Session | None = None) -> str:
    """An optional parameter of a type pydantic cannot validate, left out of the inputs."""
    return f"{type(when).__name__} {session is None}"
