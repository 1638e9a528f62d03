"""A journal file served by Datasette, read-only: the app, its plugin, and the server.

Datasette opens the file with SQLite's `mode=ro` (it sees what workers commit while you
browse) or, for a journal nothing writes to any more, `immutable=1`. On top of that the plugin
makes every connection to a journal `query_only` and blanks the column that holds the
journal's redaction salt, so neither Datasette nor a query typed into it can change the file
or read the secret. JSON columns (orjson bytes in BLOBs, which Datasette would show as
`<Binary: N bytes>`) are shown pretty-printed, and moments stored as Unix seconds as dates.

Needs the `datasette` extra; only `journal datasette` imports this module.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from datasette import hookimpl  # type: ignore[import-untyped]
from datasette.app import Datasette  # type: ignore[import-untyped]
from datasette.plugins import pm  # type: ignore[import-untyped]
from datasette.utils import tilde_encode  # type: ignore[import-untyped]
from markupsafe import Markup

from ._browse_metadata import (
    PLUGIN,
    SECRET_COLUMNS,
    datasette_metadata,
    json_column,
    time_column,
)
from ._chunks import ChunkDamaged, expand, is_template, refs_of
from .stores._sqlite import NODES_FROM

_LINKED_RUN_IDS = {"events", "signals", "heads", "retention_log"}
"""Tables whose `run_id` cell links to the run's row."""


def _is_journal(datasette: Any, database: str | None) -> bool:
    return bool(database) and bool(datasette.plugin_config(PLUGIN, database=database))


def _authorize(action: int, first: str | None, second: str | None, *_: Any) -> int:
    """SQLite authorizer: the secret columns read as NULL, whatever the query."""
    if action == sqlite3.SQLITE_READ and (first, second) in SECRET_COLUMNS:
        return sqlite3.SQLITE_IGNORE
    return sqlite3.SQLITE_OK


@hookimpl  # type: ignore[untyped-decorator]
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    """Every connection Datasette opens to a journal refuses writes and hides the salt."""
    if _is_journal(datasette, database):
        conn.execute("PRAGMA query_only = 1")
        conn.set_authorizer(_authorize)


def _pretty_json(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None  # not JSON text: Datasette's own rendering (a download link)
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return json.dumps(parsed, indent=2, ensure_ascii=False)


@hookimpl  # type: ignore[untyped-decorator]
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Markup | Callable[[], Awaitable[Markup]] | None:
    """A journal's JSON cells pretty-printed (escaped: recorded content is never markup),
    its Unix-second moments as UTC dates, and a run id as a link to the run."""
    if value is None or not _is_journal(datasette, database):
        return None
    if json_column(table, column):
        template = value.encode() if isinstance(value, str) else value  # CAST(... AS TEXT)
        if isinstance(template, bytes) and is_template(template):
            return _expanded(template, datasette.get_database(database))
        text = _pretty_json(value)
        if text is not None:
            return _json_markup(text)
    elif time_column(table, column) and isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
        return Markup('<span title="{}">{}</span>').format(
            value, moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
        )
    elif column == "run_id" and table in _LINKED_RUN_IDS and isinstance(value, str):
        href = datasette.urls.row(database, "runs", tilde_encode(value))
        return Markup('<a href="{}">{}</a>').format(href, value)
    return None


def _json_markup(text: str) -> Markup:
    return Markup('<pre class="journal-json" style="{}">{}</pre>').format(
        "margin:0; max-height:24em; overflow:auto; white-space:pre-wrap", text
    )


def _expanded(template: bytes, database: Any) -> Callable[[], Awaitable[Markup]]:
    """A cell holding a long call record's template, rendered as the record it stands for
    (Datasette awaits what `render_cell` returns as a coroutine function)."""

    async def render() -> Markup:
        names = orjson.dumps(refs_of(template)).decode()
        rows = (await database.execute(NODES_FROM, [names])).rows
        nodes = {row[0]: (row[1], row[2]) for row in rows}
        wanted = orjson.dumps(sorted({row[2] for row in rows}.union(refs_of(template))))
        found = await database.execute(
            "SELECT name, body FROM chunk_blobs WHERE name IN (SELECT value FROM json_each(?))",
            [wanted.decode()],
        )
        blobs = {row[0]: bytes(row[1]) for row in found.rows}
        try:
            text = _pretty_json(expand(template, nodes, blobs))
        except ChunkDamaged as exc:
            return Markup("<em>{}</em>").format(
                f"a long call record whose {exc} (journal verify reports it)"
            )
        return _json_markup(text or "")

    return render


def _register() -> None:
    """This module's hooks, once per process, under the metadata's plugin name."""
    if pm.get_plugin(PLUGIN) is None:
        pm.register(sys.modules[__name__], name=PLUGIN)


def database_name(path: Path) -> str:
    """The name Datasette gives the database of the file `path` (its stem)."""
    return path.stem


def journal_datasette(path: Path, *, immutable: bool) -> Datasette:
    """A Datasette app over the journal file `path` (already checked to be a journal), with
    the journal's metadata and the plugin."""
    _register()
    files = {"immutables": [str(path)]} if immutable else {"files": [str(path)]}
    datasette = Datasette(
        metadata=datasette_metadata(database_name(path)),
        # No download of the whole file (Datasette offers it for an immutable one): the file
        # holds the redaction salt that every query reads as null.
        settings={"sql_time_limit_ms": 3000, "allow_download": False},
        **files,
    )
    return datasette


def serve(datasette: Datasette, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve until SIGINT/SIGTERM, then return. The socket is bound first (port 0: a free
    one), so `announce` gets the real address before the first request can arrive."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    asyncio.run(datasette.invoke_startup())  # its errors before the address is announced
    server = uvicorn.Server(uvicorn.Config(datasette.app(), log_level="warning", access_log=False))

    def stop(signum: int, frame: object) -> None:
        # Before uvicorn has its own handlers, and after: it restores these once it has shut
        # down and raises the signal again, which must end the call, not the process.
        server.should_exit = True

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        announce(f"http://{shown}:{sock.getsockname()[1]}")
        server.run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
