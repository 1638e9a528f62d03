"""httpx and httpx2 requests and responses as JSON, and back: the parts of HTTP errors kept.

`HTTPStatusError`, the transport errors and the OpenAI/Anthropic SDK errors hold the request
that failed and the response that came back. The journal keeps a request's method and URL only
(its headers hold credentials, its body the prompt) and a response's status, headers and body
(the decoded body; cookies, organisation headers and the headers that framed the wire bytes are
left out). A response whose body was never read is rebuilt unread.
"""

from __future__ import annotations

import base64
import contextlib
import sys
from typing import Any

LIBRARIES = ("httpx", "httpx2")
BODY_LIMIT = 256 * 1024
"""Bytes of body kept; a bigger response is not described (its error is not rebuilt)."""
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        # credentials and account names (as the HTTP integration drops them)
        "set-cookie",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
        # framing of the wire bytes; the body kept is the decoded one
        "content-encoding",
        "content-length",
        "transfer-encoding",
    }
)

Requests = dict[tuple[str, ...], Any]
"""Requests rebuilt so far, so that an error's request and its response's are one object."""


def describe_http(value: Any) -> dict[str, Any] | None:
    """`value` described as JSON if it is an httpx/httpx2 Request or Response, else None."""
    library = type(value).__module__.partition(".")[0]
    module = sys.modules.get(library) if library in LIBRARIES else None
    if module is None:
        return None
    if isinstance(value, module.Request):
        return {"kind": "request", "library": library, **_request_fields(value)}
    if isinstance(value, module.Response):
        return _response_fields(value, library)
    return None


def revive_http(described: dict[str, Any], requests: Requests) -> Any:
    """The Request or Response `describe_http` described; raises if its library is not
    imported (never imports it) or the description is not one."""
    library = described["library"]
    module = sys.modules[library] if library in LIBRARIES else None
    if module is None:
        raise LookupError(library)
    if described["kind"] == "request":
        return _request(module, described, requests)
    return _response(module, described, requests)


def _request_fields(request: Any) -> dict[str, Any]:
    return {"method": request.method, "url": str(request.url)}


def _response_fields(response: Any, library: str) -> dict[str, Any] | None:
    described: dict[str, Any] = {
        "kind": "response",
        "library": library,
        "status": response.status_code,
        "headers": [
            [k, v]
            for k, v in response.headers.multi_items()
            if k.lower() not in DROPPED_RESPONSE_HEADERS
        ],
    }
    with contextlib.suppress(RuntimeError):  # unless built without a request
        described["request"] = _request_fields(response.request)
    try:
        body = response.content
    except RuntimeError:  # ResponseNotRead: a stream never read stays unread
        return described
    if len(body) > BODY_LIMIT:
        return None
    try:
        described["body"] = body.decode()
    except UnicodeDecodeError:
        described["body_base64"] = base64.b64encode(body).decode()
    return described


def _request(module: Any, described: dict[str, Any], requests: Requests) -> Any:
    key = (described["library"], described["method"], described["url"])
    if key not in requests:
        requests[key] = module.Request(described["method"], described["url"])
    return requests[key]


def _response(module: Any, described: dict[str, Any], requests: Requests) -> Any:
    extra: dict[str, Any] = {}
    if "request" in described:
        request = {"library": described["library"], **described["request"]}
        extra["request"] = _request(module, request, requests)
    if "body" in described:
        extra["content"] = described["body"].encode()
    elif "body_base64" in described:
        extra["content"] = base64.b64decode(described["body_base64"])
    else:
        extra["stream"] = module.ByteStream(b"")  # unread, as it was
    headers = [tuple(pair) for pair in described["headers"]]
    return module.Response(described["status"], headers=headers, **extra)
