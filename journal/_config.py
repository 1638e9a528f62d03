"""Where a journal's settings come from, first match wins:

1. arguments given to `Journal(...)` (or `--db` on the command line);
2. environment: `JOURNAL_URL`, `JOURNAL_DURABILITY`, `JOURNAL_MAX_PAYLOAD_BYTES`,
   `JOURNAL_VERSION`;
3. `journal.toml` in the working directory or the nearest parent that has one;
4. `[tool.journal]` in the nearest `pyproject.toml`;
5. defaults: `.journal/journal.db`, durability "normal", 10 MB per event, no retention policy.

A file may set `url`, `durability`, `max_payload_bytes`, `version` (of the deployed code,
recorded on each run it starts), a `[retention]` table (`keep_last`, `older_than`,
`statuses`) that `journal gc` applies when given no limits, and a `[playbooks]` table
(`application`, `on_divergence`) for `journal playbooks run`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import JournalUnavailable

DEFAULT_URL = str(Path(".journal") / "journal.db")
DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
_KEYS = {"url", "durability", "max_payload_bytes", "retention", "version", "playbooks"}
_RETENTION_KEYS = {"keep_last", "older_than", "statuses"}
_PLAYBOOKS_KEYS = {"application", "on_divergence"}
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class JournalConfig:
    """The settings in force, and where each came from (for error messages and `--help`)."""

    url: str = DEFAULT_URL
    durability: str = "normal"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retention: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    """The deployed code's version, recorded on each run it starts; None: a hash of each
    workflow's module source is recorded instead."""
    playbooks: dict[str, str] = field(default_factory=dict)
    """`journal playbooks run`'s settings, checked: `application` (the Playbooks application
    module that runs a program) and `on_divergence` ("raise" or "fork"), as far as set."""
    sources: dict[str, str] = field(default_factory=dict)
    """setting -> "default", "JOURNAL_URL", or the file it was read from."""


def load_config(start: Path | None = None) -> JournalConfig:
    """The configuration for code running in `start` (default: the working directory)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path, table in _files(start or Path.cwd()):
        for key, value in table.items():
            if key not in values:
                values[key], sources[key] = value, str(path)
    for key, variable in (
        ("url", "JOURNAL_URL"),
        ("durability", "JOURNAL_DURABILITY"),
        ("max_payload_bytes", "JOURNAL_MAX_PAYLOAD_BYTES"),
        ("version", "JOURNAL_VERSION"),
    ):
        if os.environ.get(variable):
            values[key], sources[key] = os.environ[variable], variable
    return _checked(values, sources)


def _files(start: Path) -> list[tuple[Path, dict[str, Any]]]:
    """journal.toml before pyproject.toml's [tool.journal], each the nearest one found."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for directory in [start, *start.parents]:
        candidate = directory / "journal.toml"
        if candidate.is_file():
            found.append((candidate, _read(candidate)))
            break
    for directory in [start, *start.parents]:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            table = _read(candidate).get("tool", {}).get("journal")
            if table is not None:
                found.append((candidate, table))
            break
    return found


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise JournalUnavailable(f"cannot read the journal settings in {path}: {exc}.") from exc


def _checked(values: dict[str, Any], sources: dict[str, str]) -> JournalConfig:
    unknown = set(values) - _KEYS
    if unknown:
        where = ", ".join(sorted({sources[k] for k in unknown}))
        raise JournalUnavailable(
            f"unknown journal settings {sorted(unknown)} in {where}. Known: "
            f"{sorted(_KEYS)} (and retention keys {sorted(_RETENTION_KEYS)})."
        )
    durability = str(values.get("durability", "normal"))
    if durability not in ("normal", "full"):
        raise JournalUnavailable(
            f"durability {durability!r} (from {sources['durability']}) must be 'normal' or 'full'."
        )
    try:
        limit = int(values.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES))
    except (TypeError, ValueError) as exc:
        raise JournalUnavailable(
            f"max_payload_bytes {values['max_payload_bytes']!r} (from "
            f"{sources['max_payload_bytes']}) must be a whole number of bytes."
        ) from exc
    retention = values.get("retention", {})
    if not isinstance(retention, dict) or set(retention) - _RETENTION_KEYS:
        raise JournalUnavailable(
            f"[retention] in {sources.get('retention')} may hold {sorted(_RETENTION_KEYS)}, "
            f"not {retention!r}."
        )
    version = values.get("version")
    if version is not None and (
        not isinstance(version, str)
        or not version.strip()
        or not version.isprintable()
        or len(version) > 200
    ):
        raise JournalUnavailable(
            f"version {str(version)[:60]!r} (from {sources['version']}) must be a short line of "
            "text (at most 200 characters) naming the deployed code, such as a release tag or "
            "a commit id."
        )
    return JournalConfig(
        url=str(values.get("url", DEFAULT_URL)),
        version=version,
        durability=durability,
        max_payload_bytes=limit,
        retention=dict(retention),
        playbooks=_checked_playbooks(values.get("playbooks", {}), sources.get("playbooks")),
        sources={key: sources.get(key, "default") for key in _KEYS},
    )


def _checked_playbooks(table: Any, source: str | None) -> dict[str, str]:
    """The `[playbooks]` table (`[tool.journal.playbooks]` in pyproject.toml), checked."""
    if not isinstance(table, dict):
        raise JournalUnavailable(
            f"playbooks in {source} must be a table ([playbooks] in journal.toml, "
            f"[tool.journal.playbooks] in pyproject.toml) with keys {sorted(_PLAYBOOKS_KEYS)}, "
            f"not {table!r}."
        )
    unknown = set(table) - _PLAYBOOKS_KEYS
    if unknown:
        raise JournalUnavailable(
            f"unknown [playbooks] settings {sorted(unknown)} in {source}. Known: "
            f"{sorted(_PLAYBOOKS_KEYS)}."
        )
    on_divergence = table.get("on_divergence", "raise")
    if on_divergence not in ("raise", "fork"):
        raise JournalUnavailable(
            f"[playbooks] on_divergence {on_divergence!r} (from {source}) must be 'raise' (stop "
            "at the first call that differs from the journal) or 'fork' (keep the journal up to "
            "there and go on live)."
        )
    application = table.get("application")
    if application is not None and (
        not isinstance(application, str) or not _MODULE_NAME.fullmatch(application)
    ):
        raise JournalUnavailable(
            f"[playbooks] application {application!r} (from {source}) must be the dotted name "
            "of a Python module with an `async def main(program_paths, verbose)`, such as "
            "'playbooks.applications.agent_chat'."
        )
    return {key: str(value) for key, value in table.items()}
