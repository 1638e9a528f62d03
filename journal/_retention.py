"""Retention: which finished runs `journal gc` removes. The only way events leave a journal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ._events import Run, RunStatus

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def select_for_removal(
    runs: Sequence[Run],
    *,
    keep_last: int | None,
    older_than: timedelta | None,
    statuses: Iterable[RunStatus] | None,
    now: datetime,
) -> list[Run]:
    """The runs a retention policy removes, newest first; `runs` must be newest first.

    A run is removed when its status is one of `statuses` (default: finished ones; running
    and waiting runs only when named), it is not among the `keep_last` newest such runs, and
    it was created more than `older_than` ago. Both limits apply when both are given.
    """
    if keep_last is None and older_than is None:
        raise ValueError(
            "gc needs --keep-last N and/or --older-than AGE; it never removes every run by "
            "default. Add --dry-run to see what a policy would remove."
        )
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"--keep-last must be 0 or more, not {keep_last}")
    wanted = set(FINISHED if statuses is None else statuses)
    matching = [run for run in runs if run.status in wanted]
    candidates = matching[keep_last:] if keep_last is not None else matching
    if older_than is not None:
        cutoff = now - older_than
        candidates = [run for run in candidates if run.created_at < cutoff]
    return candidates
