"""litellm: its requests go through sessions it lets callers set; give it journaling ones."""

from __future__ import annotations

from typing import Any

from ._http import AsyncJournalTransport, JournalTransport


def route_litellm() -> None:
    """Send litellm's HTTP requests (sync and async) through journaling transports.

    Sets `litellm.aclient_session` / `litellm.client_session` to `httpx` clients whose
    transport journals requests made inside a run; sessions you set before keep their own
    transport, wrapped. Outside a run requests pass through unchanged. Needs the `litellm`
    extra.
    """
    try:
        import httpx
        import litellm
    except ImportError as exc:
        raise ImportError(
            f"route_litellm() needs litellm and httpx ({exc}). Fix: pip install "
            "'journal-replay[litellm]'."
        ) from exc
    litellm.aclient_session = _wrapped_async(httpx, litellm.aclient_session)
    litellm.client_session = _wrapped_sync(httpx, litellm.client_session)


def _wrapped_async(httpx: Any, session: Any) -> Any:
    if session is not None and isinstance(session._transport, AsyncJournalTransport):
        return session
    if session is None:
        return httpx.AsyncClient(transport=AsyncJournalTransport(httpx.AsyncHTTPTransport()))
    session._transport = AsyncJournalTransport(session._transport)
    return session


def _wrapped_sync(httpx: Any, session: Any) -> Any:
    if session is not None and isinstance(session._transport, JournalTransport):
        return session
    if session is None:
        return httpx.Client(transport=JournalTransport(httpx.HTTPTransport()))
    session._transport = JournalTransport(session._transport)
    return session
