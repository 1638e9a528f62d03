"""Where a server-sent event stream ends: its terminal event, found as the bytes pass.

LLM providers end a stream with an event after which nothing that matters follows:

* `data: [DONE]` on OpenAI chat/completions and completions (and the servers that copy them:
  litellm, vLLM, Ollama, ...), and on the Assistants API;
* `response.completed`, `response.incomplete` or `response.failed` on the OpenAI Responses API;
* `message_stop` on Anthropic messages.

The event's name is read from its `event:` field, or from the `type` of its JSON data when a
server sends no names. An SDK may stop reading right there (openai closes at `[DONE]`), so the end
of the body (EOF) alone cannot tell a finished stream from an abandoned one.

A gzip or deflate body is read through `Inflater`, which also gives its text for the journal.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "message_stop"}
)
"""Event names (or JSON `type`s) that end a stream, besides `data: [DONE]`."""
_TERMINAL_BYTES = tuple(name.encode() for name in TERMINAL_EVENTS)


class TerminalEvent:
    """Fed a stream's body text chunk by chunk; says when a terminal event has been read whole."""

    def __init__(self) -> None:
        self._partial = b""
        """The start of a line whose end has not arrived yet."""
        self._skip_lf = False
        """The last chunk ended in `\\r`: a `\\n` opening the next one belongs to it."""
        self._event = b""
        self._data: list[bytes] = []
        self.seen = False

    def feed(self, text: bytes) -> bool:
        """True once the text fed so far holds a whole terminal event (a blank line ends it)."""
        if self.seen:
            return True
        if self._skip_lf and text[:1] == b"\n":
            text = text[1:]
        self._skip_lf = False
        if b"\n" not in text and b"\r" not in text:
            self._partial += text
            return False
        lines = (self._partial + text).splitlines(keepends=True)
        last = lines[-1]
        if last.endswith((b"\n", b"\r")):
            self._partial = b""
            self._skip_lf = last.endswith(b"\r")
        else:
            self._partial = lines.pop()
        for line in lines:
            if self._line(line.rstrip(b"\r\n")):
                self.seen = True
                return True
        return False

    def _line(self, line: bytes) -> bool:
        """Take one line in; True if it was the blank line closing a terminal event."""
        if not line:
            if not self._data and not self._event:
                return False
            ended = self._terminal()
            self._event, self._data = b"", []
            return ended
        if line.startswith(b":"):
            return False  # a comment
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            self._event = value
        elif field == b"data":
            self._data.append(value)
        return False

    def _terminal(self) -> bool:
        data = b"\n".join(self._data)
        if data.startswith(b"[DONE]") or self._event.decode(errors="replace") in TERMINAL_EVENTS:
            return True
        if not data.startswith(b"{") or not any(name in data for name in _TERMINAL_BYTES):
            return False
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(value, dict) and value.get("type") in TERMINAL_EVENTS


class Inflater:
    """A compressed body's text, chunk by chunk, as it passes (the chunks are not touched).

    gzip and deflate are read; `text` is None under any other content-encoding, or once the
    bytes turn out not to be what the header said.
    """

    def __init__(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        self._inflate: Any = None
        self._raw_deflate_tried = encoding != "deflate"
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        self.readable = self._inflate is not None

    def text(self, chunk: bytes) -> bytes | None:
        """The text `chunk` adds, or None if the body cannot be read."""
        if not self.readable:
            return None
        try:
            return bytes(self._inflate.decompress(chunk))
        except zlib.error:
            if not self._raw_deflate_tried:
                # `deflate` should be zlib-wrapped; some servers send it raw.
                self._raw_deflate_tried = True
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.text(chunk)
            self.readable = False
            return None

    def rest(self) -> bytes | None:
        """Text still held back at the end of the body."""
        if not self.readable:
            return None
        try:
            return bytes(self._inflate.flush())
        except zlib.error:
            self.readable = False
            return None
