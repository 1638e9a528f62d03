"""Repeated content in call arguments, stored once as content-addressed chunks.

An LLM request re-sends the whole conversation, so a journal that kept each request body whole
would grow with the square of the conversation's length. A store keeps a big call record
(`split`) as a template whose long lists and long strings are references:

- a long string is a *blob*, named by the SHA-256 of its JSON text;
- a long list is a chain of *nodes*, one per item, each naming the node before it and the
  blob of its item. A list that extends an earlier one (the same conversation, one turn
  later) shares the earlier list's nodes and adds one node per new message.

The stored template is `MAGIC` and a JSON array `[text, ref, text, ref, ..., text]`: `text`
pieces are JSON text as written, `ref` is `L` and a node's name (the list up to that node) or
`S` and a blob's name. `expand` puts the exact recorded bytes back together, so fingerprints
and the chain's hashes are those of the whole record, and `journal verify` still covers every
byte. Both names are recomputed from what they name when read: an edited chunk is never served.

The names, with `hashlib` alone: a blob's is `sha256(text)`, a node's is
`sha256(b"journal-replay/list/v1\\0" + prev + b"\\0" + item)` with `prev` the previous node's
name (empty for the first item) and `item` the item's blob name, both as ASCII hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

MAGIC = b"\x00journal-replay/chunks/v1\x00"
"""A stored template starts with this; recorded JSON never starts with a NUL byte."""
SPLIT_FROM = 4096
"""Call records shorter than this (bytes) are stored whole: most steps, at no cost."""
LIST_FROM = 512
"""A list whose JSON is at least this long is stored as nodes."""
ITEM_FROM = 128
"""...if its items' JSON is this long on average: a node costs three names (about 200 bytes),
more than a number, a token id or a short word it would hold (an embedding, a prompt as ids)."""
STRING_FROM = 1024
"""A string at least this long (characters) is stored as a blob."""
_NODE_TAG = b"journal-replay/list/v1\x00"


def blob_name(text: bytes) -> str:
    """The name of a blob: the SHA-256 of its JSON text, hex."""
    return hashlib.sha256(text).hexdigest()


def node_name(prev: str | None, item: str) -> str:
    """The name of a list node: a hash over the previous node's name and its item's name."""
    joined = _NODE_TAG + (prev or "").encode() + b"\x00" + item.encode()
    return hashlib.sha256(joined).hexdigest()


@dataclass
class Split:
    """A call record as a template and the chunks it names."""

    stored: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    """Blob name -> JSON text: list items and long strings."""
    nodes: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    """Node name -> (previous node's name, item's blob name), in list order."""
    refs: list[str] = field(default_factory=list)
    """The names the template refers to directly."""


class ChunkDamaged(Exception):
    """A chunk a template names is missing, or no longer hashes to its name."""

    def __init__(self, name: str, missing: bool) -> None:
        self.name = name
        self.missing = missing
        what = "is missing from the journal" if missing else "no longer hashes to its name"
        super().__init__(f"chunk {name[:16]}... {what}")


def split(record: bytes | None) -> Split | None:
    """`record` as a template and chunks, or None to store it whole (short, not JSON, or not
    written the way this module writes it back)."""
    if record is None or len(record) < SPLIT_FROM or record.startswith(MAGIC):
        return None
    try:
        tree = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    parts = Split(b"")
    segments: list[str] = []
    text: list[str] = []
    try:
        _walk(tree, parts, segments, text)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper)
        return None
    if not parts.refs:
        return None
    segments.append("".join(text))
    parts.stored = MAGIC + orjson.dumps(segments)
    try:
        same = expand(parts.stored, parts.nodes, parts.blobs) == record
    except ChunkDamaged:
        same = False
    return parts if same else None  # spelt unlike orjson (spaces, escapes): keep it whole


def _walk(value: Any, parts: Split, segments: list[str], text: list[str]) -> None:
    if type(value) is dict:
        text.append("{")
        for number, (key, item) in enumerate(value.items()):
            if number:
                text.append(",")
            text.append(orjson.dumps(key).decode())
            text.append(":")
            _walk(item, parts, segments, text)
        text.append("}")
        return
    if type(value) is list:
        spelt = orjson.dumps(value)
        if len(spelt) < LIST_FROM or len(spelt) < ITEM_FROM * len(value):
            text.append(spelt.decode())
            return
        prev: str | None = None
        for item in value:
            body = orjson.dumps(item)
            item_name = blob_name(body)
            parts.blobs[item_name] = body
            name = node_name(prev, item_name)
            parts.nodes[name] = (prev, item_name)
            prev = name
        _reference(f"L{prev}", parts, segments, text)
        return
    if type(value) is str and len(value) >= STRING_FROM:
        body = orjson.dumps(value)
        name = blob_name(body)
        parts.blobs[name] = body
        _reference(f"S{name}", parts, segments, text)
        return
    text.append(orjson.dumps(value).decode())


def _reference(ref: str, parts: Split, segments: list[str], text: list[str]) -> None:
    segments.append("".join(text))
    segments.append(ref)
    text.clear()
    parts.refs.append(ref[1:])


def is_template(stored: bytes | None) -> bool:
    """Whether `stored` is a template `split` made (else the record as recorded)."""
    return stored is not None and stored.startswith(MAGIC)


def refs_of(stored: bytes) -> list[str]:
    """The names a template refers to directly (nodes and blobs alike)."""
    return [ref[1:] for ref in _segments(stored)[1::2]]


def _segments(stored: bytes) -> list[str]:
    try:
        segments = orjson.loads(stored[len(MAGIC) :])
    except orjson.JSONDecodeError:
        raise ChunkDamaged("template", missing=False) from None
    if (
        type(segments) is not list
        or len(segments) % 2 != 1
        or not all(type(piece) is str for piece in segments)
    ):
        raise ChunkDamaged("template", missing=False)
    return segments


def expand(
    stored: bytes,
    nodes: Mapping[str, tuple[str | None, str]],
    blobs: Mapping[str, bytes],
    checked: set[str] | None = None,
) -> bytes:
    """The record a template stands for, its chunks taken from `nodes` and `blobs`; raises
    `ChunkDamaged`. `checked` keeps the names already found to hash right, across calls."""
    seen = set() if checked is None else checked
    out: list[bytes] = []
    for number, piece in enumerate(_segments(stored)):
        if number % 2 == 0:
            out.append(piece.encode())
        elif piece[:1] == "S":
            out.append(_blob(piece[1:], blobs, seen))
        elif piece[:1] == "L":
            items = [_blob(item, blobs, seen) for item in _items(piece[1:], nodes, seen)]
            out.append(b"[" + b",".join(items) + b"]")
        else:
            raise ChunkDamaged("template", missing=False)
    return b"".join(out)


def _blob(name: str, blobs: Mapping[str, bytes], seen: set[str]) -> bytes:
    body = blobs.get(name)
    if body is None:
        raise ChunkDamaged(name, missing=True)
    if name not in seen:
        if type(body) is not bytes or blob_name(body) != name:  # TEXT: edited by SQL
            raise ChunkDamaged(name, missing=False)
        seen.add(name)
    return body


def _items(head: str, nodes: Mapping[str, tuple[str | None, str]], seen: set[str]) -> list[str]:
    items: list[str] = []
    name: str | None = head
    while name is not None:
        node = nodes.get(name)
        if node is None:
            raise ChunkDamaged(name, missing=True)
        prev, item = node
        if name not in seen:
            if (
                not isinstance(prev, str | None)
                or type(item) is not str
                or node_name(prev, item) != name
            ):
                raise ChunkDamaged(name, missing=False)
            seen.add(name)
        items.append(item)
        name = prev
    items.reverse()
    return items
