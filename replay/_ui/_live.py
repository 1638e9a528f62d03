"""Live updates: server-sent event streams that say when the runs list or a run has changed.

Neither SQLite nor the store protocol can notify another process, so each stream polls the
journal (every `UiState.poll_seconds`, in a worker thread) through the same reads the pages
use: it works the same on SQLite, PostgreSQL and any third-party store. An event carries only
what changed (counts and status, as JSON); the page then fetches the new rows as HTML rendered
by the same templates, so recorded text is escaped in one place.

A stream ends when the client goes away (Starlette cancels it) or when the server stops
(`UiState.stopping`), so an open page never holds up Ctrl+C.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from journal import Journal, RunStatus
from journal._inspect import run_state

from .._log import get_logger
from ._pages import required
from ._state import state_of
from ._views import FINISHED, runs_signature, whole_number

log = get_logger("replay.ui")
KEEP_ALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies and the browser from closing a quiet stream."""

T = TypeVar("T")


async def _read(function: Callable[[], T]) -> T:
    """A blocking journal read, off the event loop."""
    return await anyio.to_thread.run_sync(function)


def _message(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"event: {event}\n" + ("" if event_id is None else f"id: {event_id}\n")
    return f"{head}data: {json.dumps(data)}\n\n"


async def _ending_cleanly(messages: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """`messages`, ended as a stream ends when the journal fails under it (a lost connection
    to PostgreSQL, tables gone, a lock held past its timeout): the page reconnects, and its
    next request shows the error. Cut off instead, the response would end mid-message with an
    ASGI traceback in the terminal."""
    async with contextlib.aclosing(messages):
        try:
            async for message in messages:
                yield message
        except Exception as exc:  # whatever the store raised: logged, the page reconnects
            log.warning("ui.stream_ended", error=f"{type(exc).__name__}: {exc}")


def _stream(request: Request, messages: AsyncGenerator[str, None]) -> Response:
    return StreamingResponse(
        _ending_cleanly(messages),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


async def _ticks(request: Request) -> AsyncIterator[str]:
    """Yields "" every poll interval, or a keep-alive comment, until the server stops."""
    state = state_of(request)
    quiet_since = time.monotonic()
    while not state.stopping.is_set():
        await anyio.sleep(state.poll_seconds)
        if time.monotonic() - quiet_since >= KEEP_ALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        else:
            yield ""


async def runs_stream(request: Request) -> Response:
    """`runs` events whenever a run is added, changes status or records progress."""
    journal = state_of(request).journal

    async def messages() -> AsyncGenerator[str, None]:
        # What is there now, read before the first line: a run added once the client has
        # that line is one the stream reports as added, never part of what it started from
        seen = await _read(lambda: runs_signature(journal))
        yield ": watching the runs\n\n"  # sends the headers now: the page knows it is live
        async for tick in _ticks(request):
            now = await _read(lambda: runs_signature(journal))
            if now != seen:
                added = len({r[0] for r in now} - {r[0] for r in seen})
                seen = now
                yield _message("runs", {"added": added, "runs": len(now)})
            elif tick:
                yield tick

    return _stream(request, messages())


async def run_stream(request: Request) -> Response:
    """For one run: `steps` events when events are appended (with the last seq, which is the
    event id, so a reconnecting browser resumes after it) and `run` events when its status,
    state or outcome changes."""
    run_id = required(request, "id", "/live/run?id=RUN&after=SEQ")
    journal = state_of(request).journal
    resumed = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    after = whole_number(resumed, "after")
    await _read(lambda: journal.run(run_id))  # RunNotFound: 404 before the stream opens

    async def messages() -> AsyncGenerator[str, None]:
        nonlocal after
        yield f": watching run {json.dumps(run_id)}\n\n"
        seen = await _read(lambda: _facts(journal, run_id))
        async for tick in _ticks(request):
            new = await _read(partial(journal.store.read_events, run_id, after_seq=after))
            facts = await _read(lambda: _facts(journal, run_id))
            if new:
                after = new[-1].seq
                yield _message("steps", {"last_seq": after, "added": len(new), **facts}, after)
            if facts != seen:
                seen = facts
                yield _message("run", facts)
                if facts["state"] == "removed":
                    return
            elif tick and not new:
                yield tick

    return _stream(request, messages())


def _facts(journal: Journal, run_id: str) -> dict[str, Any]:
    """What the run page's header shows that can change while it is open."""
    run = journal.store.get_run(run_id)
    if run is None:  # removed (journal gc) while the page was open
        return {"status": "removed", "state": "removed", "finished": True}
    started = run.status is not RunStatus.RUNNING or journal.store.count_events(run_id) > 0
    return {
        "status": run.status.value,
        "state": run_state(run, started),
        "finished": run.status in FINISHED,
        "resumes": run.resumes,
        "waiting_for": run.waiting_for,
    }


def routes() -> list[Route]:
    return [Route("/live/runs", runs_stream), Route("/live/run", run_stream)]
