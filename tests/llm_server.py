"""A small OpenAI- and Anthropic-compatible server on 127.0.0.1, for offline SDK tests.

It answers deterministically (the reply echoes the last user message) on chat/completions,
the Responses API and Anthropic messages, streams server-sent events when asked (one HTTP chunk
per event, ending with the provider's terminal event), can fail the first N requests with 500, and
appends one line per request to a log file so a test (even one whose client was SIGKILLed) can
count what reached it. `--trailing-delay S` sends a comment S seconds after a stream's terminal
event, as proxies with keep-alive comments do.

For agent frameworks it also plays a scripted agent. A user message containing
`PLAN {"rounds": [[["lookup", {"city": "Paris"}], ...], ...], "final": "text"}` makes the
server answer round k (k = assistant messages already in the conversation) with those tool
calls, all in one response (parallel tool calls), and then with the final answer:
`final: ` followed by every `[[...]]` observation the conversation carries, in message order.
`"final": "final_answer"` ends with a call to that tool instead (smolagents' way to answer).
`POST .../tools/NAME` with a JSON object answers `{"result": "[[NAME:v1,v2]]"}`: a tool's
side effect that reaches the server, so it is counted like a model request. `slow={n: s}`
holds the n-th request (1-based) for s seconds after logging it, so a test can kill its
client while that request is in flight.

    python tests/llm_server.py --port-file PORT --log REQUESTS [--fail-first N] [--delay S]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLAN_MARK = "PLAN "
OBSERVATION = re.compile(r"\[\[[^\[\]]*\]\]")


def _last_user_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("input"), str):  # the Responses API's shorthand
        return str(body["input"])
    for message in reversed(body.get("input") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content"))
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


def chat_completion(body: dict[str, Any], number: int) -> dict[str, Any]:
    text = f"echo: {_last_user_text(body)}"
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": 1_764_000_000 + number,
        "model": body.get("model", "gpt-test"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def chat_chunks(body: dict[str, Any], number: int) -> list[dict[str, Any]]:
    words = f"echo: {_last_user_text(body)}".split(" ")
    base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": 1}
    model = body.get("model", "gpt-test")
    chunks = [
        {**base, "model": model, "choices": [{"index": 0, "delta": {"content": w + " "}}]}
        for w in words
    ]
    chunks.append(
        {**base, "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    chunks.append(
        {
            **base,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 20},
        }
    )
    return chunks


def response_object(body: dict[str, Any], number: int, text: str | None) -> dict[str, Any]:
    """A Responses API `response`: in progress (no text yet) or completed with `text`."""
    done = text is not None
    return {
        "id": f"resp_{number}",
        "object": "response",
        "created_at": 1_764_000_000 + number,
        "status": "completed" if done else "in_progress",
        "model": body.get("model", "gpt-test"),
        "output": [_output_message(number, text)] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len((text or "").split()),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11 + len((text or "").split()),
        }
        if done
        else None,
    }


def _output_message(number: int, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    status = "in_progress" if text is None else "completed"
    return {
        "id": f"msg_{number}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def response_events(body: dict[str, Any], number: int) -> list[tuple[str, dict[str, Any]]]:
    """The Responses API's stream: created, the text word by word, then `response.completed`."""
    text = f"echo: {_last_user_text(body)}"
    item = {"item_id": f"msg_{number}", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response_object(body, number, None)}),
        ("response.output_item.added", {"output_index": 0, "item": _output_message(number, None)}),
        ("response.content_part.added", {**item, "part": part}),
    ]
    for word in text.split(" "):
        delta = {**item, "delta": word + " ", "logprobs": []}
        events.append(("response.output_text.delta", delta))
    events += [
        ("response.output_text.done", {**item, "text": text, "logprobs": []}),
        ("response.content_part.done", {**item, "part": {**part, "text": text}}),
        ("response.output_item.done", {"output_index": 0, "item": _output_message(number, text)}),
        ("response.completed", {"response": response_object(body, number, text)}),
    ]
    return [
        (name, {"type": name, "sequence_number": seq, **data})
        for seq, (name, data) in enumerate(events)
    ]


def anthropic_events(body: dict[str, Any], number: int) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic's message stream: start, a ping, the text word by word, `message_stop`."""
    words = f"echo: {_last_user_text(body)}".split(" ")
    start = {**anthropic_message(body, number), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 9, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
    ]
    for n, word in enumerate(words):
        text = word if n == 0 else " " + word
        events.append(
            ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
        )
    events += [
        ("content_block_stop", {"index": 0}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        ),
        ("message_stop", {}),
    ]
    return [(name, {"type": name, **data}) for name, data in events]


def anthropic_message(body: dict[str, Any], number: int) -> dict[str, Any]:
    return {
        "id": f"msg_{number}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-test"),
        "content": [{"type": "text", "text": f"echo: {_last_user_text(body)}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def agent_plan(body: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """The plan a user message carries, and the index of that message; None when none does."""
    for index, message in enumerate(body.get("messages", [])):
        text = _text_of(message)
        if message.get("role") == "user" and PLAN_MARK in text:
            raw = text.split(PLAN_MARK, 1)[1].splitlines()[0]
            plan, _ = json.JSONDecoder().raw_decode(raw.strip())
            return plan, index
    return None


def agent_turn(body: dict[str, Any], plan: dict[str, Any], at: int) -> dict[str, Any]:
    """The scripted assistant message for this point of the conversation."""
    messages = body.get("messages", [])[at + 1 :]
    done = sum(1 for m in messages if m.get("role") == "assistant")
    rounds = plan.get("rounds", [])
    if done < len(rounds):
        calls = [
            {
                "id": f"call_{done}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for index, (name, arguments) in enumerate(rounds[done])
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}
    seen = [
        o
        for m in messages
        if m.get("role") != "assistant"
        for o in OBSERVATION.findall(_text_of(m))
    ]
    answer = "final: " + " ".join(seen)
    final = plan.get("final", "text")
    if final == "text":
        return {"role": "assistant", "content": answer}
    call = {
        "id": f"call_{done}_0",
        "type": "function",
        "function": {"name": final, "arguments": json.dumps({"answer": answer})},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def agent_completion(body: dict[str, Any], number: int, turn: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": 1_764_000_000 + number,
        "model": body.get("model", "gpt-test"),
        "choices": [
            {
                "index": 0,
                "message": turn,
                "finish_reason": "tool_calls" if turn.get("tool_calls") else "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def agent_chunks(body: dict[str, Any], number: int, turn: dict[str, Any]) -> list[dict[str, Any]]:
    """The same turn as server-sent chunks: text word by word, each tool call as a header
    chunk (id, name) and its arguments in two pieces, then the finish reason and usage."""
    base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": 1}
    model = body.get("model", "gpt-test")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {**base, "model": model, "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if turn.get("tool_calls"):
        for index, call in enumerate(turn["tool_calls"]):
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            header = {"name": name, "arguments": ""}
            chunks.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": header,
                            }
                        ]
                    }
                )
            )
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                chunks.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        chunks.append(chunk({}, "tool_calls"))
    else:
        for word in turn["content"].split(" "):
            chunks.append(chunk({"content": word + " "}))
        chunks.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    chunks.append({**base, "model": model, "choices": [], "usage": usage})
    return chunks


def tool_result(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool endpoint's answer: an observation the scripted agent will quote."""
    return {"result": f"[[{name}:{','.join(str(v) for v in arguments.values())}]]"}


class Counter:
    """What reached the server: one line per request in the log, and failures still to give."""

    def __init__(
        self,
        log: Path,
        fail_first: int,
        delay: float,
        trailing_delay: float = 0.0,
        slow: Mapping[int, float] | None = None,
    ) -> None:
        self.log = log
        self.fail_left = fail_first
        self.delay = delay
        self.trailing_delay = trailing_delay
        self.slow = dict(slow or {})
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.number = 0

    def arrive(self, path: str, body: bytes) -> tuple[int, bool]:
        with self.lock:
            self.number += 1
            failing = self.fail_left > 0
            if failing:
                self.fail_left -= 1
            line = {"path": path, "body": body.decode(errors="replace"), "n": self.number}
            with self.log.open("ab", buffering=0) as handle:
                handle.write(json.dumps(line).encode() + b"\n")  # one write: one whole line
            return self.number, failing

    def hold(self, number: int) -> bool:
        """Keep the request in flight: every request for `delay`, a chosen one for longer.
        False when the server stopped while holding it: the request gets no answer."""
        if self.delay:
            time.sleep(self.delay)
        held = self.slow.get(number)
        return not (held and self.stopping.wait(held))


def make_handler(counter: Counter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            number, failing = counter.arrive(self.path, raw)
            if not counter.hold(number):
                self.close_connection = True
                return
            if failing:
                self._send(500, {"error": {"message": "try again", "type": "server_error"}})
                return
            body = json.loads(raw or b"{}")
            streaming = bool(body.get("stream"))
            if self.path.endswith("/chat/completions"):
                planned = agent_plan(body)
                if planned is not None:
                    turn = agent_turn(body, *planned)
                    if streaming:
                        self._stream(_data(agent_chunks(body, number, turn)))
                    else:
                        self._send(200, agent_completion(body, number, turn))
                elif streaming:
                    self._stream(_data(chat_chunks(body, number)))
                else:
                    self._send(200, chat_completion(body, number))
            elif "/tools/" in self.path:
                self._send(200, tool_result(self.path.rsplit("/", 1)[1], body))
            elif self.path.endswith("/responses"):
                if streaming:
                    self._stream(_named(response_events(body, number)))
                else:
                    text = f"echo: {_last_user_text(body)}"
                    self._send(200, response_object(body, number, text))
            elif self.path.endswith("/messages"):
                if streaming:
                    self._stream(_named(anthropic_events(body, number)), "request-id")
                else:
                    self._send(200, anthropic_message(body, number), request_id="request-id")
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _send(
            self, status: int, value: dict[str, Any], request_id: str = "x-request-id"
        ) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header(request_id, f"req_{counter.number}")
            self.send_header("set-cookie", "__cf_bm=secret-cookie-value; path=/")
            self.send_header("openai-organization", "org-secret-name")
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: list[str], request_id: str = "x-request-id") -> None:
            """One HTTP chunk per event; a late trailing comment if the server is told to."""
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header(request_id, f"req_{counter.number}")
            self.end_headers()
            try:
                for event in events:
                    self._chunk(event.encode())
                if counter.trailing_delay:
                    time.sleep(counter.trailing_delay)
                    self._chunk(b": keep-alive\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except ConnectionError:
                pass  # the client stopped reading after the terminal event: allowed

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _data(chunks: list[dict[str, Any]]) -> list[str]:
    """Chat completion chunks as server-sent events, ending with `data: [DONE]`."""
    return [*(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks), "data: [DONE]\n\n"]


def _named(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events]


class LLMServer(ThreadingHTTPServer):
    """The running server: `server_port`, and `stop()` (held requests are dropped unanswered)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(("127.0.0.1", 0), make_handler(counter))
        self.counter = counter

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (tests of abandoned streams do) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        self.counter.stopping.set()
        self.shutdown()
        self.server_close()


def serve(
    log: Path,
    fail_first: int = 0,
    delay: float = 0.0,
    trailing_delay: float = 0.0,
    slow: Mapping[int, float] | None = None,
) -> LLMServer:
    """A running server on 127.0.0.1 (port in `server.server_port`); stop with `shutdown()`
    and `server_close()`, or `stop()`.

    `slow={n: seconds}` holds the n-th request that long (after logging it)."""
    server = LLMServer(Counter(log, fail_first, delay, trailing_delay, slow))
    # A short poll interval: shutdown() returns within it (the default 0.5 s adds up in tests).
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


def requests_logged(log: Path) -> list[dict[str, Any]]:
    """The requests logged so far. A line still being written (no newline yet) is not one:
    a reader polling while a large request arrives would see the first part of it."""
    if not log.exists():
        return []
    written = log.read_text()
    whole = written[: written.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--trailing-delay", type=float, default=0.0)
    args = parser.parse_args()
    server = serve(args.log, args.fail_first, args.delay, args.trailing_delay)
    args.port_file.write_text(str(server.server_port))
    threading.Event().wait()


if __name__ == "__main__":
    main()
