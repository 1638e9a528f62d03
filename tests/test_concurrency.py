"""Step identity does not depend on scheduling: gather and TaskGroup replay identically."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from journal import Journal, MemoryStore
from replay import run, run_with_summary, step

delays: dict[int, int] = {}


@step
async def work(item: int) -> int:
    # Completion order follows the number of yields, set per item outside the arguments.
    for _ in range(delays.get(item, 0)):
        await asyncio.sleep(0)
    return item * 10


def _work(item: int, yields: int):  # type: ignore[no-untyped-def]
    delays[item] = yields
    return work(item)


def _keys_by_item(j: Journal, run_id: str) -> dict[str, int]:
    """Which item each `work` key was called with, from the rows that record the call."""
    keyed = {}
    for e in j.events(run_id):
        arguments = e.call_arguments()
        if e.name == "work" and arguments is not None:
            keyed[e.key] = arguments["item"]
    return keyed


@settings(max_examples=40)
@given(
    first=st.lists(st.integers(0, 6), min_size=2, max_size=7),
    second_seed=st.randoms(use_true_random=False),
)
def test_gather_keys_do_not_depend_on_completion_order(first: list[int], second_seed) -> None:  # type: ignore[no-untyped-def]
    """Two live runs with different completion orders give every call the same key, and a
    replay serves each call its own recorded value."""
    second = list(first)
    second_seed.shuffle(second)
    j = Journal(store=MemoryStore())
    completions: list[list[int]] = []

    def make(yields: list[int]):  # type: ignore[no-untyped-def]
        async def wf(n: int) -> list[int]:
            order: list[int] = []

            async def tracked(i: int) -> int:
                value = await _work(i, yields[i])
                order.append(i)
                return value

            values = await asyncio.gather(*(tracked(i) for i in range(n)))
            completions.append(order)
            return list(values)

        wf.__qualname__ = "wf"
        return wf

    n = len(first)
    assert asyncio.run(run(make(first), n, journal=j, run_id="a")) == [i * 10 for i in range(n)]
    assert asyncio.run(run(make(second), n, journal=j, run_id="b")) == [i * 10 for i in range(n)]
    assert _keys_by_item(j, "a") == _keys_by_item(j, "b")
    assert _keys_by_item(j, "a") == {f"0/{i + 1}:1": i for i in range(n)}
    replayed = asyncio.run(run_with_summary(make(second), n, journal=j, run_id="a", mode="replay"))
    assert replayed.result == [i * 10 for i in range(n)]
    assert replayed.summary.served == n


def test_taskgroup_and_nested_tasks_get_stable_paths() -> None:
    """TaskGroup children and grandchildren get paths fixed at creation: 0/2/1:1 and so on."""
    j = Journal(store=MemoryStore())

    async def branch(base: int) -> int:
        async with asyncio.TaskGroup() as tg:
            leaves = [tg.create_task(_work(base + k, 3 - k)) for k in range(2)]
        return sum(t.result() for t in leaves)

    async def wf() -> list[int]:
        await _work(0, 0)
        async with asyncio.TaskGroup() as tg:
            branches = [tg.create_task(branch(b * 100)) for b in range(2)]
        return [t.result() for t in branches]

    result = asyncio.run(run(wf, journal=j, run_id="tg"))
    assert result == [10, 2010]
    keys = sorted(_keys_by_item(j, "tg").items())
    assert keys == [("0/1/1:1", 0), ("0/1/2:1", 1), ("0/2/1:1", 100), ("0/2/2:1", 101), ("0:1", 0)]
    replayed = asyncio.run(run_with_summary(wf, journal=j, run_id="tg", mode="replay"))
    assert replayed.result == result and replayed.summary.served == 5


@step
async def fan_out(n: int) -> int:
    # Tasks created inside a live step belong to the step: they take no workflow keys, and
    # steps called inside a step run as plain functions.
    values = await asyncio.gather(*(_work(i, i) for i in range(n)))
    return sum(values)


def test_tasks_spawned_inside_a_step_do_not_shift_workflow_keys() -> None:
    """A step that spawns tasks live leaves the workflow's key sequence untouched on replay."""
    j = Journal(store=MemoryStore())

    async def wf() -> list[int]:
        a = await fan_out(4)
        b = await asyncio.gather(_work(1, 0), _work(2, 0))
        return [a, *b]

    result = asyncio.run(run(wf, journal=j, run_id="fan"))
    assert result == [60, 10, 20]
    assert sorted(_keys_by_item(j, "fan")) == ["0/1:1", "0/2:1"]  # the inner 4 are not steps
    called = {e.key for e in j.events("fan") if e.call_arguments() is not None}
    assert sorted(called) == ["0/1:1", "0/2:1", "0:1"]
    replayed = asyncio.run(run_with_summary(wf, journal=j, run_id="fan", mode="replay"))
    assert replayed.result == result and replayed.summary.served == 3


def test_task_factory_is_chained_and_restored(tmp_path: Path) -> None:
    """A loop's own task factory keeps working inside a run and is restored after it."""
    created: list[str] = []

    def factory(loop, coro, **kwargs):  # type: ignore[no-untyped-def]
        created.append(getattr(coro, "__qualname__", "?"))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def wf() -> list[int]:
        return list(await asyncio.gather(_work(1, 1), _work(2, 0)))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        with Journal(tmp_path / "f.db") as j:
            assert await run(wf, journal=j, run_id=str(uuid.uuid4())) == [10, 20]
        assert loop.get_task_factory() is factory

    asyncio.run(main())
    assert created.count("work") == 2


def test_many_concurrent_runs_in_one_loop_keep_their_own_keys(tmp_path: Path) -> None:
    """Runs executing concurrently on one loop each journal only their own steps."""
    with Journal(tmp_path / "many.db") as j:

        async def wf(base: int) -> list[int]:
            return list(await asyncio.gather(*(_work(base + i, i % 3) for i in range(3))))

        async def main() -> list[list[int]]:
            return list(
                await asyncio.gather(*(run(wf, b, journal=j, run_id=f"r{b}") for b in range(5)))
            )

        results = asyncio.run(main())
        assert results == [[(b + i) * 10 for i in range(3)] for b in range(5)]
        for b in range(5):
            assert _keys_by_item(j, f"r{b}") == {f"0/{i + 1}:1": b + i for i in range(3)}


def test_permutations_exhaustively_for_three_tasks() -> None:
    """All 6 completion orders of three concurrent steps map to the same keys."""
    j = Journal(store=MemoryStore())
    maps = []
    for index, yields in enumerate(itertools.permutations([0, 2, 4])):

        async def wf(ys: tuple[int, ...] = yields) -> list[int]:
            return list(await asyncio.gather(*(_work(i, ys[i]) for i in range(3))))

        wf.__qualname__ = "wf"
        asyncio.run(run(wf, journal=j, run_id=f"p{index}"))
        maps.append(_keys_by_item(j, f"p{index}"))
    assert all(m == maps[0] for m in maps)
