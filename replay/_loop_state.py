"""What an event loop may still do for anyone, as the engine's checks see it: its own timers
(`engine_handles`) left out."""

from __future__ import annotations

import asyncio
import weakref

engine_handles: weakref.WeakSet[asyncio.Handle] = weakref.WeakSet()
"""Timers the engine itself keeps (heartbeats, these checks): they do not make a loop busy."""


def loop_state(loop: asyncio.AbstractEventLoop) -> str | None:
    """What the loop may still do for anyone: "busy" (callbacks ready to run), "waiting" (a
    timer is set or a socket, pipe or subprocess is watched: something may come), or "idle"
    (nothing can happen but what the engine itself does). None if its internals cannot be
    read (uvloop): then only a long standstill counts."""
    ready = getattr(loop, "_ready", None)
    scheduled = getattr(loop, "_scheduled", None)
    selector = getattr(loop, "_selector", None)
    if ready is None or scheduled is None or selector is None:
        return None
    # Copies, taken in one step: other threads append to the loop's queues (call_soon_threadsafe)
    # while a generator walking them would let go of the GIL between items.
    ready, scheduled = tuple(ready), tuple(scheduled)
    if any(not handle.cancelled() and handle not in engine_handles for handle in ready):
        return "busy"
    if any(not handle.cancelled() and handle not in engine_handles for handle in scheduled):
        return "waiting"
    own = getattr(getattr(loop, "_ssock", None), "fileno", lambda: -1)()
    try:
        watched = selector.get_map()
    except RuntimeError:
        return None
    return "waiting" if any(key.fd != own for key in watched.values()) else "idle"
