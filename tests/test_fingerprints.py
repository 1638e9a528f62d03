"""Argument fingerprints: any argument can be fingerprinted, and a changed one is noticed.

A step's fingerprint hashes its name and `canonical_json` of its arguments; replay compares it
with the recorded one to catch code that now asks for something else. So two things must hold:
fingerprinting never fails on an ordinary argument (it runs on every step call), and distinct
arguments give distinct bytes (else a change goes unnoticed). And the bytes of arguments that
fingerprinted fine before must not move, or recorded journals would stop replaying.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import math
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from journal import Journal, canonical_json, fingerprint
from journal._codec import _CANONICAL_OPTIONS, _canonical_default, _canonical_tree
from replay import NonDeterminismError, run, step

BIG = 2**70


@dataclasses.dataclass(frozen=True)
class Point:
    x: Any
    y: float | None = None


class Query(BaseModel):
    text: str
    limit: Any = None


class Color(enum.Enum):
    RED = "red"


class Stamp(BaseModel):
    at: dt.datetime
    raw: bytes = b""
    ratio: float = 0.5
    tags: set[str] = set()


class Pair(NamedTuple):
    left: int
    right: int


@pytest.mark.parametrize(
    "argument",
    [
        {"p": Point(BIG)},
        {"s": {BIG, 1}},
        {"fs": frozenset({Point(BIG), Point(1)})},
        {"m": Query(text="t", limit=BIG)},
        {"nested": [{"p": Point([BIG])}]},
        {"key": {(1, 2): "tuple keys"}},
        {"key": {BIG: "big int keys"}},
        {"m": Stamp(at=dt.datetime(2026, 1, 1), raw=bytes([BIG % 256, 0x80]))},
    ],
    ids=["dataclass", "set", "frozenset", "model", "nested", "tuple-key", "big-key", "binary"],
)
def test_any_argument_can_be_fingerprinted(argument: Any) -> None:
    """Big ints inside dataclasses, sets and models, and tuple dict keys, fingerprint: stable
    bytes, and a different big int gives different bytes."""
    first = canonical_json(argument)
    assert canonical_json(argument) == first
    assert str(BIG) in first.decode() or b"1,2" in first or b"AIA=" in first


def test_a_big_int_change_inside_a_dataclass_is_noticed() -> None:
    """The big int takes part in the fingerprint by value, not just by type."""
    assert canonical_json(Point(BIG)) != canonical_json(Point(BIG + 1))
    assert canonical_json({BIG, 1}) != canonical_json({BIG + 1, 1})


@pytest.mark.parametrize(
    "where", [lambda v: v, lambda v: [v], Point, lambda v: Query(text="t", limit=v)]
)
def test_nan_infinities_and_none_fingerprint_apart(where: Any) -> None:
    """NaN, inf, -inf and None are four different arguments, wherever they sit."""
    spelled = {canonical_json(where(v)) for v in (math.nan, math.inf, -math.inf, None)}
    assert len(spelled) == 4


def test_named_tuples_fingerprint_by_value() -> None:
    """A NamedTuple argument takes part by its items, like a tuple, not by its class only."""
    assert canonical_json(Pair(1, 2)) == canonical_json((1, 2)) == b"[1,2]"
    assert canonical_json({"p": Pair(1, 2)}) != canonical_json({"p": Pair(1, 3)})


def test_fingerprints_recorded_before_do_not_move() -> None:
    """Arguments that fingerprinted before keep their exact bytes, None and sets included, so
    journals recorded by earlier versions still replay."""
    value = {
        "q": "cats",
        "n": None,
        "p": Point(1, None),
        "m": Query(text="a", limit=[None, 1]),
        "s": {3, 1, 2},
        "fs": frozenset({Point(2), Point(1)}),
        "b": b"\x00\xff",
        "d": Decimal("1.5"),
        "c": Color.RED,
        "u": uuid.UUID(int=7),
        "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        7: [None, 1.5, True],
        "big": BIG,
    }
    assert canonical_json(value) == (
        b'{"7":[null,1.5,true],"at":"2026-01-01T00:00:00+00:00","b":{"__bytes__":"AP8="},'
        b'"big":{"__int__":"1180591620717411303424"},"c":"red","d":"1.5",'
        b'"fs":[{"x":1,"y":null},{"x":2,"y":null}],"m":{"limit":[null,1],"text":"a"},'
        b'"n":null,"p":{"x":1,"y":null},"q":"cats","s":[1,2,3],'
        b'"u":"00000000-0000-0000-0000-000000000007"}'
    )


# -- the laws --------------------------------------------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True)
leaves = st.none() | st.booleans() | st.integers() | st.integers(2**64, 2**80) | floats | st.text()
arguments = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.builds(Point, inner)
        | st.builds(Query, text=st.text(max_size=3), limit=inner)
    ),
    max_leaves=10,
)


def fields(value: Any) -> Any:
    """A dataclass or model argument means its fields, as JSON would hold them."""
    if isinstance(value, Point):
        return {"x": value.x, "y": value.y}
    if isinstance(value, Query):
        return {"text": value.text, "limit": value.limit}
    return value


def same(a: Any, b: Any) -> bool:
    """The test's own notion of equal arguments: same JSON type and value at every level
    (NaN equals NaN, -0.0 is not 0.0, True is not 1, a record is its fields)."""
    a, b = fields(a), fields(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(arguments, arguments)
def test_distinct_arguments_have_distinct_fingerprints(a: Any, b: Any) -> None:
    """Fingerprints of two arguments are equal exactly when the arguments are."""
    assert (fingerprint("f", canonical_json(a)) == fingerprint("f", canonical_json(b))) == same(
        a, b
    )


@given(arguments)
def test_a_changed_leaf_changes_the_fingerprint(value: Any) -> None:
    """Replacing any one argument by NaN, inf, None or a big int is noticed (or is no change)."""
    for other in (math.nan, math.inf, -math.inf, None, BIG):
        changed = [value, other]
        assert (canonical_json(changed) == canonical_json([value, value])) == same(value, other)


finite = st.floats(allow_nan=False, allow_infinity=False)
within_64_bits = st.integers(-(2**63), 2**64 - 1)
hashable = st.recursive(
    st.none() | st.booleans() | within_64_bits | finite | st.text(max_size=3),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
)
fast_path_values = st.recursive(
    hashable
    | st.binary(max_size=4)
    | st.sampled_from(Color)
    | st.uuids()
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.builds(Pair, within_64_bits, within_64_bits)
    | st.builds(Stamp, at=st.datetimes(), raw=st.text(max_size=3).map(str.encode), ratio=finite),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3) | within_64_bits, inner, max_size=3)
        | st.sets(hashable, max_size=3)
        | st.builds(Point, inner, st.none() | finite)
        | st.builds(Query, text=st.text(max_size=3), limit=inner)
    ),
    max_leaves=10,
)


@given(fast_path_values)
def test_the_careful_spelling_is_the_fast_spelling(value: Any) -> None:
    """An argument holding None (or a big int) is spelt again by the careful path: byte for
    byte as the fast path spells it, so the fingerprints journals hold stay valid."""
    try:
        fast = orjson.dumps(value, default=_canonical_default, option=_CANONICAL_OPTIONS)
    except TypeError:  # binary bytes in a model: only the careful path spells those
        assume(False)
    careful = orjson.dumps(
        _canonical_tree(value), default=_canonical_default, option=_CANONICAL_OPTIONS
    )
    assert careful == fast


# -- through a run ---------------------------------------------------------------------------


@step
async def measure(at: Point) -> str:
    return f"measured {at.x}"


def test_a_step_with_a_big_int_dataclass_argument_runs_and_replays(journal: Journal) -> None:
    """Inside a run the step call works (it raised TypeError) and replays from the journal."""

    async def wf() -> str:
        return await measure(Point(BIG))

    assert asyncio.run(run(wf, journal=journal, run_id="big")) == f"measured {BIG}"
    assert asyncio.run(run(wf, journal=journal, run_id="big", mode="replay")) == f"measured {BIG}"


def test_nan_changed_to_none_is_a_divergence_on_replay(journal: Journal) -> None:
    """A step recorded with NaN and called with None on replay is reported, not served."""
    value: list[float | None] = [math.nan]

    async def wf() -> str:
        return await measure(Point(1, value[0]))

    asyncio.run(run(wf, journal=journal, run_id="nan"))
    value[0] = None
    with pytest.raises(NonDeterminismError):
        asyncio.run(run(wf, journal=journal, run_id="nan", mode="replay"))


class _Tagged(BaseModel):
    tags: set[str]
    groups: list[frozenset[str]] = []
    score: float = 0.0


def test_a_model_holding_sets_fingerprints_the_same_in_every_process() -> None:
    """pydantic writes a set in iteration order, which for strings differs between processes
    (hash randomisation): the canonical form sorts it, here and next to a NaN alike."""
    script = (
        "import math; from tests.test_fingerprints import _Tagged; from journal import "
        "canonical_json as c; m = _Tagged(tags={'alpha', 'beta', 'gamma', 'delta', 'eps'}, "
        "groups=[frozenset({'x', 'y', 'z', 'w'})]); "
        "print(c({'m': m}).decode()); "
        "print(c({'m': m.model_copy(update={'score': math.nan})}).decode())"
    )
    spelt = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout
        for seed in range(6)
    }
    assert len(spelt) == 1
    assert '"tags":["alpha","beta","delta","eps","gamma"]' in spelt.pop()
