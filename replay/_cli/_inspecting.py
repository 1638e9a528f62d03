"""Commands that read: `journal runs`, `journal show`, `journal diff`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from journal import JournalError, RunStatus, StepSide, parse_since
from journal._inspect import run_state

from ._app import (
    DbOption,
    JsonOption,
    app,
    console,
    error_console,
    fail,
    open_journal,
    print_json,
    seconds_text,
    styled,
    when_text,
)


@app.command("runs")
def runs_command(
    db: DbOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only runs with this status: "
            + ", ".join(s.value for s in RunStatus)
            + ", or interrupted (running with no live owner: resume it)"
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option(help="Only runs of this workflow (module:qualname).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs started since: 30m, 2h, 7d, or an ISO date.")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="Only runs started by this version of the code (as the version column shows).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="At most this many runs (a page); says so if more match.")
    ] = 50,
    offset: Annotated[
        int, typer.Option(min=0, help="Skip this many matching runs first: the next page.")
    ] = 0,
    prices: Annotated[
        Path | None,
        typer.Option(
            help='A JSON price table, {"model": {"input": $, "output": $}} per million tokens: '
            "adds each run's estimated LLM cost.",
        ),
    ] = None,
    as_json: JsonOption = False,
    as_jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Print one JSON object per run, a line each.")
    ] = False,
) -> None:
    """List runs, newest first: id, workflow, status, steps, start, duration, resumes; LLM
    tokens (and an estimated cost with --prices) when integrations recorded usage. A page of
    --limit runs at a time (--offset for the next); when more match, stderr says so."""
    statuses = [s.value for s in RunStatus] + ["interrupted"]
    if status is not None and status not in statuses:
        fail(f"unknown status {status!r}. Expected one of: " + ", ".join(statuses))
    try:
        since_at = None if since is None else parse_since(since)
    except ValueError as exc:
        fail(str(exc))
    price_table = None if prices is None else _read_prices(prices)
    with open_journal(db) as journal:
        digests = journal.digests(
            status=status,
            workflow=workflow,
            since=since_at,
            limit=limit + 1,  # one more: whether the page is all there is
            offset=offset,
            prices=price_table,
            version=version,
        )
    more = len(digests) > limit
    digests = digests[:limit]
    if more:
        error_console().print(
            f"showing runs {offset + 1}-{offset + limit}; more match: --offset {offset + limit} "
            "for the next page, or a larger --limit"
        )
    if as_jsonl:
        for d in digests:
            print(json.dumps(d.as_json(), ensure_ascii=False))
        return
    if as_json:
        print_json([d.as_json() for d in digests])
        return
    out = console()
    if not digests:
        out.print("no runs match")
        return
    table = Table(box=None, header_style="bold")
    columns = ["run", "workflow", "status", "steps", "started", "duration", "resumes"]
    with_versions = any(d.run.version for d in digests)
    if with_versions:
        columns.append("version")
    with_tokens = any(d.input_tokens or d.output_tokens for d in digests)
    if with_tokens:
        columns.append("tokens in/out")
    if price_table is not None:
        columns.append("est. cost")
    for column in columns:
        right = column in ("steps", "resumes", "tokens in/out", "est. cost")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for d in digests:
        row = [
            escape(d.run.run_id),
            escape(d.run.workflow or "journaled block"),
            styled(d.state),
            str(d.steps),
            when_text(d.run.created_at),
            seconds_text(d.duration),
            str(d.run.resumes),
        ]
        if with_versions:
            row.append(escape(d.run.version or "-"))
        if with_tokens:
            row.append(f"{d.input_tokens}/{d.output_tokens}")
        if price_table is not None:
            row.append(_cost_text(d.cost))
        table.add_row(*row)
    out.print(table)


def _cost_text(cost: float | None) -> str:
    if cost is None:
        return "unpriced model"
    return f"${cost:.4f}" if cost >= 0.01 else f"${cost:.6f}"  # cents, or what a call costs


def _read_prices(path: Path) -> dict[str, dict[str, float]]:
    """The price table, checked: every model needs numeric `input` and `output` prices."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read the price table {path}: {exc}.")
    example = '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'
    if not isinstance(table, dict) or not all(
        isinstance(price, dict)
        and isinstance(price.get("input"), int | float)
        and isinstance(price.get("output"), int | float)
        for price in table.values()
    ):
        fail(
            f"{path} is not a price table. Expected model names mapped to USD per million "
            f"tokens, e.g. {example}."
        )
    return table


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
    with open_journal(db) as journal:
        try:
            run = journal.run(run_id)
            entries = journal.timeline(run_id)
        except JournalError as exc:
            fail(str(exc))
    state = run_state(run, bool(entries))
    if step_key is not None:
        entries = [entry for entry in entries if entry.event.key == step_key]
        if not entries:
            fail(f"run {run_id!r} has no step {step_key!r}. `journal show {run_id}` lists them.")
        payloads = True
    if as_json:
        print_json(
            {
                "run": {
                    "run_id": run.run_id,
                    "workflow": run.workflow,
                    "status": run.status.value,
                    "state": state,
                    "resumes": run.resumes,
                    "version": run.version,
                },
                "events": [entry.as_json(payloads=payloads) for entry in entries],
            }
        )
        return
    out = console()
    out.print(
        f"[bold]{escape(run.run_id)}[/]  {escape(run.workflow or 'journaled block')}  "
        f"{styled(state)}  resumes {run.resumes}  events {len(entries)}"
        + (f"  version {escape(run.version)}" if run.version else "")
    )
    if payloads:
        for entry in entries:
            e, detail = entry.event, entry.as_json(payloads=True)
            out.print(
                f"{e.seq:>5}  {'  ' * entry.depth}{e.key}  {e.kind.value}  {escape(e.name)}  "
                f"{styled(e.status.value)}  attempt {e.attempt}  {seconds_text(entry.duration)}"
            )
            if detail["arguments"] is not None:
                out.print(f"       args:  {escape(_pretty(detail['arguments']))}")
            if detail["payload"] is not None and e.status.value != "started":
                out.print(f"       value: {escape(_pretty(detail['payload']))}")
            if "llm" in detail:
                out.print(f"       llm:   {escape(_usage_text(detail['llm']))}")
        return
    usages = [entry.as_json().get("llm") for entry in entries]
    columns = ["seq", "key", "kind", "name", "status", "attempt", "duration", "bytes"]
    if any(usages):
        columns.append("llm")
    table = Table(box=None, header_style="bold")
    for column in columns:
        right = column in ("seq", "attempt", "duration", "bytes")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for entry, usage in zip(entries, usages, strict=True):
        e = entry.event
        row = [
            str(e.seq),
            "  " * entry.depth + e.key,
            e.kind.value,
            escape(e.name),
            styled(e.status.value),
            str(e.attempt),
            seconds_text(entry.duration),
            str(entry.payload_size),
        ]
        if len(columns) > 8:
            row.append(escape(_usage_text(usage)) if usage else "")
        table.add_row(*row)
    out.print(table)


def _usage_text(usage: dict[str, Any]) -> str:
    """`gpt-4o-mini 11+3 tokens stop`: model, input+output tokens, finish reason."""
    tokens = f"{usage.get('input_tokens') or 0}+{usage.get('output_tokens') or 0} tokens"
    parts = [str(usage.get("model") or "?"), tokens, str(usage.get("finish_reason") or "")]
    return " ".join(part for part in parts if part)


def _pretty(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else json.dumps(value, indent=2, ensure_ascii=False)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> str:
    return _short(json.dumps(value, ensure_ascii=False, default=repr), 200)


def _brief(value: Any) -> str:
    """A header value on one line; a recorded error as `type: message`, not its traceback."""
    if isinstance(value, dict) and {"type", "message"} <= value.keys():
        return f"{value['type']}: {value['message']}"
    return _short(value, 200)


def _side(step: StepSide | None) -> str:
    if step is None:
        return "—"
    return f"{step.status} {_brief(step.outcome)[:60]}"


@app.command("diff")
def diff_command(
    run_a: Annotated[str, typer.Argument(help="The first run.", show_default=False)],
    run_b: Annotated[str, typer.Argument(help="The run to compare it with.", show_default=False)],
    db: DbOption = None,
    all_steps: Annotated[
        bool, typer.Option("--all", help="List the steps that are the same too.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare two runs step by step: where they first differ, then each differing step side
    by side. Exit 0 when they are the same, 3 when they differ."""
    with open_journal(db) as journal:
        try:
            diff = journal.diff(run_a, run_b)
        except JournalError as exc:
            fail(str(exc))
    if as_json:
        print_json(
            {
                "identical": diff.identical,
                "header": [{"field": field, "a": a, "b": b} for field, a, b in diff.header],
                "steps": [
                    {
                        "key": step.key,
                        "change": step.change,
                        "fields": list(step.fields),
                        "a": None if step.a is None else _side_json(step.a),
                        "b": None if step.b is None else _side_json(step.b),
                    }
                    for step in diff.steps
                ],
            }
        )
        raise typer.Exit(0 if diff.identical else 3)
    out = console()
    if diff.identical:
        steps = len(diff.steps)
        out.print(f"[green]same[/]: {escape(run_a)} and {escape(run_b)} agree on all {steps} steps")
        return
    for field, a, b in diff.header:
        out.print(f"{field}: {escape(_brief(a))} [bold]->[/] {escape(_brief(b))}")
    first = diff.first_difference
    if first is not None:
        name = (first.a or first.b).name  # type: ignore[union-attr]
        what = ", ".join(first.fields) or first.change.replace("_", " ")
        out.print(f"[bold]first difference[/]: step {first.key} ({escape(name)}): {escape(what)}")
        for argument, a, b in diff.argument_changes(first):
            out.print(f"  {escape(argument)}: {escape(_json(a))} -> {escape(_json(b))}")
    table = Table(box=None, header_style="bold")
    for column in ("key", "name", "change", run_a, run_b):
        table.add_column(escape(column), no_wrap=column in ("key", "change"))
    for step in diff.steps:
        if step.change == "same" and not all_steps:
            continue
        name = (step.a or step.b).name  # type: ignore[union-attr]
        change = step.change if step.change != "changed" else ", ".join(step.fields)
        colour = "green" if step.change == "same" else "yellow"
        table.add_row(
            step.key,
            escape(name),
            f"[{colour}]{escape(change)}[/]",
            escape(_side(step.a)),
            escape(_side(step.b)),
        )
    out.print(table)
    raise typer.Exit(3)


def _side_json(step: StepSide) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "attempts": step.attempts,
        "arguments": step.arguments,
        "outcome": step.outcome,
    }
