"""`journal playbooks run`: a Playbooks program run, resumed and replayed in one command.

A command of ours rather than a flag of `playbooks run`: Playbooks 0.4's CLI rejects options it
does not know and has no plug-in hook, so the run id and `--resume` cannot reach it. The
command runs `replay.integrations.playbooks_program` as the workflow of a journaled run, so
`journal replay|resume|retry|show RUN` work on these runs like on any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import uuid
import warnings
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.markup import escape

from journal import Journal, JournalError, Run
from journal._config import JournalConfig, load_config

from .._errors import FrontierReached, NonDeterminismError
from .._run import run_with_summary
from .._session import Mode, OnDivergence
from ..integrations._playbooks import DEFAULT_APPLICATION, INSTALL_HINT, playbooks_program
from ._app import DbOption, app, error_console, fail, in_cli_words

playbooks_app = typer.Typer(
    name="playbooks",
    help="Run Playbooks programs durably: every LLM call journaled, the compiler's included.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(playbooks_app)

_WORKFLOW = f"{playbooks_program.__module__}:{playbooks_program.__qualname__}"
_INTERRUPTED = 130
"""Exit status after Ctrl+C, as shells report a command that SIGINT ended."""


@playbooks_app.command("run")
def run_command(
    program: Annotated[
        Path,
        typer.Argument(
            help="The program: a .pb file (compiled by an LLM call, journaled like the others) "
            "or a compiled .pbasm.",
            show_default=False,
        ),
    ],
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="The run's name. Default: a new one (PROGRAM-xxxxxxxx), printed with the "
            "command that resumes it.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run after a crash or Ctrl+C: answered LLM calls are served from "
            "the journal, the rest run live. Without --run-id: this program's newest "
            "interrupted run.",
        ),
    ] = False,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Re-run the run offline from the journal alone; exit 3 if it makes a call the "
            "journal does not hold (the program or the code changed).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Run a Playbooks program (.pb or .pbasm) as a journaled run; resume or replay it.

    Settings come from journal.toml or [tool.journal] in pyproject.toml: url, durability,
    max_payload_bytes, and a [playbooks] table with application and on_divergence. Playbooks'
    own LLM cache is off for the run. Exit 0: the program ended; 1: it failed, or bad input;
    3: --replay found the run no longer reproduces; 130: interrupted (resume it)."""
    if resume and replay:
        raise typer.BadParameter("choose one of --resume and --replay", param_hint="--replay")
    if run_id is not None and not run_id.strip():
        raise typer.BadParameter("a run id cannot be empty", param_hint="--run-id")
    shown = _program(program)
    settings = _settings()
    _quiet_imports()
    if importlib.util.find_spec("playbooks") is None:
        fail(f"Playbooks is not installed in this environment. Fix: {INSTALL_HINT}.")
    application = settings.playbooks.get("application", DEFAULT_APPLICATION)
    if application != DEFAULT_APPLICATION and not _importable(application):
        fail(
            f"[playbooks] application {application!r} (from {settings.sources['playbooks']}) "
            "is not a module this environment can import. Fix: name an installed module with "
            f"an `async def main(program_paths, verbose)`, or leave it out for "
            f"{DEFAULT_APPLICATION}."
        )
    on_divergence: OnDivergence = (
        "fork" if settings.playbooks.get("on_divergence") == "fork" else "raise"
    )
    target = db or settings.url
    if (resume or replay) and not _exists(target):
        fail(
            f"no journal at {target} to {'resume' if resume else 'replay'} a run from. Fix: "
            "pass --db (or set url in journal.toml) to the journal the run was written to."
        )
    with Journal(target, read_only=replay) as journal:  # a replay writes nothing
        fresh = not (resume or replay)
        run_id = _chosen_run_id(journal, shown, application, run_id, resume=resume, replay=replay)
        mode: Mode = "replay" if replay else "resume"
        again = f"journal playbooks run {shown} --run-id {run_id}"
        err = error_console()
        if fresh:
            err.print(
                f"journal: run {escape(run_id)} of {escape(shown)}, journaled in "
                f"{escape(target)}. After a crash or Ctrl+C, resume it: {escape(again)} --resume"
            )
        else:
            doing = "replaying it offline" if replay else "resuming it"
            err.print(
                f"journal: run {escape(run_id)} of {escape(shown)} in {escape(target)}: {doing}"
            )
        if os.environ.get("LLM_CACHE_ENABLED", "").lower() == "true":
            err.print(
                "journal: Playbooks' LLM cache (LLM_CACHE_ENABLED) is off for this run: its "
                "answers would bypass the journal"
            )
        try:
            outcome = asyncio.run(
                run_with_summary(
                    playbooks_program,
                    shown,
                    application,
                    journal=journal,
                    run_id=run_id,
                    mode=mode,
                    on_divergence=on_divergence,
                )
            )
        except KeyboardInterrupt:
            err.print(
                f"journal: run {escape(run_id)} interrupted; the LLM calls it had answered are "
                f"in the journal and are not paid again. Resume it: {escape(again)} --resume"
            )
            raise typer.Exit(_INTERRUPTED) from None
        except (NonDeterminismError, FrontierReached) as exc:
            if replay:
                err.print(f"[bold red]does not reproduce:[/] {escape(in_cli_words(str(exc)))}")
                raise typer.Exit(3) from None
            if not isinstance(exc, NonDeterminismError):
                raise
            fail(
                f"{in_cli_words(str(exc))}\nIf the program was edited on purpose: set "
                'on_divergence = "fork" in [playbooks] (journal.toml) and run this again; the '
                "journal is kept up to the first call that changed, the rest runs live."
            )
        except JournalError:
            raise
        except Exception as exc:
            err.print(
                f"[bold red]the run failed:[/] {escape(f'{type(exc).__name__}: {exc}')} "
                f"(recorded in the journal; `journal show {escape(run_id)}` has the details)"
            )
            raise typer.Exit(1) from None
    err.print(f"journal: {escape(str(outcome.summary))}")
    if not replay:
        err.print(f"journal: replay it offline: {escape(again)} --replay")


def _program(program: Path) -> str:
    """The program's path as the run records it: relative to here, so that the same file
    named two ways is one input, and a checkout moved elsewhere still resumes."""
    if not program.exists():
        fail(
            f"no program at {program}. Fix: pass the path of a Playbooks program, a .pb file "
            "or a compiled .pbasm."
        )
    if not program.is_file():
        fail(f"{program} is not a file. Fix: pass a Playbooks program, a .pb or .pbasm file.")
    return os.path.relpath(program)


def _settings() -> JournalConfig:
    try:
        return load_config()
    except JournalError as exc:
        fail(str(exc))


def _exists(target: str) -> bool:
    path = target.removeprefix("sqlite:///")
    return "://" in path or Path(path).exists()


def _chosen_run_id(
    journal: Journal,
    program: str,
    application: str,
    run_id: str | None,
    *,
    resume: bool,
    replay: bool,
) -> str:
    """The run to start or continue, checked against what the journal holds, so that a typo
    never starts a fresh run that pays for everything again."""
    if run_id is None:
        if replay:
            fail("--replay needs --run-id: the run to replay.")
        if resume:
            return _newest_interrupted(journal, program)
        return f"{Path(program).stem}-{uuid.uuid4().hex[:8]}"
    existing = journal.store.get_run(run_id)
    again = f"journal playbooks run {program} --run-id {run_id}"
    if existing is None and (resume or replay):
        _no_run(journal, run_id, program)
    if existing is not None and (resume or replay):
        _same_call(existing, program, application, resume=resume)
    if existing is not None and not (resume or replay):
        events = len(journal.events(run_id))
        fail(
            f"run {run_id!r} already exists ({existing.status.value}, {events} events). Fix: "
            f"continue it with `{again} --resume`, re-run it offline with `{again} --replay`, "
            "or start a new run with another --run-id."
        )
    return run_id


def _same_call(run: Run, program: str, application: str, *, resume: bool) -> None:
    """The run to continue is a run of this program with this application, said in the
    command's words (the workflow's own check speaks of inputs and `run_id`)."""
    flag = "--resume" if resume else "--replay"
    if run.workflow != _WORKFLOW:
        fail(
            f"run {run.run_id!r} is not a run of a Playbooks program (its workflow is "
            f"{run.workflow or 'a journaled block'}). Fix: check --run-id and --db; resume it "
            f"with `journal resume {run.run_id}`."
        )
    recorded = _program_of(run)
    if recorded is not None and recorded != program:
        fail(
            f"run {run.run_id!r} ran the program {recorded} (its path from the folder the run "
            f"was started in), not {program}. Fix: run the command from that folder: "
            f"`journal playbooks run {recorded} --run-id {run.run_id} {flag}`."
        )
    args = _recorded_args(run)
    was = args[1] if len(args) > 1 else DEFAULT_APPLICATION
    if was != application:
        fail(
            f"run {run.run_id!r} ran with the Playbooks application {was}, and [playbooks] "
            f'application is now {application}. Fix: set application = "{was}" in '
            f"[playbooks] (journal.toml) to {flag[2:]} it, or start a new run."
        )


def _newest_interrupted(journal: Journal, program: str) -> str:
    for run in journal.interrupted(workflow=_WORKFLOW):
        if _program_of(run) == program:
            return run.run_id
    fail(
        f"no interrupted run of {program} in this journal to resume. Fix: name it with "
        f"--run-id (`journal runs --status interrupted` lists them), or start a new run "
        "without --resume."
    )


def _recorded_args(run: Run) -> list[object]:
    try:
        inputs = orjson.loads(run.inputs or b"null")
    except orjson.JSONDecodeError:
        return []
    args = inputs.get("args") if isinstance(inputs, dict) else None
    return args if isinstance(args, list) else []


def _program_of(run: Run) -> str | None:
    args = _recorded_args(run)
    return args[0] if args and isinstance(args[0], str) else None


def _no_run(journal: Journal, run_id: str, program: str) -> NoReturn:
    ours = [run.run_id for run in journal.runs(workflow=_WORKFLOW, limit=5)]
    known = f" Runs of Playbooks programs here: {', '.join(ours)}." if ours else ""
    fail(
        f"no run {run_id!r} in this journal.{known} Fix: check --run-id and --db, or start "
        f"the run without --resume: `journal playbooks run {program} --run-id {run_id}`."
    )


def _quiet_imports() -> None:
    """Before Playbooks is imported: litellm uses the price list it ships rather than fetch
    one over the network at import (seconds of retries offline, and nothing a replay could
    serve), and fastmcp's notice about a deprecated authlib module is not shown."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with contextlib.suppress(ImportError):  # it sets its warnings to "always" when imported
        importlib.import_module("authlib.deprecate")
    warnings.filterwarnings("ignore", message="authlib.jose module is deprecated")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that does not exist
        return False
