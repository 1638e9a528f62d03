"""Re-running a recorded run from what the journal says about it: its workflow and inputs.

What `journal replay RUN` does, for Python callers: find the workflow by its recorded import
path (or an explicit entry), rebuild the inputs with the workflow's own parameter types, and
replay it against the journal, offline; or resume it live (`journal resume RUN`).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import pdb
import sys
import typing
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, FunctionType
from typing import Any

import orjson
from pydantic import TypeAdapter

from journal import Journal, Run, RunNotFailed, RunStatus
from journal._events import EventRow

from ._blocks import BlockCall, WorkflowNotFound, block_call, recorded_holder
from ._run import run_with_summary, start_run
from ._session import Session
from ._sitting import DEFAULT_LEASE_SECONDS, SERVE_RECORDED_HTTP, DebugOptions, debug_options
from ._versions import accepted_versions, check_version
from ._workflow import RunOutcome

_LOOP_RUNNING = ("running event loop", "another loop is running")  # asyncio.run, loop.run_*


def load_workflow(entry: str) -> Callable[..., Awaitable[Any]]:
    """The function named by `module:qualname` or `path/to/file.py:qualname`.

    A file is imported under its own name, so its `if __name__ == "__main__":` block does not run.
    """
    target, sep, qualname = entry.rpartition(":")
    if not sep or not target or not qualname:
        raise WorkflowNotFound(
            f"cannot read {entry!r} as a workflow. Expected module:function or "
            "path/to/file.py:function."
        )
    loading = None  # the file's module while it is imported
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.exists():
                raise FileNotFoundError(path)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            module = loading = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(path.stem, module)
            try:
                spec.loader.exec_module(module)
            except RuntimeError as exc:
                if not any(loop in str(exc) for loop in _LOOP_RUNNING):
                    raise
                _close_coroutines(exc)
                sys.modules.pop(path.stem, None)
                raise WorkflowNotFound(
                    f"{target} starts its workflow when it is imported (a top-level "
                    "`asyncio.run(...)`), so it cannot be loaded to replay a run; nothing was "
                    'replayed. Fix: put the call under `if __name__ == "__main__":` at the '
                    "bottom of the file, then replay again."
                ) from None
        else:
            module = importlib.import_module(target)
    except (ImportError, FileNotFoundError) as exc:
        raise WorkflowNotFound(
            f"cannot import {target!r} for workflow {entry!r}: {exc}. Fix: run from the "
            "directory your code imports from, or pass --entry module:function "
            "(or path/to/file.py:function)."
        ) from exc
    except WorkflowNotFound:
        raise
    except (Exception, SystemExit) as exc:  # its own code failed: no verdict on the run
        if loading is not None and sys.modules.get(loading.__name__) is loading:
            del sys.modules[loading.__name__]
        raise WorkflowNotFound(
            f"importing {target} for workflow {entry!r} raised {type(exc).__name__}: {exc}; "
            "nothing was run. Fix: make it importable here as it was where the run was "
            "recorded (its environment variables, its files), or pass --entry naming code "
            "that is."
        ) from exc
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise WorkflowNotFound(f"{target!r} has no {qualname!r} (from {entry!r}).")
    if not inspect.iscoroutinefunction(found):
        raise WorkflowNotFound(f"{entry!r} is not an async function.")
    return typing.cast(Callable[..., Awaitable[Any]], found)


def _close_coroutines(exc: BaseException) -> None:
    """Close the coroutine a refused `asyncio.run(main())` was handed, so that Python does not
    also warn that it was never awaited."""
    frame_tb = exc.__traceback__
    while frame_tb is not None:
        for value in frame_tb.tb_frame.f_locals.values():
            if inspect.iscoroutine(value):
                value.close()
        frame_tb = frame_tb.tb_next


_Parameters = tuple[inspect.Signature, dict[str, Any], dict[str, TypeAdapter[Any]]]
_LEARNT = "__journal_replay_parameters__"
"""Where a workflow function keeps its signature, its hints and the validators built so far
for the parameters runs passed, as a worker resumes runs of the same few workflows all day (a
TypeAdapter took a twentieth of a busy worker's CPU when built for every run). On the function
itself, not in a weak mapping keyed by it: a validator holds the workflow's models, whose
methods hold the module's globals, hence the function, so a mapping's entry would keep every
copy of a file loaded afresh (`entry="file.py:fn"`) alive; on the function they are a cycle
the collector frees with it."""


def _parameters_of(workflow: Callable[..., Any]) -> _Parameters | None:
    """None where the signature or the hints cannot be read (the arguments then go as
    recorded). Kept only on plain functions: a bound method's signature is not its
    function's, and a wrapper made with functools.wraps copies the wrapped one's `__dict__`
    (hence the check that what is found was learnt of this very function)."""
    keeps = isinstance(workflow, FunctionType)
    if keeps:
        learnt = workflow.__dict__.get(_LEARNT)
        if learnt is not None and learnt[0] is workflow:
            return typing.cast(_Parameters, learnt[1])
    try:
        hints = typing.get_type_hints(workflow)
        signature = inspect.signature(workflow)
    except (TypeError, NameError):
        return None
    parameters: _Parameters = (signature, hints, {})
    if keeps:
        workflow.__dict__[_LEARNT] = (workflow, parameters)
    return parameters


def recorded_inputs(
    workflow: Callable[..., Any], inputs: bytes | None
) -> tuple[list[Any], dict[str, Any]]:
    """The recorded arguments, each rebuilt as the type its parameter declares. A validator
    is built for a parameter the first time a run passes it (one left to its default may
    have a type pydantic cannot validate); a hint pydantic cannot validate raises, as it
    always did."""
    recorded = orjson.loads(inputs or b'{"args": [], "kwargs": {}}')
    args, kwargs = list(recorded.get("args", [])), dict(recorded.get("kwargs", {}))
    parameters = _parameters_of(workflow)
    if parameters is None:
        return args, kwargs
    signature, hints, adapters = parameters
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    for name, value in list(bound.arguments.items()):
        if name not in hints:
            continue
        adapter = adapters.get(name)
        if adapter is None:
            adapter = adapters[name] = TypeAdapter(hints[name])
        bound.arguments[name] = adapter.validate_python(value)
    return list(bound.args), dict(bound.kwargs)


def pdb_break(frame: FrameType, key: str, row: EventRow) -> None:
    """Stop in pdb in the workflow's frame, at the call whose recorded result is being served."""
    value = row[7].decode(errors="replace") if row[7] else "null"
    print(
        f"\njournal: step {key} ({row[3]}) is served from the journal; its recorded "
        f"{'result' if row[5] == 'completed' else 'error'}: {value[:500]}\n"
        "journal: pdb is in the workflow's frame at that call: inspect locals, `up` for "
        "callers, `c` to continue the replay.",
        flush=True,
    )
    debugger = pdb.Pdb()
    debugger.reset()
    debugger.interaction(frame, None)


async def replay_run(
    journal: Journal,
    run_id: str,
    *,
    entry: str | None = None,
    allow_live: bool = False,
    break_at: str | None = None,
    on_break: Callable[[FrameType, str, EventRow], None] = pdb_break,
    progress: Callable[[int, int], None] | None = None,
    sessions: list[Session] | None = None,
) -> RunOutcome[Any]:
    """Replay the recorded run `run_id` offline with its own workflow and inputs.

    Raises what replay raises: `NonDeterminismError` at the first changed call,
    `FrontierReached` if the code asks for more than was recorded. The outcome's
    `summary.result_matches_recorded` says whether the result came out the same.

    `allow_live` runs steps past the frontier live instead, without recording them (the
    journal is never changed by a replay). `break_at` names a step key: when it is served,
    `on_break(frame, key, row)` is called, by default pdb in the workflow's frame.
    `progress(served, recorded_steps)` is called about ten times a second, and at the end.
    `sessions` receives the replay's sessions (what it served, the secrets it met).
    """
    run = journal.run(run_id)
    holder = _holder(run, entry)
    if holder is None:
        workflow, args, kwargs = _recorded_call(run, entry)
    sessions = [] if sessions is None else sessions
    options = DebugOptions(allow_live, break_at, on_break, sessions.append, entry is not None)
    token = debug_options.set(options)
    reporter = None
    if progress is not None:
        reporter = asyncio.get_running_loop().create_task(_report(sessions, progress))
    try:
        with _serving_recorded_http():
            if holder is not None:
                return await _call_holder(
                    journal, run_id, holder, BlockCall(run_id, journal, "replay")
                )
            return await run_with_summary(
                workflow, *args, kwargs=kwargs, journal=journal, run_id=run_id, mode="replay"
            )
    finally:
        debug_options.reset(token)
        if reporter is not None:
            reporter.cancel()
            if sessions and progress is not None:
                progress(sessions[0].served, sessions[0].served + len(sessions[0].recorded))


async def _report(sessions: list[Session], progress: Callable[[int, int], None]) -> None:
    total = None
    while True:
        await asyncio.sleep(0.1)
        if sessions:
            session = sessions[0]
            if total is None:
                total = session.served + len(session.recorded)
            progress(session.served, total)


async def resume_run(
    journal: Journal,
    run_id: str,
    *,
    entry: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    accept_versions: Collection[str] = (),
) -> RunOutcome[Any]:
    """Resume an interrupted run (or a fork) in this process with its own workflow and inputs.

    Recorded steps are served, the rest runs live and is journaled: `journal resume RUN`.
    A finished run returns its recorded outcome without running anything.

    A run started by another version of the code is refused (`VersionNotAccepted`) unless
    its version is in `accept_versions` (`"*"`: any): check it with `journal upgrade-check`
    first. Runs without a version (forks, runs from before versions) are always continued.
    """
    return await resume_recorded(
        journal,
        journal.run(run_id),
        entry=entry,
        lease_seconds=lease_seconds,
        accept_versions=accept_versions,
    )


async def resume_recorded(
    journal: Journal,
    run: Run,
    *,
    entry: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    accept_versions: Collection[str] = (),
) -> RunOutcome[Any]:
    """`resume_run` of a run just read (a worker's look read it): not read again before its
    claim, which reads it under a lock in any case."""
    accepted = accepted_versions(accept_versions)
    run_id = run.run_id
    holder = _holder(run, entry)
    unfinished = run.status in (RunStatus.RUNNING, RunStatus.WAITING)
    if holder is not None:
        if unfinished:
            check_version(run, load_workflow(holder), accepted)
        with _serving_recorded_http():
            return await _call_holder(journal, run_id, holder, BlockCall(run_id, journal, "resume"))
    workflow, args, kwargs = _recorded_call(run, entry)
    if unfinished:
        check_version(run, workflow, accepted)
    with _serving_recorded_http():
        return await start_run(
            workflow,
            *args,
            kwargs=kwargs,
            journal=journal,
            run_id=run_id,
            lease_seconds=lease_seconds,
            known=run,
        )


async def retry_run(
    journal: Journal,
    run_id: str,
    *,
    entry: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> RunOutcome[Any]:
    """Retry the failed run `run_id` in place with its own workflow and inputs, as
    `retry()` does: `journal retry RUN`. `RunNotFailed` if it has not failed."""
    run = journal.run(run_id)
    holder = _holder(run, entry)
    if holder is not None:
        if run.status is not RunStatus.FAILED:
            raise RunNotFailed(run_id, run.status.value)
        call = BlockCall(run_id, journal, "resume", retry=True)
        with _serving_recorded_http():
            return await _call_holder(journal, run_id, holder, call)
    workflow, args, kwargs = _recorded_call(run, entry)
    with _serving_recorded_http():
        return await start_run(
            workflow,
            *args,
            kwargs=kwargs,
            journal=journal,
            run_id=run_id,
            lease_seconds=lease_seconds,
            retry="failed",
        )


@contextmanager
def _serving_recorded_http() -> Iterator[None]:
    """While re-running a run whose HTTP requests were journaled, journal (serve) them again,
    as `instrument()` does: without it, an "offline" replay of an entry that did not call
    `instrument()` itself would send real requests (and, with an API key set, pay). The
    sitting decides from the rows it reads anyway (`SERVE_RECORDED_HTTP`)."""
    token = SERVE_RECORDED_HTTP.set(True)
    try:
        yield
    finally:
        SERVE_RECORDED_HTTP.reset(token)


def _holder(run: Run, entry: str | None) -> str | None:
    """For a run recorded by a `journaled(...)` block, with no `entry` given: the recorded
    function that holds the block, to be called again."""
    if run.workflow is not None or entry is not None:
        return None
    holder = recorded_holder(run)
    if holder is None:
        raise WorkflowNotFound(
            f"run {run.run_id!r} was recorded by a journaled(...) block inside a function that "
            "cannot be called again as it is (it takes arguments, or is defined inside another "
            "function), or by a version that did not record it. Fix: pass --entry "
            "module:function (Python: entry=...) naming an async function without arguments "
            "that runs the block's body."
        )
    return holder


async def _call_holder(
    journal: Journal, run_id: str, holder: str, call: BlockCall
) -> RunOutcome[Any]:
    """Call the function that holds the run's block; its block re-enters the recorded run."""
    function = load_workflow(holder)
    token = block_call.set(call)
    try:
        await function()
    except Exception as exc:
        if call.entered:
            raise
        raise WorkflowNotFound(
            f"{holder} raised {type(exc).__name__}: {exc} before it entered the "
            f"journaled(...) block of run {run_id!r}: nothing was replayed. Fix: make it run "
            "as it did when it recorded the run (its files, its environment), or pass --entry "
            "module:function naming a function that runs the block's body."
        ) from exc
    finally:
        block_call.reset(token)
    if not call.entered or call.summary is None:
        raise WorkflowNotFound(
            f"{holder} returned without entering the journaled(...) block of run {run_id!r}: "
            "nothing was replayed. Fix: pass --entry module:function naming the function that "
            "enters it."
        )
    return RunOutcome(None, call.summary)


def _recorded_call(
    run: Run, entry: str | None
) -> tuple[Callable[..., Awaitable[Any]], list[Any], dict[str, Any]]:
    """The run's workflow (or `entry`) and its recorded inputs, typed."""
    run_id = run.run_id
    if entry is None:
        if run.workflow is None:
            raise WorkflowNotFound(
                f"run {run_id!r} was recorded by a journaled(...) block, which names no "
                "workflow. Fix: pass entry='module:function' to replay it with."
            )
        entry = run.workflow
        if entry.startswith("__main__:"):
            raise WorkflowNotFound(
                f"run {run_id!r} was recorded by a script ({entry}). Fix: pass "
                f"--entry path/to/script.py:{entry.partition(':')[2]}."
            )
    workflow = load_workflow(entry)
    args, kwargs = recorded_inputs(workflow, run.inputs)
    return workflow, args, kwargs
