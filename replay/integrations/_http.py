"""Journaling HTTP transport: every request an SDK makes inside a run is a journaled step.

Wrap the transport of an `httpx2` or `httpx` client (the OpenAI and Anthropic SDKs,
pydantic-ai and litellm all take one). Inside a journaled run, each logical request gets a
step key like any other step; the response is recorded as its status, headers and raw body
bytes, and served from the journal on resume and replay. Outside a run, requests pass through.

* The fingerprint is method + URL + canonical body (JSON keys sorted, multipart boundary
  normalised); headers are not part of it, since SDKs send volatile ones (retry counts, OS).
* An SDK retry is the same step's next attempt. 408/409/429/5xx responses and transport
  errors are recorded as `retrying` attempts and never served as results.
* Credentials never reach the journal: authorization, API-key, cookie and provider org headers
  are dropped from the request, set-cookie and org headers from the response; bodies go
  through the journal's redaction.
* The body is stored as received (compressed bytes stay compressed, with their
  content-encoding), so replay serves exactly what the SDK parsed live.
* A streamed (SSE) response is passed through as it arrives and recorded once its terminal event
  (`data: [DONE]`, `response.completed`, `message_stop`) has been read, before that event reaches
  the client, whether or not the client then reads on or closes it (`_tee.py`). A stream closed
  before its terminal event is not recorded as complete, and a resume makes the request again.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from journal import EventKind, EventStatus, RecordedError, canonical_json, fingerprint
from journal._events import EventRow
from journal._redact import Redactor

from .._context import TaskScope, current_scope, scope_here
from .._errors import ReplayError
from .._group import Ticket
from .._history import Turn
from .._session import LivePlan, Session
from .._steps import as_replayed_error
from ._llm import llm_metadata
from ._tee import async_tee, sync_tee

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
KEPT_REQUEST_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "idempotency-key",
        "x-stainless-retry-count",
    }
)
"""Request headers worth keeping for audit. All others (credentials above all) are dropped."""
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "set-cookie",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
    }
)
_LLM_PATHS = ("/chat/completions", "/completions", "/responses", "/messages", "/embeddings")
_RETRY_HEADERS = ("x-stainless-retry-count",)


@dataclass(frozen=True)
class HttpStep:
    """What `Session` needs to know about a request: its name and kind, like a `StepSpec`."""

    name: str
    kind: EventKind
    called_from_library = True
    """The request is made deep inside an SDK: the call site is the first user frame."""
    is_async: bool = False
    """Made through the async transport: a served response waits for the run's ready tasks."""


def _describe(request: Any, is_async: bool) -> tuple[HttpStep, bytes, bytes, int | None]:
    """(step, canonical arguments, fingerprinted part, retry count) of a request read fully."""
    url = str(request.url)
    parts = urlsplit(url)
    path = parts.path or "/"
    kind = EventKind.LLM if path.endswith(_LLM_PATHS) else EventKind.TOOL
    host = parts.netloc.rpartition("@")[2]  # never `user:password@`: the name is not redacted
    step = HttpStep(f"{request.method} {host}{path}", kind, is_async)
    body = _body_value(request.content, request.headers.get("content-type", ""))
    matched = canonical_json({"method": request.method, "url": url, "body": body})
    kept = {k: v for k, v in request.headers.items() if k.lower() in KEPT_REQUEST_HEADERS}
    arguments = canonical_json(
        {"method": request.method, "url": url, "body": body, "headers": kept}
    )
    retry = None
    for name in _RETRY_HEADERS:
        value = request.headers.get(name)
        if value is not None and value.isdigit():
            retry = int(value)
    return step, arguments, matched, retry


def _body_value(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    if content_type.startswith("multipart/form-data") and "boundary=" in content_type:
        boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip('"')
        content = content.replace(boundary.encode(), b"BOUNDARY")
    try:
        return {"json": orjson.loads(content)}
    except orjson.JSONDecodeError:
        pass
    try:
        return {"text": content.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(content).decode()}


def _module_of(request: Any) -> Any:
    """`httpx2` or `httpx`: responses are built from the module of the request (or headers)."""
    return importlib.import_module(type(request).__module__.split(".", 1)[0])


def _response_payload(
    status: int, headers: Any, raw: bytes, elapsed: float, session: Session
) -> bytes:
    """The journal's record of a response: status, kept headers, exact body, LLM metadata."""
    kept = [[k, v] for k, v in headers.multi_items() if k.lower() not in DROPPED_RESPONSE_HEADERS]
    if session.redact is not None:  # a secret-named header, a Location with ?code=...
        kept = [[k, session.redact.header(k, v)] for k, v in kept]
    record: dict[str, Any] = {"status": status, "headers": kept, "elapsed_ms": round(elapsed, 3)}
    try:
        record["body"] = raw.decode()
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(raw).decode()
    encoded = orjson.dumps(record)
    meta = llm_metadata(status, headers, raw)
    if meta is not None:
        record["llm"] = meta
        encoded = orjson.dumps(record)
    payload = _redacted_body(record, encoded, headers, raw, session)
    if session.redact is not None and session.secrets:
        # A reply that quotes the request back (a 404 naming the URL with its ?key=) holds
        # the run's secrets in plain text: scrubbed like a step result that echoes one.
        payload = session.redact.scrub_secrets(payload, session.secrets)
    return payload


def _is_form(headers: Any) -> bool:
    return "application/x-www-form-urlencoded" in headers.get("content-type", "").lower()


def _form_redacted(arguments: bytes, redact: Redactor) -> tuple[bytes, list[str]]:
    """A request's arguments with its form-encoded body's secret fields redacted (an OAuth
    token request: `client_secret=`, `password=`, `code=`); and those secrets."""
    record = orjson.loads(arguments)
    body = record.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return arguments, []
    text = body["text"]
    redacted = redact.form(text)
    if redacted == text:
        return arguments, []
    body["text"] = redacted
    return canonical_json(record), redact.form_secrets(text)


def _redacted_body(
    record: dict[str, Any], encoded: bytes, headers: Any, raw: bytes, session: Session
) -> bytes:
    """Secrets inside a JSON or form-encoded body (a token endpoint's answer) are redacted
    like any value."""
    redact = session.redact
    if redact is None:
        return encoded
    content_type = headers.get("content-type", "").lower()  # media types ignore case
    if "json" in content_type:
        decoded = _decoded(headers, raw)
        redacted = redact(decoded)
    elif "application/x-www-form-urlencoded" in content_type or "text/event-stream" in (
        content_type
    ):
        decoded = _decoded(headers, raw)
        try:
            text = decoded.decode()
        except UnicodeDecodeError:
            return encoded
        if "event-stream" in content_type:
            spelt = _events_redacted(text, redact)
        else:
            spelt = redact.form(text)
        if spelt == text:
            return encoded
        redacted = spelt.encode()
    else:
        return encoded
    if redacted is decoded:
        return encoded
    # The secrets the body held are the run's now: scrubbed from its errors and result too.
    session.secrets.update(_body_secrets(content_type, decoded, redact))
    # The stored body is now the decoded, redacted JSON: drop what described the original.
    record["headers"] = [
        [k, v]
        for k, v in record["headers"]
        if k.lower() not in ("content-encoding", "content-length")
    ]
    record.pop("body_base64", None)
    record["body"] = redacted.decode()
    return orjson.dumps(record)


def _body_secrets(content_type: str, body: bytes, redact: Redactor) -> list[str]:
    """The secrets in a response body that was redacted (JSON, form-encoded, or events)."""
    text = body.decode("utf-8", "replace")
    if "application/x-www-form-urlencoded" in content_type:
        return redact.form_secrets(text)
    if "event-stream" in content_type:
        chunks = [line.partition(":")[2] for line in re.split(r"\r\n|\r|\n", text)]
        chunks += ["\n".join(chunks)]
        candidates = [chunk for chunk in chunks if chunk.strip()]
    else:
        candidates = [text]
    found: list[str] = []
    for candidate in candidates:
        try:
            found += redact.secrets_in({"body": orjson.loads(candidate)})
        except orjson.JSONDecodeError:
            continue
    return found


def _events_redacted(text: str, redact: Redactor) -> str:
    """A server-sent event stream with the secrets in its JSON data redacted (an MCP server's
    answer, a tool call's arguments streamed by an LLM). An event's `data:` lines are joined
    (as the spec joins them) before they are read as JSON; one that held a secret is written
    back as one line. Lines may end in CRLF, LF or CR; the rest of the framing is kept."""
    lines = re.split(r"(\r\n|\r|\n)", text)  # [line, ending, line, ending, ...]
    rows, endings = lines[0::2], [*lines[1::2], ""]
    number = 0
    while number < len(rows):
        if not rows[number].startswith("data:"):
            number += 1
            continue
        end = number
        while end < len(rows) and rows[end].startswith("data:"):
            end += 1
        data = "\n".join(
            row[6:] if row.startswith("data: ") else row[5:] for row in rows[number:end]
        )
        raw = data.encode()
        redacted = redact(raw)
        if redacted is not raw:
            rows[number:end] = [f"data: {redacted.decode()}"]
            endings[number:end] = [endings[end - 1]]
            end = number + 1
        else:  # not JSON together: each line on its own
            for index in range(number, end):
                lead = 6 if rows[index].startswith("data: ") else 5
                one = rows[index][lead:].encode()
                alone = redact(one)
                if alone is not one:
                    rows[index] = f"data: {alone.decode()}"
        number = end
    return "".join(row + ending for row, ending in zip(rows, endings, strict=True))


def _decoded(headers: Any, raw: bytes) -> bytes:
    encoding = headers.get("content-encoding", "").lower()
    if not encoding or encoding == "identity":
        return raw
    # The headers' own module (httpx2 or legacy httpx) decodes: either may be the only one there.
    response = _module_of(headers).Response(
        200, headers={"content-encoding": encoding}, content=raw
    )
    content: bytes = response.content
    return content


def _served_response(request: Any, payload: bytes | None) -> Any:
    record = orjson.loads(payload or b"{}")
    body = record.get("body")
    content = body.encode() if body is not None else base64.b64decode(record["body_base64"])
    module = _module_of(request)
    return module.Response(
        record["status"],
        headers=[tuple(pair) for pair in record["headers"]],
        content=content,
        request=request,
    )


class Call:
    """One request inside a run: its key, and either a served row or a live plan."""

    __slots__ = ("plan", "scope", "served", "session", "started_at", "step", "turn", "url")

    def __init__(self, request: Any, scope: TaskScope, *, is_async: bool) -> None:
        self.scope = scope
        self.url = str(request.url)
        self.session = session = scope.session
        step, arguments, matched, retry = _describe(request, is_async)
        self.step = step
        if session.redact is not None:
            arguments = session.redact(arguments)
            secrets = session.redact.secrets_in(
                {"url": self.url, "headers": [[k, v] for k, v in request.headers.items()]}
            )
            if _is_form(request.headers):
                arguments, found = _form_redacted(arguments, session.redact)
                secrets.extend(found)
            session.secrets.update(secrets)
        fp = fingerprint(step.name, matched)
        retries = scope.retries or {}
        self.served: EventRow | None = None
        self.turn: Turn | None = None
        """Set when the served response must wait for its recorded turn."""
        self.plan: LivePlan | None = None
        self.started_at = time.perf_counter()
        again = retries.get(fp)
        if again is not None and retry != 0:
            key, previous = again
            if isinstance(previous, tuple):
                self.served = previous  # replay: the recorded failure, to every retry
                return
            self.plan = LivePlan(key, fp, previous.args_payload, previous.attempt + 1)
            return
        key = scope.next_key()
        decision = session.prepare(step, key, arguments, fp, 3, scope.deferred)  # type: ignore[arg-type]
        if isinstance(decision, Turn):
            self.turn = decision
            decision = decision.row
        if isinstance(decision, tuple):
            self.served = decision
            if decision[5] != "completed":
                self._remember(fp, key, decision)
        else:
            self.plan = decision

    def _remember(self, fp: str, key: str, state: Any) -> None:
        if self.scope.retries is None:
            self.scope.retries = {}
        self.scope.retries[fp] = (key, state)

    def start(self, *, sync: bool = False) -> Ticket | None:
        assert self.plan is not None
        return self.session.start(self.step, self.plan, sync=sync)  # type: ignore[arg-type]

    def cancelled(self) -> None:
        """The workflow cancelled the request while it was in flight."""
        assert self.plan is not None
        self.session.cancelled(self.step, self.plan)  # type: ignore[arg-type]

    def stopped(self, exc: BaseException) -> None:
        """The request ended by Ctrl+C or an engine signal: it stays in flight for resume."""
        assert self.plan is not None
        self.session.abandoned(self.plan)
        if isinstance(exc, ReplayError | KeyboardInterrupt | SystemExit):
            self.session.stop(exc)

    async def hold(self) -> None:
        """A live response on resume waits until the recorded history has been handed out."""
        assert self.plan is not None
        await self.session.hold_live(self.plan.key, self.step.name)

    def hold_sync(self) -> None:
        assert self.plan is not None
        self.session.hold_live_sync(self.plan.key, self.step.name)

    def completed(
        self, status: int, headers: Any, raw: bytes, *, wait: bool = True
    ) -> Ticket | None:
        """Record the response: a result, or a retryable attempt never to be served. Without
        `wait`, the group commit's ticket to await before the response is handed on."""
        plan = self.plan
        assert plan is not None
        elapsed = (time.perf_counter() - self.started_at) * 1000
        payload = _response_payload(status, headers, raw, elapsed, self.session)
        self.session.check_size(plan.key, self.step.name, "response", payload)
        fp = plan.fingerprint
        if status in RETRYABLE_STATUS:
            ticket = self.session.finish(self.step, plan, EventStatus.RETRYING, payload, wait=wait)  # type: ignore[arg-type]
            self._remember(fp, plan.key, plan)
            return ticket
        ticket = self.session.finish(self.step, plan, EventStatus.COMPLETED, payload, wait=wait)  # type: ignore[arg-type]
        if self.scope.retries:
            self.scope.retries.pop(fp, None)
        return ticket

    def failed(self, exc: Exception) -> Exception:
        """A transport error (connection refused, timeout): an attempt the SDK may retry.
        Returns what to raise: `exc` itself if replay rebuilds it, else what replay raises."""
        plan = self.plan
        assert plan is not None
        redact = self.session.redact
        payload = RecordedError.from_exception(exc).encode()
        scrubbed = None
        if redact is not None:
            secrets = [*redact.secrets_in({"url": self.url}), *self.session.secrets]

            def scrubbed(raw: bytes) -> bytes:  # an error naming the URL names its query too
                return redact.scrub_secrets(redact(raw), secrets)

            payload = scrubbed(payload)
        self.session.finish(self.step, plan, EventStatus.FAILED, payload)  # type: ignore[arg-type]
        self._remember(plan.fingerprint, plan.key, plan)
        self.session.raising(exc, plan.key)  # a run failing with it (as a cause) names the step
        failure = as_replayed_error(exc, scrubbed)
        self.session.raising(failure, plan.key)
        return failure

    async def serve_in_turn(self, request: Any) -> Any:
        if self.turn is not None:
            await self.session.take_turn(self.turn)
        return self.serve(request)

    def serve_sync(self, request: Any) -> Any:
        if self.turn is not None:
            self.session.take_turn_sync(self.turn, self.scope.deferred)
        return self.serve(request)

    def serve(self, request: Any) -> Any:
        assert self.served is not None
        row = self.served
        if row[5] == "completed":
            return _served_response(request, row[7])
        from .._session import rebuild_error

        raise self.session.raising(rebuild_error(row[7]), row[1])


def _is_stream(response: Any) -> bool:
    """A server-sent event stream worth passing through as it arrives (not an error)."""
    return (
        "text/event-stream" in response.headers.get("content-type", "")
        and response.status_code not in RETRYABLE_STATUS
    )


def _rebuilt(request: Any, response: Any, **body: Any) -> Any:
    """What the client gets: the live response's status and headers, with `body` (the bytes
    read, or a tee over the stream), built from the request's own module."""
    return _module_of(request).Response(
        response.status_code,
        headers=response.headers,
        request=request,
        extensions=response.extensions,
        **body,
    )


class AsyncJournalTransport:
    """An async transport that journals requests made inside a run, around `inner`.

    >>> client = httpx2.AsyncClient(transport=AsyncJournalTransport(httpx2.AsyncHTTPTransport()))
    >>> llm = openai.AsyncOpenAI(http_client=client)
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def handle_async_request(self, request: Any) -> Any:
        scope = current_scope.get()
        if scope is None:
            return await self.inner.handle_async_request(request)
        await request.aread()  # a multipart body arrives as a stream
        call = Call(request, scope, is_async=True)
        if call.served is not None:
            return await call.serve_in_turn(request)
        starting = call.start()
        outside = current_scope.set(None)  # tasks the HTTP stack starts belong to this call
        try:
            await call.session.started(starting)  # the request leaves once its start is durable
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            failure = call.failed(exc)
            if failure is exc:
                raise
            raise failure from exc
        except asyncio.CancelledError:
            call.cancelled()
            raise
        except BaseException as exc:
            call.stopped(exc)
            raise
        finally:
            current_scope.reset(outside)
        if _is_stream(response):
            return _rebuilt(
                request, response, stream=async_tee(_module_of(request), response, call)
            )
        outside = current_scope.set(None)
        try:
            raw = b"".join([chunk async for chunk in response.stream])
            await response.aclose()
        except asyncio.CancelledError:
            call.cancelled()
            raise
        finally:
            current_scope.reset(outside)
        await call.session.landed(
            call.completed(response.status_code, response.headers, raw, wait=False)
        )
        if response.status_code not in RETRYABLE_STATUS:
            await call.hold()
        return _rebuilt(request, response, content=raw)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncJournalTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)


class JournalTransport:
    """The synchronous twin of `AsyncJournalTransport`, for `httpx.Client` / `httpx2.Client`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: Any) -> Any:
        scope = scope_here()
        if scope is None:
            return self.inner.handle_request(request)
        request.read()
        call = Call(request, scope, is_async=False)
        if call.served is not None:
            return call.serve_sync(request)
        call.start(sync=True)  # the loop may be blocked by this call: write the start now
        outside = current_scope.set(None)
        try:
            response = self.inner.handle_request(request)
        except Exception as exc:
            failure = call.failed(exc)
            if failure is exc:
                raise
            raise failure from exc
        except BaseException as exc:
            call.stopped(exc)
            raise
        finally:
            current_scope.reset(outside)
        if _is_stream(response):
            return _rebuilt(request, response, stream=sync_tee(_module_of(request), response, call))
        raw = b"".join(response.stream)
        response.close()
        call.completed(response.status_code, response.headers, raw)
        if response.status_code not in RETRYABLE_STATUS:
            call.hold_sync()
        return _rebuilt(request, response, content=raw)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> JournalTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.inner.__exit__(*exc_info)
