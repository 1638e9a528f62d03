"""Ambient instrumentation: requests made by clients that code we do not own creates.

`instrument()` wraps the default network transports of `httpx2` and `httpx` (whichever are
installed) at the class level, so every client, including one created deep inside a framework
before or after the call, has its requests journaled while a run is active. Outside a run the
wrapped method only checks a context variable and calls the original.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._context import current_scope
from ._http import AsyncJournalTransport, JournalTransport

_MODULES = ("httpx2", "httpx")
_patched: dict[tuple[str, str], Any] = {}
_holds = 0
"""Re-runs in progress that put `instrument()` in force (`instrumented_while`)."""
_holds_instrumented = False
"""Whether the first of them instrumented (the user had not): the last one undoes it."""
_holds_lock = threading.Lock()


class _Direct:
    """The original method, bound to the transport instance, as an `inner` transport."""

    def __init__(self, original: Any, transport: Any, name: str) -> None:
        self._call = original.__get__(transport)
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute == self._name:
            return self._call
        raise AttributeError(attribute)


def instrument() -> list[str]:
    """Journal requests of every `httpx2` / `httpx` client made inside a run; the modules
    instrumented. Idempotent; `uninstrument()` restores the originals."""
    global _holds_instrumented
    with _holds_lock:
        _holds_instrumented = False  # the program's own: kept after re-runs that hold it end
        return _instrument()


def _instrument() -> list[str]:
    done = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        _wrap(module.AsyncHTTPTransport, "handle_async_request", name, asynchronous=True)
        _wrap(module.HTTPTransport, "handle_request", name, asynchronous=False)
        done.append(name)
    return done


def is_instrumented() -> bool:
    """Whether `instrument()` is in force (and `uninstrument()` has not undone it)."""
    return bool(_patched)


def _wrap(cls: type, method: str, module: str, *, asynchronous: bool) -> None:
    if (module, method) in _patched:
        return
    original = getattr(cls, method)
    _patched[(module, method)] = (cls, original)

    if asynchronous:

        async def journaled_async(self: Any, request: Any) -> Any:
            if current_scope.get() is None:
                return await original(self, request)
            inner = _Direct(original, self, method)
            return await AsyncJournalTransport(inner).handle_async_request(request)

        setattr(cls, method, journaled_async)
    else:

        def journaled_sync(self: Any, request: Any) -> Any:
            if current_scope.get() is None:
                return original(self, request)
            inner = _Direct(original, self, method)
            return JournalTransport(inner).handle_request(request)

        setattr(cls, method, journaled_sync)


def uninstrument() -> None:
    """Restore the transports `instrument()` wrapped. While re-runs that need it are going (a
    worker's), they keep it: it is undone when the last of them ends."""
    global _holds_instrumented
    with _holds_lock:
        if _holds:
            _holds_instrumented = True
            return
        _uninstrument()


def _uninstrument() -> None:
    for (_, method), (cls, original) in list(_patched.items()):
        setattr(cls, method, original)
    _patched.clear()


@contextmanager
def instrumented_while() -> Iterator[None]:
    """`instrument()` in force while any holder is inside, then as it was before the first:
    re-runs going at once (a worker's) share the process-wide patch, so the one that ends
    first must not take it away from the others."""
    global _holds, _holds_instrumented
    with _holds_lock:
        if _holds == 0:
            _holds_instrumented = not is_instrumented()
        _instrument()
        _holds += 1
    try:
        yield
    finally:
        with _holds_lock:
            _holds -= 1
            if _holds == 0 and _holds_instrumented:
                _uninstrument()
