"""Streamed responses passed through live, recorded once their terminal event has been read.

A live server-sent event stream is handed to the client chunk by chunk through a tee. It is
recorded as complete (status, headers and the raw bytes read) at the first of:

* the chunk that completes its terminal event (`data: [DONE]`, `response.completed`,
  `message_stop`, ...: see `_sse.py`) has been read from the server. The row is committed before
  that chunk is handed on, so the workflow never sees the end of a stream the journal does not
  hold, and whatever the client does next (close at once as openai does, drain, or drop the
  response unclosed) changes nothing;
* the body ended (EOF), for a stream with no known terminal event.

A stream closed before either (the consumer broke out early) is not recorded as complete: only
its started row stays, and a resume makes the request again.

The body is kept as received, except a gzip/deflate stream recorded at its terminal event: its
compressed bytes lack their end then, so its text is kept instead (without content-encoding),
which the client parses to the same events.

Each response has one cursor over the server's bytes. openai 3 async iterates the stream a second
time after `[DONE]` to drain the connection; that iteration continues where the first stopped
(over a body held in memory a fresh iterator would start again from byte 0). Bytes read after the
terminal event are passed on but not recorded: SDKs ignore them, and replay does not need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .._context import current_scope
from ._sse import Inflater, TerminalEvent

if TYPE_CHECKING:
    from ._http import Call


class _Recording:
    """The bytes of one live stream read so far, and the moment they make a complete response."""

    __slots__ = ("call", "chunks", "end", "inflater", "recorded", "response", "texts")

    def __init__(self, response: Any, call: Call) -> None:
        self.response = response
        self.call = call
        self.chunks: list[bytes] = []
        """The body as received."""
        encoding = response.headers.get("content-encoding", "").strip().lower()
        self.inflater = Inflater(encoding) if encoding not in ("", "identity") else None
        self.texts: list[bytes] = []
        """A compressed body's text (what the terminal event is looked for in)."""
        self.end = TerminalEvent()
        self.recorded = False

    def read(self, chunk: bytes) -> None:
        """`chunk` came from the server and is about to be handed on."""
        if self.recorded:
            return
        self.chunks.append(chunk)
        text = chunk
        if self.inflater is not None:
            inflated = self.inflater.text(chunk)
            if inflated is None:
                return  # an encoding we cannot read: the end is the body's end
            self.texts.append(text := inflated)
        if self.end.feed(text):
            self.complete(at_eof=False)

    def complete(self, *, at_eof: bool) -> None:
        """Record the response (once): its terminal event was read, or the body ended."""
        if self.recorded:
            return
        self.recorded = True  # a failed write is raised now, never retried on a later chunk
        headers, body = self.response.headers, b"".join(self.chunks)
        if not at_eof and self.inflater is not None and self.inflater.readable:
            # Cut at its terminal event, the compressed body lacks its end (a gzip trailer):
            # keep the text instead, as a plain body.
            headers = headers.copy()
            for name in ("content-encoding", "content-length"):
                if name in headers:
                    del headers[name]
            body = b"".join(self.texts)
        self.chunks, self.texts = [], []
        self.call.completed(self.response.status_code, headers, body)


def async_tee(module: Any, response: Any, call: Call) -> Any:
    """`response`'s stream, passed through as it arrives and recorded once complete."""
    recording = _Recording(response, call)

    class Tee(module.AsyncByteStream):  # type: ignore[misc]
        def __init__(self) -> None:
            self._cursor: AsyncIterator[bytes] | None = None
            self._closed = False

        def __aiter__(self) -> Tee:
            return self  # every iteration continues the one cursor

        async def __anext__(self) -> bytes:
            if self._closed:
                raise StopAsyncIteration
            outside = current_scope.set(None)  # reading the body is the call's own work
            try:
                if self._cursor is None:
                    self._cursor = response.stream.__aiter__()
                chunk: bytes = await self._cursor.__anext__()
            except StopAsyncIteration:
                recording.complete(at_eof=True)
                raise
            finally:
                current_scope.reset(outside)
            recording.read(chunk)
            return chunk

        async def aclose(self) -> None:
            self._closed = True
            outside = current_scope.set(None)
            try:
                cursor, self._cursor = self._cursor, None
                aclose = getattr(cursor, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(RuntimeError):  # still running in another task
                        await aclose()
                await response.aclose()
            finally:
                current_scope.reset(outside)

    return Tee()


def sync_tee(module: Any, response: Any, call: Call) -> Any:
    """The synchronous twin of `async_tee`."""
    recording = _Recording(response, call)

    class Tee(module.SyncByteStream):  # type: ignore[misc]
        def __init__(self) -> None:
            self._cursor: Iterator[bytes] | None = None
            self._closed = False

        def __iter__(self) -> Tee:
            return self

        def __next__(self) -> bytes:
            if self._closed:
                raise StopIteration
            if self._cursor is None:
                self._cursor = iter(response.stream)
            try:
                chunk: bytes = next(self._cursor)
            except StopIteration:
                recording.complete(at_eof=True)
                raise
            recording.read(chunk)
            return chunk

        def close(self) -> None:
            self._closed = True
            cursor, self._cursor = self._cursor, None
            close = getattr(cursor, "close", None)
            if close is not None:
                with contextlib.suppress(ValueError):  # still running in another thread
                    close()
            response.close()

    return Tee()
