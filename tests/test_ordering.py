"""Resume and replay hand recorded outcomes to the workflow in the order it received them live."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replay
from journal import Journal, MemoryStore

executions: Counter[str] = Counter()
delays: dict[str, float] = {}


@replay.step(kind="tool")
async def fetch(name: str) -> str:
    executions[name] += 1
    await asyncio.sleep(delays.get(name, 0.0))
    return f"<{name}>"


@replay.step(kind="llm")
async def summarise(seen: list[str]) -> str:
    executions["summarise"] += 1
    return " then ".join(seen)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    executions.clear()
    delays.clear()


async def first_come_first_served(names: list[str]) -> str:
    """Acts on completion order with plain asyncio: the order feeds the next step."""
    seen: list[str] = []

    async def one(name: str) -> None:
        seen.append(await fetch(name))

    await asyncio.gather(*(one(name) for name in names))
    return await summarise(seen)


@settings(max_examples=25)
@given(st.permutations(range(4)))
def test_replay_hands_out_outcomes_in_their_live_order(order: list[int]) -> None:
    """For any live completion order, replay (offline) sees the same order: the step fed with
    it is not a divergence, and nothing runs. Plain asyncio.gather, no special helper."""
    names = ["a", "b", "c", "d"]
    # 20 ms apart: a loaded machine (a CI runner, test workers side by side) keeps the order.
    delays.update({name: 0.02 * rank for name, rank in zip(names, order, strict=True)})
    journal = Journal(store=MemoryStore())
    live = asyncio.run(replay.run(first_come_first_served, names, journal=journal, run_id="r"))
    # The delays set the live order on a machine with time to spare (a loaded one may swap two
    # tasks): whatever order live had, replay must see it again.
    assert sorted(live.split(" then ")) == [f"<{n}>" for n in names]
    executions.clear()
    delays.clear()  # every fetch would now finish at once, in creation order
    replayed = asyncio.run(
        replay.run(first_come_first_served, names, journal=journal, run_id="r", mode="replay")
    )
    assert replayed == live and executions == Counter()


interrupt_after: dict[str, int] = {}


async def dispatcher(names: list[str]) -> list[str]:
    """Spawns a follow-up task for each result as it arrives (as event-driven frameworks
    do): the follow-ups' keys follow completion order."""
    results: asyncio.Queue[str] = asyncio.Queue()

    async def worker(name: str) -> None:
        await results.put(await fetch(name))

    workers = [asyncio.create_task(worker(name)) for name in names]
    follow_ups = []
    for _ in names:
        got = await results.get()
        follow_ups.append(asyncio.create_task(fetch(f"after {got}")))
        if len(follow_ups) == interrupt_after.get("results"):
            await asyncio.gather(*follow_ups)
            raise KeyboardInterrupt  # Ctrl+C while the slowest call is still in flight
    await asyncio.gather(*workers)
    return list(await asyncio.gather(*follow_ups))


def test_resume_of_an_event_driven_run_pays_nothing_twice(journal: Journal) -> None:
    """Interrupted after two of three tool results arrived (and their follow-ups ran), the
    resumed run gets the two recorded results in their live order, so the follow-up tasks get
    the keys they had: no completed call runs again, and nothing diverges."""
    names = ["slow", "mid", "fast"]
    delays.update({"slow": 0.3, "mid": 0.1, "fast": 0.0})
    interrupt_after["results"] = 2
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(dispatcher, names, journal=journal, run_id="d"))
    assert executions == Counter(
        {"slow": 1, "mid": 1, "fast": 1, "after <fast>": 1, "after <mid>": 1}
    )
    executions.clear()
    interrupt_after.clear()
    delays.update({"slow": 0.0, "mid": 0.05, "fast": 0.1})  # a different race this time
    outcome = asyncio.run(replay.run_with_summary(dispatcher, names, journal=journal, run_id="d"))
    assert outcome.result == ["<after <fast>>", "<after <mid>>", "<after <slow>>"]
    assert executions == Counter({"slow": 1, "after <slow>": 1})
    assert outcome.summary.reexecuted == 1  # `slow`, in flight at the interrupt


def test_a_shielded_wait_for_replays_to_what_it_said_live(journal: Journal) -> None:
    """wait_for(shield(step), t) timed out live and the workflow went on (a step) while the
    shielded step finished. Served at once, that step would beat the timeout on replay and the
    result would silently change; handed out in order, replay says 'timeout' too."""
    delays.update({"report": 0.3})

    async def workflow() -> str:
        report = asyncio.ensure_future(fetch("report"))
        try:
            await asyncio.wait_for(asyncio.shield(report), 0.05)
            outcome = "no timeout"
        except TimeoutError:
            outcome = "timeout"
            await fetch("apology")
        return f"{outcome}: {await report}"

    live = asyncio.run(replay.run(workflow, journal=journal, run_id="s"))
    assert live == "timeout: <report>"
    replayed = asyncio.run(
        replay.run_with_summary(workflow, journal=journal, run_id="s", mode="replay")
    )
    assert replayed.result == live and replayed.summary.result_matches_recorded


def test_code_that_never_asks_for_what_came_next_is_a_clear_error(journal: Journal) -> None:
    """Live, one task asked for `check` before another task's `slow` answer arrived. Code that
    no longer asks for `check` cannot take that answer in order: replay raises a
    NonDeterminismError naming the step it waited for, rather than hang."""
    delays.update({"slow": 0.2})
    skip = {"check": False}

    async def workflow() -> list[str]:
        async def first() -> str:
            got = await fetch("quick")
            if not skip["check"]:
                await fetch("check")
            return got

        return list(await asyncio.gather(first(), fetch("slow")))

    asyncio.run(replay.run(workflow, journal=journal, run_id="n"))
    skip["check"] = True
    started = time.monotonic()
    with pytest.raises(replay.NonDeterminismError) as err:
        asyncio.run(replay.run(workflow, journal=journal, run_id="n", mode="replay"))
    assert time.monotonic() - started < 20
    assert "does not ask for it now" in str(err.value)
    assert err.value.key == "0/1:2" and "fetch(name='check')" in str(err.value)
    assert "0/2:1 (fetch)" in str(err.value)  # the step that waited for its turn


# -- what other tasks did while a step waited --------------------------------------------------


@replay.step(kind="tool")
async def instant(name: str) -> str:
    """A step that never waits: live, nothing else runs between its call and its result."""
    executions[name] += 1
    return f"<{name}>"


async def bystanders_meanwhile(asked: str) -> str:
    """One task asks for a step; the others, ready at the same moment, record that they ran.
    Live, they run while the step waits on I/O, or after a step that never waits returns."""
    order: list[str] = []

    async def asker() -> None:
        await (fetch(asked) if asked == "slow" else instant(asked))
        order.append("asker")

    async def bystander(name: str, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)  # a few loop turns of work that journals nothing
        order.append(name)

    await asyncio.gather(asker(), bystander("quick bystander", 0), bystander("busy one", 3))
    return await summarise(order)


@pytest.mark.parametrize(
    ("asked", "live_order"),
    [
        ("slow", "quick bystander then busy one then asker"),
        ("now", "asker then quick bystander"),  # the busy one's turns come after
    ],
)
def test_tasks_that_ran_while_a_step_waited_run_before_its_result_on_replay(
    journal: Journal, asked: str, live_order: str
) -> None:
    """A step that waited live is handed out only once the run's other ready tasks have done
    what they did meanwhile; a step that never waited is handed out at once, as it returned
    live. Served at once, the asker overtook the bystanders (a framework that numbers its tasks
    by what happened first then gave them other keys: llama-index's parallel tool calls)."""
    delays.update({"slow": 0.02})
    live = asyncio.run(replay.run(bystanders_meanwhile, asked, journal=journal, run_id="b"))
    assert live.startswith(live_order)
    executions.clear()
    replayed = asyncio.run(
        replay.run_with_summary(
            bystanders_meanwhile, asked, journal=journal, run_id="b", mode="replay"
        )
    )
    assert replayed.result == live and executions == Counter()


# -- journaled timeouts ------------------------------------------------------------------------


async def deadline_workflow() -> str:
    try:
        return await replay.wait_for(fetch("llm"), 0.3)
    except TimeoutError:
        return await fetch("fallback")


def test_a_journaled_timeout_replays_in_place_without_waiting(journal: Journal) -> None:
    """replay.wait_for's expiry is journaled: replay takes the timeout branch at once (it does
    not wait for the deadline), and never runs the abandoned step."""
    delays.update({"llm": 5.0})
    started = time.monotonic()
    live = asyncio.run(replay.run(deadline_workflow, journal=journal, run_id="t"))
    assert live == "<fallback>" and time.monotonic() - started >= 0.3
    kinds = [(e.name, e.kind.value, e.status.value) for e in journal.events("t")]
    assert ("replay.timeout", "timer", "completed") in kinds
    assert ("fetch", "tool", "cancelled") in kinds
    executions.clear()
    started = time.monotonic()
    replayed = asyncio.run(
        replay.run(deadline_workflow, journal=journal, run_id="t", mode="replay")
    )
    assert replayed == live and executions == Counter()
    assert time.monotonic() - started < 0.3  # the deadline was not waited for again


def test_a_journaled_timeout_that_did_not_fire_never_fires_on_replay(journal: Journal) -> None:
    """The step answered in time live: replay serves its answer, whatever the clock says."""
    live = asyncio.run(replay.run(deadline_workflow, journal=journal, run_id="k"))
    assert live == "<llm>"
    delays.update({"llm": 5.0})  # irrelevant now: the step is served
    assert (
        asyncio.run(replay.run(deadline_workflow, journal=journal, run_id="k", mode="replay"))
        == live
    )


def test_replay_timeout_block_outside_a_run_is_asyncio_timeout() -> None:
    """With no journaled run, replay.timeout is asyncio.timeout (and None means no limit)."""

    async def main() -> tuple[bool, str]:
        try:
            async with replay.timeout(0.01) as limit:
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        async with replay.timeout(None):
            await asyncio.sleep(0)
        return limit.expired(), await replay.wait_for(asyncio.sleep(0, "done"), None)

    assert asyncio.run(main()) == (True, "done")
    with pytest.raises(ValueError, match="seconds >= 0"):
        replay.timeout(-1)


def test_a_resumed_timeout_keeps_its_recorded_deadline(journal: Journal) -> None:
    """Interrupted inside a timeout block, the resumed run waits only for what is left of the
    recorded deadline, not for a fresh one."""
    delays.update({"llm": 60.0})

    async def interrupted() -> str:
        async def stop_soon() -> None:
            await asyncio.sleep(0.1)
            raise KeyboardInterrupt

        asyncio.get_running_loop().create_task(stop_soon())
        return await deadline_workflow()

    interrupted.__qualname__ = deadline_workflow.__qualname__
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(interrupted, journal=journal, run_id="i"))
    time.sleep(0.3)  # the deadline passes while no process runs the run
    started = time.monotonic()
    assert asyncio.run(replay.run(deadline_workflow, journal=journal, run_id="i")) == "<fallback>"
    assert time.monotonic() - started < 0.3
