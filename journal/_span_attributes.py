"""What a step's span says about the call it made: the GenAI semantic conventions' attributes
for a model call, the HTTP conventions' for a request, from what the integrations recorded.

Never a prompt, a response body, a header, or a URL's path or query: sizes, ids, models and
token counts only. A request that shows no model (none asked for, no model's answer) is a plain
HTTP span, not a GenAI one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from ._events import Event, EventKind
from ._inspect import llm_usage

AttributeValue = str | bool | int | float | tuple[str, ...]
SpanKind = Literal["internal", "client"]

# GenAI semantic conventions (the names are pinned by a test: the upstream module that holds
# them is an incubating, deprecated path, so it is not imported).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"
"""Replaced by `gen_ai.provider.name` upstream; still emitted: many backends read only it."""
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"

_OPERATIONS = (
    ("/chat/completions", "chat"),
    ("/messages", "chat"),
    ("/responses", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
)
"""An LLM request's path -> its GenAI operation name (longest match first)."""


def describe(
    kind: EventKind,
    name: str,
    attributes: dict[str, AttributeValue],
    arguments: bytes | None,
    outcome: Event | None,
    *,
    tokens: bool,
) -> tuple[str, SpanKind]:
    """The span's name and kind; GenAI and HTTP attributes added to `attributes`.

    A request the HTTP integration journaled is named `METHOD host:port` in the span, never
    with its path (a bot token or a webhook's secret can be the path). It is a GenAI span
    only when it shows it talked to a model (a model asked for, or a model's answer); any
    other request is a plain HTTP client span, named after its method."""
    request = _request(arguments) if kind in (EventKind.LLM, EventKind.TOOL) else None
    http = None
    if request is not None:
        _http_attributes(attributes, request, outcome)
        http = _journaled_request(name, request)
        if http is not None:
            attributes["journal.step.name"] = http
    body = request.get("body") if request is not None else None
    sent = body.get("json") if isinstance(body, dict) else None
    requested = sent.get("model") if isinstance(sent, dict) else None
    usage = llm_usage(outcome) if outcome is not None else None
    if http is not None and (kind is EventKind.TOOL or (requested is None and usage is None)):
        return http.partition(" ")[0], "client"
    if kind is EventKind.TOOL:
        attributes[GEN_AI_OPERATION] = "execute_tool"
        attributes[GEN_AI_TOOL_NAME] = name
        return f"execute_tool {name}", "client" if request is not None else "internal"
    if kind is not EventKind.LLM:
        return name, "internal"
    operation = _operation(request)
    attributes[GEN_AI_OPERATION] = operation
    if isinstance(requested, str):
        attributes[GEN_AI_REQUEST_MODEL] = requested
    if usage is not None:
        _usage_attributes(attributes, usage, tokens=tokens)
    model = attributes.get(GEN_AI_REQUEST_MODEL) or attributes.get(GEN_AI_RESPONSE_MODEL)
    return (f"{operation} {model}" if model else operation), "client"


def _usage_attributes(
    attributes: dict[str, AttributeValue], usage: Mapping[str, Any], *, tokens: bool
) -> None:
    provider, model = usage.get("provider"), usage.get("model")
    if isinstance(provider, str):
        attributes[GEN_AI_PROVIDER] = attributes[GEN_AI_SYSTEM] = provider
    if isinstance(model, str):
        attributes[GEN_AI_RESPONSE_MODEL] = model
    if isinstance(usage.get("finish_reason"), str):
        attributes[GEN_AI_FINISH_REASONS] = (usage["finish_reason"],)
    if not tokens:
        return  # a served step spent none: a backend summing usage must not count it twice
    for source, target in (
        ("input_tokens", GEN_AI_INPUT_TOKENS),
        ("output_tokens", GEN_AI_OUTPUT_TOKENS),
    ):
        value = usage.get(source)
        if isinstance(value, int) and not isinstance(value, bool):
            attributes[target] = value


def _request(arguments: bytes | None) -> dict[str, Any] | None:
    """The recorded HTTP request (method, url, body) of an integration's step, or None."""
    if not arguments or b'"url"' not in arguments:
        return None
    try:
        call = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    request = call.get("args") if isinstance(call, dict) else None
    if isinstance(request, dict) and isinstance(request.get("url"), str):
        return request
    return None


def _journaled_request(name: str, request: Mapping[str, Any]) -> str | None:
    """`METHOD host:port` if the step is a request the HTTP integration journaled (its name
    is `METHOD host:port/path`), None for a step of the user's that takes a URL argument."""
    method = request.get("method")
    if not isinstance(method, str):
        return None
    parts = urlsplit(str(request["url"]))
    where = f"{method} {parts.netloc.rpartition('@')[2]}"
    return where if name == where + (parts.path or "/") else None


def _operation(request: Mapping[str, Any] | None) -> str:
    if request is None:
        return "chat"  # a model request journaled by the pydantic-ai capability
    path = urlsplit(str(request["url"])).path
    return next((op for suffix, op in _OPERATIONS if path.endswith(suffix)), "chat")


def _http_attributes(
    attributes: dict[str, AttributeValue], request: Mapping[str, Any], outcome: Event | None
) -> None:
    """Where the request went (host and port, never the path or query) and its status."""
    parts = urlsplit(str(request["url"]))
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        port = None
    if port is not None:
        attributes["server.port"] = port
    if isinstance(request.get("method"), str):
        attributes["http.request.method"] = request["method"]
    if outcome is None or not outcome.payload or not outcome.payload.startswith(b'{"status":'):
        return
    try:
        response = orjson.loads(outcome.payload)
    except orjson.JSONDecodeError:
        return
    if isinstance(response.get("status"), int):
        attributes["http.response.status_code"] = response["status"]
