"""What every request handler of `journal ui` shares: the journal and how the server started."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from starlette.requests import Request

from journal import Journal

from ._tail import Tails


@dataclass
class UiState:
    """Held by the app (`app.state.ui`); one per server."""

    journal: Journal
    allow_actions: bool = False
    poll_seconds: float = 0.5
    """How often a live page's stream looks for new runs and events."""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """The CSRF token of this process: forms carry it, actions require it."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the server shuts down: live streams end at once instead of holding it up."""
    tails: Tails = field(default_factory=Tails)
    """The rows of the runs open pages follow: each new event is read once."""


def state_of(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state
