"""diff_runs: two recorded runs compared step by step, paired by key, blind to times and seqs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import replay
from journal import EventKind, Journal
from journal._diff import ABSENT, RunDiff, diff_runs

DEFAULTS: dict[str, Any] = {"mood": "calm", "failures": 0, "cite": False, "temperature": 0.2}
switch: dict[str, Any] = {}
"""What the outside world does this time: the model's mood, how often search fails..."""


class Crash(BaseException):
    """Stops a sitting the way a killed process would: the run stays interrupted."""


@replay.step(kind="tool", retries=2, retry_delay=0)
def search(topic: str) -> str:
    if switch["failures"]:
        switch["failures"] -= 1
        raise ConnectionError(f"search for {topic} timed out")
    return f"facts on {topic}"


@replay.step(kind="llm")
async def ask_llm(prompt: str, temperature: float = 0.0) -> str:
    await asyncio.sleep(0)  # waits: journaled as a started row, then its result
    return f"{switch['mood']} answer to {prompt!r}"


@replay.step(kind="tool")
def cite(text: str) -> str:
    return f"{text} [1]"


async def agent(topic: str) -> str:
    facts = search(topic)
    plan = await ask_llm(f"plan a report on {topic} from {facts}")
    style = {} if switch["temperature"] is None else {"temperature": switch["temperature"]}
    report = await ask_llm(f"write the report: {plan}", **style)
    if switch.get("crash"):
        raise Crash
    if switch["cite"]:
        report = cite(report)
    return report


@pytest.fixture(autouse=True)
def _calm_world() -> Iterator[None]:
    switch.clear()
    switch.update(DEFAULTS)
    yield
    switch.clear()


def record(journal: Journal, run_id: str, topic: str = "cats", **world: Any) -> None:
    switch.update(DEFAULTS, **world)
    asyncio.run(replay.run(agent, topic, journal=journal, run_id=run_id))


def diff(journal: Journal, a: str, b: str) -> RunDiff:
    return diff_runs(journal.run(a), journal.events(a), journal.run(b), journal.events(b))


def test_two_runs_of_the_same_code_and_answers_are_identical(sqlite_journal: Journal) -> None:
    """Same calls, same answers: identical, though every timestamp and hash differs."""
    record(sqlite_journal, "a")
    record(sqlite_journal, "b")
    d = diff(sqlite_journal, "a", "b")
    assert d.identical and d.first_difference is None and d.header == ()
    assert [(s.key, s.change) for s in d.steps] == [
        ("0:1", "same"),
        ("0:2", "same"),
        ("0:3", "same"),
    ]
    plan = d.steps[1].a
    assert plan is not None
    assert (plan.seq, plan.name, plan.kind, plan.status, plan.attempts) == (
        3,  # 0:1 is a sync step: its start and its outcome are two rows
        "ask_llm",
        "llm",
        "completed",
        1,
    )
    assert plan.arguments == {"prompt": "plan a report on cats from facts on cats"}
    assert plan.outcome == "calm answer to 'plan a report on cats from facts on cats'"


def test_a_different_answer_is_the_first_difference_and_what_follows_differs(
    sqlite_journal: Journal,
) -> None:
    """The step whose result changed comes first with fields ("outcome",); the next call,
    built from that result, differs in arguments too; the run's result in the header."""
    record(sqlite_journal, "a")
    record(sqlite_journal, "b", mood="excited")
    d = diff(sqlite_journal, "a", "b")
    first = d.first_difference
    assert first is not None and (first.key, first.change, first.fields) == (
        "0:2",
        "changed",
        ("outcome",),
    )
    assert d.steps[0].change == "same"
    assert d.steps[2].fields == ("arguments", "outcome")
    assert [field for field, _, _ in d.header] == ["result"]
    assert not d.identical


def test_argument_changes_names_the_argument_that_changed(sqlite_journal: Journal) -> None:
    """Per top-level argument, (name, a value, b value), only for those that differ."""
    record(sqlite_journal, "a")
    record(sqlite_journal, "b", mood="excited")
    d = diff(sqlite_journal, "a", "b")
    plan = "plan a report on cats from facts on cats"
    assert d.argument_changes(d.steps[2]) == [
        (
            "prompt",
            f"write the report: calm answer to {plan!r}",
            f"write the report: excited answer to {plan!r}",
        )
    ]
    assert d.argument_changes(d.steps[1]) == []  # same call, other answer


def test_an_argument_only_one_call_passed_is_absent_on_the_other_side(
    sqlite_journal: Journal,
) -> None:
    """A default left out is not recorded: the side without it shows ABSENT."""
    record(sqlite_journal, "a")
    record(sqlite_journal, "b", temperature=None)
    d = diff(sqlite_journal, "a", "b")
    assert d.steps[2].fields == ("arguments",)
    assert d.argument_changes(d.steps[2]) == [("temperature", 0.2, ABSENT)]


def test_a_step_only_one_run_took_is_only_a_or_only_b(sqlite_journal: Journal) -> None:
    """A run that took a longer path has the extra key as only_b (only_a seen the other way)."""
    record(sqlite_journal, "short")
    record(sqlite_journal, "cited", cite=True)
    d = diff(sqlite_journal, "short", "cited")
    extra = d.steps[-1]
    assert (extra.key, extra.change, extra.a, extra.fields) == ("0:4", "only_b", None, ())
    assert extra.b is not None and extra.b.name == "cite"
    assert d.first_difference is extra
    backwards = diff(sqlite_journal, "cited", "short")
    assert backwards.steps[-1].change == "only_a" and backwards.steps[-1].b is None


def test_different_inputs_show_in_the_header(sqlite_journal: Journal) -> None:
    """The run's decoded inputs are a header difference; the steps they fed differ too."""
    record(sqlite_journal, "a", topic="cats")
    record(sqlite_journal, "b", topic="dogs")
    d = diff(sqlite_journal, "a", "b")
    assert d.header[0] == (
        "inputs",
        {"args": ["cats"], "kwargs": {}},
        {"args": ["dogs"], "kwargs": {}},
    )
    assert [field for field, _, _ in d.header] == ["inputs", "result"]
    assert d.steps[0].fields == ("arguments", "outcome")
    assert d.argument_changes(d.steps[0]) == [("topic", "cats", "dogs")]


def test_a_step_that_needed_a_retry_differs_in_attempts_only(sqlite_journal: Journal) -> None:
    """A failed attempt followed by success ends completed like a first-time success:
    only the attempt count differs, and nothing after it."""
    record(sqlite_journal, "retried", failures=1)
    record(sqlite_journal, "clean")
    d = diff(sqlite_journal, "retried", "clean")
    search_step = d.steps[0]
    assert search_step.a is not None and search_step.b is not None
    assert (search_step.a.attempts, search_step.b.attempts) == (2, 1)
    assert search_step.fields == ("attempts",)
    assert [s.change for s in d.steps[1:]] == ["same", "same"]
    assert d.header == () and not d.identical


def test_a_step_that_failed_for_good_differs_in_outcome_status_and_attempts(
    sqlite_journal: Journal,
) -> None:
    """A step out of retries ends failed with its error dict; the steps the failed run never
    reached are only_b; status, result and error are header differences."""
    with pytest.raises(ConnectionError):
        record(sqlite_journal, "down", failures=3)
    record(sqlite_journal, "up")
    d = diff(sqlite_journal, "down", "up")
    failed = d.steps[0]
    assert failed.fields == ("outcome", "status", "attempts")
    assert failed.a is not None and failed.a.status == "failed" and failed.a.attempts == 3
    assert failed.a.outcome["type"] == "builtins:ConnectionError"
    assert failed.a.arguments == {"topic": "cats"}  # from the outcome row's args
    assert [s.change for s in d.steps[1:]] == ["only_b", "only_b"]
    assert [field for field, _, _ in d.header] == ["status", "result", "error"]


def test_errors_compare_without_their_traceback(sqlite_journal: Journal) -> None:
    """The same failure recorded from another checkout (other paths in the traceback) is the
    same outcome: type, message and args decide."""
    with pytest.raises(ConnectionError):
        record(sqlite_journal, "here", failures=3)
    run, events = sqlite_journal.run("here"), sqlite_journal.events("here")
    moved = [
        e.model_copy(update={"payload": e.payload.replace(b"tests", b"elsewhere")})
        if e.payload is not None and b"traceback" in e.payload
        else e
        for e in events
    ]
    assert moved != events
    elsewhere = run.model_copy(update={"error": (run.error or b"").replace(b"tests", b"other")})
    assert diff_runs(run, events, elsewhere, moved).identical


def test_a_fork_resumed_without_changes_is_identical_to_its_parent(
    sqlite_journal: Journal,
) -> None:
    """Journal.fork's marker is not a step; copied and re-run steps pair with the parent's."""
    record(sqlite_journal, "a")
    at = next(e.seq for e in sqlite_journal.events("a") if e.key == "0:3")
    sqlite_journal.fork("a", at=at, new_run_id="f")
    outcome = asyncio.run(replay.resume_run(sqlite_journal, "f"))
    assert outcome.summary.served == 2 and outcome.summary.executed == 1
    assert any(e.kind is EventKind.FORK for e in sqlite_journal.events("f"))
    d = diff(sqlite_journal, "a", "f")
    assert d.identical, d
    assert [s.key for s in d.steps] == ["0:1", "0:2", "0:3"]


def test_a_fork_cut_inside_a_step_shows_the_step_ran_again(sqlite_journal: Journal) -> None:
    """A fork that copies a step's started row but not its result re-runs it as attempt 2."""
    record(sqlite_journal, "a")
    result_seq = next(
        e.seq for e in sqlite_journal.events("a") if e.key == "0:2" and e.status == "completed"
    )
    sqlite_journal.fork("a", at=result_seq, new_run_id="f")
    asyncio.run(replay.resume_run(sqlite_journal, "f"))
    d = diff(sqlite_journal, "a", "f")
    assert [(s.key, s.fields) for s in d.steps if s.change != "same"] == [("0:2", ("attempts",))]


def test_a_fork_with_an_overridden_answer_differs_from_that_step_on(
    sqlite_journal: Journal,
) -> None:
    """Counterfactual fork: the overridden step is the first difference, by outcome."""
    record(sqlite_journal, "a")
    sqlite_journal.fork("a", new_run_id="what-if", overrides={"0:2": "no plan"})
    asyncio.run(replay.resume_run(sqlite_journal, "what-if"))
    d = diff(sqlite_journal, "a", "what-if")
    first = d.first_difference
    assert first is not None and first.b is not None
    assert (first.key, first.fields, first.b.outcome) == ("0:2", ("outcome",), "no plan")
    assert d.steps[2].fields == ("arguments", "outcome")


def test_rows_a_divergence_fork_superseded_are_ignored(sqlite_journal: Journal) -> None:
    """A run forked on divergence compares as the path it kept: the superseded rows (still in
    the journal) are not its steps, exactly as the engine serves them."""
    with pytest.raises(Crash):
        record(sqlite_journal, "d", crash=True)
    switch.update(crash=False, temperature=0.7)
    forked = asyncio.run(
        replay.run_with_summary(
            agent, "cats", journal=sqlite_journal, run_id="d", on_divergence="fork"
        )
    )
    assert forked.summary.forked_at == "0:3"
    markers = [e for e in sqlite_journal.events("d") if e.kind is EventKind.FORK]
    assert "superseded_from_seq" in orjson.loads(markers[0].payload or b"")
    record(sqlite_journal, "fresh", temperature=0.7)
    d = diff(sqlite_journal, "d", "fresh")
    assert d.identical
    kept = d.steps[2].a
    assert kept is not None and kept.arguments["temperature"] == 0.7  # not the superseded 0.2


def test_a_payload_that_is_not_json_is_kept_as_text(sqlite_journal: Journal) -> None:
    """An undecodable payload is compared and shown as its text, not an exception."""
    record(sqlite_journal, "a")
    run, events = sqlite_journal.run("a"), sqlite_journal.events("a")
    garbled = [
        e.model_copy(update={"payload": b"<html>502</html>"}) if e.seq == events[-1].seq else e
        for e in events
    ]
    d = diff_runs(run, events, run, garbled)
    assert d.steps[-1].fields == ("outcome",)
    assert d.steps[-1].b is not None and d.steps[-1].b.outcome == "<html>502</html>"


def test_events_of_another_run_are_refused(sqlite_journal: Journal) -> None:
    """Passing one run with another's events is a mistake named in a ValueError."""
    record(sqlite_journal, "a")
    record(sqlite_journal, "b")
    with pytest.raises(ValueError, match="belongs to run 'b', not 'a'"):
        diff_runs(
            sqlite_journal.run("a"),
            sqlite_journal.events("b"),
            sqlite_journal.run("b"),
            sqlite_journal.events("b"),
        )
