"""A stand-in for an OpenAI-compatible API on 127.0.0.1, so the examples run offline.

`chat/completions` answers with the text `answer(messages)` returns (by default a short
deterministic text derived from the last user message), after `delay` seconds like a real
model, and every request that arrives is counted, so an example can show which calls were paid
for.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    """A client killed mid-request (the demo SIGKILLs its agent) resets its connection: that
    is expected here, not an error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class MockLLM:
    """A running server: `base_url` for the SDK, `requests` for what reached it."""

    def __init__(
        self,
        delay: float = 0.2,
        answer: Callable[[list[dict[str, Any]]], str] | None = None,
        port: int = 0,
    ) -> None:
        self.delay = delay
        self.answer = answer or (lambda messages: answer_to(str(messages[-1]["content"])))
        self.requests = 0
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", port), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with mock._lock:
                    mock.requests += 1
                    number = mock.requests
                time.sleep(mock.delay)
                question = str(body["messages"][-1]["content"])
                content = mock.answer(body["messages"])
                reply = {
                    "id": f"chatcmpl-{number}",
                    "object": "chat.completion",
                    "created": 1_764_000_000,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": len(question.split()), "completion_tokens": 6},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-request-id", f"req_{number}")
                self.end_headers()
                self.wfile.write(data)

        return Handler


def answer_to(question: str) -> str:
    """What the stand-in model says: a plan for a topic, or a finding, or a summary."""
    if question.startswith("plan:"):
        return "history; habits"
    if question.startswith("summarise:"):
        return f"{question.count(';') + 1} findings, well supported"
    return f"notes on {question.split(':', 1)[-1].strip()}"
