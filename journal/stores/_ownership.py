"""Who may own a run: the lease rule every store applies the same way."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from .._errors import RunLocked
from .._events import Owner

HOSTNAME = socket.gethostname()
_GIVEN_UP: set[str] = set()
"""Leases this process gave up though the store could not record it (the release failed on a
full disk or a lost server): nothing here writes with them any more."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_owner(lease_seconds: float) -> Owner:
    """An owner for this process with a fresh token, its lease `lease_seconds` long."""
    now = datetime.now(UTC)
    return Owner(
        token=uuid.uuid4().hex,
        host=HOSTNAME,
        pid=os.getpid(),
        since=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )


def give_up(token: str) -> None:
    """This process no longer writes with `token`, though the store still names it: a claim
    from this process takes the run over at once, as it would a dead process's."""
    _GIVEN_UP.add(token)


def owner_is_gone(owner: Owner, now: datetime) -> bool:
    """True when `owner` can no longer write: its lease expired, it died on this host, or it is
    this process and gave the lease up."""
    if owner.lease_expires_at <= now:
        return True
    if owner.host != HOSTNAME:
        return False
    if owner.pid == os.getpid():
        return owner.token in _GIVEN_UP
    return not _pid_alive(owner.pid)


def check_claim(run_id: str, current: Owner | None, claimant: Owner, now: datetime) -> None:
    """Raise `RunLocked` unless `claimant` may take the run from `current`."""
    if current is None or current.token == claimant.token or owner_is_gone(current, now):
        return
    raise RunLocked(run_id, current)
