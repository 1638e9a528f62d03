"""The workflows the golden journals were recorded with. Frozen: never edit one.

Each golden set under tests/data/golden/ was written by these functions; every later version
of the library must replay those journals with them, unchanged. A workflow that needs to do
something new is a new function, recorded into a new golden set beside the old ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from uuid import UUID

import httpx2
from pydantic import BaseModel, ConfigDict

import replay
from replay.integrations import AsyncJournalTransport

HMAC_KEY = "golden-journal-test-key-not-a-secret"
"""The key the signed golden journal was chained with (a test value, public on purpose)."""


class Hit(BaseModel):
    title: str
    score: float
    tags: set[str]


class Report(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    started: dt.datetime
    report_id: UUID
    hits: list[Hit]
    digest: bytes
    answer: str
    approved_by: str | None = None


live_calls: list[str] = []
"""Every call that really ran: replaying a golden journal must add nothing here."""


@replay.step(kind="tool")
async def search(query: str, limit: int = 2) -> list[Hit]:
    live_calls.append(f"search:{query}")
    return [Hit(title=f"{query} {i}", score=1.0 / (i + 1), tags={"b", "a"}) for i in range(limit)]


@replay.step(name="checksum")
def checksum(blob: bytes, *, salt: bytes = b"\x00\xff") -> bytes:
    live_calls.append("checksum")
    return bytes(reversed(blob + salt))


flaky_failures = [0]
"""How many more times `flaky_fetch` fails before it succeeds (set by the recorder)."""


@replay.step(retries=2, retry_delay=0.0, jitter=0.0, retry_on=(ConnectionError,))
async def flaky_fetch(path: str) -> dict[str, Any]:
    live_calls.append(f"fetch:{path}")
    if flaky_failures[0]:
        flaky_failures[0] -= 1
        raise ConnectionError(f"reset while fetching {path}")
    return {"path": path, "size": 3, "nested": {"ok": True, "ratio": 0.5}}


def _provider(request: httpx2.Request) -> httpx2.Response:
    """The stand-in LLM API, reached through the journaling transport."""
    live_calls.append(f"http:{request.url.path}")
    return httpx2.Response(
        200,
        json={
            "id": "c1",
            "choices": [{"message": {"role": "assistant", "content": "Cats sleep a lot."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        },
    )


async def ask_llm(prompt: str) -> str:
    transport = AsyncJournalTransport(httpx2.MockTransport(_provider))
    async with httpx2.AsyncClient(transport=transport, base_url="https://llm.example") as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": prompt}]},
            headers={"authorization": "Bearer sk-golden-not-a-secret"},
        )
        content: str = response.json()["choices"][0]["message"]["content"]
        return content


async def research(topic: str) -> Report:
    """Typed values, the clock and ids, a gather, a sync step with bytes, retries, HTTP."""
    started = await replay.now()
    report_id = await replay.uuid4()
    first, second = await asyncio.gather(search(topic), search(f"{topic} facts", limit=1))
    digest = checksum(topic.encode())
    fetched = await flaky_fetch(f"/kb/{topic}")
    answer = await ask_llm(f"{topic}: {fetched['size']} facts")
    return Report(
        topic=topic,
        started=started,
        report_id=report_id,
        hits=[*first, *second],
        digest=digest,
        answer=answer,
    )


async def approved_research(topic: str) -> Report:
    """Waits for a person's approval (a signal) before it finishes."""
    report = await research(topic)
    approver = await replay.signal("approval")
    return report.model_copy(update={"approved_by": str(approver["by"])})


class NoSuchTopic(LookupError):
    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"no results for {topic!r}")
        self.topic = topic
        self.code = code


@replay.step
async def strict_search(topic: str) -> list[Hit]:
    live_calls.append(f"strict:{topic}")
    raise NoSuchTopic(topic, 404)


async def doomed(topic: str) -> list[Hit]:
    """Fails with a recorded, typed error."""
    await replay.now()
    return await strict_search(topic)


checker_broken = [False]
"""While True, `check_facts` fails: the golden recorder fails a run on it, then retries it."""


@replay.step
async def check_facts(report: Report) -> int:
    live_calls.append(f"check:{report.topic}")
    if checker_broken[0]:
        raise ValueError(f"the checker cannot read {report.topic!r}")
    return len(report.hits)


async def checked_research(topic: str) -> int:
    """Fails on a broken checker, then is retried in place once it is fixed."""
    return await check_facts(await research(topic))
