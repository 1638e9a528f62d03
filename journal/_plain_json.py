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


def plain_top(annotation: Any) -> type | None:
    """The class a plain-JSON result of `annotation` must have (object: any), or None when
    results of that annotation always take pydantic's way."""
    try:
        return _PLAIN_TOPS.get(annotation)
    except TypeError:  # an unhashable annotation
        return None


def is_plain(value: Any) -> bool:
    """Whether `value` is plain JSON whose integers orjson and pydantic both write."""
    stack = [value]
    nodes = 0
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        nodes += 1
        if nodes > _MOST_NODES:
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not -(2**63) <= item < 2**64:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        else:
            return False
    return True


def dumped(value: Any) -> bytes | None:
    """orjson's bytes for a plain value, or None (a lone surrogate, nesting past 255 levels)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
