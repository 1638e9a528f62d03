"""Is what came back from the journal what went in? Equal values, the same classes throughout.

`==` is not enough: `Priority.HIGH == 2`, `Mood.CALM == "calm"`, and pydantic's `==` on two
models compares field values only after their classes, so a subclass cut down to its parent,
or a union member decoded as another member, is caught only by walking the value. The walk
reports the first place where the two differ, so an error can say where and how.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

from pydantic import BaseModel


class Difference(NamedTuple):
    """Where `decoded` first differs from `original`, and the two parts found there."""

    path: str
    """Like `.items[2].pet` (empty for the value itself)."""
    original: Any
    decoded: Any

    @property
    def class_changed(self) -> bool:
        return type(self.original) is not type(self.decoded)


def difference(original: Any, decoded: Any) -> Difference | None:
    """The first place where `decoded` is not `original`, or None when it is the same value.

    Same means equal, with the same class at every level, except that an int may come back as
    the equal float (what a `float` annotation declares). Floats that are both NaN are the same.
    """
    found = _differ(original, decoded)
    if found is None:
        return None
    where, a, b = found
    return Difference("".join(reversed(where)), a, b)


_Found = tuple[list[str], Any, Any]
"""(path segments innermost first, original part, decoded part): paths are only spelt for
a difference, never on the way through a value that comes back the same."""

_LEAF, _FLOAT, _SEQUENCE, _MAPPING, _MODEL, _DATACLASS, _SET, _OTHER = range(8)
_CATEGORIES: dict[type, int] = {
    str: _LEAF,
    int: _LEAF,
    bool: _LEAF,
    bytes: _LEAF,
    type(None): _LEAF,
    float: _FLOAT,
    list: _SEQUENCE,
    tuple: _SEQUENCE,
    dict: _MAPPING,
    set: _SET,
    frozenset: _SET,
}
"""What to compare for each class, decided once per class (isinstance on pydantic's metaclass
and is_dataclass cost more than the comparison itself)."""
_IDENTITY_EQ: Any = object.__eq__
_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Leaves compared inline: same class and equal is the same (unequal NaNs take the call)."""
_ABSENT: Any = object()


def _category(kind: type) -> int:
    found = _CATEGORIES.get(kind)
    if found is None:
        if issubclass(kind, list | tuple):
            found = _SEQUENCE
        elif issubclass(kind, dict):
            found = _MAPPING
        elif issubclass(kind, BaseModel):
            found = _MODEL
        elif dataclasses.is_dataclass(kind):
            found = _DATACLASS
        elif issubclass(kind, set | frozenset):
            found = _SET
        else:
            found = _OTHER
        if len(_CATEGORIES) < 10_000:  # classes are few; a flood of them is not cached
            _CATEGORIES[kind] = found
    return found


def _differ(original: Any, decoded: Any) -> _Found | None:
    if original is decoded:
        return None
    kind = type(original)
    if kind is not type(decoded):
        if kind is int and type(decoded) is float and original == decoded:
            return None
        return [], original, decoded
    category = _category(kind)
    if category is _LEAF:
        return None if original == decoded else ([], original, decoded)
    if category is _MAPPING:
        return _mapping(original, decoded, "[{!r}]")
    if category is _SEQUENCE:
        if len(original) != len(decoded):
            return [], original, decoded
        for index, (a, b) in enumerate(zip(original, decoded, strict=True)):
            if a is b or (type(a) is type(b) and type(a) in _PLAIN and a == b):
                continue  # the common leaf, without a call
            if (found := _differ(a, b)) is not None:
                found[0].append(f"[{index}]")
                return found
        return None
    if category is _MODEL:
        found = _mapping(original.__dict__, decoded.__dict__, ".{}")
        for part in ("__pydantic_extra__", "__pydantic_private__"):
            mine, theirs = getattr(original, part), getattr(decoded, part)
            if found is None and (mine or theirs):
                found = _mapping(mine or {}, theirs or {}, ".{}")
        return found
    if category is _FLOAT:
        if original == decoded or (math.isnan(original) and math.isnan(decoded)):
            return None
        return [], original, decoded
    if category is _DATACLASS:
        for field in dataclasses.fields(original):
            a = getattr(original, field.name, None)
            found = _differ(a, getattr(decoded, field.name, None))
            if found is not None:
                found[0].append(f".{field.name}")
                return found
        return None
    if category is _SET:
        return _set(original, decoded)
    if original == decoded or kind.__eq__ is _IDENTITY_EQ:
        # Equal, or a class compared by identity only: the same class is all one can check.
        return None
    return [], original, decoded


def _mapping(original: Any, decoded: Any, spelling: str) -> _Found | None:
    if len(original) != len(decoded):
        return [], original, decoded
    for key, a in original.items():
        b = decoded.get(key, _ABSENT)  # same length and every key found: the same keys
        if a is b or (type(a) is type(b) and type(a) in _PLAIN and a == b):
            continue  # the common leaf, without a call
        if b is _ABSENT:
            return [], original, decoded
        if (found := _differ(a, b)) is not None:
            found[0].append(spelling.format(key))
            return found
    return None


def _set(original: Any, decoded: Any) -> _Found | None:
    if original != decoded:
        return [], original, decoded
    by_value = {item: item for item in decoded}  # equal items hash alike: pair them up
    for item in original:
        found = _differ(item, by_value[item])
        if found is not None:
            found[0].append(f"{{{item!r}}}")
            return found
    return None
