"""`journal ui`: a local web app over a journal (the `ui` extra: Starlette, uvicorn, Jinja2).

Pages for the runs, a run's timeline and steps, a diff and the verification, updated live;
read-only unless started with `allow_actions`. `replay._cli._ui` is its command.
"""

from ._app import create_app
from ._serve import bind, is_loopback, serve, url_of

__all__ = ["bind", "create_app", "is_loopback", "serve", "url_of"]
