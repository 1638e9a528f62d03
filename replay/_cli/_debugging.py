"""Commands that re-run: `journal replay`, `journal resume`, `journal retry`, `journal fork`,
`journal worker`."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from journal import JournalError, Run, RunCancelled, RunStatus
from journal._exceptions import RecordedError

from .._errors import FrontierReached, NonDeterminismError, Suspended, VersionNotAccepted
from .._log import get_logger
from .._rerun import replay_run, resume_run, retry_run
from .._session import RunSummary, Session
from .._upgrade import same_recorded_failure
from .._worker import DEFAULT_CONCURRENCY, Worker, WorkerStats
from .._workflow import RunOutcome
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

EntryOption = Annotated[
    str | None,
    typer.Option(
        help="The workflow to run instead of the recorded one: module:function or "
        "path/to/file.py:function (needed for runs recorded by a script)."
    ),
]


def _replay_with_progress(
    journal: Any,
    run_id: str,
    entry: str | None,
    allow_live: bool,
    break_at: str | None,
    sessions: list[Session],
) -> RunOutcome[Any]:
    """Replay, with a progress bar on a terminal (not while pdb owns it, not when piped)."""
    if break_at is not None or not sys.stderr.isatty():
        return asyncio.run(
            replay_run(
                journal,
                run_id,
                entry=entry,
                allow_live=allow_live,
                break_at=break_at,
                sessions=sessions,
            )
        )
    columns = (
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps served"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=error_console(), transient=True) as bar:
        task = bar.add_task("replay", total=None)

        def advance(served: int, total: int) -> None:
            bar.update(task, completed=served, total=total)

        return asyncio.run(
            replay_run(
                journal,
                run_id,
                entry=entry,
                allow_live=allow_live,
                progress=advance,
                sessions=sessions,
            )
        )


@app.command("replay")
def replay_command(
    run_id: Annotated[str, typer.Argument(help="The run to replay.", show_default=False)],
    db: DbOption = None,
    entry: EntryOption = None,
    allow_live: Annotated[
        bool,
        typer.Option(
            "--allow-live",
            help="Past the last recorded step, run live instead of stopping (nothing is "
            "recorded: a replay never changes the journal).",
        ),
    ] = False,
    break_at: Annotated[
        str | None,
        typer.Option(
            "--break-at",
            help="Stop in pdb, in the workflow's frame, when the step with this key is served.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run a recorded run offline against its journal; exit 3 if it no longer reproduces."""
    importable_from_here()
    out = console()

    def differs(reason: str, summary: RunSummary | None = None) -> NoReturn:
        if as_json:
            print_json(_replayed(run_id, False, reason, summary))
        else:
            error_console().print(
                f"[bold red]does not reproduce:[/] {escape(in_cli_words(reason))}"
            )
        raise typer.Exit(3)

    sessions: list[Session] = []
    with open_journal(db) as journal:
        try:
            with workflow_output(as_json):
                outcome = _replay_with_progress(
                    journal, run_id, entry, allow_live, break_at, sessions
                )
        except (NonDeterminismError, FrontierReached) as exc:
            differs(str(exc))
        except RunCancelled as exc:  # the replay reached where the run was cancelled
            if journal.run(run_id).status is not RunStatus.CANCELLED:
                differs(f"the replay was cancelled, the recording was not: {exc}")
            if as_json:
                print_json(_replayed(run_id, True, f"the recorded cancellation: {exc.reason}"))
            else:
                out.print(f"reproduced up to where the run was cancelled: {exc.reason or '-'}")
            return
        except JournalError as exc:
            fail(str(exc))
        except Exception as exc:  # the workflow failed where the recording did not
            recorded = journal.run(run_id)
            failure = f"{type(exc).__name__}: {exc}"
            if recorded.status is RunStatus.FAILED and not same_recorded_failure(
                journal, recorded, exc, sessions
            ):
                differs(
                    f"the workflow raised {failure}, the recording failed with {_error(recorded)}"
                )
            if recorded.status is RunStatus.FAILED:
                if as_json:
                    print_json(_replayed(run_id, True, f"the recorded failure: {failure}"))
                else:
                    out.print(f"reproduced the recorded failure: {failure}")
                return
            differs(
                f"the workflow raised {type(exc).__name__}: {exc}, the recording "
                f"{recorded.status.value}"
            )
    summary = outcome.summary
    if summary.result_matches_recorded is False:
        differs(
            f"the result differs from the recorded one.\n  now: {outcome.result!r}\n  {summary}",
            summary,
        )
    if as_json:
        print_json(_replayed(run_id, True, None, summary))
        return
    out.print(f"[green]reproduced[/]: {escape(str(summary))}")
    if summary.unconsumed:
        out.print(
            f"note: {len(summary.unconsumed)} recorded steps were never asked for: "
            + ", ".join(summary.unconsumed[:10])
        )


def _error(run: Run) -> str:
    """The run's recorded error, `Type: message`."""
    try:
        recorded = RecordedError.model_validate_json(run.error or b"")
    except ValueError:
        return "an error the journal cannot read"
    return recorded.summary()


def _replayed(
    run_id: str, reproduced: bool, detail: str | None, summary: RunSummary | None = None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "reproduced": reproduced,
        "detail": detail,
        "summary": None if summary is None else dataclasses.asdict(summary),
    }


AcceptVersionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-version",
        help="Also continue runs started by this version of the code (repeatable; '*' for "
        "any): check them with `journal upgrade-check` first.",
    ),
]


@app.command("resume")
def resume_command(
    run_id: Annotated[str, typer.Argument(help="The run (or fork) to resume.", show_default=False)],
    db: DbOption = None,
    entry: EntryOption = None,
    accept_versions: AcceptVersionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume an interrupted run (or a fork) in this process: recorded steps are served, the
    rest runs live and is journaled. A finished run prints its recorded result. A run started
    by another version of the code is refused unless --accept-version names it."""
    _live(
        run_id,
        db,
        entry,
        as_json,
        functools.partial(resume_run, accept_versions=accept_versions or ()),
    )


@app.command("retry")
def retry_command(
    run_id: Annotated[str, typer.Argument(help="The failed run to retry.", show_default=False)],
    db: DbOption = None,
    entry: EntryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry a failed run in place, with the code as it is now: steps that completed are
    served, the step whose failure ended the run and everything after it run live. The
    journal keeps the failure and the failed attempts; the run's chain goes on."""
    _live(run_id, db, entry, as_json, retry_run)


def _live(
    run_id: str,
    db: str | None,
    entry: str | None,
    as_json: bool,
    start: Callable[..., Coroutine[Any, Any, RunOutcome[Any]]],
) -> None:
    """Resume or retry `run_id` here, and print how it ended."""
    importable_from_here()
    with open_journal(db, writing=True) as journal:
        before = journal.run(run_id) if start is not retry_run else None
        try:
            with workflow_output(as_json):
                outcome = asyncio.run(start(journal, run_id, entry=entry))
        except JournalError as exc:
            fail(str(exc))
        except VersionNotAccepted as exc:
            fail(
                f"run {run_id!r} was started by version {exc.recorded!r} of its code, and this "
                f"is version {exc.current!r}; nothing was resumed. Fix: check it with `journal "
                f"upgrade-check`, then resume it with --accept-version {exc.recorded}, or move "
                "it to this code with `journal fork RUN --at SEQ`."
            )
        except Suspended as waiting:
            if as_json:
                print_json({"run_id": run_id, "status": "waiting", "detail": str(waiting)})
            else:
                console().print(f"[cyan]waiting:[/] {escape(str(waiting))}")
            return
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            earlier = before is not None and before.status is RunStatus.FAILED
            if as_json:
                print_json(
                    {"run_id": run_id, "status": "failed", "detail": failure, "recorded": earlier}
                )
            elif earlier:
                error_console().print(
                    f"[bold red]the run failed before:[/] {escape(failure)} (its recorded "
                    "failure; nothing ran). Once the cause is fixed, retry it in place: "
                    f"`journal retry {escape(run_id)}`."
                )
            else:
                error_console().print(
                    f"[bold red]the run failed:[/] {escape(failure)} (recorded in the journal; "
                    f"`journal show {escape(run_id)}` has the details)"
                )
            raise typer.Exit(1) from None
        recorded = journal.run(run_id).result
    if as_json:
        print_json(
            {
                "run_id": run_id,
                "status": "completed",
                "summary": dataclasses.asdict(outcome.summary),
                "result": None if recorded is None else orjson.loads(recorded),
            }
        )
        return
    retried = "retried: " if start is retry_run else ""
    console().print(f"[green]{retried}{escape(str(outcome.summary))}[/]")
    console().print(f"result: {escape(repr(outcome.result))}")


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not KEY=JSON, e.g. --override '0:3={{\"ok\": 1}}'")
    try:
        return key, orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"the value for {key} is not JSON ({exc}); a string needs quotes: "
            f"--override '{key}=\"text\"'"
        ) from exc


@app.command("fork")
def fork_command(
    run_id: Annotated[str, typer.Argument(help="The run to fork.", show_default=False)],
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            min=1,
            help="Copy the events before this seq; resuming the fork runs live from here. "
            "Default: after the last overridden step, else after everything.",
        ),
    ] = None,
    new_run_id: Annotated[
        str | None, typer.Option("--as", help="The fork's run id. Default: RUN~fork-<random>.")
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            help="KEY=JSON: replace step KEY's recorded result in the fork (repeatable).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Resume the fork right away, in this process.")
    ] = False,
    entry: EntryOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fork as JSON.")] = False,
) -> None:
    """Fork RUN at a step: a new run with RUN's events before --at (and any --override)."""
    overrides = dict(_parse_override(text) for text in override or [])
    with open_journal(db, writing=True) as journal:
        try:
            fork = journal.fork(run_id, at=at, new_run_id=new_run_id, overrides=overrides)
        except JournalError as exc:
            fail(str(exc))
        if as_json:
            print_json(
                {
                    "run_id": fork.run_id,
                    "parent_run_id": fork.parent_run_id,
                    "fork_seq": fork.fork_seq,
                    "overrides": sorted(overrides),
                }
            )
        else:
            changed = f", with {', '.join(sorted(overrides))} overridden" if overrides else ""
            console().print(
                f"forked [bold]{escape(run_id)}[/] at seq {fork.fork_seq} as "
                f"[bold]{escape(fork.run_id)}[/]{escape(changed)}"
            )
            if not resume:
                console().print(f"resume it with: journal resume {escape(fork.run_id)}")
    if resume:
        resume_command(fork.run_id, db=db, entry=entry)


@app.command("worker")
def worker_command(
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            help="A module whose workflows this worker runs (repeatable), e.g. myapp.workflows.",
        ),
    ] = None,
    poll: Annotated[
        float, typer.Option(min=0.01, help="Seconds between looks when nothing needs resuming.")
    ] = 0.5,
    once: Annotated[
        bool, typer.Option("--once", help="Resume what needs it now, then exit.")
    ] = False,
    accept_versions: AcceptVersionOption = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="Runs continued at once in this process (agents mostly wait on LLM calls).",
        ),
    ] = DEFAULT_CONCURRENCY,
    loop_per_run: Annotated[
        bool,
        typer.Option(
            "--loop-per-run",
            help="Give each run an event loop of its own, in a thread: for workflows that "
            "block the loop (sync calls in async code); about twice the CPU per step.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume runs that need it (submitted, or whose process died) until SIGTERM or Ctrl+C.

    Run as many as you like, on any machines sharing the journal: a run is claimed before it
    is resumed, so none runs twice at once. On SIGTERM/SIGINT the runs in progress are
    stopped and their leases released, for another worker to continue. Runs started by
    another version of the code are left to that version's workers, unless --accept-version
    names it.
    """
    importable_from_here()
    with open_journal(db, writing=True) as journal:
        try:
            worker = Worker(
                journal,
                imports=imports or (),
                poll_seconds=poll,
                accept_versions=accept_versions or (),
                concurrency=concurrency,
                loop_per_run=loop_per_run,
            )
        except ImportError as exc:
            fail(f"cannot import {exc.name or exc}: {exc}. Fix: run from your project's root.")
        stats = asyncio.run(_work(worker, once))
    if as_json:
        print_json(dataclasses.asdict(stats))
    else:
        console().print(
            f"worker done: {stats.completed} completed, {stats.failed} failed, "
            f"{stats.cancelled} cancelled, {stats.suspended} waiting again, {stats.locked} "
            f"taken by other workers, {stats.skipped} skipped, {stats.other_version} left to "
            f"other versions, {stats.unavailable} left while the journal was unavailable"
        )
    _exit_without_abandoned_threads()


_ABANDONED_GRACE_SECONDS = 2.0
log = get_logger("replay.worker")


def _exit_without_abandoned_threads() -> None:
    """The runs are stopped and their leases released, but threads they handed work to may
    still be busy (a hung sync call). Nothing those threads do can be journaled any more, and
    Python would join them at exit, for as long as they take: after a short grace, the worker
    exits without them."""
    deadline = time.monotonic() + _ABANDONED_GRACE_SECONDS
    while True:
        left = [
            thread
            for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
        ]
        if not left:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    log.warning("worker.threads_abandoned", threads=sorted(thread.name for thread in left))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _work(worker: Worker, once: bool) -> WorkerStats:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    if once:
        await worker.run_once()
        return worker.stats
    return await worker.run()
