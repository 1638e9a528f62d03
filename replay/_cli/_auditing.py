"""Commands for the audit trail: `journal export`, `journal verify`, `journal gc`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from journal import Journal, JournalError, RunStatus, RunVerification, parse_since
from journal._export import FORMATS
from journal._heads import head_text, parse_head
from journal._verify import HEAD_ROW

from ._app import (
    DbOption,
    JsonOption,
    app,
    console,
    error_console,
    fail,
    open_journal,
    print_json,
    styled,
    when_text,
)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None or str(path) == "-":
        yield sys.stdout
        return
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            yield handle
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}. Fix: choose a writable path with -o.")


@app.command("export")
def export_command(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="Runs to export (or --all).", show_default=False)
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Export every run.")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="jsonl, json, csv, html (one run), or otlp (traces sent to an OpenTelemetry "
            "collector).",
        ),
    ] = "jsonl",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write. Default: standard output."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="With -f otlp: the collector's OTLP/HTTP address, such as "
            "http://localhost:4318 (/v1/traces is added). Default: "
            "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT, else that one.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write runs to a file as they are read (constant memory): JSONL or JSON (they carry the
    hash chain and verify on their own), CSV, or a self-contained HTML timeline of one run.
    Or send them as OpenTelemetry traces to a collector (-f otlp): a trace per run, a span
    per step attempt."""
    if fmt != "otlp" and fmt not in FORMATS:
        fail(f"unknown format {fmt!r}. Expected one of: {', '.join(FORMATS)}, otlp.")
    if bool(run_ids) == all_runs:
        fail("name the runs to export, or pass --all (not both).")
    if fmt not in FORMATS:  # otlp, then (so the type checker knows `fmt` is a file format below)
        _export_otlp(run_ids, endpoint, output, db)
        return
    if endpoint is not None:
        fail("--endpoint is where -f otlp sends traces. Fix: add -f otlp, or drop --endpoint.")
    with open_journal(db) as journal:
        try:
            selected = [journal.run(r).run_id for r in run_ids] if run_ids else None
            total = sum(
                journal.store.count_events(r.run_id)
                for r in ([journal.run(x) for x in selected] if selected else journal.runs())
            )
        except JournalError as exc:
            fail(str(exc))
        with _output(output) as out, _progress("exporting", total, output is not None) as tick:
            try:
                written = journal.export(out, selected, format=fmt, on_event=tick)
            except (JournalError, ValueError) as exc:
                fail(str(exc))
    if output is not None:
        runs = (
            "all runs"
            if not selected
            else "1 run"
            if len(selected) == 1
            else f"{len(selected)} runs"
        )
        console().print(f"exported {written} events of {runs} to {escape(str(output))}")


def _export_otlp(
    run_ids: list[str] | None, endpoint: str | None, output: Path | None, db: str | None
) -> None:
    """`journal export -f otlp`: the runs' traces to a collector (`Journal.export_otlp`)."""
    if output is not None:
        fail(
            "-f otlp sends traces to a collector, it writes no file. Fix: drop -o, and name "
            "the collector with --endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)."
        )
    with open_journal(db) as journal:
        try:
            selected = [journal.run(r).run_id for r in run_ids] if run_ids else None
            from journal._otel import traces_endpoint

            url = traces_endpoint(endpoint)
            sent = journal.export_otlp(selected, endpoint=url)
        except ImportError as exc:
            fail(str(exc))
        except (JournalError, ValueError) as exc:
            fail(str(exc))
    runs = (
        "all runs" if not selected else "1 run" if len(selected) == 1 else f"{len(selected)} runs"
    )
    console().print(f"exported {sent} spans of {runs} to {escape(url)}")


@contextlib.contextmanager
def _progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[], None] | None]:
    """A progress bar on the terminal's stderr; a no-op when piped or writing to stdout."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=error_console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def _verdict_row(verdict: RunVerification) -> tuple[str, str, str, str]:
    broken = verdict.broken
    colour = {"intact": "green", "broken": "bold red", "unchained": "dim", "key_needed": "yellow"}
    where = ""
    if broken is not None:
        where = (
            broken.field  # the journal's head itself
            if verdict.run_id == HEAD_ROW
            else f"run {broken.field}"  # the run's header, its seal, or the head's entry for it
            if broken.seq is None
            else f"seq {broken.seq} · {broken.field}"
        )
    detail = broken.detail if broken is not None else verdict.note
    if verdict.verdict == "intact":
        detail = f"{verdict.events} events" + (", sealed" if verdict.sealed else ", not finished")
    return (
        escape(verdict.run_id),
        f"[{colour[verdict.verdict]}]{verdict.verdict.replace('_', ' ')}[/]",
        where,
        escape(detail),
    )


@app.command("verify")
def verify_command(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to verify. Default: every run.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify a JSONL or JSON export instead of the journal."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="A head kept elsewhere (N:HASH, as `journal head` printed it): also prove "
            "that nothing recorded up to it was removed or rewritten.",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute hash chains and seals, and the journal's head over all runs; name the first
    broken link. Exit 3 on any edit.

    With JOURNAL_HMAC_KEY set, chains recorded with that key are checked as signatures.
    """
    if since is not None:
        try:
            parse_head(since)
        except ValueError as exc:
            fail(str(exc))
    try:
        if file is not None:
            if not file.exists():
                fail(f"no file {file}. Fix: pass the path of an export (journal export -o).")
            verdicts = Journal("memory://").verify_export(file, since=since)
            if run_id is not None:
                verdicts = [v for v in verdicts if v.run_id == run_id]
                if not verdicts:
                    fail(f"{file} holds no run {run_id!r}.")
        else:
            with open_journal(db) as journal:
                verdicts = journal.verify(run_id, since=since)
    except JournalError as exc:
        fail(str(exc))
    if as_json:
        print_json(
            [
                {
                    "run_id": v.run_id,
                    "verdict": v.verdict,
                    "events": v.events,
                    "sealed": v.sealed,
                    "broken": None
                    if v.broken is None
                    else {"seq": v.broken.seq, "field": v.broken.field, "detail": v.broken.detail},
                    "note": v.note,
                }
                for v in verdicts
            ]
        )
    else:
        table = Table(box=None, header_style="bold")
        for column in ("run", "verdict", "where", "detail"):
            table.add_column(column, no_wrap=column != "detail")
        for verdict in verdicts:
            table.add_row(*_verdict_row(verdict))
        console().print(table if verdicts else "no runs to verify")
    if any(v.verdict == "broken" for v in verdicts):
        raise typer.Exit(3)
    if any(v.verdict == "key_needed" for v in verdicts):
        raise typer.Exit(1)


@app.command("head")
def head_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print the journal's head (N:HASH): keep it elsewhere, and `journal verify --since` it
    later proves that nothing recorded up to it was removed or rewritten."""
    try:
        with open_journal(db) as journal:
            entry = journal.head()
    except JournalError as exc:
        fail(str(exc))
    if as_json:
        print_json(
            {
                "head": head_text(entry),
                "entries": 0 if entry is None else entry.n,
                "at": None if entry is None else entry.at.isoformat(),
                "scheme": None if entry is None else entry.scheme,
            }
        )
        return
    typer.echo(head_text(entry))


@app.command("gc")
def gc_command(
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", min=0, help="Keep the N newest matching runs."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only runs started longer ago than this: 30d, 12h."),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only runs with this status (repeatable). Default: completed, failed, "
            "cancelled; running runs only when named.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retention: remove whole finished runs by age and count, logged in the journal.

    Other runs' chains are untouched; a run owned by a live process is never removed.
    """
    known = {s.value for s in RunStatus}
    for value in status or []:
        if value not in known:
            fail(f"unknown status {value!r}. Expected one of: {', '.join(sorted(known))}.")
    age = None
    if older_than is not None:
        now = datetime.now(UTC)
        try:
            age = now - parse_since(older_than, now=now)
        except ValueError as exc:
            fail(str(exc))
    with open_journal(db, writing=True) as journal:
        try:
            chosen = journal.gc(
                keep_last=keep_last, older_than=age, statuses=status, dry_run=dry_run
            )
        except (JournalError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        print_json({"dry_run": dry_run, "runs": [run.run_id for run in chosen]})
        return
    verb = "would remove" if dry_run else "removed"
    out = console()
    out.print(f"{verb} {len(chosen)} runs")
    for run in chosen:
        out.print(
            f"  {escape(run.run_id)}  {styled(run.status.value)}  started "
            f"{when_text(run.created_at)}"
        )
