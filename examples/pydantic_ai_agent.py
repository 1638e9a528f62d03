"""A pydantic-ai agent killed with SIGKILL mid-run resumes without paying for its model twice.

    python examples/pydantic_ai_agent.py [--db PATH]

The agent is a real `OpenAIChatModel` talking to a local OpenAI-compatible server that this
script starts (a tool call, then an answer; it counts the requests it serves, the stand-in for
your provider's bill). `JournalDurability` journals each model request and tool call.

1. A child process runs the agent live. After the first model request it calls a slow tool,
   prints a line, and the parent kills it with SIGKILL while the tool is in flight.
2. The parent resumes the run: the first model request is served from the journal, the tool
   that was in flight runs again, and the second model request runs live.
3. The server is stopped and the run is replayed offline: every step is served, no model
   request is made, and the answer is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from journal import Journal
from replay import run, run_with_summary
from replay.integrations import JournalDurability

RUN_ID = "ticket-7"
QUESTION = "Where is order 7, and when will it arrive?"
MARKER = "first model request answered; the tool is running"
SLOW_TOOL_ENV = "PYDANTIC_AI_EXAMPLE_SLOW_TOOL"
BASE_URL_ENV = "PYDANTIC_AI_EXAMPLE_BASE_URL"


def _completion(body: dict[str, Any], number: int) -> dict[str, Any]:
    """A tool call for the first turn; once the tool has answered, a reply quoting it."""
    tool_answers = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if not tool_answers:
        call = {"name": "lookup_order", "arguments": json.dumps({"order_id": 7})}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_lookup_7", "type": "function", "function": call}],
        }
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": f"Order 7: {tool_answers[0]}"}, "stop"
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": 1_764_000_000 + number,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }


class CountingServer(ThreadingHTTPServer):
    """`POST /v1/chat/completions` on 127.0.0.1; `requests` counts what it answered."""

    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with server.lock:
                    server.requests += 1
                    number = server.requests
                data = json.dumps(_completion(body, number)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


# recipe: pydantic-ai
def make_agent() -> Agent[None, str]:
    provider = OpenAIProvider(base_url=os.environ[BASE_URL_ENV], api_key="sk-demo-not-real")
    agent = Agent(
        OpenAIChatModel("gpt-demo", provider=provider),
        name="support",
        instructions="Answer order questions; look orders up first.",
        capabilities=[JournalDurability()],
    )

    @agent.tool_plain
    async def lookup_order(order_id: int) -> str:
        """The order's shipping status."""
        if os.environ.get(SLOW_TOOL_ENV):
            await asyncio.sleep(0)  # one loop turn: the journal writes this call's start
            print(MARKER, flush=True)
            await asyncio.sleep(60)  # the parent kills us here
        return "shipped on Monday, arriving Thursday"

    return agent


async def answer(question: str) -> str:
    """The workflow: one agent run, its model requests and tool calls journaled."""
    return (await make_agent().run(question)).output


# end recipe: pydantic-ai


def _worker(db: Path) -> None:
    with Journal(db) as j:
        asyncio.run(run(answer, QUESTION, journal=j, run_id=RUN_ID))


def demo(db: Path) -> None:
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)  # a fresh demo each time
    db.parent.mkdir(parents=True, exist_ok=True)
    server = CountingServer()
    os.environ[BASE_URL_ENV] = f"http://127.0.0.1:{server.server_port}/v1"  # the child inherits it

    print(f"1. start: the agent runs live in a child process (journal: {db})")
    child = subprocess.Popen(
        [sys.executable, __file__, "--worker", "--db", str(db)],
        env={**os.environ, SLOW_TOOL_ENV: "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != MARKER:
        child.kill()
        raise SystemExit(f"the child stopped before the tool ran (exit {child.wait()}): {line!r}")
    print(f"   child: {line}")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = server.requests
    print(f"2. kill -9 while the tool ran: {killed} model request paid so far")

    with Journal(db) as j:
        resumed = asyncio.run(run_with_summary(answer, QUESTION, journal=j, run_id=RUN_ID))
    summary = resumed.summary
    print(
        f"3. resume: {summary.served} step served from the journal, {summary.reexecuted} "
        f"re-executed (in flight at the kill), {summary.executed} executed live; "
        f"{server.requests - killed} model request paid"
    )
    print(f"   answer: {resumed.result!r}")

    server.shutdown()  # from here on, a model request could not even connect
    server.server_close()
    paid = server.requests
    with Journal(db) as j:
        replayed = asyncio.run(
            run_with_summary(answer, QUESTION, journal=j, run_id=RUN_ID, mode="replay")
        )
    print(
        f"4. replay offline: {replayed.summary.served} steps served, "
        f"{replayed.summary.executed} executed; {server.requests - paid} model requests paid; "
        f"same answer: {replayed.result == resumed.result}"
    )
    print(f"   model requests paid in all: {server.requests} (an uncrashed run pays 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "pydantic_ai" / "journal.db")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.db)
    else:
        demo(args.db)


if __name__ == "__main__":
    main()
