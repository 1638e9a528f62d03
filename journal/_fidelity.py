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


def difference(original: Any, decoded: Any, path: str = "") -> Difference | None:
    """The first place where `decoded` is not `original`, or None when it is the same value.

    Same means equal, with the same class at every level, except that an int may come back as
    the equal float (what a `float` annotation declares). Floats that are both NaN are the same.
    """
    if original is decoded:
        return None
    kind = type(original)
    if kind is not type(decoded):
        if kind is int and type(decoded) is float and original == decoded:
            return None
        return Difference(path, original, decoded)
    if kind in _LEAVES:
        if original == decoded or (kind is float and math.isnan(original) and math.isnan(decoded)):
            return None
        return Difference(path, original, decoded)
    if isinstance(original, list | tuple):
        if len(original) != len(decoded):
            return Difference(path, original, decoded)
        for index, (a, b) in enumerate(zip(original, decoded, strict=True)):
            found = difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(original, dict):
        return _mapping_difference(original, decoded, path)
    if isinstance(original, BaseModel):
        return _model_difference(original, decoded, path)
    if dataclasses.is_dataclass(original):
        for field in dataclasses.fields(original):
            found = difference(
                getattr(original, field.name, None),
                getattr(decoded, field.name, None),
                f"{path}.{field.name}",
            )
            if found is not None:
                return found
        return None
    if isinstance(original, set | frozenset):
        return _set_difference(original, decoded, path)
    if original == decoded or kind.__eq__ is _IDENTITY_EQ:
        # Equal, or a class compared by identity only: the same class is all one can check.
        return None
    return Difference(path, original, decoded)


_LEAVES = frozenset({str, int, float, bool, bytes, type(None)})
_IDENTITY_EQ: Any = object.__eq__


def _mapping_difference(original: Any, decoded: Any, path: str) -> Difference | None:
    if original.keys() != decoded.keys():
        return Difference(path, original, decoded)
    for key, value in original.items():
        found = difference(value, decoded[key], f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def _model_difference(original: BaseModel, decoded: BaseModel, path: str) -> Difference | None:
    found = _mapping_difference(original.__dict__, decoded.__dict__, path)
    if found is not None:
        return _as_attribute_path(found, path)
    for extra in ("__pydantic_extra__", "__pydantic_private__"):
        a, b = getattr(original, extra, None) or {}, getattr(decoded, extra, None) or {}
        found = _mapping_difference(a, b, path)
        if found is not None:
            return _as_attribute_path(found, path)
    return None


def _as_attribute_path(found: Difference, prefix: str) -> Difference:
    """`['name']` right after a model's own path reads better as `.name`."""
    rest = found.path[len(prefix) :]
    if rest.startswith("['"):
        end = rest.find("']")
        rest = "." + rest[2:end] + rest[end + 2 :]
    return found._replace(path=prefix + rest)


def _set_difference(original: Any, decoded: Any, path: str) -> Difference | None:
    if original != decoded:
        return Difference(path, original, decoded)
    by_value = {item: item for item in decoded}  # equal items hash alike: pair them up
    for item in original:
        found = difference(item, by_value[item], f"{path}{{{item!r}}}")
        if found is not None:
            return found
    return None
