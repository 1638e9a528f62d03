"""`journal upgrade-check`: the gate before a deploy, run over the real journal."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._upgrade import IN_FLIGHT, UpgradeVerdict, runs_to_check, upgrade_check
from ._app import (
    DbOption,
    JsonOption,
    app,
    console,
    error_console,
    fail,
    importable_from_here,
    in_cli_words,
    open_journal,
    print_json,
    workflow_output,
)


@app.command("upgrade-check")
def upgrade_check_command(
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            help="A module of the new code (repeatable), e.g. myapp.workflows: only runs of "
            "workflows in these modules are checked. Without it, every run of the statuses.",
        ),
    ] = None,
    status: Annotated[
        str,
        typer.Option(
            help="Comma-separated statuses of the runs to check: interrupted, waiting, "
            "running, completed, failed, cancelled.",
        ),
    ] = ",".join(IN_FLIGHT),
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay the runs in flight offline against the code as it is now; exit 3 if any would
    diverge (or cannot be replayed), naming the step and showing the difference.

    Run it in CI before a deploy, with the new code checked out, against a copy of (or a
    read-only URL to) the production journal. Nothing is written and nothing runs live.
    """
    importable_from_here()
    modules = imports or []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            fail(f"cannot import {module!r}: {exc}. Fix: run from your project's root.")
    statuses = [s.strip() for s in status.split(",") if s.strip()]
    with open_journal(db) as journal:
        try:
            total = len(runs_to_check(journal, statuses, modules))
        except ValueError as exc:
            fail(str(exc))
        with workflow_output(as_json):
            verdicts = _check_with_progress(journal, statuses, modules, total)
    failing = [v for v in verdicts if not v.ok]
    if as_json:
        print_json(
            {
                "checked": len(verdicts),
                "diverging": sum(v.verdict == "diverges" for v in verdicts),
                "unchecked": sum(v.verdict == "unchecked" for v in verdicts),
                "skipped": sum(v.verdict == "skipped" for v in verdicts),
                "runs": [dataclasses.asdict(v) for v in verdicts],
            }
        )
    else:
        _print(verdicts, failing, statuses, modules)
    if failing:
        raise typer.Exit(3)


def _check_with_progress(
    journal: Any, statuses: list[str], modules: list[str], total: int
) -> list[UpgradeVerdict]:
    if not sys.stderr.isatty() or total == 0:
        return asyncio.run(upgrade_check(journal, statuses=statuses, modules=modules))
    columns = (
        TextColumn("checking runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=error_console(), transient=True) as bar:
        task = bar.add_task("upgrade-check", total=total)

        def advance(checked: int, _total: int) -> None:
            bar.update(task, completed=checked)

        return asyncio.run(
            upgrade_check(journal, statuses=statuses, modules=modules, progress=advance)
        )


def _print(
    verdicts: list[UpgradeVerdict],
    failing: list[UpgradeVerdict],
    statuses: list[str],
    modules: list[str],
) -> None:
    out = console()
    scope = f" of {', '.join(modules)}" if modules else ""
    if not verdicts:
        out.print(f"no {' or '.join(statuses)} runs{scope} to check")
        return
    for v in failing:
        out.print(
            f"[bold red]{v.verdict}[/] {escape(v.run_id)} ({escape(v.workflow or 'a block')}, "
            f"{v.status}, {v.served} steps served)\n  {escape(in_cli_words(v.detail))}"
        )
    skipped = [v for v in verdicts if v.verdict == "skipped"]
    if skipped:
        out.print(
            f"skipped {len(skipped)} journaled(...) block runs ("
            + ", ".join(escape(v.run_id) for v in skipped[:10])
            + "): replaying one calls the function that holds the block, which runs its own "
            "code live; check them with `journal replay` on a copy of the journal"
        )
    continuing = len(verdicts) - len(failing) - len(skipped)
    colour = "red" if failing else "green"
    out.print(
        f"[{colour}]{len(verdicts)} {' or '.join(statuses)} runs{scope} checked: "
        f"{continuing} continue on this code, "
        f"{sum(v.verdict == 'diverges' for v in failing)} would diverge, "
        f"{sum(v.verdict == 'unchecked' for v in failing)} could not be replayed[/]"
    )
