"""The upgrade check: replay the runs still in flight against the code about to be deployed.

Temporal's replay test, run over your own journal: each chosen run is replayed offline with the
workflow as it is now imported, and is either continued by the new code (every recorded step
served alike, up to where it would go live) or would diverge, with the same diff a
`NonDeterminismError` gives. `journal upgrade-check` is the CI gate built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from journal import Journal, JournalError, Run, RunCancelled, RunStatus
from journal._exceptions import RecordedError

from ._blocks import WorkflowNotFound
from ._errors import FrontierReached, NonDeterminismError, Suspended
from ._rerun import replay_run
from ._session import Session

IN_FLIGHT = ("interrupted", "waiting")
"""The runs a deploy meets by default: crashed or killed ones to resume, and waiting ones."""

Verdict = Literal["continues", "diverges", "unchecked", "skipped"]


@dataclass(frozen=True)
class UpgradeVerdict:
    """What the code as it is now imported does with one recorded run."""

    run_id: str
    workflow: str | None
    status: str
    """The run's status when checked (`interrupted` for a running run with no live owner)."""
    verdict: Verdict
    """`continues`: every recorded step is served alike; `diverges`: the new code asks for
    something else, or ends differently; `unchecked`: it could not be replayed (its workflow
    is gone or cannot be imported); `skipped`: a `journaled(...)` block, whose replay would
    run the code around it live."""
    served: int
    """Recorded steps served before the verdict."""
    detail: str

    @property
    def ok(self) -> bool:
        """Nothing stands in the deploy's way: it continues, or was skipped (and says so)."""
        return self.verdict in ("continues", "skipped")


def runs_to_check(
    journal: Journal, statuses: Iterable[str] = IN_FLIGHT, modules: Sequence[str] = ()
) -> list[tuple[Run, str]]:
    """The runs of these statuses (and, with `modules`, whose workflow lives in one of them),
    oldest first, each with the status it is checked under."""
    chosen: dict[str, tuple[Run, str]] = {}
    for status in statuses:
        if status == "interrupted":
            runs = journal.interrupted()
        else:
            try:
                runs = journal.runs(status=RunStatus(status), limit=None)
            except ValueError:
                known = ", ".join([s.value for s in RunStatus] + ["interrupted"])
                raise ValueError(
                    f"unknown run status {status!r}. Expected one of: {known}."
                ) from None
        for run in runs:
            if modules and not _in_modules(run.workflow, modules):
                continue
            chosen.setdefault(run.run_id, (run, status))
    return sorted(chosen.values(), key=lambda pair: (pair[0].created_at, pair[0].run_id))


def _in_modules(workflow: str | None, modules: Sequence[str]) -> bool:
    if workflow is None:  # a journaled(...) block: its code is a file, not one of the modules
        return False
    module = workflow.partition(":")[0]
    return any(module == m or module.startswith(m + ".") for m in modules)


async def upgrade_check(
    journal: Journal,
    *,
    statuses: Iterable[str] = IN_FLIGHT,
    modules: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[UpgradeVerdict]:
    """Replay every run of `statuses` (by default the interrupted and waiting ones), limited to
    workflows in `modules` if given, against the code as it is imported now; one verdict each,
    oldest run first. Nothing is written to the journal and nothing runs live.

    `progress(checked, total)` is called after each run.

    >>> verdicts = await replay.upgrade_check(journal, modules=["myapp.workflows"])
    >>> assert all(v.ok for v in verdicts), [str(v.detail) for v in verdicts if not v.ok]
    """
    chosen = runs_to_check(journal, statuses, modules)
    verdicts = []
    for number, (run, status) in enumerate(chosen, 1):
        verdicts.append(await _check(journal, run, status))
        if progress is not None:
            progress(number, len(chosen))
    return verdicts


async def _check(journal: Journal, run: Run, status: str) -> UpgradeVerdict:
    served = [0]
    finished = run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
    sessions: list[Session] = []

    def count(done: int, _total: int) -> None:
        served[0] = done

    def verdict(kind: Verdict, detail: str) -> UpgradeVerdict:
        # What the new code said is shown as the journal would keep it: a secret the replay
        # met (redacted in the journal) must not reach a CI log in clear.
        return UpgradeVerdict(
            run.run_id, run.workflow, status, kind, served[0], _scrubbed(journal, sessions, detail)
        )

    if run.workflow is None:
        return verdict(
            "skipped",
            "a journaled(...) block: replaying it calls the function that holds the block, "
            "which runs its own code around it live. Check it with `journal replay` on a copy "
            "of the journal",
        )
    try:
        outcome = await replay_run(journal, run.run_id, progress=count, sessions=sessions)
    except NonDeterminismError as exc:
        return verdict("diverges", str(exc))
    except FrontierReached as exc:
        if finished:
            return verdict(
                "diverges",
                f"the new code asks for step {exc.key} ({exc.name}), which the {run.status.value} "
                "run never recorded",
            )
        return verdict(
            "continues",
            f"every recorded step served alike; it goes live at step {exc.key} ({exc.name})",
        )
    except Suspended:
        return verdict("continues", "every recorded step served alike; it waits again")
    except RunCancelled as exc:
        if run.status is RunStatus.CANCELLED:
            return verdict("continues", "reproduced up to where the run was cancelled")
        return verdict("diverges", f"the replay was cancelled, the recording was not: {exc}")
    except (WorkflowNotFound, SyntaxError, JournalError) as exc:
        return verdict("unchecked", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the workflow raised
        recorded = _recorded_failure(run)
        now = RecordedError.from_exception(exc)
        left = _unconsumed(sessions)
        if recorded is not None and _same_failure(recorded, now, journal, sessions):
            if left:
                return verdict("diverges", _left_behind(left))
            return verdict("continues", f"reproduced the recorded failure: {exc!r}")
        was = "" if recorded is None else f" where the run failed with {recorded.message!r}"
        return verdict(
            "diverges",
            f"the new code raises {type(exc).__name__}: {exc}{was}, after {served[0]} recorded "
            f"steps served; the run is {status}",
        )
    recorded = _recorded_failure(run)
    if recorded is not None:
        return verdict(
            "diverges",
            f"the new code returns {outcome.result!r} where the run failed with "
            f"{recorded.summary()}",
        )
    if outcome.summary.result_matches_recorded is False:
        return verdict(
            "diverges", f"the result differs from the recorded one: now {outcome.result!r}"
        )
    if outcome.summary.unconsumed:
        return verdict("diverges", _left_behind(outcome.summary.unconsumed))
    if finished:
        return verdict("continues", "reproduced to its recorded end")
    return verdict("continues", "every recorded step served alike; it would finish from them")


def _left_behind(keys: Sequence[str]) -> str:
    return (
        f"the new code no longer asks for {len(keys)} recorded steps "
        f"({', '.join(keys[:5])}): a resume would leave them behind"
    )


def _unconsumed(sessions: list[Session]) -> tuple[str, ...]:
    return sessions[0].summary().unconsumed if sessions else ()


def _recorded_failure(run: Run) -> RecordedError | None:
    if run.status is not RunStatus.FAILED or run.error is None:
        return None
    try:
        return RecordedError.model_validate_json(run.error)
    except ValueError:
        return None


def same_recorded_failure(
    journal: Journal, run: Run, exc: BaseException, sessions: list[Session]
) -> bool:
    """Whether `exc`, raised by a replay of the failed `run`, is the failure it recorded."""
    recorded = _recorded_failure(run)
    return recorded is not None and _same_failure(
        recorded, RecordedError.from_exception(exc), journal, sessions
    )


def _same_failure(
    recorded: RecordedError, now: RecordedError, journal: Journal, sessions: list[Session]
) -> bool:
    """The same exception type and message (as the journal keeps it: redacted), the same
    members for a group, and the same cause, all the way down."""
    recorded, now = _as_raised(recorded), _as_raised(now)
    if not _same_type(recorded.type, now.type):
        return False
    if recorded.message != _scrubbed(journal, sessions, now.message):
        return False
    group, now_group = recorded.group or [], now.group or []
    if (recorded.group is None) != (now.group is None) or len(group) != len(now_group):
        return False
    if not all(
        _same_failure(a, b, journal, sessions) for a, b in zip(group, now_group, strict=True)
    ):
        return False
    if (recorded.cause is None) != (now.cause is None):
        return False
    return recorded.cause is None or (
        now.cause is not None and _same_failure(recorded.cause, now.cause, journal, sessions)
    )


_STEP_FAILED = "replay._errors:StepFailed"


def _as_raised(error: RecordedError) -> RecordedError:
    """A `StepFailed` (an exception whose type this process could not rebuild, a script's
    `__main__` one say) as the type and message it stands for."""
    attributes = error.attributes or {}
    if error.type != _STEP_FAILED or not isinstance(attributes.get("type_name"), str):
        return error
    return error.model_copy(
        update={"type": attributes["type_name"], "message": str(attributes.get("message"))}
    )


def _same_type(recorded: str, now: str) -> bool:
    """The same `module:qualname`; a script's types are `__main__`'s where it ran as a script
    and its file's module where `--entry path/to/script.py:function` imported it."""
    if recorded == now:
        return True
    (module, _, name), (now_module, _, now_name) = recorded.partition(":"), now.partition(":")
    return name == now_name and "__main__" in (module, now_module)


def _scrubbed(journal: Journal, sessions: list[Session], text: str) -> str:
    """`text` with each secret the replay met replaced by the journal's own marker for it."""
    secrets = set().union(*(session.secrets for session in sessions))
    if not secrets:
        return text
    try:
        redactor = journal.redactor()
    except JournalError:  # a journal that never redacted, opened to read: nothing to match
        redactor = None
    if redactor is None:
        return text
    return redactor.scrub_secrets(text.encode(), secrets).decode()
