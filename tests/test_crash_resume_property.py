"""Any crash point, then resume, gives the uncrashed result; no completed step runs twice.

Crashes here are a BaseException raised inside a step body (before or after its side effect)
or between steps, on a real SQLite file: the process-level version with SIGKILL lives in
test_crash_sigkill.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from journal import EventStatus, Journal, MemoryStore
from replay import idempotency_key, run, step


class Crash(BaseException):
    pass


class World:
    """The outside world of one example: side effects and when to crash."""

    def __init__(self, crash_at: list[tuple[int, str]]) -> None:
        self.crash_at = list(crash_at)  # (n-th body execution of this sitting, where)
        self.executions = 0
        self.effects: Counter[str] = Counter()
        self.in_flight_at_crash: Counter[str] = Counter()

    def maybe_crash(self, where: str, key: str | None) -> None:
        if self.crash_at and self.crash_at[0] == (self.executions, where):
            self.crash_at.pop(0)
            if key is not None and where == "after_effect":
                self.in_flight_at_crash[key] += 1
            raise Crash


world = World([])


@step
async def op(x: int, salt: str) -> int:
    world.executions += 1
    key = idempotency_key()
    world.maybe_crash("before_effect", key)
    await asyncio.sleep(0)
    assert key is not None
    world.effects[key] += 1
    world.maybe_crash("after_effect", key)
    return (x * 31 + len(salt)) % 1009


Program = list[tuple[str, Any]]

programs = st.lists(
    st.one_of(
        st.tuples(st.just("seq"), st.integers(0, 100)),
        st.tuples(st.just("par"), st.lists(st.integers(0, 100), min_size=1, max_size=4)),
    ),
    min_size=1,
    max_size=6,
)


def make_workflow(program: Program):  # type: ignore[no-untyped-def]
    async def workflow(seed: int) -> list[int]:
        acc = seed
        trace = []
        for index, (kind, arg) in enumerate(program):
            if kind == "seq":
                acc = await op(acc + arg, f"s{index}")
                trace.append(acc)
            else:
                values = await asyncio.gather(*(op(acc + a, f"p{index}") for a in arg))
                acc = sum(values) % 1009
                trace.extend(values)
        return trace

    workflow.__qualname__ = "workflow"
    return workflow


def _step_count(program: Program) -> int:
    return sum(1 if kind == "seq" else len(arg) for kind, arg in program)


@settings(max_examples=60)
@given(
    program=programs,
    seed=st.integers(0, 50),
    crash_points=st.lists(
        st.tuples(st.integers(1, 12), st.sampled_from(["before_effect", "after_effect"])),
        max_size=4,
    ),
)
def test_any_crash_points_then_resume_equals_uncrashed(
    tmp_path_factory: Any, program: Program, seed: int, crash_points: list[tuple[int, str]]
) -> None:
    """Crash at random points (several times), resume each time: the final result equals a
    clean run's, each step completes once, and a step's effect repeats only if it was in
    flight at a crash."""
    global world
    workflow = make_workflow(program)

    world = World([])
    reference = asyncio.run(run(workflow, seed, journal=Journal(store=MemoryStore()), run_id="ref"))

    path: Path = tmp_path_factory.mktemp("crash") / f"{uuid.uuid4().hex}.db"
    world = World([])
    crashes = 0
    with Journal(path) as j:
        for crash_point in [*crash_points, None]:
            world.crash_at = [] if crash_point is None else [crash_point]
            world.executions = 0
            try:
                result = asyncio.run(run(workflow, seed, journal=j, run_id="r"))
                break
            except Crash:
                crashes += 1
        else:  # pragma: no cover - the last sitting has no crash point
            raise AssertionError("never finished")
        assert result == reference
        events = j.events("r")

    completed = Counter(e.key for e in events if e.status is EventStatus.COMPLETED)
    assert len(completed) == _step_count(program)
    assert set(completed.values()) == {1}
    for key, count in world.effects.items():
        assert count == 1 + world.in_flight_at_crash[key], key
    assert sum(world.effects.values()) <= _step_count(program) + crashes


def test_crash_between_steps_loses_nothing(tmp_path: Path) -> None:
    """A crash right after a step returned: that step is served on resume, not re-run."""
    global world
    world = World([])
    crashed = [False]

    async def wf(seed: int) -> list[int]:
        a = await op(seed, "a")
        if not crashed[0]:
            crashed[0] = True
            raise Crash
        return [a, await op(a, "b")]

    wf.__qualname__ = "wf"
    with Journal(tmp_path / "j.db") as j:
        with contextlib.suppress(Crash):
            asyncio.run(run(wf, 3, journal=j, run_id="x"))
        result = asyncio.run(run(wf, 3, journal=j, run_id="x"))
    assert result == [(3 * 31 + 1) % 1009, ((3 * 31 + 1) % 1009 * 31 + 1) % 1009]
    assert sorted(world.effects.values()) == [1, 1]
