"""Fix the bug, retry the failed run in place: what completed is served, the fix runs live.

    python examples/retry_failed_run.py               # fails, then is fixed and retried
    python examples/retry_failed_run.py --fail-only   # leaves the run failed (for the CLI)

A research agent fetches a page, asks an LLM for a title, extracts the text and asks the LLM
for a summary. The extractor has a bug (it reads a field the page does not have), so the run
fails after the first LLM call was paid for. Calling `run()` again only re-raises the recorded
failure, and says so. Once the code is fixed, `replay.retry(...)` (or `journal retry RUN`)
continues the same run: the page and the paid LLM call are served from the journal, the fixed
extractor and the rest run live. The journal keeps the failure and the failed attempt.

Here the environment variable EXTRACTOR_FIXED stands for deploying the fix; in your code you
edit the function and run again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from journal import Journal
from replay import retry, run, step

LLM_CALLS: list[str] = []


@step(kind="tool")
async def fetch_page(url: str) -> dict[str, str]:
    await asyncio.sleep(0.02)
    return {"url": url, "title": "Sleep", "body": "Cats sleep 12 to 16 hours a day."}


@step(kind="llm")
async def ask_llm(prompt: str) -> str:
    """A stand-in for a paid chat completion."""
    LLM_CALLS.append(prompt)
    await asyncio.sleep(0.05)
    return f"answer to: {prompt[:48]}"


@step(kind="tool")
async def extract_text(page: dict[str, str]) -> str:
    if os.environ.get("EXTRACTOR_FIXED"):
        return page["body"]
    return page["text"]  # the bug: the page's field is "body"


async def research(url: str) -> str:
    page = await fetch_page(url)
    title = await ask_llm(f"a title for {page['title']}")
    text = await extract_text(page)
    summary = await ask_llm(f"summarise: {text}")
    return f"{title} / {summary}"


def demo(db: Path, *, fail_only: bool) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()  # a fresh journal each time, so the output below holds
    os.environ.pop("EXTRACTOR_FIXED", None)
    url = "https://example.org/cats"
    with Journal(db) as journal:
        print("1. the run fails after one paid LLM call")
        try:
            asyncio.run(run(research, url, journal=journal, run_id="cats-research"))
        except KeyError as exc:
            print(f"   failed: KeyError {exc}; LLM calls so far: {len(LLM_CALLS)}")
        if fail_only:
            return
        print("2. calling run() again re-raises the recorded failure; nothing runs")
        try:
            asyncio.run(run(research, url, journal=journal, run_id="cats-research"))
        except KeyError as exc:
            print(f"   {exc.__notes__[0][:88]}...")
        print("3. the fix is deployed; the run is retried in place")
        os.environ["EXTRACTOR_FIXED"] = "1"
        result = asyncio.run(retry(research, url, journal=journal, run_id="cats-research"))
        print(f"   result: {result}")
        print(f"   LLM calls in all: {len(LLM_CALLS)} (the title was served, not asked again)")
        print("4. the journal keeps the whole history")
        for event in journal.events("cats-research"):
            print(f"   {event.seq}  {event.key:8} {event.name:14} {event.status.value}")
        print(f"   {journal.verify('cats-research')[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "retry" / "journal.db")
    parser.add_argument("--fail-only", action="store_true", help="Stop after the failure.")
    arguments = parser.parse_args()
    demo(arguments.db, fail_only=arguments.fail_only)


if __name__ == "__main__":
    main()
