"""Which version of the code starts a run, and which runs a process may continue.

A run records the version of the code that started it. The configured one comes first
(`JOURNAL_VERSION`, or `version` in journal.toml / `[tool.journal]`): a release tag or a commit
id, the same for every workflow of a deploy. Without it, the version is `src:` and the first 12
hex digits of the SHA-256 of the workflow's module source, so that any edit of that module is a
new version. Workers and `journal resume` continue a run only when it has no version (a fork,
a run from before versions), the same version as this process, or one it was told to accept.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from journal import Run
from journal._config import load_config

from ._errors import VersionNotAccepted

ANY_VERSION = "*"
"""In `accept_versions`: continue runs of every version."""


def configured_version() -> str | None:
    """`JOURNAL_VERSION`, else the `version` of the settings files (read once per folder)."""
    return os.environ.get("JOURNAL_VERSION") or _file_version(os.getcwd())


@lru_cache(maxsize=8)
def _file_version(folder: str) -> str | None:
    return load_config(Path(folder)).version


def version_of(workflow: Callable[..., Any]) -> str | None:
    """The version of the code `workflow` runs: configured, else the source hash of its
    module (None if the module has no source file, as in an interactive session)."""
    return configured_version() or module_version(getattr(workflow, "__module__", "") or "")


_pinned: dict[str, tuple[ModuleType, str | None]] = {}
"""Module name -> (the module object, its source hash), taken once per imported module."""


def module_version(name: str) -> str | None:
    """`src:` and the hash of module `name`'s source file as this process first saw it:
    taken when the module's steps were decorated (at import) or, failing that, when first
    asked, and kept for as long as that module object is the one imported. A file replaced
    on disk under a running process does not change the version of the code it runs."""
    module = sys.modules.get(name)
    if module is None:
        return None
    pinned = _pinned.get(name)
    if pinned is not None and pinned[0] is module:
        return pinned[1]
    path = getattr(module, "__file__", None)
    digest = None
    if path is not None:
        try:
            digest = "src:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        except OSError:
            digest = None
    _pinned[name] = (module, digest)
    return digest


def accepted_versions(accept_versions: Iterable[str]) -> frozenset[str]:
    """`accept_versions` as a set; a bare string is refused (it would accept its letters)."""
    if isinstance(accept_versions, str):
        raise TypeError(
            f"accept_versions takes a list of versions, not the string {accept_versions!r}. "
            f"Fix: accept_versions=[{accept_versions!r}]."
        )
    return frozenset(accept_versions)


def accepts(run: Run, current: str | None, accepted: Collection[str]) -> bool:
    """Whether a process running version `current`, told to accept `accepted` too, may
    continue `run`."""
    return (
        run.version is None
        or run.version == current
        or run.version in accepted
        or ANY_VERSION in accepted
    )


def check_version(run: Run, workflow: Callable[..., Any], accepted: Collection[str]) -> None:
    """`VersionNotAccepted` unless this process may continue `run` with `workflow`."""
    current = version_of(workflow)
    if not accepts(run, current, accepted_versions(accepted)):
        assert run.version is not None
        raise VersionNotAccepted(run.run_id, run.version, current, run.workflow or "the block")
