"""The actions `journal ui --allow-actions` adds: signal a run, cancel it, fork it with an
overridden step result. Each is the CLI command's Python twin (`Journal.signal`,
`replay.cancel`, `Journal.fork`); without the flag these routes do not exist at all.

Cross-site request forgery: any page the user visits can make their browser POST a form to
127.0.0.1. So a POST must be a form carrying this process's token (printed into the pages,
which another origin cannot read) and, when the browser says where it comes from (Origin, or
else Referer), come from this server's own pages.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from journal import JournalError, RunNotFound, RunStatus

from .._cancel import cancel
from ._pages import _bad_input
from ._state import state_of
from ._views import href

MAX_FORM_BYTES = 1_000_000
"""A form bigger than this is refused: a signal value that large belongs in `journal signal`."""
FORM_TYPE = "application/x-www-form-urlencoded"


async def checked_form(request: Request) -> dict[str, str]:
    """The POSTed form's fields, once the request is known to come from this server's page;
    HTTPException 403/413/415 otherwise, saying why."""
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    referer = request.headers.get("referer")
    if origin is not None and origin != expected:
        raise HTTPException(
            403, f"refused: the form was sent from {origin}, not from this page ({expected})."
        )
    if origin is None and referer is not None and not referer.startswith(expected + "/"):
        raise HTTPException(403, "refused: the form was sent from another site's page.")
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise HTTPException(415, f"expected a form ({FORM_TYPE}), as the run page sends.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(
                413,
                f"the form is over {MAX_FORM_BYTES:,} bytes. Fix: send large values with "
                "`journal signal RUN NAME JSON`.",
            )
    try:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"the form could not be read: {exc}") from None
    if not secrets.compare_digest(fields.get("token", ""), state_of(request).token):
        raise HTTPException(
            403,
            "refused: the form does not carry this server's token (it came from elsewhere, or "
            "from a page of an earlier `journal ui`). Fix: reload the run page and try again.",
        )
    return fields


def _json_field(fields: dict[str, str], name: str, what: str) -> Any:
    text = fields.get(name, "")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f'{what} {text!r} is not JSON ({exc}). Expected JSON: true, 42, "text" (with the '
            'quotes), {"ok": 1}.'
        ) from None


def _done(run_id: str, **notice: Any) -> Response:
    return RedirectResponse(href("/run", id=run_id, **notice), status_code=303)


async def signal_action(request: Request) -> Response:
    """`journal signal RUN NAME JSON`: the value is sent; a run waiting for it becomes due."""
    fields = await checked_form(request)
    journal = state_of(request).journal
    run_id, name = fields.get("id", ""), fields.get("name", "").strip()
    try:
        if not name:
            raise ValueError("the signal's name is empty. Expected the name the run waits for.")
        value = _json_field(fields, "value", "the value")
        number = await run_in_threadpool(journal.signal, run_id, name, value)
    except RunNotFound:
        raise
    except (JournalError, ValueError) as exc:
        return _bad_input(request, exc)
    return _done(run_id, did="signal", name=name, n=number)


async def cancel_action(request: Request) -> Response:
    """`journal cancel RUN`: cancelled now, or its live owner is asked to stop it."""
    fields = await checked_form(request)
    journal = state_of(request).journal
    run_id = fields.get("id", "")
    try:
        run = await run_in_threadpool(cancel, journal, run_id, fields.get("reason", "").strip())
    except RunNotFound:
        raise
    except JournalError as exc:
        return _bad_input(request, exc)
    return _done(run_id, did="cancel" if run.status is RunStatus.CANCELLED else "cancel-asked")


async def fork_action(request: Request) -> Response:
    """`journal fork RUN [--at SEQ] [--override KEY=JSON] [--as ID]`: the fork's page."""
    fields = await checked_form(request)
    journal = state_of(request).journal
    run_id = fields.get("id", "")
    key = fields.get("key", "").strip()
    try:
        at_text = fields.get("at", "").strip()
        if at_text and not (at_text.isdigit() and int(at_text) >= 1):
            raise ValueError(f"fork at {at_text!r}: expected a seq, a whole number from 1.")
        overrides = {key: _json_field(fields, "value", f"the override of {key}")} if key else {}
        fork = await run_in_threadpool(
            lambda: journal.fork(
                run_id,
                at=int(at_text) if at_text else None,
                new_run_id=fields.get("as", "").strip() or None,
                overrides=overrides,
            )
        )
    except RunNotFound:
        raise
    except (JournalError, ValueError) as exc:
        return _bad_input(request, exc)
    return _done(fork.run_id, did="fork", to=run_id)


def routes() -> list[Route]:
    return [
        Route("/run/signal", signal_action, methods=["POST"]),
        Route("/run/cancel", cancel_action, methods=["POST"]),
        Route("/run/fork", fork_action, methods=["POST"]),
    ]
