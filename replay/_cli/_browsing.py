"""`journal datasette`: browse a SQLite journal in Datasette, read-only."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from journal import Journal, JournalError
from journal._browse_metadata import datasette_metadata
from journal._config import load_config

from ._app import DbOption, app, console, fail, print_json


def _journal_file(db: str | None) -> Path:
    """The SQLite file `--db` (or the configuration) names; anything else is an error."""
    try:
        target = db or load_config().url
    except JournalError as exc:
        fail(str(exc))
    path = target.removeprefix("sqlite:///")
    if "://" in path:
        fail(
            f"{target} is not a SQLite file, and Datasette reads only SQLite. Fix: pass --db "
            "with the path of a SQLite journal (a PostgreSQL journal is browsed with "
            "`journal runs` and `journal show`, or any PostgreSQL client)."
        )
    if "?" in path or "#" in path or "%" in path:
        fail(
            f"Datasette cannot open {path}: it passes the path to SQLite as a URI, where ?, "
            "# and % mean something else. Fix: copy or link the journal to a path without "
            "them."
        )
    if Path(path).stem == "_internal":
        fail(
            f"Datasette cannot serve {path}: it names a database after its file's stem, and "
            "_internal is its own database. Fix: copy or link the journal to another name."
        )
    return Path(path)


def _unmerged_wal(path: Path) -> int:
    """Bytes in the journal's write-ahead log: commits a process made (it still has the file
    open, or it crashed) that may not be in the main file yet."""
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@app.command("datasette")
def datasette_command(
    db: DbOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anyone who can reach it reads the whole journal: "
            "keep it on this machine."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 8001,
    immutable: Annotated[
        bool,
        typer.Option(
            "--immutable",
            help="Open the file as immutable: faster, with row counts, but it shows nothing "
            "written after it opened. Only for a journal nothing writes to any more (an "
            "archive, a copy); refused while the file has a write-ahead log.",
        ),
    ] = False,
    metadata_only: Annotated[
        bool,
        typer.Option(
            "--metadata-only",
            help="Print the journal's Datasette metadata (JSON, for `datasette -m`) and exit.",
        ),
    ] = False,
) -> None:
    """Browse a SQLite journal in Datasette, read-only: runs, events and signals with their
    columns described, JSON values pretty-printed, dates as dates, facets and canned queries
    (a run's events, LLM calls). Nothing can write to the file: SQLite opens it read-only
    and every connection is query-only. Needs `pip install 'journal-replay[datasette]'`."""
    path = _journal_file(db)
    name = path.stem
    if metadata_only:
        print_json(datasette_metadata(name))
        return
    if not path.is_file():
        fail(
            f"no journal at {path}. Fix: pass --db PATH (or set JOURNAL_URL) to the journal "
            "your workflows write to."
        )
    with Journal(path, read_only=True):
        pass  # the file is a journal this version can read (errors say what is wrong)
    if immutable and (pending := _unmerged_wal(path)):
        fail(
            f"{path} has {pending} bytes in its write-ahead log ({path.name}-wal): commits "
            "that may not be in the main file yet, which immutable mode would not show. A "
            "process has the journal open to write, or the last one to close it could not "
            "merge them (it crashed, or a read-only reader such as Datasette was still open). "
            "Fix: drop --immutable (read-only mode follows a live journal), or, once nothing "
            f"writes to it, merge them: sqlite3 {path} 'PRAGMA wal_checkpoint(TRUNCATE)'."
        )
    try:
        from journal._datasette import journal_datasette, serve
    except ImportError as exc:
        fail(f"Datasette is not installed ({exc}). Fix: pip install 'journal-replay[datasette]'.")
    datasette = journal_datasette(path, immutable=immutable)
    mode = "immutable" if immutable else "read-only"
    route = datasette.urls.database(name)  # encoded: a stem may hold spaces, dots, accents

    def announce(address: str) -> None:
        console().print(
            f"Datasette: {escape(str(path))} ({mode}) at {escape(address + route)}  "
            "(Ctrl+C stops it)"
        )

    try:
        serve(datasette, host, port, announce)
    except socket.gaierror as exc:
        fail(
            f"cannot listen on {host}: {exc.strerror}. Fix: pass --host an address of this "
            "machine, such as 127.0.0.1."
        )
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}. Fix: choose another --port.")
