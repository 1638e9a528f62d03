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
from collections.abc import Callable, Collection
from functools import lru_cache
from pathlib import Path
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
    """The version of the code `workflow` runs: configured, else a hash of its module's
    source (None if it has no source file, as in an interactive session)."""
    configured = configured_version()
    if configured:
        return configured
    module = sys.modules.get(getattr(workflow, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    return None if path is None else version_of_file(path)


def version_of_file(path: str | os.PathLike[str]) -> str | None:
    """Configured, else `src:` and a hash of the source file at `path`."""
    configured = configured_version()
    if configured:
        return configured
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _source_hash(os.fspath(path), status.st_mtime_ns, status.st_size)


@lru_cache(maxsize=256)
def _source_hash(path: str, _mtime_ns: int, _size: int) -> str | None:
    """Cached by the file's modification time and size: read again only when it changed."""
    try:
        source = Path(path).read_bytes()
    except OSError:
        return None
    return "src:" + hashlib.sha256(source).hexdigest()[:12]


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
    if not accepts(run, current, accepted):
        assert run.version is not None
        raise VersionNotAccepted(run.run_id, run.version, current, run.workflow or "the block")
