"""Values survive the journal with their types: encode then decode is the identity."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from journal import RecordedError, ValueCodec, ValueNotJournalable, canonical_json, fingerprint
from journal._codec import fingerprinter
from journal._fidelity import difference


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Hit(BaseModel):
    title: str
    score: float
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str | None = None


@dataclasses.dataclass
class Reading:
    """A stdlib dataclass with the awkward fields: any bytes, any float but NaN."""

    raw: bytes
    value: float
    at: dt.datetime


class Sample(TypedDict):
    raw: bytes
    value: float


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
aware_datetimes = st.datetimes(timezones=st.just(dt.UTC))


def test_common_values_are_accepted() -> None:
    """The refusal branch of the law above is the exception: ordinary values all record."""
    for annotation, value in [
        (Hit, Hit(title="t", score=0.5)),
        (list[Hit], [Hit(title="t", score=1.0, tags=["a"])]),
        (Point, Point(1, 2)),
        (bytes, b"\xff\x00"),
        (dt.datetime, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        (Any, {"a": [1, 2.5, None, "x"]}),
        (int, 2**100),
    ]:
        assert ValueCodec(annotation).record(value)[1] == value


TYPED_CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, st.integers()),
    (float, st.floats(allow_nan=False)),
    (str, st.text()),
    (bytes, st.binary()),
    (bool, st.booleans()),
    (dt.datetime, aware_datetimes),
    (dt.datetime, st.datetimes()),
    (dt.date, st.dates()),
    (dt.timedelta, st.timedeltas()),
    (uuid.UUID, st.uuids()),
    (Color, st.sampled_from(Color)),
    (tuple[int, str, bytes], st.tuples(st.integers(), st.text(), st.binary())),
    (list[dict[str, int]], st.lists(st.dictionaries(st.text(), st.integers()))),
    (dict[str, list[dt.datetime]], st.dictionaries(st.text(), st.lists(aware_datetimes))),
    (set[int], st.sets(st.integers())),
    (Hit, st.builds(Hit, title=st.text(), score=finite_floats, tags=st.lists(st.text()))),
    (list[Hit], st.lists(st.builds(Hit, title=st.text(), score=finite_floats))),
    (Point, st.builds(Point, x=st.integers(), y=st.integers(), label=st.none() | st.text())),
    (int | None, st.none() | st.integers()),
    (Reading, st.builds(Reading, st.binary(), st.floats(allow_nan=False), aware_datetimes)),
    (list[Reading], st.lists(st.builds(Reading, st.binary(), finite_floats, aware_datetimes))),
    (Sample, st.fixed_dictionaries({"raw": st.binary(), "value": st.floats(allow_nan=False)})),
    (Any, json_values),
]


@pytest.mark.parametrize(("annotation", "strategy"), TYPED_CASES, ids=lambda c: repr(c)[:40])
@given(data=st.data())
def test_typed_round_trip(annotation: Any, strategy: st.SearchStrategy[Any], data: Any) -> None:
    """Every supported value records, and decodes equal to and of the type of the original."""
    value = data.draw(strategy)
    codec = ValueCodec(annotation)
    payload, live = codec.record(value)
    decoded = codec.decode(payload)
    assert decoded == value
    assert live == decoded
    if annotation is not Any and value is not None:
        assert type(decoded) is type(value)


@given(st.floats(allow_nan=False, allow_infinity=True))
def test_infinities_round_trip(value: float) -> None:
    """Infinite floats are stored as strings and come back as the same float."""
    codec = ValueCodec(float)
    assert codec.decode(codec.encode(value)) == value


def test_model_with_own_config_refuses_binary_bytes_with_the_fix() -> None:
    """A pydantic model's own config rules its bytes: non-UTF-8 bytes are refused, with the fix."""

    class Blob(BaseModel):
        raw: bytes

    with pytest.raises(ValueNotJournalable, match="ser_json_bytes='base64'"):
        ValueCodec(Blob).encode(Blob(raw=b"\xff"))


def test_annotated_constraints_hold_both_ways() -> None:
    """`Annotated[...]` keeps its pydantic constraints: a value outside them is refused when
    recorded, and a recorded one edited outside them is refused when served."""
    positive = ValueCodec(Annotated[int, Field(gt=0)])
    assert positive.decode(positive.encode(5)) == 5
    with pytest.raises(ValueNotJournalable, match="greater than 0"):
        positive.encode(-1)
    with pytest.raises(ValueNotJournalable, match="greater than 0"):
        positive.decode(b"-1")
    short = ValueCodec(Annotated[Hit, Field(description="a hit")])
    assert short.decode(short.encode(Hit(title="t", score=1.0))) == Hit(title="t", score=1.0)
    with pytest.raises(ValueNotJournalable, match="infinite float inside a model"):
        short.record(Hit(title="t", score=float("inf")))  # the model's own config still rules


def test_model_with_own_config_refuses_infinity() -> None:
    """pydantic writes inf in a default-config model as null: refused when recorded, not later."""
    with pytest.raises(ValueNotJournalable, match="infinite float inside a model"):
        ValueCodec(Hit).record(Hit(title="t", score=float("inf")))


def test_unsupported_annotation_is_refused_when_the_codec_is_built() -> None:
    """A live object as a return type is refused up front, with what to return instead."""

    class Socket:
        pass

    with pytest.raises(ValueNotJournalable, match="cannot be journaled.*Fix: annotate"):
        ValueCodec(Socket)


def test_unannotated_tuple_is_refused_at_record_time() -> None:
    """Without an annotation a tuple would come back as a list: refused, with the fix."""
    with pytest.raises(ValueNotJournalable, match="annotate the return type"):
        ValueCodec().encode((1, 2))


def test_wrong_type_for_annotation_is_refused() -> None:
    """A value that does not match the annotation is refused when recorded, naming both."""
    with pytest.raises(ValueNotJournalable, match=r"value of type str cannot be journaled as int"):
        ValueCodec(int).encode("not a number")


def test_unserializable_object_is_refused() -> None:
    """An arbitrary object cannot be journaled; the error says what can."""
    with pytest.raises(ValueNotJournalable, match="JSON-able"):
        ValueCodec(Any).encode(object())


@given(json_values)
def test_canonical_json_is_stable_under_key_order(value: Any) -> None:
    """Equal inputs give equal bytes whatever the dict insertion order."""
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
        assert canonical_json(value) == canonical_json(reordered)
    assert _keys_sorted(orjson.loads(canonical_json(value)))


def _keys_sorted(value: Any) -> bool:
    """Every object's keys are in sorted order, at every depth (the spelling's promise)."""
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(map(_keys_sorted, value.values()))
    if isinstance(value, list):
        return all(map(_keys_sorted, value))
    return True


def test_canonical_json_reduces_objects_to_their_type() -> None:
    """Objects JSON cannot express take part by type name, never by identity."""
    assert canonical_json({"client": object()}) == canonical_json({"client": object()})
    assert b"builtins.object" in canonical_json(object())
    assert canonical_json({3, 1, 2}) == b"[1,2,3]"


def test_fingerprint_depends_on_name_and_args() -> None:
    """Name and arguments both change the fingerprint."""
    args = canonical_json({"q": "cats"})
    assert fingerprint("search", args) != fingerprint("lookup", args)
    assert fingerprint("search", args) != fingerprint("search", canonical_json({"q": "dogs"}))


class CustomError(Exception):
    pass


class HoldsAnObject(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")
        self.handle = object()


def test_exception_round_trip_same_type_and_message() -> None:
    """A recorded exception is rebuilt as its own type with the same message."""
    recorded = RecordedError.decode(RecordedError.from_exception(CustomError("boom")).encode())
    rebuilt = recorded.rebuild()
    assert type(rebuilt) is CustomError
    assert str(rebuilt) == "boom"
    assert "CustomError" in (recorded.traceback or "")


def test_exception_that_cannot_be_rebuilt_yields_none() -> None:
    """An exception holding what JSON cannot (a live object) is not rebuilt (no half copy)."""
    recorded = RecordedError.from_exception(HoldsAnObject(7, "bad"))
    assert recorded.rebuild() is None


def test_exception_from_unimported_module_is_never_imported() -> None:
    """Decoding never imports code: a type from a module not loaded is not rebuilt."""
    recorded = RecordedError(type="os_evil_module_xyz:Boom", message="x", args=["x"])
    assert recorded.rebuild() is None
    recorded = RecordedError(type="builtins:print", message="x", args=["x"])
    assert recorded.rebuild() is None


@given(st.text(), st.binary())
def test_bound_fingerprinter_matches_fingerprint(name: str, canonical_args: bytes) -> None:
    """The per-step fast path hashes exactly as `fingerprint` does, so journals stay valid."""
    assert fingerprinter(name)(canonical_args) == fingerprint(name, canonical_args)


# -- edges a mutation run found untested ----------------------------------------------------------


def test_too_deep_and_self_holding_values_say_so() -> None:
    from journal import ValueNotJournalable, canonical_json

    deep: list[Any] = []
    node = deep
    for _ in range(2000):
        node.append([])
        node = node[0]
    looped: list[Any] = []
    looped.append(looped)
    for value in (deep, looped):
        with pytest.raises(ValueNotJournalable, match="nested too deeply for JSON, or holds"):
            canonical_json(value)


class _Big(int):
    """An int subclass: canonical JSON takes its slower, checked path."""


def test_integers_past_64_bits_are_spelt_as_text_at_the_exact_bound() -> None:
    from journal import canonical_json

    assert canonical_json(2**64 - 1) == b"18446744073709551615"
    assert canonical_json(_Big(2**64 - 1)) == b"18446744073709551615"
    assert canonical_json(_Big(2**64)) == b'{"__int__":"18446744073709551616"}'
    assert canonical_json({2**64 - 1: "a"}) == b'{"18446744073709551615":"a"}'
    assert canonical_json({2**64: "a"}) == b'{"{\\"__int__\\":\\"18446744073709551616\\"}":"a"}'


def test_a_set_of_text_is_spelt_sorted_whatever_the_hash_seed() -> None:
    """A set's iteration order of strings changes with PYTHONHASHSEED; its recorded spelling
    must not (20 items: sorted by chance about once in 10**18)."""
    from journal import ValueCodec

    words = {f"w{n:02d}" for n in range(20)}
    payload, decoded = ValueCodec(set[str]).record(words)
    assert payload == orjson.dumps(sorted(words))
    assert decoded == words


def test_a_message_quotes_a_value_of_up_to_80_characters_whole() -> None:
    """A value whose repr is exactly 80 characters is quoted whole; a longer one is cut."""
    from pydantic import Field

    from journal._codec import ValueCodec

    codec = ValueCodec(Annotated[str, Field(max_length=3)])
    with pytest.raises(ValueNotJournalable) as whole:
        codec.encode("x" * 78)
    assert f"value {'x' * 78!r} does not survive" in str(whole.value)
    with pytest.raises(ValueNotJournalable) as cut:
        codec.encode("x" * 79)
    assert f"value {('x' * 79)[:76]!r}"[:-1] + "..." in str(cut.value)


def test_a_validation_error_is_told_by_its_first_three_lines() -> None:
    """pydantic's report of several errors is long; the message keeps its first three lines
    (the count, the field, the first error), not the link that follows."""
    from pydantic import BaseModel

    from journal._codec import ValueCodec

    class Pair(BaseModel):
        a: int
        b: int

    with pytest.raises(ValueNotJournalable) as err:
        ValueCodec(Pair).decode(b'{"a": "x", "b": "y"}')
    message = str(err.value)
    assert "2 validation errors for Pair a Input should be a valid integer" in message
    assert "For further information" not in message


# -- plain JSON results take orjson's way: the same bytes and values as pydantic's -----------

_plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["\ud800", "x\udfff", "\ud83d\ude00"]),  # lone surrogates
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
        | st.dictionaries(st.integers(0, 3), children, max_size=2)
    ),
    max_leaves=25,
)


def _pydantic_way(codec: Any, value: Any) -> tuple[bytes, Any] | type[Exception]:
    """What `record` gave before plain JSON took orjson's way: pydantic writes, reads and
    compares (the codec's own slow path, with the plain-JSON shortcut switched off)."""
    from journal import ValueNotJournalable

    plain, codec._plain = codec._plain, None
    try:
        return codec.record(value)  # type: ignore[no-any-return]
    except ValueNotJournalable:
        return ValueNotJournalable
    finally:
        codec._plain = plain


@pytest.mark.parametrize("annotation", [Any, dict[str, Any], list[Any], dict, list])
@given(value=_plain_json)
def test_plain_json_results_are_recorded_as_pydantic_records_them(
    annotation: Any, value: Any
) -> None:
    """Every JSON-like value, plain or not (infinities, integers past 64 bits, lone
    surrogates), of every annotation that has the shortcut: the same bytes, the same value
    with the same classes throughout (or the same refusal)."""
    from journal import ValueNotJournalable

    codec = ValueCodec(annotation)
    expected = _pydantic_way(codec, value)
    try:
        got: tuple[bytes, Any] | type[Exception] = codec.record(value)
    except ValueNotJournalable:
        got = ValueNotJournalable
    if isinstance(expected, tuple) and isinstance(got, tuple):
        assert got[0] == expected[0]
        assert difference(expected[1], got[1]) is None and difference(value, got[1]) is None
        assert got[1] is not value or not isinstance(value, dict | list)  # a copy
    else:
        assert got == expected


def test_plain_json_results_that_are_not_plain_take_pydantic_s_way() -> None:
    """A tuple, a str subclass, an int key or a value that holds itself is refused as before,
    and a value past the size the shortcut walks is still recorded."""
    from journal import ValueNotJournalable

    class Name(str):
        pass

    codec = ValueCodec(Any)
    for refused in ((1, 2), {"a": (1,)}, {1: "a"}, [Name("x")]):
        with pytest.raises(ValueNotJournalable):
            codec.record(refused)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueNotJournalable):
        codec.record(looped)
    big = [[i] for i in range(120_000)]
    assert codec.record(big)[1] == big


@pytest.mark.parametrize("annotation", [Any, dict[str, Any], list[Any]])
def test_plain_json_nested_deeper_than_pydantic_reads_is_refused_when_recorded(
    annotation: Any,
) -> None:
    """pydantic's JSON reader stops at about 200 levels of nesting; orjson writes up to 255.
    A result nested in between must be refused when it is recorded, as pydantic's way refuses
    it, not recorded and then fail to decode on replay."""
    codec = ValueCodec(annotation)
    for depth in (150, 199, 200, 201, 202, 230, 254, 255, 256):
        value: Any = {} if annotation is dict[str, Any] else []
        for _ in range(depth):
            value = {"a": value} if annotation is dict[str, Any] else [value]
        expected = _pydantic_way(codec, value)
        try:
            got: tuple[bytes, Any] | type[Exception] = codec.record(value)
        except ValueNotJournalable:
            got = ValueNotJournalable
        if isinstance(got, tuple):
            assert isinstance(expected, tuple), depth
            assert got[0] == expected[0]
            assert codec.decode(got[0]) == value  # what replay serves
        else:
            assert got is expected, depth
