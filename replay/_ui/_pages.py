"""The read-only pages: the runs list, a run (with the HTML export's timeline in a frame), one
step, the diff of two runs, the journal's verification. Plus the fragments the live pages
fetch when a stream says something changed, rendered by the same templates.

Handlers are plain functions: Starlette runs them in its thread pool, where the journal's
blocking reads belong.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from journal import Journal, JournalError, RunNotFound
from journal._export import event_record, run_record
from journal._heads import head_text
from journal._html import write_html_timeline
from journal._verify import HEAD_ROW

from ._state import state_of
from ._tail import events_of, rows_after, run_page
from ._views import (
    STATES,
    BadFilter,
    RunFilter,
    select_runs,
    step_page,
    whole_number,
)

TIMELINE_ASSETS = "/assets/timeline"
HERE = Path(__file__).parent
FRAGMENTS = {"/run/summary": "run_summary.html", "/run/outcome": "run_outcome.html"}
"""The parts of the run page a live page fetches again when the run changes."""


def _journal(request: Request) -> Journal:
    return state_of(request).journal


def render(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> Response:
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, dict(context), status_code=status_code
    )
    return response


def required(request: Request, name: str, example: str) -> str:
    """Query parameter `name`, or `BadFilter` showing a URL that has it."""
    value = request.query_params.get(name, "")
    if not value:
        raise BadFilter(f"the {name!r} parameter is missing. Expected, e.g.: {example}")
    return value


def runs_list(request: Request) -> Response:
    """The runs, newest first, filtered by status, workflow, age and free text."""
    params = dict(request.query_params)
    try:
        chosen = RunFilter.parse(params)
    except BadFilter as exc:
        context = {"filter": RunFilter(), "params": params, "error": str(exc), "states": STATES}
        return render(request, "runs.html", {**context, "runs": [], "more": False}, 400)
    runs, more = select_runs(_journal(request), chosen)
    context = {"filter": chosen, "params": params, "error": "", "runs": runs, "more": more}
    template = "runs_rows.html" if request.url.path == "/runs/rows" else "runs.html"
    return render(request, template, {**context, "states": STATES})


def run_view(request: Request) -> Response:
    """One run: its facts, outcome, verification, timeline and steps (and actions, if allowed)."""
    run_id = required(request, "id", "/run?id=RUN")
    whole = request.url.path == "/run"  # a load reads all; the live fragments what is new
    page = run_page(_journal(request), state_of(request).tails, run_id, whole=whole)
    # What an action just did, said on the page it redirects to (only where actions exist).
    shown = state_of(request).allow_actions
    notice = {
        name: request.query_params.get(name, "") if shown else ""
        for name in ("did", "name", "n", "to")
    }
    template = FRAGMENTS.get(request.url.path, "run.html")
    return render(request, template, {"page": page, "notice": notice})


def run_rows(request: Request) -> Response:
    """The run's step rows after seq `after`: what a live run page appends."""
    run_id = required(request, "id", "/run/rows?id=RUN&after=SEQ")
    after = whole_number(request.query_params.get("after", "0") or "0", "after")
    run, rows = rows_after(_journal(request), state_of(request).tails, run_id, after)
    return render(request, "step_rows.html", {"run": run, "steps": rows, "after": after})


def timeline(request: Request) -> Response:
    """The HTML export's timeline of the run, served with linked assets (no inline script)."""
    run_id = required(request, "id", "/run/timeline?id=RUN")
    run, events = events_of(_journal(request), state_of(request).tails, run_id)
    out = io.StringIO()
    records = (event_record(event) for event in events)
    write_html_timeline(out, run_record(run), records, assets=TIMELINE_ASSETS, header=False)
    return HTMLResponse(out.getvalue())


def step_view(request: Request) -> Response:
    """One event in full: pretty JSON of its call and outcome, LLM usage, its other attempts."""
    run_id = required(request, "id", "/run/step?id=RUN&seq=SEQ")
    seq = whole_number(required(request, "seq", "/run/step?id=RUN&seq=SEQ"), "seq")
    page = step_page(_journal(request), run_id, seq)
    if page is None:
        raise HTTPException(404, f"run {run_id!r} has no event at seq {seq}.")
    return render(request, "step.html", {"page": page})


def diff_view(request: Request) -> Response:
    """Two runs compared step by step; without both ids, the form to choose them."""
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    journal = _journal(request)
    diff = journal.diff(a, b) if a and b else None
    known = [run.run_id for run in journal.runs(limit=200)]
    return render(request, "diff.html", {"diff": diff, "a": a, "b": b, "known": known})


def verify_view(request: Request) -> Response:
    """Every run's hash chain and seal (or one run's), and the journal's head."""
    run_id = request.query_params.get("id", "") or None
    journal = _journal(request)
    verdicts = journal.verify(run_id)
    context = {
        "run_id": run_id,
        "verdicts": [v for v in verdicts if v.run_id != HEAD_ROW],
        "head_verdicts": [v for v in verdicts if v.run_id == HEAD_ROW],
        "head": head_text(journal.head()),
        "ok": all(v.ok for v in verdicts),
    }
    return render(request, "verify.html", context)


def favicon(request: Request) -> Response:
    """For a page that names no icon (the timeline opened alone): the browser asks anyway."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


def routes() -> list[Route]:
    return [
        Route("/favicon.ico", favicon),
        Route("/", runs_list),
        Route("/runs/rows", runs_list),
        Route("/run", run_view),
        Route("/run/summary", run_view),
        Route("/run/outcome", run_view),
        Route("/run/rows", run_rows),
        Route("/run/timeline", timeline),
        Route("/run/step", step_view),
        Route("/diff", diff_view),
        Route("/verify", verify_view),
    ]


def _error(request: Request, status: int, title: str, message: str) -> Response:
    context = {"title": title, "message": message, "status": status}
    return render(request, "error.html", context, status)


def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "No such run", str(exc).replace("Journal.runs()", "the runs list"))


def _bad_input(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "Bad request", str(exc))


def _journal_error(request: Request, exc: Exception) -> Response:
    return _error(request, 500, "The journal could not answer", str(exc))


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 403: "Refused"}
    return _error(request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Response]]:
    return {
        RunNotFound: _not_found,
        BadFilter: _bad_input,
        JournalError: _journal_error,
        HTTPException: _http_error,
    }
