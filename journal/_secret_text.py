"""Where secrets hide in text, and the shapes their text takes.

A secret may sit in a URL (a query or fragment parameter, `user:pass@`, a URL inside a URL or
inside a prompt), in a line naming it (`OPENAI_API_KEY=...`, `Authorization: Bearer ...`), or
in a form-encoded body; and once known, it shows in messages as written, URL-quoted, escaped,
or after an auth scheme. `TextSecrets` finds and replaces the first kind, `Scrubber` the second.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import (
    parse_qsl,
    quote,
    quote_plus,
    unquote,
    unquote_plus,
    urlencode,
    urlsplit,
    urlunsplit,
)

import orjson

QUERY_SECRET_NAMES: frozenset[str] = frozenset(
    {
        "key",
        "sig",
        "signature",
        "auth",
        "code",
        "pass",
        "pwd",
        "credential",
        "credentials",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "x_goog_signature",
        "x_goog_credential",
    }
)
"""URL query parameter names (normalised) whose values are secrets, besides the secret key
names: `?key=` and `?sig=` carry API keys and signatures in URLs (Google APIs, signed S3 and
Azure SAS links), where the same names in JSON are usually not secrets."""

MARKER = re.compile(r"\[redacted [0-9a-f]{16}\]")
ANY_MARKER = re.compile(
    r"\[redacted [0-9a-f]{16}\]|(?:\[|%5B)redacted(?:%20|\+)[0-9a-f]{16}(?:\]|%5D)"
)
"""A marker as written, or URL-quoted inside a URL: never rewritten when secrets are scrubbed."""


def is_marker(value: Any) -> bool:
    return isinstance(value, str) and MARKER.fullmatch(value) is not None


def normalise(key: str) -> str:
    """`Api-Key`, `api_key`, `apiKey` and `SecretAccessKey` as one spelling: lower case, words
    joined by `_` (camelCase split where a lower-case letter or digit meets a capital)."""
    return _CAMEL.sub("_", key).lower().replace("-", "_")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def may_hold_url_secret(text: str) -> bool:
    """Whether `text` may be a URL holding a secret (a `/`, and an `=` or an `@`): substring
    tests, cheap on a long prompt that is none."""
    return "/" in text and ("=" in text or "@" in text)


class TextSecrets:
    """The secrets in a text, and the text with them replaced by their markers."""

    __slots__ = ("_is_secret_key", "_marker")

    def __init__(self, is_secret_key: Callable[[str], bool], marker: Callable[[Any], str]) -> None:
        self._is_secret_key = is_secret_key
        self._marker = marker

    def form(self, text: str) -> str:
        """A form-encoded body (`a=1&client_secret=...`, an OAuth token request or answer)
        with its secret fields' values replaced by their markers."""
        return self._pairs_redacted(text)

    def form_secrets(self, text: str) -> list[str]:
        """The secrets of a form-encoded body, decoded and as spelt."""
        found: list[str] = []
        for name, value, raw in _raw_pairs(text):
            if value and not is_marker(value) and self.query_secret(name):
                found.extend({value, raw})
        return found

    def query_secret(self, name: str) -> bool:
        name = normalise(name).removesuffix("[]")
        return self._is_secret_key(name) or name in QUERY_SECRET_NAMES

    def secrets(self, text: str) -> list[str]:
        """The secrets of `text` if it is a URL, or of the URLs in it (a prompt, a message), or
        of a secret line."""
        line = self._line(text)
        if line is not None:
            return [line.group(2)]
        if not may_hold_url_secret(text) or len(text) > 65_536:
            return []
        found = self._url_secrets(text)
        if not found and "://" in text:
            for url in _URL_IN_TEXT.findall(text):
                if url != text:
                    found.extend(self._url_secrets(url))
        return found

    def _line(self, text: str) -> re.Match[str] | None:
        """`OPENAI_API_KEY=sk-...` or `Authorization: Bearer ...`: one line naming a secret and
        giving it (an env list, a header line in a command), the value a single word or a
        credential after an auth scheme; prose (`password: at least 8 characters`) is not."""
        if len(text) > 1024 or ("=" not in text and ":" not in text):
            return None
        line = _SECRET_LINE.fullmatch(text)
        if line is None or is_marker(line.group(2)):
            return None
        return line if self._is_secret_key(line.group(1)) else None

    def redacted(self, text: str) -> str | None:
        """`text` with the secrets of its URLs (or of a secret line) replaced by their markers;
        None if it has none."""
        line = self._line(text)
        if line is not None:
            return text[: line.start(2)] + self._marker(line.group(2)) + text[line.end(2) :]
        if not may_hold_url_secret(text) or len(text) > 65_536:
            return None
        whole = self._url_redacted(text)
        if whole is not None or "://" not in text:
            return whole
        changed = False

        def redacted(match: re.Match[str]) -> str:
            nonlocal changed
            inner = self._url_redacted(match.group())
            if inner is None:
                return match.group()
            changed = True
            return inner

        spelt = _URL_IN_TEXT.sub(redacted, text)
        return spelt if changed else None

    def _url_secrets(self, text: str) -> list[str]:
        """The secrets in `text` if it is a URL: secret query or fragment parameters (an OAuth
        `#access_token=`), a password in `user:pass@host`, and those of URLs inside it."""
        if len(text) > 65_536 or not ("=" in text or "@" in text) or "/" not in text:
            return []
        try:
            parts = urlsplit(text)
            password = unquote(parts.password) if parts.password else None
        except ValueError:
            return []
        if not (text.startswith("/") or text[len(parts.scheme) :].startswith("://")):
            return []  # `note: see ?sig=...` is prose with a colon, not a URL
        found = [password] if password and not is_marker(password) else []
        for part in (parts.query, parts.fragment):
            if "=" not in part:
                continue
            for name, value, raw in _raw_pairs(part):
                if value and not is_marker(value) and self.query_secret(name):
                    found.append(value)
                    if raw != value:  # as the URL spells it: an error message quotes the URL
                        found.append(raw)
                elif "/" in value:
                    found.extend(self._url_secrets(value))
        return found

    def _url_redacted(self, text: str) -> str | None:
        """`text`, a URL holding secrets (see `_url_secrets`), with each replaced by its marker;
        None if it is not such a URL."""
        secrets = self._url_secrets(text)
        if not secrets:
            return None
        parts = urlsplit(text)
        netloc = parts.netloc
        if parts.password and not is_marker(unquote(parts.password)):
            user, _, host = netloc.rpartition("@")
            name = user.split(":", 1)[0]
            netloc = f"{name}:{quote(self._marker(parts.password), safe='')}@{host}"
        return urlunsplit(
            parts._replace(
                netloc=netloc,
                query=self._pairs_redacted(parts.query),
                fragment=self._pairs_redacted(parts.fragment),
            )
        )

    def _pairs_redacted(self, part: str) -> str:
        if "=" not in part:
            return part
        kept = []
        changed = False
        for name, value in parse_qsl(part, keep_blank_values=True):
            if value and not is_marker(value) and self.query_secret(name):
                value, changed = self._marker(value), True
            elif "/" in value:
                inner = self._url_redacted(value)  # a URL inside a URL (a redirect target)
                if inner is not None:
                    value, changed = inner, True
            kept.append((name, value))
        return urlencode(kept, safe="[]", quote_via=quote) if changed else part


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`)]+")
"""A URL inside prose or markdown (it ends at a space, a quote or a closing parenthesis)."""
_SECRET_LINE = re.compile(
    r"\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(?:=|:\s)\s*"
    r"((?:(?:bearer|basic|token|bot|digest|apikey)\s+)?[^\s\"']+)\s*",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|bot|digest|apikey)\s+(\S{8,})")


class Scrubber:
    """Replaces the forms of some secrets in a text by their markers."""

    __slots__ = ("_forms", "_marker", "_pattern")

    def __init__(self, marker: Callable[[str], str], forms: dict[str, str]) -> None:
        self._marker = marker
        self._forms = forms
        wanted = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join([ANY_MARKER.pattern, *map(re.escape, wanted)]))

    def appears_in(self, payload: bytes) -> bool:
        return any(orjson.dumps(form)[1:-1] in payload for form in self._forms)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(self._replacement, text)

    def _replacement(self, match: re.Match[str]) -> str:
        text = match.group()
        if ANY_MARKER.fullmatch(text):
            return text
        return self._marker(self._forms[text])


def forms_of(secret: str) -> set[str]:
    """The ways a secret's text shows in a message: as it is, URL-quoted, escaped as `repr`
    escapes it, and the credential after an auth scheme (`Bearer X` names `X`)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}
    scheme = _AUTH_SCHEME.fullmatch(secret)
    if scheme is not None:
        forms.add(scheme.group(1))
    return {form for form in forms if len(form) >= 4}


def _raw_pairs(part: str) -> list[tuple[str, str, str]]:
    """A query's `(name, value, value as spelt)`: decoded like `parse_qsl`, and raw."""
    pairs = []
    for field in part.split("&"):
        if "=" in field:
            name, raw = field.split("=", 1)
            pairs.append((unquote_plus(name), unquote_plus(raw), raw))
    return pairs
