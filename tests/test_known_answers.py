"""Known answers for what the journal's format fixes: chain hashes, head entries, the canonical
JSON of arguments and their fingerprints.

A journal written today must verify and replay after any upgrade, so none of these may change
by accident. If one of these tests fails, the format changed: that needs a new schema or chain
version with a migration (see docs/format.md), never a new expected value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import pathlib
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from pydantic import BaseModel

import replay
from journal import Journal
from journal._chain import Chain, key_id
from journal._codec import canonical_json, fingerprint
from journal._events import Event, EventKind, EventStatus, Run, RunStatus
from journal._heads import ZERO, HeadEntry, entry_hash

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
KEY = b"k" * 32
RUN = Run(
    run_id="run-1",
    workflow="agent",
    inputs=b'{"args":[1],"kwargs":{}}',
    inputs_fingerprint="f" * 24,
    status=RunStatus.COMPLETED,
    created_at=MOMENT,
    updated_at=MOMENT,
)
EVENT = Event(
    run_id="run-1",
    seq=1,
    key="0:1",
    kind=EventKind.STEP,
    name="call_llm",
    fingerprint="a" * 24,
    status=EventStatus.COMPLETED,
    attempt=1,
    payload=b'"hi"',
    created_at=MOMENT,
    args=b'{"q":"x"}',
)

# (scheme, genesis, link of EVENT, seal, head entry) for plain SHA-256 and for HMAC with KEY.
CHAIN_ANSWERS = {
    None: (
        "sha256",
        "cb0d9910587131fb9948673a0be1640f3fd262cde955236844e9919268d619f6",
        "3d8b7c887cef24365195ac1fed500e27752b7e222b5db24088dff32f08b9ae76",
        "9410a7fb26acc56db38dad5708d084c848783b1002b37205c69fed6828b83619",
        "94d61212f3cd15ded37e4167959afbc6a9fad27e584600fe2d9499e2192b324b",
    ),
    KEY: (
        "hmac-sha256:0a7edda4245b",
        "2bddf13c167ccd8373da0359e36f0159c544649d15157a64f1ad5b39d9a9a62e",
        "36481bca2bbc24befbad2e8da58e55fa4bc317b0bc5e72a52cf3f368106df49e",
        "49f46913fc86c7340b68b615098c9bd41e10a41c48ee2c0ae50ba865f5264764",
        "bceaa932f69b852441378dc36ffe20567381f961093ad9c239304594da0d8e93",
    ),
}


def _head_entry(chain: Chain, last_hash: str, seal: str) -> HeadEntry:
    return HeadEntry(
        n=1,
        run_id="run-1",
        reason="finished",
        status="completed",
        events=1,
        last_hash=last_hash,
        seal=seal,
        run_chain=chain.scheme,
        at=MOMENT,
        scheme=chain.scheme,
        prev=ZERO,
        hash="",
    )


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_chain_and_head_hashes_of_fixed_inputs(key: bytes | None) -> None:
    """Genesis, link, seal and head entry of fixed inputs hash to the same values forever."""
    chain = Chain(key)
    scheme, genesis, link, seal, head = CHAIN_ANSWERS[key]
    assert chain.scheme == scheme
    assert chain.genesis(RUN) == genesis
    assert chain.link(genesis, EVENT) == link
    assert chain.seal(1, link, RunStatus.COMPLETED, b'"done"', None) == seal
    assert entry_hash(chain, _head_entry(chain, link, seal)) == head


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_the_chain_is_what_its_documentation_says(key: bytes | None) -> None:
    """Recomputed from the formulas in journal/_chain.py and journal/_heads.py with hashlib
    alone: an auditor can check a journal without this library."""

    def mac(message: bytes) -> str:
        if key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(key, message, "sha256").hexdigest()

    micros = 1767323045678901  # MOMENT in integer microseconds since the epoch
    assert int(MOMENT.timestamp()) * 1_000_000 + MOMENT.microsecond == micros
    inputs = b'{"args":[1],"kwargs":{}}'
    header = orjson.dumps(["run-1", "agent", "f" * 24, None, None, micros, len(inputs)])
    genesis = mac(b"journal-replay/run/v1" + header + inputs)
    fields = orjson.dumps(
        ["run-1", 1, "0:1", "step", "call_llm", "a" * 24, "completed", 1, micros, 4, 9]
    )
    link = mac(genesis.encode() + fields + b'"hi"' + b'{"q":"x"}')
    outcome = orjson.dumps([1, "completed", 6, -1])
    seal = mac(b"journal-replay/seal/v1" + link.encode() + outcome + b'"done"')
    scheme = "sha256" if key is None else "hmac-sha256:" + key_id(key)
    entry = orjson.dumps([1, "run-1", "finished", "completed", 1, link, seal, scheme, micros])
    head = mac(b"journal-replay/head/v1" + ZERO.encode() + entry)
    assert (scheme, genesis, link, seal, head) == CHAIN_ANSWERS[key]
    if key is not None:
        assert key_id(key) == hashlib.sha256(b"journal-replay/key-id/v1" + key).hexdigest()[:12]

    # An event with no payload and no arguments: each length is written as -1.
    bare = EVENT.model_copy(update={"seq": 2, "payload": None, "args": None})
    fields = orjson.dumps(
        ["run-1", 2, "0:1", "step", "call_llm", "a" * 24, "completed", 1, micros, -1, -1]
    )
    assert Chain(key).link(link, bare) == mac(link.encode() + fields)
    # A run that records the version of its code: the header ends with it (and only then).
    header = orjson.dumps(["run-1", "agent", "f" * 24, None, None, micros, len(inputs), "v7"])
    versioned = RUN.model_copy(update={"version": "v7"})
    assert Chain(key).genesis(versioned) == mac(b"journal-replay/run/v1" + header + inputs)


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    w: float
    tags: set[str]


class Query(BaseModel):
    text: str
    limit: int = 5
    at: dt.datetime


class Client:
    """An object JSON cannot express: it counts by its type."""


ARGUMENTS: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": 42,
    "big_int": 2**70,
    "neg_int": -(2**63),
    "float": 1.5,
    "nan": float("nan"),
    "inf": float("-inf"),
    "str": 'héllo \u2603 "q"',
    "bytes": b"\x00\xffab",
    "bytearray": bytearray(b"xy"),
    "list": [3, 1, 2],
    "tuple": (1, "a"),
    "dict": {"b": 1, "a": [None, 2]},
    "int_keys": {2: "x", 10: "y"},
    # The edges of the keys orjson writes itself (int64 and uint64); past them, spelt.
    "edge_int_keys": {-(2**63) - 1: "a", 2**64 - 1: "b", -(2**63): "c"},
    "tuple_key": {(1, 2): "t"},
    "set": {"b", "a", "c"},
    "frozenset": frozenset({3, 1}),
    "datetime": MOMENT,
    "naive_datetime": dt.datetime(2026, 1, 2, 3, 4),
    "date": dt.date(2026, 1, 2),
    "time": dt.time(3, 4, 5),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": decimal.Decimal("1.10"),
    "path": pathlib.PurePosixPath("/a/b.txt"),
    "enum": Color.RED,
    "int_enum": Level.HIGH,
    "namedtuple": Point(1, 2),
    "dataclass": Box(2.0, {"z", "y"}),
    "model": Query(text="q", at=MOMENT),
    "object": Client(),
    "nested": {"m": [Query(text="n", limit=1, at=MOMENT)], "s": {1.0, 2.5}},
}

# (argument, canonical JSON of the call `probe(value=...)`, fingerprint of step `probe`)
CANONICAL_ANSWERS = [
    ("none", b'{"value":null}', "614de18827c180fb6cd2f52b"),
    ("bool", b'{"value":true}', "f7fa72d10860d85a727a4ea7"),
    ("int", b'{"value":42}', "868b0125d4e332ad075b9bdf"),
    ("big_int", b'{"value":{"__int__":"1180591620717411303424"}}', "d125a1f2d2d030faa3701605"),
    ("neg_int", b'{"value":-9223372036854775808}', "0ef2bfed0f0185b63fe3acbb"),
    ("float", b'{"value":1.5}', "49ffb6d947d78900a3cfa1da"),
    ("nan", b'{"value":{"__float__":"NaN"}}', "fe892af763e7dabfdaa303e4"),
    ("inf", b'{"value":{"__float__":"-Infinity"}}', "8ae4cee88866fbfe228eaf37"),
    ("str", b'{"value":"h\xc3\xa9llo \xe2\x98\x83 \\"q\\""}', "8eea4baf45d8a94dae45b792"),
    ("bytes", b'{"value":{"__bytes__":"AP9hYg=="}}', "7247b68138af09ab3acf81ca"),
    ("bytearray", b'{"value":{"__bytes__":"eHk="}}', "f91dfddb7010063c2afbed35"),
    ("list", b'{"value":[3,1,2]}', "5798be4284ff5912e8ea53e4"),
    ("tuple", b'{"value":[1,"a"]}', "431afb98988cc9ec2b7c45cf"),
    ("dict", b'{"value":{"a":[null,2],"b":1}}', "dee4821a6536ecda56f56062"),
    ("int_keys", b'{"value":{"10":"y","2":"x"}}', "cde309c7c124bdb05969b457"),
    (
        "edge_int_keys",
        b'{"value":{"-9223372036854775808":"c","18446744073709551615":"b",'
        b'"{\\"__int__\\":\\"-9223372036854775809\\"}":"a"}}',
        "6fc9389eaf4a7ccfe694d7fb",
    ),
    ("tuple_key", b'{"value":{"[1,2]":"t"}}', "47b0d9c3b56fa573ab702668"),
    ("set", b'{"value":["a","b","c"]}', "e1274405cf994b8ee6d8c8c0"),
    ("frozenset", b'{"value":[1,3]}', "85258b791e347993cc4080fb"),
    ("datetime", b'{"value":"2026-01-02T03:04:05.678901+00:00"}', "a91072892d2dd90de1c66d2b"),
    ("naive_datetime", b'{"value":"2026-01-02T03:04:00"}', "551c4e6de0bc27faeeb648f3"),
    ("date", b'{"value":"2026-01-02"}', "653e947ea7e092bfc509e0d6"),
    ("time", b'{"value":"03:04:05"}', "45fcf7aeb5a57d8bea26a6dd"),
    ("uuid", b'{"value":"12345678-1234-5678-1234-567812345678"}', "36ccf0d5976637be76368c7e"),
    ("decimal", b'{"value":"1.10"}', "b015cd8ce6141a79c916e21c"),
    ("path", b'{"value":"/a/b.txt"}', "6931a5eb99d5139097c15e94"),
    ("enum", b'{"value":"red"}', "c59e56fbfa59b939ae798c6e"),
    ("int_enum", b'{"value":3}', "999ee329bd306323ea3b33b9"),
    ("namedtuple", b'{"value":[1,2]}', "64b20ed1700b0c8287f96638"),
    # A dataclass keeps its fields' order (orjson writes it natively); its set is sorted.
    ("dataclass", b'{"value":{"w":2.0,"tags":["y","z"]}}', "1e808fd2bf997b1d68b672f1"),
    (
        "model",
        b'{"value":{"at":"2026-01-02T03:04:05.678901Z","limit":5,"text":"q"}}',
        "e821c3851a9732600384880f",
    ),
    ("object", b'{"value":{"__object__":"tests.test_known_answers.Client"}}', None),
    (
        "nested",
        b'{"value":{"m":[{"at":"2026-01-02T03:04:05.678901Z","limit":1,"text":"n"}],'
        b'"s":[1.0,2.5]}}',
        "6de72a89c0d60279489e6629",
    ),
]


def test_every_argument_type_is_answered() -> None:
    assert [name for name, _, _ in CANONICAL_ANSWERS] == list(ARGUMENTS)


@pytest.mark.parametrize(("name", "spelt", "digest"), CANONICAL_ANSWERS, ids=lambda v: str(v))
def test_canonical_json_and_fingerprint_of_each_argument_type(
    name: str, spelt: bytes, digest: str | None
) -> None:
    """The bytes behind a fingerprint, and the fingerprint, for every kind of argument."""
    canonical = canonical_json({"value": ARGUMENTS[name]})
    assert canonical == spelt
    if digest is not None:  # an object's bytes name its module, which depends on the import
        assert fingerprint("probe", canonical) == digest
    assert (
        fingerprint("probe", canonical)
        == hashlib.blake2b(b"probe\x00" + canonical, digest_size=12).hexdigest()
    )


def test_a_real_step_records_those_fingerprints(tmp_path: Path) -> None:
    """Through a real step and a real journal: the recorded fingerprint of each call is the
    known answer, and its recorded arguments are the known bytes (with the call's site)."""

    @replay.step(name="probe")
    async def probe(value: Any) -> int:
        return 1

    async def workflow() -> int:
        for value in ARGUMENTS.values():
            await probe(value)
        return 0

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="known"))
        started = [e for e in journal.events("known") if e.args is not None]
    assert len(started) == len(CANONICAL_ANSWERS)
    for event, (name, spelt, digest) in zip(started, CANONICAL_ANSWERS, strict=True):
        assert event.name == "probe", name
        assert (event.args or b"").startswith(b'{"args":' + spelt + b',"site":'), name
        assert event.fingerprint == fingerprint("probe", spelt), name
        if digest is not None:
            assert event.fingerprint == digest, name


def test_the_genesis_of_a_run_without_inputs() -> None:
    """A run with no inputs (a `journaled(...)` block whose holder was not recorded) spells
    their length as -1 in its header, recomputed here with hashlib alone."""
    block = RUN.model_copy(update={"workflow": None, "inputs": None, "inputs_fingerprint": None})
    micros = int(MOMENT.timestamp()) * 1_000_000 + MOMENT.microsecond
    header = orjson.dumps(["run-1", None, None, None, None, micros, -1])
    expected = hashlib.sha256(b"journal-replay/run/v1" + header).hexdigest()
    assert Chain(None).genesis(block) == expected
