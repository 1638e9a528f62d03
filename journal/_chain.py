"""The hash chain that makes a journal tamper-evident.

Each run's events form a chain; every link covers the one before it, so editing, removing or
reordering any event breaks every link after it::

    genesis    = MAC(b"journal-replay/run/v1"   + header)          the run's identity
    hash[seq]  = MAC(prev_hash (64 hex chars)   + fields(event))   prev_hash[1] = genesis
    seal       = MAC(b"journal-replay/seal/v1"  + head hash        written when the run ends
                     + outcome)

`header`, `fields` and `outcome` are a JSON array of the small fields followed by the raw
bytes of the large ones (see the functions below: the array says how long each part is).
MAC is SHA-256; with an HMAC key (`JOURNAL_HMAC_KEY`) it is HMAC-SHA-256, and then the chain is
a signature: without the key nobody can write a chain that verifies. Without a key the chain
proves integrity against edits made without recomputing it, and against anyone who holds the
run's seal or last hash from elsewhere (an exported copy, a ticket, a log line).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson

from ._errors import ChainKeyMismatch
from ._events import Event, Run, RunStatus

HMAC_KEY_ENV = "JOURNAL_HMAC_KEY"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_sha256 = hashlib.sha256


def microseconds(moment: datetime) -> int:
    """Exact integer microseconds since the epoch: what the chain hashes for a timestamp."""
    return (moment - _EPOCH) // _MICROSECOND


class Chain:
    """Computes genesis, link and seal hashes with one MAC: SHA-256 or HMAC-SHA-256."""

    __slots__ = ("_key", "scheme")

    def __init__(self, key: bytes | str | None = None) -> None:
        if isinstance(key, str):
            key = key.encode()
        if key is not None and not key:
            raise ValueError(
                f"an empty HMAC key signs nothing. Fix: give {HMAC_KEY_ENV} the journal's key, "
                "or a long random value for a new journal (e.g. `python -c 'import secrets; "
                "print(secrets.token_hex())'`)."
            )
        self._key = key
        self.scheme = "sha256" if key is None else f"hmac-sha256:{key_id(key)}"
        """Stored on each run: which MAC its chain uses, and for HMAC which key (by id)."""

    @classmethod
    def from_env(cls) -> Chain:
        """HMAC with `JOURNAL_HMAC_KEY` when it is set, plain SHA-256 otherwise."""
        return cls(os.environ.get(HMAC_KEY_ENV) or None)

    def mac(self, message: bytes) -> str:
        if self._key is None:
            return _sha256(message).hexdigest()
        return hmac.new(self._key, message, "sha256").hexdigest()

    def genesis(self, run: Run) -> str:
        """The hash seq 1 links to: covers the run's id, workflow, inputs, parent, start and
        the version of the code that started it (only when it has one: a run recorded before
        versions were kept hashes as it always did)."""
        inputs = run.inputs or b""
        fields = [
            run.run_id,
            run.workflow,
            run.inputs_fingerprint,
            run.parent_run_id,
            run.fork_seq,
            microseconds(run.created_at),
            len(inputs) if run.inputs is not None else -1,
        ]
        if run.version is not None:
            fields.append(run.version)
        header = orjson.dumps(fields)
        return self.mac(b"journal-replay/run/v1" + header + inputs)

    def link(self, prev_hash: str, event: Event) -> str:
        """The hash of `event` following `prev_hash`."""
        message = prev_hash.encode() + _fields(event)
        if self._key is None:
            return _sha256(message).hexdigest()  # the hot path: one call, no indirection
        return hmac.new(self._key, message, "sha256").hexdigest()

    def seal(
        self,
        head_seq: int,
        head_hash: str,
        status: RunStatus,
        result: bytes | None,
        error: bytes | None,
    ) -> str:
        """The hash that fixes a finished run's last event and its outcome."""
        outcome = orjson.dumps(
            [
                head_seq,
                status.value,
                -1 if result is None else len(result),
                -1 if error is None else len(error),
            ]
        )
        message = b"journal-replay/seal/v1" + head_hash.encode() + outcome
        return self.mac(message + (result or b"") + (error or b""))

    def extend(self, prev_hash: str, events: Sequence[Event]) -> tuple[list[Event], str]:
        """`events` with `prev_hash` and `hash` set, in order after `prev_hash`; and the head."""
        chained = []
        for event in events:
            digest = self.link(prev_hash, event)
            chained.append(event.model_copy(update={"prev_hash": prev_hash, "hash": digest}))
            prev_hash = digest
        return chained, prev_hash

    def stamp(self, prev_hash: str, events: Sequence[Event]) -> str:
        """Set `prev_hash` and `hash` on freshly built events nobody else holds; the new head.

        The engine's write path: it saves copying each event (about 1.5 us a step).
        """
        for event in events:
            digest = self.link(prev_hash, event)
            fields = event.__dict__
            fields["prev_hash"] = prev_hash
            fields["hash"] = prev_hash = digest
        return prev_hash

    def require_same(self, run: Run) -> None:
        """Raise `ChainKeyMismatch` unless this chain can extend (or verify) `run`'s chain."""
        if run.chain is None or run.chain == self.scheme:
            return
        raise ChainKeyMismatch(describe_mismatch(run.run_id, run.chain, self.scheme))


def describe_mismatch(run_id: str, recorded: str, available: str) -> str:
    if recorded.startswith("hmac-sha256:"):
        wanted = recorded.split(":", 1)[1]
        have = (
            f"this process has key id {available.split(':', 1)[1]}"
            if available.startswith("hmac-sha256:")
            else f"{HMAC_KEY_ENV} is not set"
        )
        return (
            f"Run {run_id!r} is chained with the HMAC key whose id is {wanted}, and {have}. "
            f"Fix: set {HMAC_KEY_ENV} to the key the run was recorded with."
        )
    return (
        f"Run {run_id!r} is chained with plain SHA-256 (unsigned), and this process signs with "
        "an HMAC key: a signed journal does not extend an unsigned chain. Fix: if the run was "
        "recorded unsigned on purpose, fork it (`journal fork`) to go on with a signed copy."
    )


def key_id(key: bytes) -> str:
    """A short public name for a key: tells which key a run needs without revealing it."""
    return _sha256(b"journal-replay/key-id/v1" + key).hexdigest()[:12]


def _fields(event: Event) -> bytes:
    fields = event.__dict__  # read once: attribute access on a pydantic model costs more
    payload, args = fields["payload"], fields["args"]
    head = _dumps(
        [
            fields["run_id"],
            fields["seq"],
            fields["key"],
            fields["kind"],  # a StrEnum: orjson writes its value
            fields["name"],
            fields["fingerprint"],
            fields["status"],
            fields["attempt"],
            (fields["created_at"] - _EPOCH) // _MICROSECOND,
            -1 if payload is None else len(payload),
            -1 if args is None else len(args),
        ]
    )
    return head + (payload or b"") + (args or b"")


_dumps = orjson.dumps
