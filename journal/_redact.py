"""Redaction: secrets are replaced before anything is written, so they never reach the disk.

A value under a secret-looking key (`authorization`, `api_key`, `password`, ...) is replaced by
a marker holding a keyed hash of it: `"[redacted 3f9a0c1d5e7b2a48]"`. The hash keeps replay
honest without storing the secret: a call made with a *different* secret gets a different
marker, so its fingerprint differs and the change is reported as a divergence. The key is a
random secret kept with the journal, so the marker cannot be checked against guesses by anyone
who has only an export.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ._codec import canonical_json
from ._secret_text import (
    PROSE_LIMIT,
    Scrubber,
    TextSecrets,
    forms_of,
    is_marker,
    may_hold_url_secret,
    normalise,
)

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
    "x_auth_token",
    "x_subject_token",
    "api_token",
    "*_api_token",
    "secret_key",
    "*_secret_key",
    "secret_access_key",
    "*_secret_access_key",
    "session_token",
    "bearer_token",
    "cookie",
    "cookies",
    "set_cookie",
    "private_key",
)
"""Key names (normalised: lower case, `-` and camelCase as `_`) whose values are secrets. `*` is
a wildcard. `max_tokens`, `total_tokens`, `next_page_token` and the like are not secrets and are
not matched (a result's pagination token must reach the code unchanged)."""

SALT_NAME = "redaction-salt"
SecretRule = Callable[[str, Any], bool]
"""`rule(key, value) -> True` to redact `value`; `key` is "" for list items and the top level."""


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
        normalised = sorted({normalise(p) for p in patterns})
        self.keys: tuple[str, ...] = tuple(normalised)
        self.rule = rule
        self._exact = frozenset(p for p in normalised if not any(c in p for c in "*?["))
        self._globs = [re.compile(fnmatch.translate(p)) for p in normalised if p not in self._exact]
        self._decisions: dict[str, bool] = {}
        # A quick scan of short payloads decides whether parsing is needed at all. Every key a
        # pattern matches contains one of these fragments (lower case, `_` or `-` spelt).
        self._maybe = re.compile(b"|".join(re.escape(f.encode()) for f in _fragments(normalised)))

    def is_secret_key(self, key: str) -> bool:
        decided = self._decisions.get(key)
        if decided is None:
            name = normalise(key)
            decided = name in self._exact or any(g.match(name) for g in self._globs)
            if len(self._decisions) < 10_000:  # key names are few; a flood is not cached
                self._decisions[key] = decided
        return decided

    def bind(self, salt: bytes) -> Redactor:
        """The redactor for one journal: markers hashed with that journal's secret `salt`."""
        return Redactor(self, salt)


def _fragments(patterns: Iterable[str]) -> list[str]:
    """A few substrings such that every key matching any pattern contains one of them."""
    chosen: list[str] = []
    for parts in sorted(
        ([w for w in re.split(r"[*?_]+", re.sub(r"\[[^\]]*\]", "*", p)) if w] for p in patterns),
        key=len,
    ):
        if not any(c in part for c in chosen for part in parts):
            chosen.append(max(parts, key=len))
    return sorted({v for c in chosen for v in (c, c.replace("_", "-"))})


_SCALARS = frozenset({str, int, float, bool, type(None)})


_SCAN_LIMIT = 256
"""Up to this many bytes a regex scan is cheaper than parsing; beyond it, parsing is."""


class Redactor:
    """A `Redaction` bound to a journal's salt: turns JSON bytes into redacted JSON bytes."""

    __slots__ = ("_maybe", "_policy", "_salt", "_scrubbers", "_text")

    def __init__(self, policy: Redaction, salt: bytes) -> None:
        self._policy = policy
        self._salt = salt
        self._text = TextSecrets(policy.is_secret_key, self.marker)
        self._maybe = None if policy.rule is not None else policy._maybe
        self._scrubbers: dict[frozenset[str], Scrubber | None] = {}

    def __call__(self, payload: bytes) -> bytes:
        """`payload` with every secret replaced by its marker; the same object if none."""
        maybe = self._maybe
        if (
            maybe is not None
            and len(payload) <= _SCAN_LIMIT
            and maybe.search(payload.lower()) is None
            and (b"/" not in payload or (b"=" not in payload and b"@" not in payload))
        ):
            return payload  # the common case: nothing that could be a secret key
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload  # not JSON (a body that only says it is): nothing keyed to look at
        if not self._holds_secret("", value):
            return payload
        # A secret found anywhere (a URL in an error's request) is scrubbed everywhere in the
        # payload: the same text sits in the error's message, arguments and traceback.
        found: list[str] = []
        self._collect("", value, found)
        redacted = self._redacted("", value)
        scrubber = self._scrubber(found)
        if scrubber is not None:
            redacted = self._scrubbed(redacted, scrubber)
        return canonical_json(redacted)

    def _scrubber(self, secrets: Iterable[str]) -> Scrubber | None:
        """What finds each secret of 4 characters or more (shorter ones would mangle ordinary
        text) in the forms it takes in messages, and markers (kept as they are). The last few
        are kept: a run scrubs each step's result with the same secrets."""
        wanted = frozenset(secrets)
        cache = self._scrubbers
        if wanted in cache:
            return cache[wanted]
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[wanted] = scrubber = self._build_scrubber(wanted)
        return scrubber

    def _build_scrubber(self, secrets: Iterable[str]) -> Scrubber | None:
        forms: dict[str, str] = {}
        for secret in secrets:
            if len(secret) >= 4:
                for form in forms_of(secret):
                    forms.setdefault(form, secret)
        return Scrubber(self.marker, forms) if forms else None

    def _scrubbed(self, value: Any, scrubber: Scrubber) -> Any:
        """`value` with each secret in its strings replaced by its marker. Keys are left alone
        (a secret that is a common word must not rename a field), and so are markers already
        there (a secret may be a piece of one)."""
        if isinstance(value, str):
            return scrubber(value)
        if isinstance(value, dict):
            return {k: self._scrubbed(v, scrubber) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrubbed(v, scrubber) for v in value]
        return value

    def arguments(self, bound: dict[str, Any], payload: bytes) -> bytes:
        """Redact a step's canonical `payload` given the call's `bound` arguments.

        Arguments that are all plain scalars under non-secret names (most calls: a prompt, a
        count) need no look at the bytes at all, however long the prompt is.
        """
        if self._maybe is None:
            return self(payload)
        known = self._policy._decisions  # name -> is it a secret key; filled on first sight
        for name, value in bound.items():
            if type(value) not in _SCALARS or (
                type(value) is str and (may_hold_url_secret(value) or self._may_be_line(value))
            ):
                return self(payload)
            secret = known.get(name)
            if secret is None:
                secret = self._policy.is_secret_key(name)
            if secret and value is not None:
                return self(payload)
        return payload

    def _may_be_line(self, text: str) -> bool:
        """Whether `text` may hold a secret line (`API_KEY=...`, an env file quoted in a long
        prompt): cheap tests first. As far into a text as the full path looks, no less."""
        maybe = self._maybe
        return (
            len(text) <= PROSE_LIMIT
            and ("=" in text or ":" in text)
            and maybe is not None
            and maybe.search(text.lower().encode()) is not None
        )

    def argument(self, name: str, value: Any) -> Any:
        """A named value (a positional workflow input): its marker if `name` is a secret key."""
        if value is not None and not is_marker(value) and self._policy.is_secret_key(name):
            return self.marker(value)
        return value

    def header(self, name: str, value: str) -> str:
        """An HTTP header's value as the journal keeps it: its marker under a secret name,
        secret query parameters redacted in a URL (a redirect's Location)."""
        if value and not is_marker(value) and self._policy.is_secret_key(name):
            return self.marker(value)
        url = self._text.redacted(value)
        return value if url is None else url

    def scrub(self, payload: bytes, bound: dict[str, Any]) -> bytes:
        """`payload` (an error, say) with every secret found in `bound` (a call's arguments)
        replaced by its marker wherever its text appears: in a message, in a traceback."""
        return self.scrub_secrets(payload, self.secrets_in(bound))

    def form(self, text: str) -> str:
        """A form-encoded body (`a=1&client_secret=...`, an OAuth token request or answer)
        with its secret fields' values replaced by their markers."""
        return self._text.form(text)

    def form_secrets(self, text: str) -> list[str]:
        """The secrets of a form-encoded body, decoded and as spelt."""
        return self._text.form_secrets(text)

    def secrets_in(self, bound: dict[str, Any]) -> list[str]:
        """The secrets in `bound` (a call's arguments, a run's inputs): under secret keys, in
        URLs, in `[name, value]` pairs, by the rule, in `SecretStr` and `SecretBytes`."""
        found: list[str] = []
        try:
            values = orjson.loads(canonical_json(bound))  # models and dataclasses as JSON
        except (TypeError, ValueError):
            values = bound
        self._collect("", values, found)
        _hidden(bound, found, 0)
        return found

    def scrub_secrets(self, payload: bytes, secrets: Iterable[str]) -> bytes:
        """`payload` with each of `secrets` replaced by its marker wherever its text appears,
        as written or quoted (URL-quoted, escaped, after `Bearer `)."""
        scrubber = self._scrubber(secrets)
        if scrubber is None or not scrubber.appears_in(payload):
            return payload  # none of the secrets appears in it
        try:
            return canonical_json(self._scrubbed(orjson.loads(payload), scrubber))
        except orjson.JSONDecodeError:  # not JSON: scrub it as text
            text = payload.decode("utf-8", "surrogateescape")
            return scrubber(text).encode("utf-8", "surrogateescape")

    def _collect(self, key: str, value: Any, found: list[str]) -> None:
        """The secret strings in `value`: under secret keys, in URLs, in `[name, value]` pairs,
        by the rule."""
        if isinstance(value, dict):
            if self._named_secret(value):
                found.append(str(value.get("value", value.get("Value"))))
            if key and self._policy.is_secret_key(key):
                found.extend(_bytes_secret(value))
            for k, v in value.items():
                self._collect(str(k), v, found)
        elif isinstance(value, list | tuple):
            if isinstance(value, list) and self._secret_pair(value):
                found.append(value[1])
            for v in value:
                self._collect("", v, found)
        elif isinstance(value, str) and not is_marker(value):
            if self._secret(key, value):
                if value.strip("*"):  # not a masked value (pydantic's SecretStr in JSON)
                    found.append(value)
            else:
                found.extend(self._text.secrets(value))

    def marker(self, secret: Any) -> str:
        digest = hmac.new(self._salt, canonical_json(secret), hashlib.sha256).hexdigest()
        return f"[redacted {digest[:16]}]"

    def _secret(self, key: str, value: Any) -> bool:
        """Is this value, found under `key`, itself a secret to replace?"""
        policy = self._policy
        secret_key = policy.is_secret_key(key)
        rule = policy.rule
        if not secret_key and rule is None:
            return False  # most fields: the name decides, from a cache, before the value
        if value is None or is_marker(value) or _empty(value):
            return False  # nothing to hide, or already redacted (recorded inputs replayed)
        return secret_key or (
            rule is not None and not isinstance(value, dict | list) and rule(key, value)
        )

    def _holds_secret(self, key: str, value: Any) -> bool:
        """A read-only pass first: most payloads hold no secret and are never rebuilt."""
        if isinstance(value, dict):
            if self._named_secret(value):
                return True
            return any(self._secret(k, v) or self._holds_secret(k, v) for k, v in value.items())
        if isinstance(value, list):
            if self._secret_pair(value):
                return True
            return any(self._secret("", v) or self._holds_secret("", v) for v in value)
        if isinstance(value, str) and self._text.redacted(value) is not None:
            return True
        return key == "" and self._secret("", value)

    def _named_secret(self, value: dict[str, Any]) -> bool:
        """`{"name": "OPENAI_API_KEY", "value": ...}`: a secret named by a field beside it, as
        Kubernetes env lists, HAR files and HTTP clients' header lists write them."""
        secret = value.get("value", value.get("Value"))
        name = value.get("name", value.get("Name"))
        return (
            len(value) <= 4
            and isinstance(secret, str)
            and bool(secret)
            and not is_marker(secret)
            and isinstance(name, str)
            and self._policy.is_secret_key(name)
        )

    def _secret_pair(self, value: list[Any]) -> bool:
        """`[name, value]` with a secret name: a header as an HTTP library lists it."""
        return (
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str)
            and bool(value[1])
            and not is_marker(value[1])
            and self._policy.is_secret_key(value[0])
        )

    def _redacted(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            redacted = {
                k: self.marker(v) if self._secret(k, v) else self._redacted(k, v)
                for k, v in value.items()
            }
            if self._named_secret(value):
                field = "value" if "value" in value else "Value"
                redacted[field] = self.marker(value[field])
            return redacted
        if isinstance(value, list):
            if self._secret_pair(value):
                return [value[0], self.marker(value[1])]
            return [self.marker(v) if self._secret("", v) else self._redacted("", v) for v in value]
        if key == "" and self._secret("", value):
            return self.marker(value)
        if isinstance(value, str):
            url = self._text.redacted(value)
            if url is not None:
                return url
        return value


def _empty(value: Any) -> bool:
    """A value that cannot hide a secret: a flag, or nothing (`"hasPassword": false` and
    `"cookies": []` must reach the code as they are)."""
    return isinstance(value, bool) or (isinstance(value, str | list | dict) and not value)


def _bytes_secret(value: dict[str, Any]) -> list[str]:
    """The text of a bytes secret as canonical JSON writes it (`{"__bytes__": base64}`), for
    scrubbing: a message quotes it as `b'...'`."""
    encoded = value.get("__bytes__") if len(value) == 1 else None
    if not isinstance(encoded, str):
        return []
    try:
        return [base64.b64decode(encoded).decode("utf-8")]
    except (ValueError, UnicodeDecodeError):
        return []


def _hidden(value: Any, found: list[str], depth: int) -> None:
    """The values of pydantic `SecretStr` / `SecretBytes` in `value` (JSON shows only stars)."""
    if depth > 20:
        return
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal) and type(value).__module__.startswith("pydantic"):
        secret = reveal()
        if isinstance(secret, bytes):
            secret = secret.decode("utf-8", "replace")
        if isinstance(secret, str) and secret:
            found.append(secret)
    elif isinstance(value, dict):
        for item in value.values():
            _hidden(item, found, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _hidden(item, found, depth + 1)
    elif hasattr(type(value), "__pydantic_fields__"):
        for name in type(value).__pydantic_fields__:
            _hidden(getattr(value, name, None), found, depth + 1)


def new_salt() -> bytes:
    return os.urandom(32)
