"""What every streamed-response test checks, for any SDK: record, resume, replay.

Shared by tests/test_http_streams.py (openai 3, anthropic) and tests/openai2/ (openai 2.x over
legacy httpx), so it imports no SDK itself. The SDK side is an `ask(base_url, question)` that
streams one answer and returns `(text, objects)`: the text for the workflow's result, the parsed
SDK objects (`model_dump()`s) to compare between sittings.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import replay
from journal import EventStatus, Journal
from tests.llm_server import requests_logged, serve

Asked = tuple[str, list[Any]]
Ask = Callable[[str, str], Asked | Awaitable[Asked]]


class Crash(BaseException):
    """Stands in for the process dying between two steps (the run stays interrupted)."""


class LocalLLM:
    """tests/llm_server.py on a free port: its base URL, what reached it, and a way to stop it."""

    def __init__(self, log: Path, trailing_delay: float = 0.0) -> None:
        self.log = log
        self._server = serve(log, trailing_delay=trailing_delay)
        self.root = f"http://127.0.0.1:{self._server.server_port}"
        self.base_url = f"{self.root}/v1"
        self.running = True

    def questions(self) -> list[str]:
        """The last user text of every request that reached the server, in arrival order."""
        asked = []
        for request in requests_logged(self.log):
            body = json.loads(request["body"])
            if isinstance(body.get("input"), str):
                asked.append(body["input"])
            else:
                asked.append(body["messages"][-1]["content"])
        return asked

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()


def completed_keys(journal: Journal, run_id: str) -> list[str]:
    return [e.key for e in journal.events(run_id) if e.status is EventStatus.COMPLETED]


def recorded_body(journal: Journal, run_id: str, key: str) -> str:
    """The response body the journal holds for `key` (its completed row)."""
    (event,) = [
        e for e in journal.events(run_id) if e.key == key and e.status is EventStatus.COMPLETED
    ]
    body: str = json.loads(event.payload or b"")["body"]
    return body


async def _asked(ask: Ask, base: str, question: str) -> Asked:
    answer = ask(base, question)
    if inspect.isawaitable(answer):
        return await answer
    return answer


def record_resume_replay(
    journal: Journal, server: LocalLLM, ask: Ask, *, base_url: str | None = None
) -> list[list[Any]]:
    """Record two streamed answers and crash; resume; replay with the server gone.

    Checks on the way: the crashed sitting left a completed row for both streams; the resume
    paid only for the third question (counted at the server) and served the first two; the
    replay, with no server, returned the same result and the same SDK objects. Returns the SDK
    objects per sitting: [recorded, resumed, replayed].
    """
    base = base_url or server.base_url
    crashing = {"on": True}
    seen: list[Any] = []

    async def agent() -> list[str]:
        texts = []
        for question in ("one", "two", "three"):
            if question == "three" and crashing["on"]:
                raise Crash
            text, objects = await _asked(ask, base, question)
            texts.append(text)
            seen.append(objects)
        return texts

    agent.__qualname__ = "streaming_agent"
    with_crash: list[Any] = []
    try:
        asyncio.run(replay.run(agent, journal=journal, run_id="s"))
    except Crash:
        with_crash, seen[:] = list(seen), []
    else:
        raise AssertionError("the first sitting was meant to crash")
    assert server.questions() == ["one", "two"]
    assert completed_keys(journal, "s") == ["0:1", "0:2"], journal.events("s")

    crashing["on"] = False
    resumed = asyncio.run(replay.run_with_summary(agent, journal=journal, run_id="s"))
    assert server.questions() == ["one", "two", "three"], "a completed stream was paid again"
    assert (resumed.summary.served, resumed.summary.executed) == (2, 1)
    assert completed_keys(journal, "s") == ["0:1", "0:2", "0:3"]
    after_resume, seen[:] = list(seen), []

    server.stop()
    replayed = asyncio.run(
        replay.run_with_summary(agent, journal=journal, run_id="s", mode="replay")
    )
    assert replayed.result == resumed.result
    assert replayed.summary.executed == 0
    assert seen == after_resume and after_resume[:2] == with_crash
    return [with_crash, after_resume, list(seen)]
