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
    """`Api-Key`, `api_key`, `apiKey`, `SecretAccessKey` and `AWSSecretAccessKey` as one
    spelling: lower case, words joined by `_` (camelCase split where a lower-case letter or a
    digit meets a capital, and before the last capital of a run of them)."""
    return _CAMEL.sub("_", key).lower().replace("-", "_")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


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
            if value and not is_marker(value) and self.query_secret(name, value):
                found.extend({value, raw})
        return found

    def query_secret(self, name: str, value: str) -> bool:
        """Whether a URL or form parameter holds a secret: under a secret key's name, or one of
        the names URLs give secrets (`key`, `code` and `auth` only for a value of 8 characters
        or more: `?code=FR` and `?key=color` are ordinary)."""
        name = normalise(name).removesuffix("[]")
        if self._is_secret_key(name):
            return True
        return name in QUERY_SECRET_NAMES and (name not in _AMBIGUOUS or len(value) >= 8)

    def secrets(self, text: str) -> list[str]:
        """The secrets of `text` if it is a URL, or of the URLs in it (a prompt, a message), or
        of the lines in it that name and give a secret."""
        found = [value for _, _, value in self._lines(text)]
        if not may_hold_url_secret(text) or len(text) > PROSE_LIMIT:
            return found
        if _is_one_url(text):
            return found + self._url_secrets(text)
        if "://" in text:
            for url in _URL_IN_TEXT.findall(text):
                found.extend(self._url_secrets(url, prose=True))
        return found

    def _lines(self, text: str) -> list[tuple[int, int, str]]:
        """`(start, end, value)` of each line of `text` that names a secret and gives it:
        `OPENAI_API_KEY=sk-...` (an env file, `export`, quoted or not), `Authorization: Bearer
        ...` (a header line in a command). After a colon the value must look like one (after
        an auth scheme, quoted, or 12 characters or more): `Token: expired` is prose."""
        if ("=" not in text and ":" not in text) or len(text) > PROSE_LIMIT:
            return []
        spans = []
        offset = 0
        for line in text.splitlines(keepends=True)[:_LINES_LIMIT]:
            match = _SECRET_LINE.fullmatch(line.rstrip("\r\n"))
            if match is not None and self._line_secret(match):
                spans.append((offset + match.start(4), offset + match.end(4), match.group(4)))
            offset += len(line)
        return spans

    def _line_secret(self, match: re.Match[str]) -> bool:
        name, separator, quote_mark, value = match.group(1, 2, 3, 4)
        if is_marker(value) or not self._is_secret_key(name):
            return False
        if separator == "=":
            return True
        return bool(quote_mark) or _SCHEME_FIRST.match(value) is not None or len(value) >= 12

    def redacted(self, text: str) -> str | None:
        """`text` with the secrets of its URLs and secret lines replaced by their markers; None
        if it has none."""
        spans = self._lines(text)
        if spans:
            parts, at = [], 0
            for start, end, value in spans:
                parts += [text[at:start], self._marker(value)]
                at = end
            lined = "".join([*parts, text[at:]])
            return self.redacted(lined) or lined
        if not may_hold_url_secret(text) or len(text) > PROSE_LIMIT:
            return None
        if _is_one_url(text):
            return self._url_redacted(text)
        if "://" not in text:
            return None
        changed = False

        def redacted(match: re.Match[str]) -> str:
            nonlocal changed
            inner = self._url_redacted(match.group(), prose=True)
            if inner is None:
                return match.group()
            changed = True
            return inner

        spelt = _URL_IN_TEXT.sub(redacted, text)
        return spelt if changed else None

    def _url_secrets(self, text: str, prose: bool = False) -> list[str]:
        """The secrets in `text` if it is a URL: secret query or fragment parameters (an OAuth
        `#access_token=`), a password in `user:pass@host`, and those of URLs inside it. In
        prose, only what is surely a secret (a value of 8 characters or more)."""
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
                if prose and len(value) < 8:
                    continue
                if value and not is_marker(value) and self.query_secret(name, value):
                    found.append(value)
                    if raw != value:  # as the URL spells it: an error message quotes the URL
                        found.append(raw)
                elif "/" in value:
                    found.extend(self._url_secrets(value))
        return found

    def _url_redacted(self, text: str, prose: bool = False) -> str | None:
        """`text`, a URL holding secrets (see `_url_secrets`), with each replaced by its marker;
        None if it is not such a URL."""
        secrets = self._url_secrets(text, prose)
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
                query=self._pairs_redacted(parts.query, prose),
                fragment=self._pairs_redacted(parts.fragment, prose),
            )
        )

    def _pairs_redacted(self, part: str, prose: bool = False) -> str:
        if "=" not in part:
            return part
        kept = []
        changed = False
        for name, value in parse_qsl(part, keep_blank_values=True):
            sure = not prose or len(value) >= 8
            if value and sure and not is_marker(value) and self.query_secret(name, value):
                value, changed = self._marker(value), True
            elif "/" in value:
                inner = self._url_redacted(value)  # a URL inside a URL (a redirect target)
                if inner is not None:
                    value, changed = inner, True
            kept.append((name, value))
        return urlencode(kept, safe="[]", quote_via=quote) if changed else part


_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s<>\"'`)]+")
"""A URL inside prose or markdown (it ends at a space, a quote or a closing parenthesis). The
scheme starts a word and is short: a long run of letters is passed in linear time, not tried
again from each of its letters."""
_SECRET_LINE = re.compile(
    r"\s*(?:export\s+)?([A-Za-z][A-Za-z0-9_.-]*)\s*(=|:)\s*([\"']?)"
    r"((?:(?:bearer|basic|token|bot|digest|apikey)\s+)?[^\s\"']+)\3\s*",
    re.IGNORECASE,
)
_SCHEME_FIRST = re.compile(r"(?i)(?:bearer|basic|token|bot|digest|apikey)\s")
_AMBIGUOUS = frozenset({"key", "code", "auth"})
"""URL parameter names that hold a secret only when their value is long enough to be one."""
PROSE_LIMIT = 1 << 20
"""Characters of a text searched for URLs and secret lines (a prompt quoting a long document
still has its presigned link found)."""
_LINES_LIMIT = 10_000


def _is_one_url(text: str) -> bool:
    """Whether `text` is a URL and nothing else (no space in it: prose is not one URL)."""
    return not any(c.isspace() for c in text.strip())


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
