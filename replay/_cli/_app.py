"""The `journal` app and what its commands share: options, output, opening the journal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from journal import Journal, JournalError
from journal._config import load_config

from .._errors import ReplayError


class _Commands(typer.core.TyperGroup):
    """Every command: an error the journal or the engine raised that the command did not
    handle itself is one line on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (JournalError, ReplayError) as exc:
            fail(str(exc))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            for sub in getattr(command, "commands", {}).values():  # journal playbooks run
                _plain_placeholders(sub)
            _plain_placeholders(command)
        return command


PLACEHOLDERS = {
    "accept_versions": "VERSION",
    "at": "SEQ",
    "break_at": "KEY",
    "concurrency": "N",
    "db": "URL",
    "endpoint": "URL",
    "entry": "FILE:FUNCTION",
    "file": "FILE",
    "fmt": "FORMAT",
    "host": "ADDRESS",
    "imports": "MODULE",
    "keep_last": "N",
    "limit": "N",
    "new_run_id": "RUN",
    "offset": "N",
    "older_than": "AGE",
    "output": "FILE",
    "override": "KEY=JSON",
    "poll": "SECONDS",
    "port": "PORT",
    "prices": "FILE",
    "reason": "TEXT",
    "run_a": "RUN_A",
    "run_b": "RUN_B",
    "run_id": "RUN",
    "run_ids": "RUN",
    "since": "WHEN",
    "step_key": "KEY",
    "wait": "SECONDS",
}
"""What an option's value is, in its help (`--db URL`, `show RUN`): typer prints the Python
type (`--db <str>`, `{run_id} <str>`), which reads like an annotation."""


def _plain_placeholders(command: Any) -> None:
    for param in getattr(command, "params", ()):
        if param.metavar is not None or param.name is None:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        param.metavar = PLACEHOLDERS.get(param.name, param.name.upper())
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None  # the name says it: no `<str>` after


app = typer.Typer(
    name="journal",
    help="Inspect, replay and audit journaled workflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
    # Plain help, as the CLIs people script print it (click's own): flags without `<bool>`,
    # and `[tool.journal]` in a help text is text, not markup.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"journal-replay {version('journal-replay')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version of journal-replay and exit.",
        ),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Print the library's log lines on stderr: -v for what it does (info), -vv for "
            "everything (debug). Quiet otherwise.",
        ),
    ] = 0,
) -> None:
    """Inspect, replay and audit journaled workflow runs."""
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        for name in ("journal", "replay"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def console() -> Console:
    # Piped output is not cut to 80 columns: tables keep every character for grep and diff.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Journal file or URL (sqlite:///path.db, postgresql://user@host/db). Default: "
        "$JOURNAL_URL, journal.toml, [tool.journal] in pyproject.toml, else .journal/journal.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "running": "yellow",
    "waiting": "cyan",
    "submitted": "cyan",
    "interrupted": "magenta",
    "cancelled": "dim",
    "retrying": "yellow",
    "started": "yellow",
}


def fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(in_cli_words(message))}"
    )
    raise typer.Exit(1)


_PYTHON_HINTS = (
    ("List runs with Journal.runs().", "List runs with `journal runs`."),
    ("run with mode='resume' to continue live from here", "resume it (`journal resume RUN`)"),
    ("start it with mode='resume'", "start it by running your workflow"),
    (
        "or resume with on_divergence='fork' to keep the journal up to this step and continue "
        "live from here",
        "or fork the run before this step (`journal fork RUN --at SEQ`) and resume the fork",
    ),
    ("fork it (Journal.fork(run_id, at=N))", "fork it (`journal fork RUN --at SEQ`)"),
    (
        "it can simply be resumed: call run() again with its run_id.",
        "it can simply be resumed: `journal resume RUN`.",
    ),
)
"""Hints the library words for Python callers, and how the CLI says the same."""


def in_cli_words(message: str) -> str:
    """`message` with its Python-caller hints said as CLI commands."""
    for python, cli in _PYTHON_HINTS:
        message = message.replace(python, cli)
    return message


def open_journal(db: str | None, *, writing: bool = False) -> Journal:
    """The journal to use; a missing file is an error, never silently created. Unless the
    command `writing`, it is opened to read: nothing is written, not even a schema."""
    try:
        target = db or load_config().url
    except JournalError as exc:
        fail(str(exc))
    path = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    if "://" not in path and not Path(path).exists():
        fail(
            f"no journal at {path}. Fix: pass --db PATH (or set JOURNAL_URL) to the journal "
            "your workflows write to."
        )
    try:
        return Journal(target, read_only=not writing)
    except (JournalError, ValueError) as exc:  # ValueError: a bad ?schema=, say
        fail(str(exc))


def seconds_text(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    total = delta.total_seconds()
    if total < 1:
        return f"{total * 1000:.1f} ms"
    if total < 120:
        return f"{total:.2f} s"
    return f"{total / 60:.1f} min"


def when_text(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def workflow_output(as_json: bool) -> contextlib.AbstractContextManager[Any]:
    """With --json, what the workflow itself prints goes to stderr: stdout is the JSON alone."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def importable_from_here() -> None:
    """As `python -m` does: the workflows a command runs import from where you stand."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")
