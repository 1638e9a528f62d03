"""The Starlette application behind `journal ui`: its routes, templates and the headers every
response carries.

A journal is untrusted input (anyone may hand you one), and the page is served on a port any
other page in the browser can aim at. So: every value is escaped by the templates, the
Content-Security-Policy allows no inline script and nothing from elsewhere, the Host header
must name this server (a page on another site that rebinds its name to 127.0.0.1 gets 400, not
the journal), and the actions that write exist only with `allow_actions`, behind a per-process
token and an Origin check (`_actions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journal import Journal
from journal._html import timeline_assets

from . import _actions, _live, _pages
from ._state import UiState
from ._views import duration_text, error_view, href, pretty, untraced, when_text

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'self'"
)
"""No inline script or style, no inline event handler, nothing loaded from elsewhere: recorded
text that slipped past escaping still could not run."""
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts say Origin: null
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


class _SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response (pages, fragments, streams, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class _QuietStop:
    """A request still running when the server's grace period for stopping ends (a page
    waiting on a locked journal) is cancelled by uvicorn, which printed the cancellation's
    traceback: it is answered 503 instead, saying that the server is stopping."""

    def __init__(self, app: ASGIApp, stopping: threading.Event) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
            if not started:
                stopped = PlainTextResponse(
                    "journal ui is stopping (Ctrl+C): this page was still waiting for the "
                    "journal. Start journal ui again to see it.",
                    status_code=503,
                )
                with contextlib.suppress(Exception):  # the client may be gone as well
                    await stopped(scope, receive, send)


def _templates(state: UiState) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: recorded text is never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(href=href, allow_actions=state.allow_actions, csrf_token=state.token)
    env.filters.update(
        pretty=pretty,
        duration=duration_text,
        when=when_text,
        error_view=error_view,
        untraced=untraced,
    )
    return Jinja2Templates(env=env)


WILDCARDS = ("0.0.0.0", "::", "")


class _HostCheck:
    """Answers only requests whose Host header names this server: a page on another site that
    points its own name at this machine (DNS rebinding) gets 400, not the journal. A server on
    every address (0.0.0.0, ::) answers to any IP address and to this machine's names, but
    still to no other name."""

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        self.any_address = host in WILDCARDS
        bare = host.strip("[]").lower()
        names = {*LOOPBACK_NAMES, bare, f"[{bare}]"}
        if self.any_address:
            # Not getfqdn(): a reverse lookup can stall the start for seconds where DNS is slow.
            names.add(socket.gethostname().lower())
        self.names = frozenset(names)

    def allows(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if name in self.names:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        refused = PlainTextResponse(
            f"journal ui: refused a request for host {header!r}: this server answers only to "
            "its own addresses and names, so that another site cannot point its name at it and "
            "read the journal. Fix: open the address `journal ui` printed, or start it with "
            "--host set to the name you use.",
            status_code=400,
        )
        await refused(scope, receive, send)


def host_name(header: str) -> str | None:
    """The lower-cased name or address of a Host header (`[::1]` keeps its brackets), without
    the port; None if the header is not one."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header.partition("]")
        name += bracket
        port = rest.removeprefix(":")
        if not bracket or (rest and not rest.startswith(":")):
            return None
    else:
        name, colon, port = header.partition(":")
        if colon and not port:
            return None
    if not name or (port and not port.isdigit()):
        return None
    return name


def create_app(
    journal: Journal,
    *,
    allow_actions: bool = False,
    host: str = "127.0.0.1",
    poll_seconds: float = 0.5,
) -> Starlette:
    """The web app over `journal`: read-only unless `allow_actions` (signal, cancel, fork).

    `host` is the address the server listens on; requests naming another host are refused.
    """
    state = UiState(journal, allow_actions=allow_actions, poll_seconds=poll_seconds)
    routes = [
        *_pages.routes(),
        *_live.routes(),
        *(_actions.routes() if allow_actions else []),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Mount("/assets/timeline", StaticFiles(directory=str(timeline_assets())), name="timeline"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(_QuietStop, stopping=state.stopping),
            Middleware(_HostCheck, host=host),
        ],
        exception_handlers=_pages.exception_handlers(),
    )
    app.state.ui = state
    app.state.templates = _templates(state)
    return app
