"""Commands that act on runs in flight: `journal signal` (input for a run that waits) and
`journal cancel` (end a run that should not go on)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from journal import JournalError, RunStatus

from .._cancel import cancel
from ._app import (
    DbOption,
    JsonOption,
    app,
    console,
    error_console,
    fail,
    open_journal,
    print_json,
)


@app.command("signal")
def signal_command(
    run_id: Annotated[str, typer.Argument(help="The run to send to.", show_default=False)],
    name: Annotated[str, typer.Argument(help="The signal's name.", show_default=False)],
    value: Annotated[str, typer.Argument(help='The value, as JSON: true, 42, "text", {"ok": 1}.')],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send input to a run (a person's approval, an answer): a run waiting for NAME becomes
    due and a worker continues it; a run that has not asked yet keeps it until it does."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"{value!r} is not JSON ({exc}); a string needs quotes: '\"approved\"'"
        ) from exc
    with open_journal(db, writing=True) as journal:
        try:
            number = journal.signal(run_id, name, parsed)
            run = journal.run(run_id)
        except (JournalError, ValueError) as exc:  # ValueError: a name the engine keeps
            fail(str(exc))
    due = run.status.value == "waiting" and run.waiting_for == name
    if as_json:
        print_json(
            {
                "run_id": run_id,
                "name": name,
                "number": number,
                "due": due,
                "status": run.status.value,
            }
        )
        return
    state = (
        "it was waiting for it and is due now"
        if due
        else f"kept until the run asks for it (the run is {run.status.value})"
    )
    console().print(f"signal {escape(name)} #{number} sent to {escape(run_id)}: {state}")


@app.command("cancel")
def cancel_command(
    run_id: Annotated[str, typer.Argument(help="The run to cancel.", show_default=False)],
    reason: Annotated[
        str, typer.Option(help="Why it is cancelled, recorded as the run's error.")
    ] = "",
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait for a run's live owner to stop it; exit 1 if it has not "
            "by then. Default: do not wait.",
        ),
    ] = 0.0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a run that should not go on. A run nobody owns (waiting, interrupted, never started)
    is cancelled at once. A run a live process owns is stopped by that process within about
    2 s: the workflow gets CancelledError, and the run is finished cancelled. Its child runs
    go with it. A cancelled run is final: workers skip it and calling it again raises
    RunCancelled."""
    with open_journal(db, writing=True) as journal:
        try:
            run = cancel(journal, run_id, reason)
        except JournalError as exc:
            fail(str(exc))
        deadline = time.monotonic() + wait
        while run.status is not RunStatus.CANCELLED and time.monotonic() < deadline:
            time.sleep(0.2)
            run = journal.run(run_id)
    done = run.status is RunStatus.CANCELLED
    owner = run.owner
    if as_json:
        print_json(
            {
                "run_id": run_id,
                "status": run.status.value,
                "cancelled": done,
                "owner": None if owner is None else {"pid": owner.pid, "host": owner.host},
            }
        )
    elif done:
        console().print(f"cancelled run {escape(run_id)}")
    elif run.status in (RunStatus.COMPLETED, RunStatus.FAILED):
        error_console().print(
            f"run {escape(run_id)} {run.status.value} before it could be cancelled: its "
            "outcome is recorded and stays"
        )
    else:
        who = "its owner" if owner is None else f"its owner (pid {owner.pid} on {owner.host})"
        waited = f"; not cancelled after waiting {wait:g} s" if wait else ""
        console().print(
            f"asked {escape(who)} to cancel run {escape(run_id)}: it stops within about 2 s "
            f"and is then cancelled (`journal show {escape(run_id)}` tells){waited}"
        )
    if (wait or run.status in (RunStatus.COMPLETED, RunStatus.FAILED)) and not done:
        raise typer.Exit(1)
