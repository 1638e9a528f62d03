"""Redaction: secrets are replaced before anything is written, so they never reach the disk.

A value under a secret-looking key (`authorization`, `api_key`, `password`, ...) is replaced by
a marker holding a keyed hash of it: `"[redacted 3f9a0c1d5e7b2a48]"`. The hash keeps replay
honest without storing the secret: a call made with a *different* secret gets a different
marker, so its fingerprint differs and the change is reported as a divergence. The key is a
random secret kept with the journal, so the marker cannot be checked against guesses by anyone
who has only an export.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ._codec import canonical_json

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "authorization",
    "proxy_authorization",
    "api_key",
    "apikey",
    "x_api_key",
    "*_api_key",
    "password",
    "passwd",
    "*_password",
    "secret",
    "client_secret",
    "*_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "session_token",
    "bearer_token",
    "cookie",
    "set_cookie",
    "private_key",
)
"""Key names (normalised: lower case, `-` as `_`) whose values are secrets. `*` is a wildcard.
`max_tokens`, `total_tokens` and the like are not secrets and are not matched."""

SALT_NAME = "redaction-salt"
_MARKER = re.compile(r"\[redacted [0-9a-f]{16}\]")

SecretRule = Callable[[str, Any], bool]
"""`rule(key, value) -> True` to redact `value`; `key` is "" for list items and the top level."""


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


class Redaction:
    """Which values never reach the journal: keys by name or pattern, plus an optional rule.

    >>> Redaction()                                   # the default key names
    >>> Redaction(keys=["ssn", "*_pin"])              # the defaults and yours
    >>> Redaction(rule=lambda key, value: isinstance(value, str) and value.startswith("sk-"))
    >>> Redaction(keys=["ssn"], defaults=False)       # only yours

    Applied to step arguments, step results and errors, and workflow inputs. A result that
    held a secret is served redacted on replay too (live code sees the same marker), so keep
    secrets out of what steps return: read them from the environment where they are used.
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        *,
        rule: SecretRule | None = None,
        defaults: bool = True,
    ) -> None:
        patterns = [*(DEFAULT_SECRET_KEYS if defaults else ()), *keys]
        bad = [p for p in patterns if not isinstance(p, str) or not p.strip("*")]
        if bad:
            raise ValueError(
                f"Redaction keys must be key names or patterns like 'ssn' or '*_pin', got "
                f"{bad!r}. A bare '*' would redact everything; use rule= for that."
            )
        normalised = sorted({_normalise(p) for p in patterns})
        self.keys: tuple[str, ...] = tuple(normalised)
        self.rule = rule
        self._exact = frozenset(p for p in normalised if not any(c in p for c in "*?["))
        self._globs = [re.compile(fnmatch.translate(p)) for p in normalised if p not in self._exact]
        # A quick scan of the raw JSON decides whether parsing is needed at all: any word of any
        # pattern, spelt with `_` or `-`, anywhere in the bytes (case-insensitive).
        words = {w for p in normalised for w in re.split(r"[*?\[\]]+", p) if w}
        spelt = {v for w in words for v in (w, w.replace("_", "-"))}
        self._maybe = re.compile(
            "|".join(sorted(map(re.escape, spelt), key=len, reverse=True)).encode(), re.IGNORECASE
        )

    def is_secret_key(self, key: str) -> bool:
        name = _normalise(key)
        return name in self._exact or any(g.match(name) for g in self._globs)

    def bind(self, salt: bytes) -> Redactor:
        """The redactor for one journal: markers hashed with that journal's secret `salt`."""
        return Redactor(self, salt)


class Redactor:
    """A `Redaction` bound to a journal's salt: turns JSON bytes into redacted JSON bytes."""

    __slots__ = ("_maybe", "_policy", "_salt")

    def __init__(self, policy: Redaction, salt: bytes) -> None:
        self._policy = policy
        self._salt = salt
        self._maybe = None if policy.rule is not None else policy._maybe

    def __call__(self, payload: bytes) -> bytes:
        """`payload` with every secret replaced by its marker; the same object if none."""
        if self._maybe is not None and self._maybe.search(payload) is None:
            return payload  # the common case: nothing that could be a secret key
        value = orjson.loads(payload)
        redacted, changed = self._walk("", value)
        return canonical_json(redacted) if changed else payload

    def argument(self, name: str, value: Any) -> Any:
        """A named value (a positional workflow input): its marker if `name` is a secret key."""
        if value is not None and not _is_marker(value) and self._policy.is_secret_key(name):
            return self.marker(value)
        return value

    def marker(self, secret: Any) -> str:
        digest = hmac.new(self._salt, canonical_json(secret), hashlib.sha256).hexdigest()
        return f"[redacted {digest[:16]}]"

    def _walk(self, key: str, value: Any) -> tuple[Any, bool]:
        policy = self._policy
        if isinstance(value, str) and _MARKER.fullmatch(value):
            return value, False  # already redacted (recorded inputs fed back on replay)
        rule = policy.rule
        if rule is not None and not isinstance(value, dict | list) and rule(key, value):
            return self.marker(value), True
        if isinstance(value, dict):
            changed = False
            out = {}
            for k, v in value.items():
                if policy.is_secret_key(k) and v is not None and not _is_marker(v):
                    out[k], hit = self.marker(v), True
                else:
                    out[k], hit = self._walk(k, v)
                changed |= hit
            return out, changed
        if isinstance(value, list):
            items = [self._walk("", v) for v in value]
            return [v for v, _ in items], any(hit for _, hit in items)
        return value, False


def _is_marker(value: Any) -> bool:
    return isinstance(value, str) and _MARKER.fullmatch(value) is not None


def new_salt() -> bytes:
    return os.urandom(32)
