"""Changing workflow code under runs in flight: `replay.patched(id)`, `replay.deprecate_patch(id)`.

A patch is a journaled marker at the point where the code changed (kind `patch`, name
`replay.patched:<id>`), keyed like any step:

* reached live (past the frontier: a new run, or an old run going on from its journal's end),
  the marker is written and `patched` returns True: the new branch;
* the journal holds this marker at that key (a run that took the new branch): served, True;
* the journal holds another step at that key (a run recorded before the patch, whose old code
  made its own call there): False, and no key is taken, so the old branch's steps are served
  at the keys they were recorded under.

The answer is kept for the rest of the sitting: every call with the same id gives the same.
`deprecate_patch(id)` is for when no run needs the old branch any more: it takes the marker's
key if the journal holds the marker there, and writes nothing; once the runs that hold the
marker are gone too, the line can go. These are the semantics of Temporal's `patched` and
DBOS's `patch`, on our step keys.
"""

from __future__ import annotations

import functools
from typing import Any

from journal import EventKind

from ._context import current_scope
from ._steps import step

PATCH_PREFIX = "replay.patched:"


def patched(change_id: str) -> bool:
    """True where the workflow should take the new branch of change `change_id`.

    >>> if replay.patched("ask-twice"):
    ...     answer = await ask_llm(prompt, temperature=0)     # runs started after the change
    ... else:
    ...     answer = await ask_llm(prompt)                     # runs recorded before it

    Outside a journaled run it is always True (the code as it is now).
    """
    _check(change_id)
    scope = current_scope.get()
    if scope is None:
        return True
    session = scope.session
    known = session.patches.get(change_id)
    if known is not None:
        return known
    recorded = _recorded_name(scope)
    if recorded is not None and recorded != PATCH_PREFIX + change_id:
        answer = False  # an old run's own step is here: the old branch
    elif recorded is None and session.mode == "replay" and not session.allow_live:
        answer = True  # replaying past the journal's end: nothing to record, and nothing live
    else:
        answer = bool(_marker(change_id)())  # served from the journal, or written now
    session.patches[change_id] = answer
    return answer


def deprecate_patch(change_id: str) -> None:
    """The old branch of `change_id` is gone: take the marker's key where a run recorded the
    marker (so the steps after it line up), and write nothing."""
    _check(change_id)
    scope = current_scope.get()
    if scope is None or scope.session.patches.get(change_id) is not None:
        return
    if _recorded_name(scope) == PATCH_PREFIX + change_id:
        _marker(change_id)()
    scope.session.patches[change_id] = True


def _check(change_id: str) -> None:
    if not isinstance(change_id, str) or not change_id.strip():
        raise ValueError(
            f"a patch id must be a non-empty string naming the change, not {change_id!r}. "
            'Fix: replay.patched("ask-twice"), an id you keep as long as runs may need it.'
        )


def _recorded_name(scope: Any) -> str | None:
    """The name of the step the journal holds at the scope's next key, or None."""
    session = scope.session
    with session.lock:
        if scope.deferred:
            session.settle(scope)
        entry = session.recorded.get(f"{scope.path}:{scope.steps + 1}")
    if entry is None:
        return None
    return str(entry[3] if isinstance(entry, tuple) else entry.name)


@functools.cache
def _marker(change_id: str) -> Any:
    """The marker of `change_id`: a sync step that returns True, journaled as kind `patch`."""

    def marker() -> bool:
        return True

    return step(name=f"{PATCH_PREFIX}{change_id}", kind=EventKind.PATCH)(marker)
