"""`journal ui`: the local web app over a journal (the `ui` extra)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from typing import Annotated

import typer
from rich.markup import escape

from journal import Journal

from ._app import DbOption, app, console, error_console, fail, open_journal

UI_PACKAGES = ("starlette", "uvicorn", "jinja2")
"""What the `ui` extra installs; `journal ui` checks for them before importing the app."""


def missing_packages() -> list[str]:
    return [name for name in UI_PACKAGES if importlib.util.find_spec(name) is None]


@app.command("ui")
def ui_command(
    db: DbOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but a loopback address (127.0.0.1, ::1, "
            "localhost) lets other machines read every run: there is no login.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 8765,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Add buttons that write to the journal: signal a run, cancel it, fork it with "
            "an overridden step. Without it the journal is opened read-only.",
        ),
    ] = False,
) -> None:
    """Serve a web page over the journal: the runs (filtered by status, workflow, age and
    text), each run's timeline and steps, a diff of two runs and the verification, updated
    live as runs record. Read-only and on 127.0.0.1 unless told otherwise. Ctrl+C stops it."""
    missing = missing_packages()
    if missing:
        fail(
            f"journal ui needs {', '.join(missing)}, which the `ui` extra installs. Fix: "
            "pip install 'journal-replay[ui]'"
        )
    from .._ui import bind

    with open_journal(db, writing=allow_actions) as journal:
        try:
            sock = bind(host, port)
        except OSError as exc:
            fail(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}. Fix: choose another "
                "--port (0 picks a free one), or stop what listens there."
            )
        # Ctrl+C: uvicorn stops gracefully, then raises it again for the default handler (or it
        # comes before uvicorn listens for it): either way the command ends quietly.
        with sock, contextlib.suppress(KeyboardInterrupt):
            _serve_on(sock, journal, host, allow_actions)


def _serve_on(sock: socket.socket, journal: Journal, host: str, allow_actions: bool) -> None:
    from .._ui import create_app, is_loopback, serve, url_of

    url = url_of(sock)
    if not is_loopback(host):
        error_console().print(
            f"[bold yellow]warning:[/] listening on {escape(host)}: anyone who can reach "
            f"this machine on port {sock.getsockname()[1]} can read every run in the journal"
            + (", and signal, cancel and fork runs" if allow_actions else "")
            + ". There is no login. Prefer the default --host 127.0.0.1 (and an SSH tunnel "
            "to reach it from elsewhere)."
        )
    mode = "actions enabled" if allow_actions else "read-only"
    console().print(f"journal ui: {url} ({mode}; Ctrl+C stops)")
    sys.stdout.flush()  # a pipe (a script waiting for the URL) gets the line now
    serve(create_app(journal, allow_actions=allow_actions, host=host), sock)
