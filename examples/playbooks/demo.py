"""A Playbooks program made crash-safe from your own code: Ctrl+C mid-run, resume, replay.

    python -m venv .venv-playbooks
    .venv-playbooks/bin/pip install -r examples/playbooks/requirements.txt  # from the repo root
    .venv-playbooks/bin/python examples/playbooks/demo.py

Playbooks (PyPI `playbooks`) runs programs whose steps an LLM interprets; it calls the LLM
through litellm. Nothing in Playbooks is changed: `route_litellm()` sends litellm's requests
through journal-replay's transport, and the program runs inside `journaled(...)`.

1. A local stand-in for the OpenAI API answers in the Playbooks interpreter's format and counts
   the requests it receives. Its second answer is slow.
2. A child process runs `hello.pbasm`; after the agent has said hello, it gets SIGINT (Ctrl+C)
   while its second LLM call is in flight. Playbooks calls litellm synchronously, so that call
   completes before the interrupt stops the run, unfinished; the block takes the stop as a
   crash at the moment it arrived, with that call in flight.
3. The parent resumes the run: the first call is served from the journal, the one that was in
   flight is asked again, and the program runs to its end.
4. The run is replayed: every call is served, the API receives nothing.

`journal playbooks run` does all this in one command, and also keeps the answer of the call in
flight at Ctrl+C (README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of litellm's cost map

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the examples' stand-in API, one folder up
from mock_llm_server import MockLLM  # type: ignore[import-not-found]  # noqa: E402

RUN_ID = "playbooks-hello-1"


def interpreter(messages: list[dict[str, Any]]) -> str:
    """What the Playbooks interpreter's LLM answers for hello.pbasm: hello, then goodbye."""
    if "Hello from the journal" in json.dumps(messages):
        time.sleep(2.0)  # the slow second answer: room for Ctrl+C
        lines = ['`Step["Main:03:QUE"]` `Say("Goodbye from the journal")`',
                 '`Step["Main:04:YLD"]` yld exit']  # fmt: skip
    else:
        lines = ['`Step["Main:01:QUE"]` `Say("Hello from the journal")`',
                 '`Step["Main:02:YLD"]` yld call']  # fmt: skip
    return "\n".join(lines)


async def run_program(db: Path) -> str:
    from playbooks.applications import agent_chat

    from journal import Journal
    from replay import journaled
    from replay.integrations import route_litellm

    route_litellm()
    with Journal(db) as journal:
        async with journaled(journal, RUN_ID) as run:
            await agent_chat.main(program_paths=[str(HERE / "hello.pbasm")], verbose=False)
    return str(run.summary)


def environment(base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_API_KEY": "sk-example-not-real",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_BASE": base_url,
        "MODEL": "gpt-4o-mini",
        "LLM_CACHE_ENABLED": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    api = MockLLM(delay=0.0, answer=interpreter)
    os.environ.update(environment(api.base_url))
    print(f"1. a stand-in OpenAI API at {api.base_url}")
    print("2. the program runs in a child process; Ctrl+C once the agent has said hello")
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(db)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if "Hello from the journal" in line:
            print("   the agent said hello; sending SIGINT")
            time.sleep(0.5)
            child.send_signal(signal.SIGINT)
            break
    child.communicate(timeout=60)
    from journal import Journal

    with Journal(db) as journal:
        state = journal.run(RUN_ID)
        events = len(journal.events(RUN_ID))
    print(f"   interrupted: run {state.status.value}, {events} events journaled; "
          f"requests the API received: {api.requests}")  # fmt: skip
    before = api.requests
    print("3. resume in this process")
    print(f"   {asyncio.run(run_program(db))}")
    print(f"   requests the API received on resume: {api.requests - before}")
    print("4. replay")
    before = api.requests
    print(f"   {asyncio.run(run_program(db))}")
    print(f"   requests the API received on replay: {api.requests - before}")


def main() -> None:
    try:
        import playbooks  # noqa: F401
    except ImportError:
        sys.exit(
            "This example needs Playbooks in its own virtual environment: python -m venv "
            ".venv-playbooks && .venv-playbooks/bin/pip install -r "
            "examples/playbooks/requirements.txt"
        )
    db = Path(".journal") / "playbooks" / "journal.db"
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C ends the child, unfinished
            asyncio.run(run_program(Path(sys.argv[2])))
        return
    demo(db.resolve())


if __name__ == "__main__":
    main()
