"""A frozen workflow for golden sets from schema 6 on: a conversation whose requests outgrow
4 KB, so the journal keeps them as chunks. A module of its own: `workflows.py`'s source is
hashed into the version of the runs older golden sets hold, and must not change."""

from __future__ import annotations

import httpx2

from replay.integrations import AsyncJournalTransport

from .workflows import _provider


async def converse(topic: str) -> list[str]:
    """Four turns, each request the whole conversation so far."""
    messages = [{"role": "system", "content": "You answer questions about animals. " * 60}]
    answers = []
    transport = AsyncJournalTransport(httpx2.MockTransport(_provider))
    async with httpx2.AsyncClient(transport=transport, base_url="https://llm.example") as client:
        for turn in range(4):
            question = f"{topic} question {turn}: " + "tell me more, " * 40
            messages.append({"role": "user", "content": question})
            response = await client.post(
                "/v1/chat/completions", json={"model": "m", "messages": messages}
            )
            answer: str = response.json()["choices"][0]["message"]["content"]
            messages.append({"role": "assistant", "content": answer})
            answers.append(answer)
    return answers
