"""What a reader wants to know about an LLM response: model, tokens, finish reason.

Recognised shapes: OpenAI chat completions and responses (and OpenAI-compatible servers),
Anthropic messages, as one JSON body or as a server-sent event stream. Anything else gives None.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson


def llm_metadata(status: int, headers: Any, raw: bytes) -> dict[str, Any] | None:
    """`{"provider", "model", "input_tokens", "output_tokens", "finish_reason"}` or None."""
    if status >= 400 or not raw:
        return None
    body = _decoded(headers.get("content-encoding", ""), raw)
    if body is None:
        return None
    if "text/event-stream" in headers.get("content-type", ""):
        return _from_stream(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _from_json(value) if isinstance(value, dict) else None


def _decoded(encoding: str, raw: bytes) -> bytes | None:
    encoding = encoding.lower().strip()
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, EOFError, zlib.error):  # EOFError: a truncated gzip body
        return None
    return raw if encoding in ("", "identity") else None


def _from_json(value: dict[str, Any]) -> dict[str, Any] | None:
    usage = value.get("usage") if isinstance(value.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    if value.get("object") in ("chat.completion", "text_completion", "chat.completion.chunk"):
        choices = value.get("choices") or [{}]
        return usage_summary(
            "openai",
            value.get("model"),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            choices[0].get("finish_reason") if isinstance(choices[0], dict) else None,
        )
    if value.get("object") == "response":
        return usage_summary(
            "openai",
            value.get("model"),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            value.get("status"),
        )
    if value.get("type") == "message" and "content" in value:
        return usage_summary(
            "anthropic",
            value.get("model"),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            value.get("stop_reason"),
        )
    return None


def _from_stream(body: bytes) -> dict[str, Any] | None:
    """Fold an SSE stream's events into one set of metadata (the last word wins)."""
    found: dict[str, Any] = {}
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        _fold_event(found, event)
    return (
        usage_summary(
            found.get("provider"),
            found.get("model"),
            found.get("input_tokens"),
            found.get("output_tokens"),
            found.get("finish_reason"),
        )
        if found.get("provider")
        else None
    )


def _fold_event(found: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event.get("type")
    if event.get("object") == "chat.completion.chunk":
        found.update(provider="openai", model=event.get("model") or found.get("model"))
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                found["finish_reason"] = choice["finish_reason"]
        usage = event.get("usage")
        if isinstance(usage, dict):
            found.update(
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
            )
    elif kind == "message_start" and isinstance(event.get("message"), dict):
        message = event["message"]
        usage = message.get("usage") or {}
        found.update(
            provider="anthropic",
            model=message.get("model"),
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
        )
    elif kind in ("response.completed", "response.incomplete", "response.failed"):
        response = event.get("response")
        summary = _from_json(response) if isinstance(response, dict) else None
        if summary is not None:
            found.update(summary)
    elif kind == "message_delta":
        delta, usage = event.get("delta") or {}, event.get("usage") or {}
        if delta.get("stop_reason"):
            found["finish_reason"] = delta["stop_reason"]
        if usage.get("output_tokens") is not None:
            found["output_tokens"] = usage["output_tokens"]


def usage_summary(
    provider: Any, model: Any, input_tokens: Any, output_tokens: Any, finish: Any
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "finish_reason": finish,
    }
