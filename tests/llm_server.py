"""A small OpenAI- and Anthropic-compatible server on 127.0.0.1, for offline SDK tests.

It answers deterministically (the reply echoes the last user message), streams server-sent
events when asked, can fail the first N requests with 500, and appends one line per request to a
log file so a test (even one whose client was SIGKILLed) can count what reached it.

    python tests/llm_server.py --port-file PORT --log REQUESTS [--fail-first N] [--delay S]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _last_user_text(body: dict[str, Any]) -> str:
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


class Counter:
    """What reached the server: one line per request in the log, and failures still to give."""

    def __init__(self, log: Path, fail_first: int, delay: float) -> None:
        self.log = log
        self.fail_left = fail_first
        self.delay = delay
        self.lock = threading.Lock()
        self.number = 0

    def arrive(self, path: str, body: bytes) -> tuple[int, bool]:
        with self.lock:
            self.number += 1
            failing = self.fail_left > 0
            if failing:
                self.fail_left -= 1
            with self.log.open("a") as handle:
                handle.write(json.dumps({"path": path, "body": body.decode(errors="replace")}))
                handle.write("\n")
            return self.number, failing


def make_handler(counter: Counter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            number, failing = counter.arrive(self.path, raw)
            if counter.delay:
                time.sleep(counter.delay)
            if failing:
                self._send(500, {"error": {"message": "try again", "type": "server_error"}})
                return
            body = json.loads(raw or b"{}")
            if self.path.endswith("/chat/completions"):
                if body.get("stream"):
                    self._stream(chat_chunks(body, number))
                else:
                    self._send(200, chat_completion(body, number))
            elif self.path.endswith("/messages"):
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

        def _stream(self, chunks: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", f"req_{counter.number}")
            self.end_headers()
            for chunk in [*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]:
                data = chunk.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def serve(log: Path, fail_first: int = 0, delay: float = 0.0) -> ThreadingHTTPServer:
    """A running server on 127.0.0.1 (port in `server.server_port`); stop with `shutdown()`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Counter(log, fail_first, delay)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def requests_logged(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = serve(args.log, args.fail_first, args.delay)
    args.port_file.write_text(str(server.server_port))
    threading.Event().wait()


if __name__ == "__main__":
    main()
