"""A stand-in OpenAI API for hello.pb, so `journal playbooks run` can be tried offline.

    python examples/playbooks/stand_in_api.py --port 8765 [--slow 3]

It plays both of Playbooks' LLM roles for hello.pb: the compiler (it answers with
hello.pbasm) and the interpreter (hello, then goodbye). Each request it receives is printed, so
you can see which calls a resume or a replay pays for: none twice. `--slow S` holds the
goodbye answer S seconds, time enough to press Ctrl+C while it is in flight.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the examples' stand-in server, one folder up
from mock_llm_server import MockLLM  # type: ignore[import-not-found]  # noqa: E402

COMPILER = "Playbooks Assembly Language Compiler"


def answer(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """What the compiler or the interpreter answers for hello.pb, and what the request was."""
    text = json.dumps(messages)
    if COMPILER in text:
        return (HERE / "hello.pbasm").read_text(), "compile hello.pb"
    if "Hello from the journal" in text:
        lines = ['`Step["Main:03:QUE"]` `Say("Goodbye from the journal")`',
                 '`Step["Main:04:YLD"]` yld exit']  # fmt: skip
        return "\n".join(lines), "interpreter turn: say goodbye"
    lines = ['`Step["Main:01:QUE"]` `Say("Hello from the journal")`',
             '`Step["Main:02:YLD"]` yld call']  # fmt: skip
    return "\n".join(lines), "interpreter turn: say hello"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to hold the goodbye")
    options = parser.parse_args()
    lock = threading.Lock()
    count = 0

    def respond(messages: list[dict[str, Any]]) -> str:
        nonlocal count
        with lock:
            count += 1
            number = count
        text, what = answer(messages)
        print(f"request {number}: {what}", flush=True)
        if "goodbye" in what:
            time.sleep(options.slow)
        return text

    api = MockLLM(delay=0.0, answer=respond, port=options.port)
    print(f"stand-in OpenAI API at {api.base_url}; Ctrl+C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
