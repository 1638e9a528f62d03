"""Streamed responses passed through live and recorded only when read to the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .._context import current_scope

if TYPE_CHECKING:
    from ._http import Call


def async_tee(module: Any, response: Any, call: Call) -> Any:
    """The live stream, passed through chunk by chunk; recorded only once read to the end."""

    class Tee(module.AsyncByteStream):  # type: ignore[misc]
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.finished = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunks = response.stream.__aiter__()
            while True:
                outside = current_scope.set(None)  # reading the body is the call's own work
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    current_scope.reset(outside)
                self.chunks.append(chunk)
                yield chunk
            self.finished = True

        async def aclose(self) -> None:
            outside = current_scope.set(None)
            try:
                await response.aclose()
            finally:
                current_scope.reset(outside)
            if self.finished and call.plan is not None and not getattr(self, "_done", False):
                self._done = True
                call.completed(response.status_code, response.headers, b"".join(self.chunks))

    return Tee()


def sync_tee(module: Any, response: Any, call: Call) -> Any:
    class Tee(module.SyncByteStream):  # type: ignore[misc]
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.finished = False

        def __iter__(self) -> Iterator[bytes]:
            for chunk in response.stream:
                self.chunks.append(chunk)
                yield chunk
            self.finished = True

        def close(self) -> None:
            response.close()
            if self.finished and call.plan is not None and not getattr(self, "_done", False):
                self._done = True
                call.completed(response.status_code, response.headers, b"".join(self.chunks))

    return Tee()
