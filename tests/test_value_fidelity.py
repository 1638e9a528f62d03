"""The workflow sees what the step returned, or the value is refused when it is recorded.

Every value a step returns is decoded from the bytes the journal keeps before the workflow
sees it, so live and replay agree by construction. These tests pin the other half: what comes
back must be what the step returned (same value, same classes all the way down). pydantic
validators that change values, unions that cannot tell their members apart, subclasses of the
annotated class and enums without an annotation would all break that, and are refused when the
value is recorded, with the reason and the fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, field_validator

from journal import Journal, ValueCodec, ValueNotJournalable
from replay import NotJournalable, run, step

ROOT = Path(__file__).resolve().parent.parent


class Doubler(BaseModel):
    """A validator that changes values each time it runs: 2 becomes 4, 4 becomes 8."""

    n: int

    @field_validator("n")
    @classmethod
    def double(cls, value: int) -> int:
        return value * 2


class Slug(BaseModel):
    """A validator that normalises: running it again changes nothing."""

    text: str

    @field_validator("text")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.strip().lower()


class Cat(BaseModel):
    name: str


class Dog(BaseModel):
    name: str


class TaggedCat(BaseModel):
    kind: Literal["cat"] = "cat"
    name: str


class TaggedDog(BaseModel):
    kind: Literal["dog"] = "dog"
    name: str


Pet = Annotated[TaggedCat | TaggedDog, Field(discriminator="kind")]


class Animal(BaseModel):
    name: str


class Bird(Animal):
    wings: int = 2


@dataclasses.dataclass
class Shape:
    sides: int


@dataclasses.dataclass
class Square(Shape):
    length: float = 1.0


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mood(enum.StrEnum):
    CALM = "calm"
    ANGRY = "angry"


class Owner(BaseModel):
    pet: Animal


def refused(annotation: Any, value: Any) -> str:
    with pytest.raises(ValueNotJournalable) as caught:
        ValueCodec(annotation).record(value, what="result")
    return str(caught.value)


# -- validators that change values -----------------------------------------------------------


def test_validator_that_changes_values_is_refused_at_record_time() -> None:
    """n=4 would come back as n=8 (the validator runs again on decode): refused, explained."""
    message = refused(Doubler, Doubler(n=2))
    assert "Doubler(n=4)" in message and "n=8" in message
    assert "validator" in message and "Fix:" in message


def test_validator_that_normalises_is_accepted_and_seen_unchanged() -> None:
    """An idempotent validator gives back what it was given: the value records as returned."""
    codec = ValueCodec(Slug)
    value = Slug(text="  Hello ")
    payload, live = codec.record(value)
    assert live == value == codec.decode(payload) == Slug(text="hello")


def test_model_constructed_without_validation_is_refused() -> None:
    """`model_construct` skips the validator, decoding does not: the two would differ."""
    assert "text" in refused(Slug, Slug.model_construct(text="LOUD"))


# -- unions, subclasses ----------------------------------------------------------------------


def test_union_that_cannot_tell_its_members_apart_is_refused() -> None:
    """Cat | Dog with the same fields: a Dog would come back as a Cat. Refused, with the fix."""
    message = refused(Cat | Dog, Dog(name="rex"))
    assert "Dog" in message and "Cat" in message
    assert "discriminator" in message


def test_discriminated_union_keeps_each_member() -> None:
    """With a Literal tag and a discriminator, each member comes back as itself."""
    codec = ValueCodec(list[Pet])
    value = [TaggedDog(name="rex"), TaggedCat(name="tom")]
    payload, live = codec.record(value)
    assert live == value == codec.decode(payload)
    assert [type(p) for p in codec.decode(payload)] == [TaggedDog, TaggedCat]


def test_union_whose_members_differ_in_fields_keeps_each_member() -> None:
    """Members with different fields are told apart by pydantic: both record and come back."""
    codec = ValueCodec(Cat | Bird)
    for value in (Cat(name="tom"), Bird(name="tweety", wings=2)):
        payload, live = codec.record(value)
        assert type(live) is type(value) and live == value == codec.decode(payload)


def test_subclass_of_the_annotated_model_is_refused() -> None:
    """A Bird returned as `-> Animal` would lose its class and fields: refused, with the fix."""
    message = refused(Animal, Bird(name="tweety"))
    assert "Bird" in message and "Animal" in message and "subclass" in message
    assert "Fix:" in message


def test_subclass_nested_in_a_model_field_is_refused_naming_the_field() -> None:
    """The refusal names where in the value the class would change."""
    message = refused(Owner, Owner(pet=Bird(name="tweety")))
    assert ".pet" in message and "Bird" in message


def test_subclass_of_the_annotated_dataclass_is_refused() -> None:
    """Stdlib dataclasses too: a Square returned as `-> Shape` would come back a Shape."""
    assert "Square" in refused(Shape, Square(4, 2.0))


# -- enums -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [Priority.HIGH, Mood.CALM, [Priority.LOW], {"m": Mood.ANGRY}])
def test_unannotated_enum_is_refused_with_the_annotation_to_add(value: Any) -> None:
    """Without an annotation an IntEnum or str Enum would come back a plain int or str."""
    message = refused(Any, value)
    assert "annotate" in message


def test_enum_returned_for_a_plain_str_annotation_is_refused() -> None:
    """`-> str` returning a str Enum member would lose the enum: refused, not cut down."""
    assert "Mood" in refused(str, Mood.CALM)


def test_annotated_enums_come_back_as_enums() -> None:
    """With the enum in the annotation, the member comes back."""
    codec = ValueCodec(list[Priority | Mood])
    payload, live = codec.record([Priority.HIGH, Mood.ANGRY])
    assert codec.decode(payload) == live == [Priority.HIGH, Mood.ANGRY]
    assert [type(v) for v in live] == [Priority, Mood]


def test_int_for_a_float_annotation_comes_back_as_the_equal_float() -> None:
    """The one conversion kept: an int returned for `-> float` is the equal float."""
    live = ValueCodec(list[float]).record([3, 0.5])[1]
    assert live == [3.0, 0.5] and type(live[0]) is float


# -- through a run ---------------------------------------------------------------------------


@step
async def doubled() -> Doubler:
    return Doubler(n=2)


@step
async def some_bird() -> Animal:
    return Bird(name="tweety")


@step
async def some_pet(dog: bool) -> Pet:
    return TaggedDog(name="rex") if dog else TaggedCat(name="tom")


@step
async def priority():  # type: ignore[no-untyped-def]  # unannotated on purpose
    return Priority.HIGH


@pytest.mark.parametrize("bad_step", [doubled, some_bird, priority], ids=lambda s: s.__name__)
def test_a_step_returning_a_changing_value_fails_at_record_time(
    journal: Journal, bad_step: Any
) -> None:
    """Inside a run the refusal is NotJournalable naming the step; the workflow never sees it."""
    seen: list[Any] = []

    async def wf() -> None:
        seen.append(await bad_step())

    with pytest.raises(NotJournalable, match=r"step 0:1 .*Fix:"):
        asyncio.run(run(wf, journal=journal, run_id="changing"))
    assert seen == []


def test_discriminated_union_live_and_replay_see_what_the_step_returned(journal: Journal) -> None:
    """A Dog returned from a `-> Cat | Dog` step is a Dog live and on replay."""
    seen: list[Any] = []

    async def wf() -> None:
        seen.append(await some_pet(True))
        seen.append(await some_pet(False))

    asyncio.run(run(wf, journal=journal, run_id="pets"))
    asyncio.run(run(wf, journal=journal, run_id="pets", mode="replay"))
    assert seen == [TaggedDog(name="rex"), TaggedCat(name="tom")] * 2
    assert [type(p) for p in seen] == [TaggedDog, TaggedCat] * 2


# -- the law ---------------------------------------------------------------------------------


def same(expected: Any, got: Any) -> bool:
    """The test's own notion of 'the same value': equal, and of the same class at every level
    (an int returned where a float is declared may come back as the equal float)."""
    if type(expected) is int and type(got) is float:
        return expected == got
    if type(expected) is not type(got):
        return False
    if isinstance(expected, float):
        return expected == got or (math.isnan(expected) and math.isnan(got))
    if isinstance(expected, list | tuple):
        return len(expected) == len(got) and all(map(same, expected, got))
    if isinstance(expected, dict):
        return expected.keys() == got.keys() and all(same(v, got[k]) for k, v in expected.items())
    if isinstance(expected, BaseModel):
        return same(dict(expected), dict(got))
    if dataclasses.is_dataclass(expected):
        return same(dataclasses.asdict(expected), dataclasses.asdict(got))  # type: ignore[arg-type]
    return bool(expected == got)


names = st.text(max_size=5)
animals = st.builds(Animal, name=names) | st.builds(Bird, name=names, wings=st.integers(0, 4))
pets = st.builds(Cat, name=names) | st.builds(Dog, name=names)
tagged = st.builds(TaggedCat, name=names) | st.builds(TaggedDog, name=names)
shapes = st.builds(Shape, st.integers()) | st.builds(Square, st.integers(), st.floats())
enums = st.sampled_from(Priority) | st.sampled_from(Mood)
plain = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
anything = st.recursive(
    plain | enums | animals | pets | shapes | st.builds(Doubler, n=st.integers(-5, 5)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)

LAW_CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (Any, anything),
    (Animal, animals),
    (Cat | Dog, pets),
    (list[Pet], st.lists(tagged, max_size=3)),
    (Shape, shapes),
    (list[float], st.lists(st.integers() | st.floats(), max_size=3)),
    (Priority | Mood | str | int, enums | st.text(max_size=3) | st.integers()),
    (str, st.text(max_size=3) | st.sampled_from(Mood)),
    (dict[str, Any], st.dictionaries(st.text(max_size=3), anything, max_size=3)),
    (Doubler, st.builds(Doubler, n=st.integers(-5, 5))),
    (Slug, st.builds(Slug, text=st.text(max_size=5))),
]


@pytest.mark.parametrize(("annotation", "values"), LAW_CASES, ids=lambda c: repr(c)[:30])
@given(data=st.data())
def test_what_is_recorded_comes_back_as_returned(
    annotation: Any, values: st.SearchStrategy[Any], data: Any
) -> None:
    """For any value: refused at record time, or seen live exactly as returned, and decoded
    from the journal exactly as seen live."""
    value = data.draw(values)
    codec = ValueCodec(annotation)
    try:
        payload, live = codec.record(value)
    except ValueNotJournalable:
        return
    assert same(value, live), (value, live)
    assert same(live, codec.decode(payload))


_RECORD_WITH_SEED = """
import asyncio, sys
import replay
from journal import Journal
from tests.golden import workflows
workflows.flaky_failures[0] = 0
with Journal(sys.argv[1]) as journal:
    asyncio.run(replay.run(workflows.research, "cats", journal=journal, run_id="sets"))
"""


def test_sets_are_spelt_the_same_in_every_process(tmp_path: Path) -> None:
    """pydantic writes a set in iteration order, which for strings changes with the process's
    hash seed. Recorded under one seed and replayed under others, a result holding sets is
    the same bytes, and `journal replay` says it reproduces (it once said "does not reproduce:
    the result differs" about a run that did)."""
    db = tmp_path / "j.db"
    recorded = subprocess.run(
        [sys.executable, "-c", _RECORD_WITH_SEED, str(db)],
        env={**os.environ, "PYTHONHASHSEED": "1"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert recorded.returncode == 0, recorded.stderr
    with Journal(db, read_only=True) as journal:
        result = journal.run("sets").result or b""
        step_payloads = [e.payload for e in journal.events("sets") if e.name == "search"]
    assert result.count(b'"tags":["a","b"]') == 3
    assert all(p is not None and b'"tags":["a","b"]' in p for p in step_payloads)
    script = str(Path(sys.executable).with_name("journal"))
    for seed in ("2", "3", "4", "5"):
        replayed = subprocess.run(
            [script, "replay", "sets", "--db", str(db)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
