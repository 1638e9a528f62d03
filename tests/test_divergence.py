"""Divergence: the same key asked for a different call is caught, explained, or forked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from journal import EventKind, Journal
from replay import NonDeterminismError, run, run_with_summary, step

executed: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()


@step
async def search(query: str, limit: int = 5) -> list[str]:
    executed.append(query)
    return [f"{query}-{i}" for i in range(min(limit, 2))]


@step
async def summarize(text: str) -> str:
    executed.append(f"sum:{text}")
    return text[:10]


def _make_workflow(topic_query: str, limit: int = 5):  # type: ignore[no-untyped-def]
    async def agent(topic: str) -> str:
        first = await search(topic)
        second = await search(topic_query, limit=limit)
        return await summarize(" ".join(first + second))

    agent.__qualname__ = "agent"
    return agent


def test_changed_argument_is_named_in_the_error(journal: Journal) -> None:
    """Replay with a changed argument names the run, key, both calls and the argument."""
    asyncio.run(run(_make_workflow("cats"), "pets", journal=journal, run_id="d1"))
    with pytest.raises(NonDeterminismError) as info:
        asyncio.run(
            run(_make_workflow("dogs"), "pets", journal=journal, run_id="d1", mode="replay")
        )
    err = info.value
    message = str(err)
    assert err.run_id == "d1" and err.key == "0:2"
    assert "Run 'd1' diverged from its journal at step 0:2" in message
    assert "recorded: search(limit=5, query='cats')" in message
    assert "now:      search(limit=5, query='dogs')" in message
    assert "query: 'cats' -> 'dogs'" in message
    assert err.changed_arguments == ["query: 'cats' -> 'dogs'"]
    assert "test_divergence.py:" in message  # both call sites, file:line
    assert "replay.now()" in message and "on_divergence='fork'" in message


@step(kind="llm")
async def ask(messages: list[dict[str, str]], model: str = "m") -> str:
    return "ok"


PREAMBLE = "You are a careful assistant who answers in full sentences, citing sources. " * 3


def test_a_long_argument_shows_where_it_differs(journal: Journal) -> None:
    """Two long prompts that differ late look alike cut to 60 characters: the error names the
    path inside the argument and the character where they differ, with the text around it."""

    def agent_about(topic: str):  # type: ignore[no-untyped-def]
        async def agent() -> str:
            content = f"{PREAMBLE}The user asks about {topic}."
            return await ask(
                [{"role": "system", "content": "hi"}, {"role": "user", "content": content}]
            )

        return agent

    asyncio.run(run(agent_about("cats"), journal=journal, run_id="long"))
    with pytest.raises(NonDeterminismError) as info:
        asyncio.run(run(agent_about("dogs"), journal=journal, run_id="long", mode="replay"))
    at = len(PREAMBLE) + len("The user asks about ")
    (change,) = info.value.changed_arguments
    assert change.startswith(f"messages[1].content, at character {at}: ")
    recorded, now = change.split(": ", 1)[1].split(" -> ")
    assert "about cats" in recorded and "about dogs" in now


def test_changed_step_name_is_named(journal: Journal) -> None:
    """Calling another step at a recorded key says which name changed."""
    asyncio.run(run(_make_workflow("cats"), "pets", journal=journal, run_id="d2"))

    async def agent(topic: str) -> str:
        await search(topic)
        return await summarize("other")

    agent.__qualname__ = "agent"
    with pytest.raises(NonDeterminismError, match="'search' -> '.*summarize'"):
        asyncio.run(run(agent, "pets", journal=journal, run_id="d2", mode="replay"))


def test_divergence_in_resume_mode_raises_by_default(journal: Journal) -> None:
    """Resume is strict too unless asked to fork: the journal is not touched."""

    class Crash(BaseException):
        pass

    async def agent(topic: str) -> str:
        await search(topic)
        await search("cats")
        raise Crash

    agent.__qualname__ = "agent"
    with pytest.raises(Crash):
        asyncio.run(run(agent, "pets", journal=journal, run_id="d3"))
    before = len(journal.events("d3"))
    with pytest.raises(NonDeterminismError):
        asyncio.run(run(_make_workflow("dogs"), "pets", journal=journal, run_id="d3"))
    assert len(journal.events("d3")) == before


def test_fork_on_divergence_keeps_prefix_and_continues_live(journal: Journal) -> None:
    """on_divergence='fork': steps before the change are served, the rest runs live."""

    class Crash(BaseException):
        pass

    async def agent(topic: str) -> str:
        first = await search(topic)
        second = await search("cats")
        await summarize(" ".join(first + second))
        raise Crash

    agent.__qualname__ = "agent"
    with pytest.raises(Crash):
        asyncio.run(run(agent, "pets", journal=journal, run_id="d4"))
    executed.clear()
    outcome = asyncio.run(
        run_with_summary(
            _make_workflow("dogs"), "pets", journal=journal, run_id="d4", on_divergence="fork"
        )
    )
    assert outcome.result == "pets-0 pet"
    assert executed == ["dogs", "sum:pets-0 pets-1 dogs-0 dogs-1"]
    assert outcome.summary.forked_at == "0:2"
    assert (outcome.summary.served, outcome.summary.executed) == (1, 2)
    assert outcome.summary.unconsumed == ()
    kinds = [e.kind for e in journal.events("d4")]
    assert EventKind.FORK in kinds
    # The forked journal now replays the new path faithfully, offline.
    executed.clear()
    replayed = asyncio.run(
        run_with_summary(
            _make_workflow("dogs"), "pets", journal=journal, run_id="d4", mode="replay"
        )
    )
    assert replayed.result == outcome.result
    assert executed == []
    assert replayed.summary.served == 3


def test_fork_keeps_steps_already_served_after_the_cut(journal: Journal) -> None:
    """A concurrent step recorded after the diverging one, but already served, stays recorded.

    Live, the child task records its step late (seq after the main task's 0:2). On resume it
    is served early, before the main task diverges at 0:2; the fork must carry it over, or a
    later replay would find it missing.
    """

    class Crash(BaseException):
        pass

    @step(name="slow")
    async def slow(q: str) -> str:
        executed.append(f"slow:{q}")
        return q.upper()

    def make(second: str, first_sitting: bool):  # type: ignore[no-untyped-def]
        async def child() -> str:
            if first_sitting:
                await asyncio.sleep(0.05)  # live: records after the main task's 0:2
            return await slow("child")

        async def agent(topic: str) -> list[str]:
            a = await search(topic)
            task = asyncio.ensure_future(child())
            await asyncio.sleep(0.01)  # resume: the child is served before 0:2 diverges
            b = await search(second)
            c = await task
            if first_sitting:
                raise Crash
            return [*a, *b, c]

        agent.__qualname__ = "agent"
        return agent

    with pytest.raises(Crash):
        asyncio.run(run(make("cats", True), "pets", journal=journal, run_id="d5"))
    recorded = [(e.key, e.status.value) for e in journal.events("d5")]
    assert recorded.index(("0/1:1", "completed")) > recorded.index(("0:2", "completed"))
    executed.clear()
    outcome = asyncio.run(
        run_with_summary(
            make("dogs", False), "pets", journal=journal, run_id="d5", on_divergence="fork"
        )
    )
    assert outcome.result == ["pets-0", "pets-1", "dogs-0", "dogs-1", "CHILD"]
    assert executed == ["dogs"]
    assert outcome.summary.forked_at == "0:2"
    executed.clear()
    replayed = asyncio.run(
        run_with_summary(make("dogs", False), "pets", journal=journal, run_id="d5", mode="replay")
    )
    assert replayed.result == outcome.result
    assert executed == []
    assert replayed.summary.served == 3


def test_fork_keeps_a_step_begun_before_the_change_and_finished_after_it(
    journal: Journal,
) -> None:
    """gather(slow, fast(x)): slow starts first and completes last. Changing x forks at fast;
    slow's completion (recorded after the cut) is carried over, so a later replay serves it."""
    ran: list[str] = []

    @step
    async def slow_step() -> str:
        ran.append("slow")
        await asyncio.sleep(0.05)
        return "slow"

    @step
    async def fast_step(x: str) -> str:
        ran.append(x)
        await asyncio.sleep(0)
        return x

    def make(x: str):  # type: ignore[no-untyped-def]
        async def pair() -> list[str]:
            return list(await asyncio.gather(slow_step(), fast_step(x)))

        pair.__qualname__ = "pair"
        return pair

    asyncio.run(run(make("a"), journal=journal, run_id="g"))
    order = [(e.key, e.status.value) for e in journal.events("g")]
    assert order.index(("0/1:1", "completed")) > order.index(("0/2:1", "completed"))
    ran.clear()
    # A finished run is not resumed: fork it at the start and change x in the fork's sitting.
    journal.fork("g", new_run_id="g2")
    outcome = asyncio.run(
        run_with_summary(make("b"), journal=journal, run_id="g2", on_divergence="fork")
    )
    assert outcome.result == ["slow", "b"] and ran == ["b"]
    ran.clear()
    replayed = asyncio.run(run_with_summary(make("b"), journal=journal, run_id="g2", mode="replay"))
    assert replayed.result == ["slow", "b"] and ran == []
    assert journal.verify("g2")[0].ok


def test_a_changed_keyword_argument_is_a_divergence(tmp_path: Path) -> None:
    """Keyword arguments are part of the call's fingerprint, like positional ones (a bind
    that kept only the positional ones would serve the old answer to a new question)."""

    @step
    async def ask(question: str, *, strict: bool = False, temperature: float = 0.0) -> str:
        return f"{question}:{strict}:{temperature}"

    flags = {"strict": True}

    async def flow() -> str:
        return await ask("q", **flags)

    with Journal(tmp_path / "kw.db") as journal:
        asyncio.run(run(flow, journal=journal, run_id="kw"))
        flags.update(strict=False, temperature=0.5)
        with pytest.raises(NonDeterminismError, match="strict: True -> False"):
            asyncio.run(run(flow, journal=journal, run_id="kw", mode="replay"))
