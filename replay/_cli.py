"""The `journal` command: a thin coat over `Journal` methods (every command has a Python twin).

Exit codes: 0 success; 1 the journal said no (unknown run, unreadable or missing database,
bad value for an option); 2 bad usage (unknown option, missing argument); 3 `journal replay`
found that the run no longer reproduces (a changed call, a missing step, another result).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from journal import Journal, JournalError, RunStatus, parse_since
from journal._journal import DEFAULT_PATH

app = typer.Typer(
    name="journal",
    help="Inspect, replay and audit journaled workflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console() -> Console:
    # Piped output is not cut to 80 columns: tables keep every character for grep and diff.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Journal file or URL (sqlite:///path.db). Default: $JOURNAL_URL, else "
        ".journal/journal.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "running": "yellow",
    "waiting": "cyan",
    "cancelled": "dim",
    "retrying": "yellow",
    "started": "yellow",
}


def _fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}"
    )
    raise typer.Exit(1)


def _open(db: str | None) -> Journal:
    """The journal to read; a missing file is an error, never silently created."""
    target = db or os.environ.get("JOURNAL_URL") or str(DEFAULT_PATH)
    path = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    if "://" not in path and not Path(path).exists():
        _fail(
            f"no journal at {path}. Fix: pass --db PATH (or set JOURNAL_URL) to the journal "
            "your workflows write to."
        )
    try:
        return Journal(target)
    except JournalError as exc:
        _fail(str(exc))


def _seconds(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    total = delta.total_seconds()
    if total < 1:
        return f"{total * 1000:.1f} ms"
    if total < 120:
        return f"{total:.2f} s"
    return f"{total / 60:.1f} min"


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@app.command("runs")
def runs_command(
    db: DbOption = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only runs with this status: " + ", ".join(s.value for s in RunStatus)),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Only runs of this workflow (module:qualname).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs started since: 30m, 2h, 7d, or an ISO date.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first: id, workflow, status, steps, start, duration, resumes."""
    if status is not None and status not in {s.value for s in RunStatus}:
        _fail(
            f"unknown status {status!r}. Expected one of: " + ", ".join(s.value for s in RunStatus)
        )
    try:
        since_at = None if since is None else parse_since(since)
    except ValueError as exc:
        _fail(str(exc))
    with _open(db) as journal:
        digests = journal.digests(status=status, workflow=workflow, since=since_at, limit=limit)
    if as_json:
        _print_json([d.as_json() for d in digests])
        return
    console = _console()
    if not digests:
        console.print("no runs match")
        return
    table = Table(box=None, header_style="bold")
    for column in ("run", "workflow", "status", "steps", "started", "duration", "resumes"):
        table.add_column(
            column, justify="right" if column in ("steps", "resumes") else "left", no_wrap=True
        )
    for d in digests:
        table.add_row(
            escape(d.run.run_id),
            escape(d.run.workflow or "journaled block"),
            _styled(d.run.status.value),
            str(d.steps),
            _when(d.run.created_at),
            _seconds(d.duration),
            str(d.run.resumes),
        )
    console.print(table)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="The run to show.", show_default=False)],
    db: DbOption = None,
    payloads: Annotated[
        bool, typer.Option("--payloads", help="Print each event's arguments and value.")
    ] = False,
    step_key: Annotated[
        str | None, typer.Option("--step", help="Show every event of one step key, whole.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The run's timeline: seq, key (indented by task), kind, name, status, duration, size."""
    with _open(db) as journal:
        try:
            run = journal.run(run_id)
            entries = journal.timeline(run_id)
        except JournalError as exc:
            _fail(str(exc))
    if step_key is not None:
        entries = [entry for entry in entries if entry.event.key == step_key]
        if not entries:
            _fail(f"run {run_id!r} has no step {step_key!r}. `journal show {run_id}` lists them.")
        payloads = True
    if as_json:
        _print_json(
            {
                "run": {
                    "run_id": run.run_id,
                    "workflow": run.workflow,
                    "status": run.status.value,
                    "resumes": run.resumes,
                },
                "events": [entry.as_json(payloads=payloads) for entry in entries],
            }
        )
        return
    console = _console()
    console.print(
        f"[bold]{escape(run.run_id)}[/]  {escape(run.workflow or 'journaled block')}  "
        f"{_styled(run.status.value)}  resumes {run.resumes}  events {len(entries)}"
    )
    if payloads:
        for entry in entries:
            e, detail = entry.event, entry.as_json(payloads=True)
            console.print(
                f"{e.seq:>5}  {'  ' * entry.depth}{e.key}  {e.kind.value}  {escape(e.name)}  "
                f"{_styled(e.status.value)}  attempt {e.attempt}  {_seconds(entry.duration)}"
            )
            if detail["arguments"] is not None:
                console.print(f"       args:  {escape(_pretty(detail['arguments']))}")
            if detail["payload"] is not None and e.status.value != "started":
                console.print(f"       value: {escape(_pretty(detail['payload']))}")
        return
    table = Table(box=None, header_style="bold")
    for column in ("seq", "key", "kind", "name", "status", "attempt", "duration", "bytes"):
        right = column in ("seq", "attempt", "duration", "bytes")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for entry in entries:
        e = entry.event
        table.add_row(
            str(e.seq),
            "  " * entry.depth + e.key,
            e.kind.value,
            escape(e.name),
            _styled(e.status.value),
            str(e.attempt),
            _seconds(entry.duration),
            str(entry.payload_size),
        )
    console.print(table)


def _pretty(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else json.dumps(value, indent=2, ensure_ascii=False)


@app.command("replay")
def replay_command(
    run_id: Annotated[str, typer.Argument(help="The run to replay.", show_default=False)],
    db: DbOption = None,
    entry: Annotated[
        str | None,
        typer.Option(
            help="The workflow to run instead of the recorded one: module:function or "
            "path/to/file.py:function (needed for runs recorded by a script)."
        ),
    ] = None,
) -> None:
    """Re-run a recorded run offline against its journal; exit 3 if it no longer reproduces."""
    from ._errors import FrontierReached, NonDeterminismError
    from ._rerun import replay_run

    console = _console()
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does: workflows import from where you stand
    with _open(db) as journal:
        try:
            outcome = asyncio.run(replay_run(journal, run_id, entry=entry))
        except (NonDeterminismError, FrontierReached) as exc:
            _console_err().print(f"[bold red]does not reproduce:[/] {escape(str(exc))}")
            raise typer.Exit(3) from None
        except JournalError as exc:
            _fail(str(exc))
        except Exception as exc:  # the workflow failed where the recording did not
            recorded = journal.run(run_id)
            if recorded.status is RunStatus.FAILED:
                console.print(f"reproduced the recorded failure: {type(exc).__name__}: {exc}")
                return
            _console_err().print(
                f"[bold red]does not reproduce:[/] the workflow raised "
                f"{escape(type(exc).__name__)}: {escape(str(exc))}, the recording "
                f"{escape(recorded.status.value)}"
            )
            raise typer.Exit(3) from None
    summary = outcome.summary
    if summary.result_matches_recorded is False:
        _console_err().print(
            "[bold red]does not reproduce:[/] every step was served, but the result differs "
            f"from the recorded one.\n  now: {escape(repr(outcome.result))}"
        )
        raise typer.Exit(3)
    console.print(f"[green]reproduced[/]: {escape(str(summary))}")
    if summary.unconsumed:
        console.print(
            f"note: {len(summary.unconsumed)} recorded steps were never asked for: "
            + ", ".join(summary.unconsumed[:10])
        )


def _console_err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point of the `journal` script."""
    app()
