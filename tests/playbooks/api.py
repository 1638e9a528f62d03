"""An OpenAI-compatible stand-in on 127.0.0.1 that plays both of Playbooks' LLM roles for
`PROGRAM`: the compiler (it answers with `COMPILED`) and the interpreter (hello, then
goodbye). It keeps every request body it receives, in order, so a test can tell which calls
were paid for and whether any was paid twice; it can hold the goodbye turn in flight until
the test releases it, so a test can interrupt the program at that point."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROGRAM = """\
# HelloAgent
A greeter that says hello, then goodbye.

## Main
### Triggers
- When the program starts
### Steps
- Say hello to the user
- Say goodbye to the user
- End the program

```public.json
[]
```
"""

COMPILED = """\
# HelloAgent
A greeter that says hello, then goodbye.

## Main() -> None
Greets the user twice.
### Triggers
- T1:BGN When program starts
### Steps
- 01:QUE Say(Say hello to the user)
- 02:YLD call
- 03:QUE Say(Say goodbye to the user)
- 04:YLD exit

```public.json
[]
```
"""

HELLO = "Hello from the journal"
GOODBYE = "Goodbye from the journal"
_TURNS = {
    "hello": f'`Step["Main:01:QUE"]` `Say("{HELLO}")`\n`Step["Main:02:YLD"]` yld call',
    "goodbye": f'`Step["Main:03:QUE"]` `Say("{GOODBYE}")`\n`Step["Main:04:YLD"]` yld exit',
}


def role(messages: list[dict[str, Any]]) -> str:
    """Which call this is: the compile, or the interpreter's hello or goodbye turn."""
    text = json.dumps(messages)
    if "Playbooks Assembly Language Compiler" in text:
        return "compile"
    return "goodbye" if HELLO in text else "hello"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed while its request was held resets the connection: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PlaybooksAPI:
    """The running stand-in: `base_url`, `received` (role, raw body) in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.hold_goodbye = False
        self.down = False
        """Drop every connection without an answer, as a crashed API server does."""
        self.goodbye_arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def roles(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.received]

    def paid_twice(self) -> list[str]:
        """The roles of the request bodies that arrived more than once."""
        with self._lock:
            bodies = [body for _, body in self.received]
            return [name for name, body in self.received if bodies.count(body) > 1]

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                if api.down:
                    self.close_connection = True
                    return  # the client reads no response: a transport error
                body = json.loads(raw)
                name = role(body["messages"])
                with api._lock:
                    api.received.append((name, raw))
                if name == "goodbye":
                    api.goodbye_arrived.set()
                    if api.hold_goodbye:
                        api.release.wait(60)
                content = COMPILED if name == "compile" else _TURNS[name]
                reply = {
                    "id": f"chatcmpl-{len(api.received)}",
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
                    "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
