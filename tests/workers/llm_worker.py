"""Subprocess worker for tests/test_http_server.py (run as a script, killed with SIGKILL).

    python llm_worker.py DB BASE_URL RUN_ID CALLS

An agent asks the OpenAI-compatible server at BASE_URL CALLS questions in turn, through an
`openai.AsyncOpenAI` client it creates itself with the SDK's default transport: the journal
only sees the requests because `replay.integrations.instrument()` is on. After each answer it
prints `answered N` (flushed) so the test knows when to kill it; at the end, one JSON report.
"""

from __future__ import annotations

import asyncio
import sys

import openai
from effects import print_outcome  # type: ignore[import-not-found]  # next to this script

from journal import Journal
from replay import run_with_summary
from replay.integrations import instrument


async def agent(base_url: str, calls: int) -> list[str]:
    client = openai.AsyncOpenAI(api_key="sk-worker-secret-0000", base_url=base_url, max_retries=2)
    answers = []
    for number in range(1, calls + 1):
        completion = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"question {number}"}]
        )
        answers.append(completion.choices[0].message.content or "")
        print(f"answered {number}", flush=True)
        await asyncio.sleep(0.05)  # room for the test's SIGKILL between calls
    return answers


def main() -> None:
    db, base_url, run_id, calls = sys.argv[1:5]
    instrument()
    with Journal(db) as journal:
        outcome = asyncio.run(
            run_with_summary(agent, base_url, int(calls), journal=journal, run_id=run_id)
        )
    print_outcome(outcome)


if __name__ == "__main__":
    main()
