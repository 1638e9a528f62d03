"""A replay test: the agent's run is recorded once, then replayed offline on every test run.

    pytest examples/replay_tests                   # first time: records, live
    pytest examples/replay_tests                   # after: replays offline, nothing paid
    pytest examples/replay_tests --journal-record  # record again after a meant change

The journal is kept beside this file, in journals/test_research/; commit it with the test.
Here the "LLM" is a stand-in that counts its calls; with a real SDK, `instrument()` journals
its HTTP requests the same way (docs/testing.md).
"""

from __future__ import annotations

from replay import step
from replay.pytest_plugin import JournalReplay

PAID: list[str] = []


@step(kind="llm")
async def ask_llm(prompt: str) -> str:
    PAID.append(prompt)  # a real call would cost money here
    return f"answer to: {prompt}"


async def research(topic: str) -> str:
    notes = await ask_llm(f"three facts about {topic}")
    return await ask_llm(f"a title for: {notes}")


def test_research_titles_its_notes(journal_replay: JournalReplay) -> None:
    PAID.clear()
    title = journal_replay.run(research, "owls", run_id="owls")
    assert title == "answer to: a title for: answer to: three facts about owls"
    assert len(PAID) == (2 if journal_replay.recording else 0)
