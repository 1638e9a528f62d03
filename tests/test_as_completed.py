"""`replay.as_completed`: the winner of a race is journaled, so replay sees the same winner."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from journal import Journal, MemoryStore
from replay import NonDeterminismError, as_completed, run, run_with_summary, step

yields_for: dict[str, int] = {}
calls: list[str] = []


@step(kind="tool")
async def probe(source: str) -> str:
    calls.append(source)
    for _ in range(yields_for.get(source, 0)):
        await asyncio.sleep(0)
    return f"answer from {source}"


@step(kind="llm")
async def use(answer: str) -> str:
    return answer.upper()


async def fastest_then_use(sources: list[str]) -> list[str]:
    """Acts on completion order: the first answer feeds the next step, the order is returned."""
    order = []
    for next_done in as_completed(probe(s) for s in sources):
        order.append(await next_done)
    order.append(await use(order[0]))
    return order


@settings(max_examples=30)
@given(st.permutations(range(5)))
def test_replay_reproduces_the_live_completion_order(delays: list[int]) -> None:
    """Whatever order the probes finished in live, replay yields them in that order, and the
    step fed with the winner is not a divergence."""
    sources = ["a", "b", "c", "d", "e"]
    yields_for.update({s: d * 2 for s, d in zip(sources, delays, strict=True)})
    j = Journal(store=MemoryStore())
    live = asyncio.run(run(fastest_then_use, sources, journal=j, run_id="r"))
    assert live[:5] == [f"answer from {s}" for _, s in sorted(zip(delays, sources, strict=True))]
    # Replay with the opposite timing: a plain as_completed would now see another winner.
    yields_for.update({s: (4 - d) * 2 for s, d in zip(sources, delays, strict=True)})
    calls.clear()
    replayed = asyncio.run(
        run_with_summary(fastest_then_use, sources, journal=j, run_id="r", mode="replay")
    )
    assert replayed.result == live
    assert calls == [] and replayed.summary.executed == 0


def test_resume_after_an_interrupt_keeps_the_recorded_winners(tmp_path: Path) -> None:
    """Interrupted after two results: resume serves the first two winners, then goes live."""
    sources = ["a", "b", "c"]
    yields_for.update({"a": 6, "b": 0, "c": 3})
    interrupt = {"armed": True}

    async def wf(items: list[str]) -> list[str]:
        order = []
        for next_done in as_completed(probe(s) for s in items):
            order.append(await next_done)
            if len(order) == 2 and interrupt["armed"]:
                raise KeyboardInterrupt
        return order

    with Journal(tmp_path / "j.db") as j:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(wf, sources, journal=j, run_id="r"))
        interrupt["armed"] = False
        yields_for.update({"a": 0, "b": 6, "c": 3})  # a different race this time
        result = asyncio.run(run(wf, sources, journal=j, run_id="r"))
    assert result[:2] == ["answer from b", "answer from c"]
    assert result[2] == "answer from a"


def test_changed_set_of_awaitables_is_a_divergence() -> None:
    """Racing a different number of awaitables than recorded is reported, not mis-served."""
    j = Journal(store=MemoryStore())
    yields_for.clear()
    asyncio.run(run(fastest_then_use, ["a", "b"], journal=j, run_id="r"))

    async def three(sources: list[str]) -> list[str]:
        order = [await d for d in as_completed(probe(s) for s in [*sources, "extra"])]
        return order

    three.__qualname__ = fastest_then_use.__qualname__
    try:
        asyncio.run(run(three, ["a", "b"], journal=j, run_id="r", mode="replay"))
    except NonDeterminismError as err:
        assert "replay.as_completed" in str(err) or "probe" in str(err)
    else:
        raise AssertionError("a changed race must not replay silently")


def test_outside_a_run_it_is_asyncio_as_completed() -> None:
    """With no journaled run, results arrive in completion order, as asyncio's do."""
    yields_for.update({"x": 4, "y": 0})

    async def main() -> list[str]:
        return [await d for d in as_completed([probe("x"), probe("y")])]

    assert asyncio.run(main()) == ["answer from y", "answer from x"]
