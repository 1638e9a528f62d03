"""Workflows the worker tests submit; workers import them as `tests.fleet_workflows`.

Each step body appends "PID RUN_ID:KEY" to the file named by $FLEET_EFFECTS (fsync'd), so a
test can count executions and see which process ran which run, outside the journal.
"""

from __future__ import annotations

import asyncio
import os

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
"""How many `together` steps are running at once in this process, the most there were, and
how many have begun."""


@step
async def together(group: int) -> int:
    """Wait (up to 10 s) until the `group` runs of this one's wave are all inside: the first
    `group` to begin are a wave, the next `group` the next one, and so on."""
    TOGETHER["entered"] += 1
    wave_end = -(-TOGETHER["entered"] // group) * group
    TOGETHER["inside"] += 1
    TOGETHER["peak"] = max(TOGETHER["peak"], TOGETHER["inside"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while TOGETHER["entered"] < wave_end and loop.time() < deadline:
        await asyncio.sleep(0.005)
    TOGETHER["inside"] -= 1
    return TOGETHER["peak"]


async def meet(group: int) -> int:
    return await together(group)
