"""What SQLite and PostgreSQL stores share about chunks (`journal._chunks`): which fields of
an event are split when written, and putting rows and events back together when read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._chunks import SPLIT_FROM, ChunkDamaged, Split, expand, is_template, refs_of, split
from .._errors import JournalDamaged
from .._events import Event, EventStatus, replaced
from ._damage import damage_of, mark

Loaded = tuple[dict[str, tuple[str | None, str]], dict[str, bytes]]
"""(nodes, blobs) a store read for a set of names: every node reachable from them, and the
blobs those nodes and names refer to."""
Loader = Callable[[list[str]], Loaded]


@dataclass
class Pending:
    """One run's chunks, to be written in the transaction that writes its events."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    nodes: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)

    def add(self, parts: Split) -> bytes:
        self.blobs.update(parts.blobs)
        self.nodes.update(parts.nodes)
        self.refs.update(parts.refs)
        return parts.stored

    def __bool__(self) -> bool:
        return bool(self.refs)


def stored_fields(event: Event, pending: Pending) -> tuple[bytes | None, bytes | None]:
    """The event's `(payload, args)` as stored: a call record of `SPLIT_FROM` bytes or more
    as a template, its chunks added to `pending`."""
    payload, args = event.payload, event.args
    if payload is not None and len(payload) >= SPLIT_FROM and event.status is EventStatus.STARTED:
        parts = split(payload)
        if parts is not None:
            payload = pending.add(parts)
    if args is not None and len(args) >= SPLIT_FROM:
        parts = split(args)
        if parts is not None:
            args = pending.add(parts)
    return payload, args


def expand_rows(run_id: str, rows: list[Any], columns: tuple[int, int], load: Loader) -> list[Any]:
    """`rows` with every template in `columns` put back together; `JournalDamaged` if a chunk
    is missing or edited (replay never serves content that is not what was recorded)."""
    first, second = columns
    templated = []
    for number, read in enumerate(rows):  # the replay's hot path: a first byte of 0 or not
        value = read[first]
        if value and value[0] == 0:
            templated.append(number)
            continue
        value = read[second]
        if value and value[0] == 0:
            templated.append(number)
    if not templated:
        return rows
    checked: set[str] = set()
    out = list(rows)
    row: list[Any] = []
    try:
        nodes, blobs = load(_roots(rows[n][column] for n in templated for column in columns))
        for number in templated:
            row = list(rows[number])
            for column in columns:
                if is_template(row[column]):
                    row[column] = expand(row[column], nodes, blobs, checked)
            out[number] = tuple(row)
    except ChunkDamaged as exc:
        where = f" seq {row[0]}" if row else ""
        raise JournalDamaged(
            f"run {run_id!r}{where}: its recorded call refers to {exc}. Fix: run "
            "`journal verify` to see what else was changed, and restore the journal from a "
            "backup or an export."
        ) from exc
    return out


def expand_events(events: list[Event], load: Loader) -> list[Event]:
    """`events` with every template put back together. An event whose chunks are missing or
    edited keeps its template and is marked damaged, for `verify` to report at its seq."""
    templated = [
        number
        for number, event in enumerate(events)
        if is_template(event.payload) or is_template(event.args)
    ]
    if not templated:
        return events
    try:
        nodes, blobs = load(
            _roots(
                value
                for number in templated
                for value in (events[number].payload, events[number].args)
            )
        )
    except ChunkDamaged:
        nodes, blobs = {}, {}
    checked: set[str] = set()
    out = list(events)
    for number in templated:
        event = events[number]
        values: dict[str, bytes | None] = {"payload": event.payload, "args": event.args}
        damage = damage_of(event)
        for name, value in values.items():
            if value is not None and is_template(value):
                try:
                    values[name] = expand(value, nodes, blobs, checked)
                except ChunkDamaged as exc:
                    damage = damage or (name, f"it refers to {exc}")
        rebuilt = replaced(event, payload=values["payload"], args=values["args"])
        if damage is not None:
            mark(rebuilt, damage)
        out[number] = rebuilt
    return out


def _roots(values: Any) -> list[str]:
    names: set[str] = set()
    for value in values:
        if is_template(value):
            try:
                names.update(refs_of(value))
            except ChunkDamaged:
                continue  # a template edited into something else: reported when expanded
    return sorted(names)
