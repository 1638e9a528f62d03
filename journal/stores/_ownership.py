"""Who may own a run: the lease rule every store applies the same way."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from .._errors import RunLocked
from .._events import Owner

HOSTNAME = socket.gethostname()


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


def owner_is_gone(owner: Owner, now: datetime) -> bool:
    """True when `owner` can no longer write: its lease expired, or it died on this host."""
    if owner.lease_expires_at <= now:
        return True
    return owner.host == HOSTNAME and not _pid_alive(owner.pid)


def check_claim(run_id: str, current: Owner | None, claimant: Owner, now: datetime) -> None:
    """Raise `RunLocked` unless `claimant` may take the run from `current`."""
    if current is None or current.token == claimant.token or owner_is_gone(current, now):
        return
    raise RunLocked(run_id, current)
