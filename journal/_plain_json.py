"""Results that are plain JSON (dicts with str keys, lists, str, int, finite float, bool, None)
declared as `Any`, `dict[str, Any]` or `list[Any]`: a tool's answer, a parsed response.

pydantic writes such a value with the same bytes as orjson, and reads those bytes back as the
same value: `ValueCodec.record` writes them with orjson and reads them back with it, about four
times faster than pydantic's write, read and comparison. (Reading a result on replay stays
pydantic's: orjson reads an integer past 64 bits as a float, and looking for one costs what
it saves.) tests/test_codec.py checks the law: the same bytes and values as pydantic's way.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

_PLAIN_TOPS: dict[Any, type] = {
    Any: object,
    object: object,
    dict: dict,
    dict[str, Any]: dict,
    list: list,
    list[Any]: list,
}

_MOST_NODES = 100_000
"""A bigger value (or one that holds itself) takes pydantic's way, which says what is wrong."""

_DEEPEST = 128
"""A value nested deeper takes pydantic's way: pydantic's JSON reader (replay's decode) refuses
nesting past about 200 levels, which orjson writes (up to 255), so such a value would be
recorded and then fail to decode on replay; pydantic's way refuses it when it is recorded."""


def plain_top(annotation: Any) -> type | None:
    """The class a plain-JSON result of `annotation` must have (object: any), or None when
    results of that annotation always take pydantic's way."""
    try:
        return _PLAIN_TOPS.get(annotation)
    except TypeError:  # an unhashable annotation
        return None


def is_plain(value: Any) -> bool:
    """Whether `value` is plain JSON whose integers orjson and pydantic both write, nested no
    deeper than pydantic reads back."""
    if type(value) is dict or type(value) is list:
        return _is_plain_tree(value)
    return _is_plain_leaf(value)


def _is_plain_leaf(item: Any) -> bool:
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return True
    if kind is int:
        return bool(-(2**63) <= item < 2**64)
    if kind is float:
        return math.isfinite(item)
    return False


def _is_plain_tree(value: dict[Any, Any] | list[Any]) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 1
    while stack:
        item, depth = stack.pop()
        if depth > _DEEPEST:
            return False
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    return False
            item = item.values()
        for child in item:
            kind = type(child)
            if kind is str or kind is bool or child is None:
                continue
            nodes += 1
            if nodes > _MOST_NODES:
                return False
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not -(2**63) <= child < 2**64:
                    return False
            elif kind is float:
                if not math.isfinite(child):
                    return False
            else:
                return False
    return True


def dumped(value: Any) -> bytes | None:
    """orjson's bytes for a plain value, or None (a lone surrogate)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
