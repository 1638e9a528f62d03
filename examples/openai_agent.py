"""An agent written against the plain OpenAI SDK, made crash-safe without touching its code.

    python examples/openai_agent.py        # offline: it starts a local OpenAI-compatible server

1. A local server stands in for the OpenAI API and counts the requests it receives (the bill).
2. A child process runs `research`, plain `openai.AsyncOpenAI` code with no `@step` in it,
   under `journaled(...)`; `replay.integrations.instrument()` journals the SDK's requests.
   After the second answer the child is killed with SIGKILL.
3. The parent resumes the run: the answered requests are served from the journal, so the
   server only sees the ones that had not completed.
4. The server is shut down and the run is replayed offline: the same report, no request.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import openai
from mock_llm_server import MockLLM  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import journaled
from replay.integrations import instrument

RUN_ID = "openai-research-1"


async def research(base_url: str, topic: str) -> str:
    """Code you do not own: an SDK client made inside, no journaling calls anywhere."""
    async with openai.AsyncOpenAI(api_key="sk-example-not-real", base_url=base_url) as client:

        async def ask(prompt: str) -> str:
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            answer = completion.choices[0].message.content or ""
            print(f"   answered: {prompt!r}", flush=True)
            return answer

        plan = await ask(f"plan: {topic}")
        findings = await asyncio.gather(*(ask(f"research: {part}") for part in plan.split("; ")))
        return await ask(f"summarise: {'; '.join(findings)}")


async def journaled_research(db: Path, base_url: str) -> str:
    with Journal(db) as journal:
        async with journaled(journal, RUN_ID) as run:
            report = await research(base_url, "cats")
        print(f"   {run.summary}")
        return report


def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    server = MockLLM(delay=0.2)
    print(f"1. a stand-in OpenAI API at {server.base_url}")

    print("2. the agent runs in a child process; it is killed after the second answer")
    child = subprocess.Popen(
        [sys.executable, __file__, "--db", str(db), "--child", server.base_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    answered = 0
    for line in child.stdout:
        print(line, end="")
        answered += "answered" in line
        if answered == 2:
            child.kill()
            break
    child.communicate()
    paid_before = server.requests
    print(f"   killed (SIGKILL); requests the API received so far: {paid_before}")

    print("3. resume in this process")
    instrument()
    report = asyncio.run(journaled_research(db, server.base_url))
    print(f"   report: {report!r}")
    print(f"   requests the API received on resume: {server.requests - paid_before}")

    server.stop()
    print("4. replay with the API gone")
    replayed = asyncio.run(journaled_research(db, server.base_url))
    print(f"   same report: {replayed == report}; requests in all: {server.requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(".journal") / "openai" / "journal.db")
    parser.add_argument("--child", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        instrument()
        asyncio.run(journaled_research(args.db, args.child))
    else:
        demo(args.db)


if __name__ == "__main__":
    main()
