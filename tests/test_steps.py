"""@step: plain outside a run; journaled, typed and re-raised inside one."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

import replay
from journal import EventStatus, Journal
from replay import NotJournalable, StepFailed, idempotency_key, run, run_with_summary, step


class Hit(BaseModel):
    title: str
    score: float


@dataclasses.dataclass
class Box:
    items: tuple[int, ...]
    when: dt.datetime


calls: dict[str, int] = {}


def _count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@step
async def ask(prompt: str) -> str:
    _count("ask")
    await asyncio.sleep(0)
    return f"answer to {prompt}"


@step(name="search", kind="tool")
async def search(query: str) -> list[Hit]:
    _count("search")
    return [Hit(title=query, score=0.5)]


@step
def add(a: int, b: int) -> int:
    _count("add")
    return a + b


@step
async def boxed() -> Box:
    _count("boxed")
    return Box(items=(1, 2), when=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))


def test_steps_outside_a_run_are_plain_functions() -> None:
    """Called outside any run, a step just runs: no journal needed, nothing recorded."""
    assert asyncio.run(ask("x")) == "answer to x"
    assert add(2, 3) == 5
    assert asyncio.run(search("q")) == [Hit(title="q", score=0.5)]
    assert calls == {"ask": 1, "add": 1, "search": 1}


def test_typed_values_come_back_typed_live_and_on_replay(journal: Journal) -> None:
    """Live and replay both return the decoded, typed value (models, dataclasses, tuples)."""
    seen: list[Any] = []

    async def wf() -> str:
        hits = await search("cats")
        box = await boxed()
        seen.append((hits, box))
        return hits[0].title

    asyncio.run(run(wf, journal=journal, run_id="typed"))
    asyncio.run(run(wf, journal=journal, run_id="typed", mode="replay"))
    (live_hits, live_box), (replayed_hits, replayed_box) = seen
    assert live_hits == replayed_hits == [Hit(title="cats", score=0.5)]
    assert isinstance(replayed_hits[0], Hit)
    assert live_box == replayed_box
    assert isinstance(replayed_box.items, tuple)
    assert replayed_box.when.tzinfo is not None
    assert calls == {"search": 1, "boxed": 1}


def test_sync_steps_are_journaled(journal: Journal) -> None:
    """A plain `def` step inside a run is served from the journal on replay."""

    async def wf() -> int:
        return add(1, 2) + add(3, 4)

    assert asyncio.run(run(wf, journal=journal, run_id="sync")) == 10
    outcome = asyncio.run(run_with_summary(wf, journal=journal, run_id="sync", mode="replay"))
    assert outcome.result == 10
    assert outcome.summary.served == 2
    assert calls == {"add": 2}


class QuotaError(Exception):
    pass


@step
async def over_quota() -> str:
    _count("quota")
    raise QuotaError("quota exceeded for key k-1")


def test_step_exception_is_recorded_and_reraised_as_same_type(journal: Journal) -> None:
    """A failed step is journaled; replay re-raises the same type and message without running."""
    caught: list[BaseException] = []

    async def wf() -> str:
        try:
            return await over_quota()
        except QuotaError as exc:
            caught.append(exc)
            return "handled"

    assert asyncio.run(run(wf, journal=journal, run_id="err")) == "handled"
    assert asyncio.run(run(wf, journal=journal, run_id="err", mode="replay")) == "handled"
    assert [type(e) for e in caught] == [QuotaError, QuotaError]
    assert [str(e) for e in caught] == ["quota exceeded for key k-1"] * 2
    assert calls == {"quota": 1}
    # The step never waited, so its start and its failure are one row carrying the arguments.
    (row,) = journal.events("err")
    assert row.status is EventStatus.FAILED and row.call_arguments() is not None


class Unrebuildable(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}/{reason}")
        self.handle = object()  # a live object: the journal cannot hold it, so no rebuild


@step
async def weird_failure() -> str:
    raise Unrebuildable(3, "nope")


def test_unrebuildable_exception_is_step_failed_live_and_on_replay(journal: Journal) -> None:
    """An exception type that cannot be rebuilt is StepFailed live and on replay alike."""
    seen: list[StepFailed] = []

    async def wf() -> str:
        try:
            return await weird_failure()
        except StepFailed as exc:
            seen.append(exc)
            return exc.type_name

    asyncio.run(run(wf, journal=journal, run_id="weird"))
    asyncio.run(run(wf, journal=journal, run_id="weird", mode="replay"))
    assert len(seen) == 2
    for exc in seen:
        assert exc.type_name.endswith(":Unrebuildable")
        assert exc.message == "3/nope"
        assert "Unrebuildable" in (exc.recorded_traceback or "")


attempts: list[int] = []


@step(retries=3, retry_delay=0.0)
async def flaky(n: int) -> int:
    attempts.append(n)
    await asyncio.sleep(0)  # waits, so each attempt's start is its own row
    if len(attempts) < 3:
        raise ConnectionError("reset by peer")
    return n * 10


def test_retries_journal_each_attempt_and_serve_the_final_result(journal: Journal) -> None:
    """Failed attempts are journaled as retrying; replay serves the final value, no retries."""
    attempts.clear()

    async def wf() -> int:
        return await flaky(4)

    assert asyncio.run(run(wf, journal=journal, run_id="flaky")) == 40
    assert len(attempts) == 3
    assert asyncio.run(run(wf, journal=journal, run_id="flaky", mode="replay")) == 40
    assert len(attempts) == 3
    rows = [(e.status, e.attempt) for e in journal.events("flaky")]
    assert rows == [
        (EventStatus.STARTED, 1),
        (EventStatus.RETRYING, 1),
        (EventStatus.STARTED, 2),
        (EventStatus.RETRYING, 2),
        (EventStatus.STARTED, 3),
        (EventStatus.COMPLETED, 3),
    ]


@step(retries=1, retry_delay=0.0, retry_on=(ConnectionError,))
async def bad_input() -> int:
    _count("bad_input")
    raise ValueError("not retryable")


def test_exceptions_outside_retry_on_fail_at_once(journal: Journal) -> None:
    """Only the listed exception types are retried."""

    async def wf() -> int:
        return await bad_input()

    with pytest.raises(ValueError, match="not retryable"):
        asyncio.run(run(wf, journal=journal, run_id="nr"))
    assert calls == {"bad_input": 1}


@step
async def untyped():  # type: ignore[no-untyped-def]
    return (1, 2)


def test_value_that_cannot_round_trip_fails_at_record_time(journal: Journal) -> None:
    """An unannotated tuple would replay as a list: refused live, with the step named."""

    async def wf() -> Any:
        return await untyped()

    with pytest.raises(NotJournalable, match=r"step 0:1 \(.*untyped\).*annotate"):
        asyncio.run(run(wf, journal=journal, run_id="bad"))


keys_seen: list[str | None] = []


@step
async def pay(amount: int) -> str:
    keys_seen.append(idempotency_key())
    return f"paid {amount}"


def test_idempotency_key_is_run_and_step_key() -> None:
    """Inside a live step the idempotency key is `run_id:key`; outside, None."""
    keys_seen.clear()
    j = Journal(store=replay_memory())

    async def wf() -> str:
        await pay(1)
        return await pay(2)

    asyncio.run(run(wf, journal=j, run_id="pay-run"))
    assert keys_seen == ["pay-run:0:1", "pay-run:0:2"]
    assert idempotency_key() is None


def replay_memory() -> Any:
    from journal import MemoryStore

    return MemoryStore()


def test_generators_cannot_be_steps() -> None:
    """A step returns one value; decorating a generator is an error at decoration time."""
    with pytest.raises(TypeError, match="generator"):

        @step
        async def gen():  # type: ignore[no-untyped-def]
            yield 1


def test_determinism_helpers_are_journaled(journal: Journal) -> None:
    """now(), uuid4() and random() return the recorded values on replay."""
    seen: list[tuple[Any, ...]] = []

    async def wf() -> str:
        values = (await replay.now(), await replay.uuid4(), await replay.random())
        seen.append(values)
        return "ok"

    asyncio.run(run(wf, journal=journal, run_id="det"))
    asyncio.run(run(wf, journal=journal, run_id="det", mode="replay"))
    assert seen[0] == seen[1]
    assert isinstance(seen[1][0], dt.datetime)
    kinds = [e.kind.value for e in journal.events("det") if e.status is EventStatus.COMPLETED]
    assert kinds == ["clock", "uuid", "random"]


def test_durable_sleep_records_wake_time_and_replay_does_not_wait(journal: Journal) -> None:
    """sleep() journals its wake-up time; replay returns at once."""

    async def wf() -> str:
        await replay.sleep(0.2)
        return "awake"

    loop_time = asyncio.run(_timed(run(wf, journal=journal, run_id="nap")))
    assert loop_time >= 0.19
    replay_time = asyncio.run(_timed(run(wf, journal=journal, run_id="nap", mode="replay")))
    assert replay_time < 0.1


async def _timed(awaitable: Any) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await awaitable
    return loop.time() - start


def test_a_step_keeps_the_constraints_of_an_annotated_return_type(journal: Journal) -> None:
    """`-> Annotated[int, Field(gt=0)]`: a result outside the constraint is refused as it is
    recorded, as the codec refuses it (the step reads its annotations with their extras)."""

    @step
    async def count() -> Annotated[int, Field(gt=0)]:
        return -1

    async def workflow() -> int:
        return await count()

    with pytest.raises(NotJournalable, match="does not survive the journal"):
        asyncio.run(run(workflow, journal=journal, run_id="annotated"))


class Shape(BaseModel):
    sides: int


def test_not_journalable_names_the_step_it_happened_at(journal: Journal) -> None:
    """Arguments that cannot be journaled, and a recorded result that no longer decodes as
    the step's return type: each error names the step's own key."""
    looped: list[Any] = []
    looped.append(looped)

    @step
    async def take(items: list[Any]) -> int:
        return 1

    @step(name="first")
    async def first() -> int:
        return 1

    async def bad_arguments() -> int:
        await first()
        return await take(looped)

    with pytest.raises(NotJournalable) as err:
        asyncio.run(run(bad_arguments, journal=journal, run_id="args"))
    assert err.value.key == "0:2" and "step 0:2 (" in str(err.value)

    @step(name="first")
    async def first_now_a_model() -> Shape:
        return Shape(sides=3)

    current: list[Any] = [first]

    async def typed() -> Any:
        return await current[0]()

    asyncio.run(run(typed, journal=journal, run_id="typed"))  # records 1, an int
    current[0] = first_now_a_model  # the same step, now annotated to return a model
    with pytest.raises(NotJournalable) as decoded:
        asyncio.run(run_with_summary(typed, journal=journal, run_id="typed", mode="replay"))
    assert decoded.value.key == "0:1" and "step 0:1 (" in str(decoded.value)
