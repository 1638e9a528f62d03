"""JSON in, typed values out: the only way values reach or leave the journal. Never pickle.

Two directions, kept separate on purpose:

* `canonical_json` turns call arguments and workflow inputs into stable bytes for fingerprints
  and audit. Anything is accepted; what JSON cannot express is reduced to its type name.
* `ValueCodec` turns a step's *result* into bytes and back into the type the step declares.
  Here nothing is reduced: a value that cannot round-trip is refused when it is recorded.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import PurePath
from typing import Annotated, Any, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._errors import ValueNotJournalable
from ._fidelity import Difference, difference
from ._plain_json import dumped, is_plain, plain_top

_CANONICAL_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_VALUE_CONFIG = ConfigDict(
    ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="strings"
)


def _canonical_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _model_json(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=lambda item: orjson.dumps(item, default=_canonical_default))
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, Decimal | PurePath):
        return str(obj)
    if isinstance(obj, tuple):  # a NamedTuple: its items, as for any tuple
        return list(obj)
    # An object JSON cannot express (a client, a lock, a callback) takes part in the fingerprint
    # by its type only: its identity changes every run and would make every replay diverge.
    cls = type(obj)
    return {"__object__": f"{cls.__module__}.{cls.__qualname__}"}


def _model_json(model: BaseModel) -> Any:
    """A model as JSON values, with what were sets sorted: pydantic writes a set in iteration
    order, which for strings changes from one process to the next (hash randomisation)."""
    dumped = model.model_dump(mode="json")
    python = model.model_dump()
    return _sets_sorted(python, dumped) if _holds_a_set(python) else dumped


def _holds_a_set(value: Any) -> bool:
    if isinstance(value, set | frozenset):
        return True
    if isinstance(value, dict):
        return any(_holds_a_set(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_a_set(item) for item in value)
    return False


def _by_orjson(item: Any) -> bytes:
    return orjson.dumps(item, option=_CANONICAL_OPTIONS)


def _sets_sorted(python: Any, dumped: Any, key: Callable[[Any], bytes] = _by_orjson) -> Any:
    """`dumped` (the JSON-mode dump) with each list that came from a set in `python` (the
    python-mode dump of the same model) put in canonical order (by `key` of each item)."""
    if isinstance(python, set | frozenset) and isinstance(dumped, list):
        return sorted(dumped, key=key)
    if isinstance(python, dict) and isinstance(dumped, dict):
        return {k: _sets_sorted(python[k], v, key) if k in python else v for k, v in dumped.items()}
    if isinstance(python, list | tuple) and isinstance(dumped, list) and len(python) == len(dumped):
        return [_sets_sorted(p, d, key) for p, d in zip(python, dumped, strict=True)]
    return dumped


def canonical_json(obj: Any) -> bytes:
    """Stable JSON bytes for `obj` (keys sorted): equal inputs give equal bytes, run after run.

    Distinct inputs give distinct bytes, except by design: objects JSON cannot express count by
    their type, a tuple or set is its items, a dataclass or model its fields. orjson writes NaN
    and infinities as `null`, like None, and stops at 64-bit integers, so output holding `null`
    or a value orjson refused is spelt again by `_canonical_tree`, which tells them apart.
    """
    try:
        spelt = _dumps(obj, _canonical_default, _CANONICAL_OPTIONS)
    except TypeError as exc:
        _refuse_unencodable(exc)
        spelt = b"null"
    # No "u" means no "null": one memchr, cheaper than the substring search (METH_O partition,
    # cheaper than `in` or find). A null from a None alone needs no second spelling.
    if 117 not in spelt or not _partition(spelt, b"null")[1]:
        return spelt
    try:
        if spelt != b"null" and not _may_hold_non_finite(obj):
            return spelt
        return _dumps(_canonical_tree(obj), _canonical_default, _CANONICAL_OPTIONS)
    except RecursionError:
        raise ValueNotJournalable(_TOO_DEEP) from None
    except TypeError as exc:
        _refuse_unencodable(exc)
        raise


_TOO_DEEP = (
    "it is nested too deeply for JSON, or holds itself (a list or dict that contains itself). "
    "Fix: pass a flatter value, or break the cycle."
)


def _refuse_unencodable(exc: TypeError) -> None:
    """Raise `ValueNotJournalable` for what no spelling can fix: a value nested past JSON's
    limit or holding itself, or text with lone surrogates (not UTF-8)."""
    message = str(exc)
    if "ecursion" in message or "circular" in message:
        raise ValueNotJournalable(_TOO_DEEP) from None
    if "surrogates" in message or "UTF-8" in message:
        raise ValueNotJournalable(
            "it holds text with lone surrogates (e.g. '\\ud800'), which is not valid UTF-8 "
            "and cannot be written as JSON. Fix: decode the text with errors='replace', or "
            "pass it as bytes."
        ) from None


def _may_hold_non_finite(obj: Any) -> bool:
    """False when `obj` (plain dicts, lists and scalars) holds no NaN or infinity; True when it
    does, or holds anything else (a model, a dataclass: `_canonical_tree` looks inside)."""
    for value in obj.values() if type(obj) is dict else obj if type(obj) in (list, tuple) else ():
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is float:
            if not math.isfinite(value):
                return True
        elif kind not in (dict, list, tuple) or _may_hold_non_finite(value):
            return True
    return type(obj) not in (dict, list, tuple)


_dumps = orjson.dumps
_partition = bytes.partition


_NATIVE_KEYS = (str, int, float, bool, type(None), enum.Enum, dt.date, dt.time, uuid.UUID)
"""Dict keys orjson spells itself (OPT_NON_STR_KEYS); other keys are spelt as canonical text."""


def _canonical_tree(obj: Any) -> Any:
    """`obj` as plain JSON values, spelt as orjson spells them, except what orjson cannot tell
    apart: a NaN or infinite float becomes `{"__float__": "NaN"}`, an int beyond 64 bits
    `{"__int__": "<digits>"}`. Anything else is left to orjson and `_canonical_default`, so a
    value without those spells exactly as the fast path spells it (fingerprints do not move)."""
    kind = type(obj)
    if kind is str or kind is bool or obj is None:
        return obj
    if kind is dict:
        return {_canonical_key(k): _canonical_tree(v) for k, v in obj.items()}
    if kind is list or kind is tuple:
        return [_canonical_tree(v) for v in obj]
    if kind is float:
        return obj if math.isfinite(obj) else _non_finite(obj)
    if kind is int:
        return obj if -(2**63) <= obj < 2**64 else {"__int__": str(obj)}
    return _canonical_object(obj)


def _non_finite(value: float) -> dict[str, str]:
    return {"__float__": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"}


def _canonical_object(obj: Any) -> Any:
    """`_canonical_tree` for subclasses and objects (rarer, so checked in full)."""
    if isinstance(obj, enum.Enum):
        return obj  # orjson spells a member by its value
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _non_finite(obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj if -(2**63) <= obj < 2**64 else {"__int__": str(obj)}
    if isinstance(obj, dict):
        return {_canonical_key(k): _canonical_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical_tree(v) for v in obj]
    if isinstance(obj, BaseModel):
        # JSON mode spells the fields as before; where it wrote null, the Python dump tells
        # whether a NaN or an infinity was there (a model's config may write those as null).
        raw = obj.model_dump(mode="python")
        try:
            spelt = obj.model_dump(mode="json")
        except (ValueError, PydanticSerializationError):  # bytes that are not UTF-8
            return _canonical_tree(raw)
        if _holds_a_set(raw):
            spelt = _sets_sorted(raw, spelt)
        return _canonical_tree(_non_finite_back(spelt, raw))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _canonical_tree(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, set | frozenset):
        return [_canonical_tree(item) for item in _canonical_order(obj)]
    return obj


def _non_finite_back(spelt: Any, raw: Any) -> Any:
    """`spelt` with each null that stands for a NaN or infinite float in `raw` put back."""
    if spelt is None:
        return raw if isinstance(raw, float) and not math.isfinite(raw) else None
    if isinstance(spelt, dict) and isinstance(raw, dict) and spelt.keys() == raw.keys():
        return {k: _non_finite_back(v, raw[k]) for k, v in spelt.items()}
    if isinstance(spelt, list) and isinstance(raw, list | tuple) and len(spelt) == len(raw):
        return [_non_finite_back(v, r) for v, r in zip(spelt, raw, strict=True)]
    return spelt


def _canonical_order(items: set[Any] | frozenset[Any]) -> list[Any]:
    """The fast path's order (items by their orjson bytes), ties and refusals decided by the
    items' canonical bytes, so the order never depends on hashing."""
    try:
        keys = [
            (orjson.dumps(item, default=_canonical_default), canonical_json(item)) for item in items
        ]
    except TypeError:
        keys = [(b"", canonical_json(item)) for item in items]
    return [item for _, item in sorted(zip(keys, items, strict=True), key=lambda pair: pair[0])]


def _canonical_key(key: Any) -> Any:
    if type(key) is str or (
        isinstance(key, _NATIVE_KEYS) and not (isinstance(key, int) and not -(2**63) <= key < 2**64)
    ):
        return key
    return canonical_json(key).decode()


def fingerprint(name: str, canonical_args: bytes) -> str:
    """Short stable hash of a step name and its canonical arguments."""
    return _blake2b(name.encode() + b"\x00" + canonical_args, digest_size=12).hexdigest()


_blake2b = hashlib.blake2b


def fingerprinter(name: str) -> Callable[[bytes], str]:
    """`fingerprint` with the name bound once: what a step calls for every invocation."""
    named = _blake2b(name.encode() + b"\x00", digest_size=12)
    start = named.copy  # the name hashed once; a copy costs a third less than a new hasher

    def fingerprint_of(canonical_args: bytes) -> str:
        hasher = start()
        hasher.update(canonical_args)
        return hasher.hexdigest()

    return fingerprint_of


def _adapter_for(annotation: Any) -> tuple[TypeAdapter[Any], bool]:
    """(adapter, wrapped): wrapped adapters encode `[value]`; the brackets are cut off after.

    pydantic refuses a config for a dataclass or TypedDict named directly, yet applies one to
    such a type nested in a container. Wrapping in a one-element list gives stdlib dataclasses
    and TypedDicts base64 bytes and infinite floats too, and `[X]` minus its brackets is
    exactly X's JSON, so the journal holds the same bytes either way.
    """
    try:
        return TypeAdapter(annotation, config=_VALUE_CONFIG), False
    except PydanticUserError:
        if _is_model(annotation):
            return TypeAdapter(annotation), False  # a model's own config rules its fields
        return TypeAdapter(list[annotation], config=_VALUE_CONFIG), True


def _is_model(annotation: Any) -> bool:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class ValueCodec:
    """Encodes values of one declared type to JSON bytes and decodes them back to that type.

    Built once per step (when it is decorated), so the hot path only calls `encode`/`decode`.
    A value must come back as itself (equal, with the same classes throughout), else `record`
    refuses it: without an annotation a tuple or an enum would decode as a list or an int; a
    validator that changes values, a subclass of the annotated class or a union whose members
    look alike in JSON would give the workflow something other than what the step returned.
    """

    __slots__ = ("_adapter", "_plain", "_scalar", "_sets", "_wrapped", "annotation")

    def __init__(self, annotation: Any = Any) -> None:
        self.annotation = annotation
        try:
            self._adapter, self._wrapped = _adapter_for(annotation)
        except PydanticUserError as exc:
            raise ValueNotJournalable(
                f"values of type {_type_name(annotation)} cannot be journaled: "
                f"{str(exc).split('. ', 1)[0]}. Fix: annotate (and return) data the journal "
                "can hold, such as a pydantic model or dataclass of the fields you need, "
                "not a live object."
            ) from exc
        # str, int, bool and float results skip pydantic (the common LLM-text case, ~10x
        # faster); anything unusual (big ints, infinities, lone surrogates) takes the full path.
        self._scalar: type | None = annotation if annotation in (str, int, bool, float) else None
        self._plain = plain_top(annotation)
        """For `Any`, `dict[str, Any]`, `list[Any]`: the class a plain-JSON result has, which
        orjson writes and reads as pydantic does (`_plain_json`)."""
        self._sets = self._scalar is None and _may_hold_a_set(self._adapter)
        """pydantic writes a set in iteration order, which for strings changes from one process
        to the next (hash randomisation): such values are spelt again with their sets sorted,
        so that one value has one spelling (replay's comparison, `journal diff`)."""

    def record(self, value: Any, *, what: str = "value") -> tuple[bytes, Any]:
        """(JSON bytes, the value decoded from them): what the journal keeps, what replay returns.

        Raises `ValueNotJournalable` when the value is not of the declared type or would not
        come back as itself, so a problem surfaces when it is recorded, never at replay.
        """
        if type(value) is self._scalar and (self._scalar is not float or math.isfinite(value)):  # type: ignore[arg-type]
            try:
                return orjson.dumps(value), value
            except (TypeError, orjson.JSONEncodeError):
                pass
        plain = self._plain
        if plain is not None and (plain is object or type(value) is plain) and is_plain(value):
            payload = dumped(value)
            if payload is not None:
                return payload, orjson.loads(payload)  # a copy, as pydantic's way gives
        try:
            if self._wrapped:
                payload = self._adapter.dump_json([value], warnings="error")[1:-1]
            else:
                payload = self._adapter.dump_json(value, warnings="error")
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            hint = (
                " A pydantic model holding non-UTF-8 bytes needs model_config = "
                "ConfigDict(ser_json_bytes='base64', val_json_bytes='base64')."
                if "utf-8" in str(exc)
                else ""
            )
            raise ValueNotJournalable(
                f"{what} of type {type(value).__name__} cannot be journaled as "
                f"{_type_name(self.annotation)}: {_first_line(exc)}. Fix: return a JSON-able "
                "value (str, numbers, lists, dicts, pydantic models, dataclasses, datetime, "
                f"UUID, bytes, enums) that matches the return annotation.{hint}"
            ) from exc
        if self._sets:
            payload = self._sets_sorted(value, payload)
        try:
            decoded = self._validate(payload)
        except ValidationError as exc:
            raise ValueNotJournalable(
                f"{what} {_short_repr(value)} does not survive the journal as "
                f"{_type_name(self.annotation)}: {_first_line(exc)}. Common causes: an infinite "
                "float inside a model with its own config, a value outside the declared type."
            ) from exc
        found = difference(value, decoded)
        if found is not None:
            raise ValueNotJournalable(_changed(what, value, decoded, found, self.annotation))
        return payload, decoded

    def _sets_sorted(self, value: Any, payload: bytes) -> bytes:
        python = self._adapter.dump_python([value] if self._wrapped else value)
        if self._wrapped:
            python = python[0]
        if not _holds_a_set(python):
            return payload
        # The standard json module: orjson would turn integers past 64 bits into floats.
        spelt = _sets_sorted(python, json.loads(payload), key=canonical_json)
        return json.dumps(spelt, ensure_ascii=False, separators=(",", ":")).encode()

    def encode(self, value: Any, *, what: str = "value") -> bytes:
        """JSON bytes for `value`, checked as `record` checks them."""
        return self.record(value, what=what)[0]

    def _validate(self, payload: bytes) -> Any:
        if self._wrapped:
            return self._adapter.validate_json(b"[" + payload + b"]")[0]
        return self._adapter.validate_json(payload)

    def decode(self, payload: bytes, *, what: str = "value") -> Any:
        """The typed value recorded in `payload`."""
        if self._scalar is not None:  # replay's hot path: plain JSON scalars skip pydantic
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:
                value = None
            if type(value) is self._scalar:
                return value
        try:
            return self._validate(payload)
        except ValidationError as exc:
            raise ValueNotJournalable(
                f"recorded {what} does not decode as {_type_name(self.annotation)}: "
                f"{_first_line(exc)}. The return annotation changed since it was recorded, "
                "or the value was returned without matching it."
            ) from exc


def _may_hold_a_set(adapter: TypeAdapter[Any]) -> bool:
    """Whether values of the adapter's type may hold a set (its JSON schema has an array of
    unique items); True when the schema cannot tell."""
    try:
        schema = orjson.dumps(adapter.json_schema())
    except Exception:  # a type without a JSON schema: look at each value instead
        return True
    return b'"uniqueItems":true' in schema


def json_or_text(payload: bytes | None) -> Any:
    """Recorded bytes as JSON values for reading; bytes that are not JSON as text."""
    if payload is None:
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode(errors="replace")


def _changed(what: str, value: Any, whole: Any, found: Difference, annotation: Any) -> str:
    """Why `value` would not come back as itself (`whole`), and what to do about it."""
    original, decoded = found.original, found.decoded
    mine, theirs = type(original).__name__, type(decoded).__name__
    head = (
        f"{what} {_short_repr(original)} ({mine}) would come back from the journal as "
        f"{_short_repr(decoded)} ({theirs})"
    )
    if found.path:
        head = (
            f"{what} {_short_repr(value)} would come back from the journal as "
            f"{_short_repr(whole)}: at {what}{found.path}, {_short_repr(original)} ({mine}) "
            f"would become {_short_repr(decoded)} ({theirs})"
        )
    untyped = annotation is Any
    if not found.class_changed:
        return (
            f"{head}: decoding it changes it. pydantic runs a model's validators again when "
            "it decodes the journal, and a validator that changes values it has already "
            "validated (doubling, appending, shifting) gives something else each time; so "
            "does a value built without validation (model_construct). Fix: make the "
            "validator return an already valid value unchanged (normalising is fine), or "
            "change the value in the step before building the model."
        )
    if isinstance(original, enum.Enum) and not isinstance(decoded, enum.Enum):
        reason = (
            "the step has no return annotation, so the journal keeps the member's value only"
            if untyped
            else f"{_type_name(annotation)} decodes that value as {theirs}"
        )
        return (
            f"{head}: {reason}. Fix: annotate the return type with the enum (e.g. "
            f"`-> {mine}`, `-> list[{mine}]`); a union of an enum and its value's type "
            "cannot be told apart."
        )
    discriminate = (
        "a discriminated union of the classes you return (give each a field like "
        "`kind: Literal['...']` and annotate `Annotated[A | B, Field(discriminator='kind')]`)"
    )
    if isinstance(original, type(decoded)) and not untyped:
        return (
            f"{head}: {mine} is a subclass of {theirs}, and the journal rebuilds the class the "
            f"annotation declares, so it would lose its class and its own fields. Fix: "
            f"annotate the class you return (`-> {mine}`), or {discriminate}."
        )
    if _is_record(original) and _is_record(decoded):
        return (
            f"{head}: the annotation {_type_name(annotation)} allows both, and their JSON "
            f"does not tell a {mine} from a {theirs}. Fix: use {discriminate}."
        )
    if untyped:
        return (
            f"{head}, because the step has no return annotation. Fix: annotate the return "
            f"type (e.g. `-> {type(value).__name__}`) so the value is rebuilt with its type."
        )
    return (
        f"{head}. Fix: return the type {_type_name(annotation)} declares, or annotate the "
        f"type you return (`{mine}` rather than `Any` inside containers)."
    )


def _is_record(value: Any) -> bool:
    return isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def _type_name(annotation: Any) -> str:
    if get_args(annotation):  # dict[str, Any] rather than its bare origin's name
        return repr(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or repr(annotation)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
