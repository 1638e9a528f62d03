"""Steps in threads: one lock over the session, keys fixed when the work is submitted."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx2
import openai
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import replay
import replay._history
from journal import Journal, MemoryStore
from replay.integrations import JournalTransport

executions: Counter[str] = Counter()
pauses: dict[str, float] = {}
_lock = threading.Lock()


@replay.step(kind="tool")
def lookup(name: str) -> str:
    with _lock:
        executions[name] += 1
    time.sleep(pauses.get(name, random.uniform(0, 0.01)))
    return f"<{name}>"


@replay.step(kind="llm")
def decide(order: list[str]) -> str:
    with _lock:
        executions["decide"] += 1
    return ",".join(order)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    executions.clear()
    pauses.clear()


async def to_thread_under_gather(names: list[str]) -> list[str]:
    return list(await asyncio.gather(*(asyncio.to_thread(lookup, name) for name in names)))


def test_to_thread_under_gather_journals_every_step_under_a_fixed_key(journal: Journal) -> None:
    """Sync steps run by asyncio.to_thread under gather: no write races (seq, chain, pending
    rows), each call keyed by submission order, and replay serves them all."""
    names = [f"n{i}" for i in range(12)]
    for attempt in range(3):
        run_id = f"t{attempt}"
        live = asyncio.run(
            replay.run(to_thread_under_gather, names, journal=journal, run_id=run_id)
        )
        assert live == [f"<{n}>" for n in names]
        keys = {e.key: e.call_arguments() for e in journal.events(run_id) if e.call_arguments()}
        # gather makes a task of each to_thread (0/1, 0/2, ...), which hands `lookup` over.
        assert keys == {f"0/{i + 1}/lookup#1:1": {"name": n} for i, n in enumerate(names)}
        assert all(v.ok for v in journal.verify(run_id))
    executions.clear()
    replayed = asyncio.run(
        replay.run(to_thread_under_gather, names, journal=journal, run_id="t0", mode="replay")
    )
    assert replayed == live and executions == Counter()


def parallel_tools(names: list[str]) -> str:
    """The smolagents shape: a pool runs tools with the caller's context. Each tool reports
    its result as it finishes, and that order goes into the next (LLM) call."""
    finished: queue.Queue[str] = queue.Queue()

    def tool(name: str) -> None:
        finished.put(lookup(name))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for name in names:
            pool.submit(contextvars.copy_context().run, tool, name)
    return decide([finished.get() for _ in names])


async def pool_workflow(names: list[str]) -> str:
    return parallel_tools(names)


async def pool_in_thread(names: list[str]) -> str:
    return await asyncio.to_thread(parallel_tools, names)


@settings(max_examples=10)
@given(st.permutations(range(4)))
def test_a_thread_pool_taking_results_as_completed_replays_its_order(order: list[int]) -> None:
    """Whatever order the tools finished in live, the pool sees that order again on replay
    (in a thread, a served step waits for its turn), so the call fed with it matches."""
    names = ["a", "b", "c", "d"]
    # 60 ms apart: far enough that a busy machine keeps the order the pauses set
    pauses.update({n: 0.06 * rank for n, rank in zip(names, order, strict=True)})
    journal = Journal(store=MemoryStore())
    live = asyncio.run(replay.run(pool_in_thread, names, journal=journal, run_id="p"))
    # The pauses set the live order on a machine with time to spare; a loaded one may swap
    # two threads, and the law is the same for any order live had: replay sees it again.
    assert sorted(live.split(",")) == [f"<{n}>" for n in names]
    # Unless live, a tool was held up between its step and its `put` while the next tool's
    # step finished (a loaded machine, seen once in a full run): the journal holds the steps'
    # order, not the puts', and a replay serves each tool's work in the steps' order.
    finished = [
        e.payload
        for e in journal.events("p")
        if e.name == "lookup" and e.status.value == "completed"
    ]
    assume([orjson.loads(p or b"null") for p in finished] == live.split(","))
    executions.clear()
    pauses.update({n: 0.0 for n in names})
    replayed = asyncio.run(
        replay.run(pool_in_thread, names, journal=journal, run_id="p", mode="replay")
    )
    assert replayed == live and executions == Counter()


def reacting_tools(names: list[str], slow: str) -> str:
    """As `parallel_tools`, with the tool `slow` working 30 ms on what its step returned
    (parsing it, say), done live long before the next tool finished."""
    finished: queue.Queue[str] = queue.Queue()

    def tool(name: str) -> None:
        got = lookup(name)
        time.sleep(0.03 if name == slow else 0.0)
        finished.put(got)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for name in names:
            pool.submit(contextvars.copy_context().run, tool, name)
    return decide([finished.get() for _ in names])


async def reacting_pool(names: list[str], slow: str) -> str:
    return await asyncio.to_thread(reacting_tools, names, slow)


def test_a_threads_work_on_its_served_result_ends_before_the_next_thread_has_its_turn() -> None:
    """Live, tool c put its result in the queue 30 ms after its step, 70 ms before the next
    tool's step finished. Served back to back, the next thread has its turn once c's work on
    its result is done (a thread's served outcome is reached when its work ends, or after
    `SETTLE_SECONDS` without progress), so c's `put` comes before d's again."""
    names = ["a", "b", "c", "d"]
    pauses.update({n: 0.1 * rank for rank, n in enumerate(names)})
    journal = Journal(store=MemoryStore())
    live = asyncio.run(replay.run(reacting_pool, names, "c", journal=journal, run_id="r"))
    assert live == "<a>,<b>,<c>,<d>"
    executions.clear()
    pauses.update({n: 0.0 for n in names})
    for _ in range(3):
        replayed = asyncio.run(
            replay.run(reacting_pool, names, "c", journal=journal, run_id="r", mode="replay")
        )
        assert replayed == live and executions == Counter()


def test_a_pool_driven_from_the_loop_thread_is_journaled_too(journal: Journal) -> None:
    """The same pool called straight from the workflow (blocking the loop) journals its tools
    under keys fixed at submission, and replays without running them."""
    names = ["x", "y", "z"]
    live = asyncio.run(replay.run(pool_workflow, names, journal=journal, run_id="q"))
    keys = sorted(e.key for e in journal.events("q") if e.name == "lookup")
    assert set(keys) == {f"0/parallel_tools.tool#{n}:1" for n in (1, 2, 3)}
    executions.clear()
    replayed = asyncio.run(
        replay.run(pool_workflow, names, journal=journal, run_id="q", mode="replay")
    )
    assert replayed == live and executions == Counter()


def test_run_in_executor_journals_the_step_and_replay_never_runs_it(journal: Journal) -> None:
    """loop.run_in_executor(None, step) carries no context of its own: it used to run the step
    unjournaled, live even in replay mode. It is journaled like any step now."""

    async def workflow() -> list[str]:
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(None, lookup, name) for name in ("p", "q")]

    assert asyncio.run(replay.run(workflow, journal=journal, run_id="e")) == ["<p>", "<q>"]
    assert [e.key for e in journal.events("e") if e.status.value == "completed"] == [
        "0/lookup#1:1",
        "0/lookup#2:1",
    ]
    executions.clear()
    replayed = asyncio.run(replay.run(workflow, journal=journal, run_id="e", mode="replay"))
    assert replayed == ["<p>", "<q>"] and executions == Counter()


def test_sync_sdk_calls_from_threads_are_journaled_without_races(tmp_path: object) -> None:
    """A sync OpenAI client used from several threads at once (to_thread under gather) through
    the journaling transport: every request is one step, keyed by submission, replayed offline."""
    served: list[str] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        served.append(request.url.path)
        time.sleep(random.uniform(0, 0.01))
        body = request.read().decode()
        return httpx2.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"re {len(body)}"},
                    }
                ],
            },
        )

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://llm.test/v1",
        http_client=httpx2.Client(transport=JournalTransport(httpx2.MockTransport(provider))),
    )

    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}]
        )
        return reply.choices[0].message.content or ""

    async def workflow() -> list[str]:
        return list(
            await asyncio.gather(*(asyncio.to_thread(ask, f"q{i}" * (i + 1)) for i in range(8)))
        )

    journal = Journal(store=MemoryStore())
    live = asyncio.run(replay.run(workflow, journal=journal, run_id="s"))
    assert len(served) == 8 and len({e.key for e in journal.events("s")}) == 8
    served.clear()
    assert asyncio.run(replay.run(workflow, journal=journal, run_id="s", mode="replay")) == live
    assert served == []


@pytest.mark.parametrize("loop_late", [False, True])
def test_a_thread_given_its_turn_late_by_the_cpu_is_not_called_stuck(
    journal: Journal, monkeypatch: pytest.MonkeyPatch, loop_late: bool
) -> None:
    """Served steps in threads, recorded later first: each thread waits for its turn while
    the others' are held. On a loaded machine a thread given its turn may get the CPU only
    later (or wait for room in its pool), while the run's loop has nothing to do: the run
    looked idle with parties held, and was called stuck (NonDeterminismError) though the
    thread was on its way. Made certain here by having each thread take 0.7 s to go on.
    `loop_late`: the loop is slow to hand the turn out too, so the thread takes it itself
    once its turn has come (`_PARK_SECONDS`)."""
    names = [f"n{i}" for i in range(3)]
    pauses.update({name: 0.02 * (3 - i) for i, name in enumerate(names)})
    live = asyncio.run(replay.run(to_thread_under_gather, names, journal=journal, run_id="r"))
    late = replay._history.IDLE_SECONDS + 0.2
    go_on = replay._history.wait_for_room

    def starved(stopped: Callable[[], bool]) -> None:
        time.sleep(late)  # the thread has its turn, not the CPU
        go_on(stopped)

    monkeypatch.setattr(replay._history, "wait_for_room", starved)
    if loop_late:
        settle = replay._history.History._settle

        def settle_late(history: replay._history.History) -> None:
            time.sleep(2 * replay._history._PARK_SECONDS)  # the loop's thread gets the CPU late
            settle(history)

        monkeypatch.setattr(replay._history.History, "_settle", settle_late)
    executions.clear()
    replayed = asyncio.run(
        replay.run(to_thread_under_gather, names, journal=journal, run_id="r", mode="replay")
    )
    assert replayed == live and executions == Counter()
