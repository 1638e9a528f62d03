"""What the framework drivers share: the command line, the journaled run, tools, the report.

    python drive_X.py DB BASE_URL RUN_ID PATTERN MODE
    python drive_X.py --forks

Each driver is a script that a test runs in a subprocess (and may SIGKILL): it turns on
`replay.integrations.instrument()`, runs one agent pattern as the journaled run RUN_ID on the
SQLite journal DB against the local server at BASE_URL (tests/llm_server.py), with MODE
`resume` (record, or resume after a kill) or `replay` (recorded results only; the server may
be gone), and prints one line `REPORT {json}`: the agent's final answer, the sitting's
summary, and `network`: the connections off this machine it refused (the run is offline: the
tests require none). On a line of its own: a framework may have printed to stdout without a
newline.

`--forks` saves the tests the framework's import time (1-2 s a run): the script imports
everything once, then reads one job a line on stdin (`{"args": [...], "env": {...},
"stdout": PATH, "stderr": PATH}`), forks a child process per job that runs it exactly as the
command line above would, prints `started PID`, waits for the child and prints `exited CODE`
(negative: killed by that signal). The child is a process of its own; a test SIGKILLs it by pid.

A tool waits `DRIVER_LATE_TOOLS[city]` seconds (a JSON object in the environment) before its
request: the tests choose which of two parallel tool calls reaches the journal first. With
`DRIVER_TOOLS_TOGETHER=N`, sync tools instead wait for each other, N at a time, and send
their requests at the same moment (as parallel tool calls do, without the jitter of thread
start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

# recipe: journaled-run-imports
from journal import Journal
from replay import run_with_summary
from replay.integrations import instrument

# end recipe: journaled-run-imports

API_KEY = "sk-framework-secret-0000"
"""Fake key: the tests check it never reaches the journal file."""
MODEL = "gpt-test"

Pattern = Callable[[str], Awaitable[str]]

_WARM = ("openai", "openai.types.chat", "openai.resources.chat", "httpcore", "httpcore2")
"""Modules the frameworks import lazily, on their first request: `--forks` imports them once."""


NETWORK: list[str] = []
"""Connections to hosts off this machine that `forbid_network()` refused, for the report."""


def _loopback(host: object) -> bool:
    if host is None or host == "localhost":
        return True  # None: a numeric address is resolved
    try:
        return ipaddress.ip_address(
            host.decode() if isinstance(host, bytes) else str(host)
        ).is_loopback
    except ValueError:
        return False


def _refuse_off_machine(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    if not _loopback(host):
        NETWORK.append(f"{event} {host!r}")
        raise ConnectionRefusedError(f"the driver runs offline: {event} to {host!r} refused")


_forbidden: list[bool] = []


def forbid_network() -> None:
    """Refuse every connection (and name lookup) that would leave this machine's loopback,
    and list it in the report's `network`: a framework's telemetry, a cost-map or tokenizer
    download. `main` calls it for every driver; a driver that calls it before it imports its
    framework has import-time fetches counted too (a `--forks` child inherits what its parent
    saw)."""
    if not _forbidden:
        _forbidden.append(True)
        sys.addaudithook(_refuse_off_machine)


def plan_prompt(question: str, rounds: list[list[tuple[str, dict[str, Any]]]], **extra: Any) -> str:
    """A user prompt carrying the server's script: tool-call rounds, then the final answer."""
    return f"{question}\nPLAN {json.dumps({'rounds': rounds, **extra})}"


def _late(arguments: dict[str, Any]) -> float:
    late: dict[str, float] = json.loads(os.environ.get("DRIVER_LATE_TOOLS", "{}"))
    return sum(late.get(str(value), 0.0) for value in arguments.values())


_together: list[threading.Barrier] = []
"""The barrier of DRIVER_TOOLS_TOGETHER, made when the job starts."""


def _meet() -> None:
    """Wait for the other parallel calls when DRIVER_TOOLS_TOGETHER asks for it."""
    for barrier in _together:
        barrier.wait(timeout=10)


def call_tool(base_url: str, name: str, **arguments: Any) -> str:
    """A tool's work, synchronously: a POST the server counts (journaled by instrument())."""
    time.sleep(_late(arguments))
    with httpx.Client(timeout=60) as client:
        _meet()
        response = client.post(f"{base_url}/tools/{name}", json=arguments)
    response.raise_for_status()
    return str(response.json()["result"])


async def acall_tool(base_url: str, name: str, **arguments: Any) -> str:
    """The same tool call from async code."""
    await asyncio.sleep(_late(arguments))
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{base_url}/tools/{name}", json=arguments)
    response.raise_for_status()
    return str(response.json()["result"])


def run_job(
    argv: list[str], patterns: dict[str, Callable[[str], Pattern]], setup: Callable[[], None]
) -> None:
    """Run the pattern named in `argv` journaled, and print the JSON report."""
    db, base_url, run_id, pattern, mode = argv
    os.environ["OPENAI_API_KEY"] = API_KEY
    os.environ["OPENAI_BASE_URL"] = base_url
    parties = int(os.environ.get("DRIVER_TOOLS_TOGETHER", "0"))
    _together[:] = [threading.Barrier(parties)] if parties > 1 else []
    # recipe: journaled-run
    instrument()
    setup()
    agent = patterns[pattern](base_url)

    async def workflow(pattern: str, base_url: str) -> str:
        return await agent(base_url)

    with Journal(db) as journal:
        outcome = asyncio.run(
            run_with_summary(
                workflow,
                pattern,
                base_url,
                journal=journal,
                run_id=run_id,
                mode=mode,  # type: ignore[arg-type]
            )
        )
    summary = outcome.summary
    # end recipe: journaled-run
    report = {
        "pid": os.getpid(),
        "result": outcome.result,
        "served": summary.served,
        "executed": summary.executed,
        "reexecuted": summary.reexecuted,
        "unconsumed": list(summary.unconsumed),
        "network": NETWORK,
    }
    print(f"\nREPORT {json.dumps(report)}", flush=True)


def _become_child(job: dict[str, Any]) -> None:
    """In the forked child: the job's stdio files and environment."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update(job["env"])


def serve_forks(patterns: dict[str, Callable[[str], Pattern]], setup: Callable[[], None]) -> None:
    """The `--forks` loop of the module docstring."""
    for name in _WARM:
        with contextlib.suppress(ModuleNotFoundError):  # httpcore2: not in the openai 2.x envs
            importlib.import_module(name)
    for line in sys.stdin:
        job = json.loads(line)
        # A fork copies only the calling thread: there must be no other one.
        assert threading.active_count() == 1, threading.enumerate()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _become_child(job)
                run_job(job["args"], patterns, setup)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exited {os.waitstatus_to_exitcode(status)}", flush=True)
    sys.stdout.flush()
    os._exit(0)  # stdin closed: done; the interpreter's teardown of the frameworks is slow


def main(patterns: dict[str, Callable[[str], Pattern]], setup: Callable[[], None]) -> None:
    """The command line of the module docstring."""
    forbid_network()
    if sys.argv[1:] == ["--forks"]:
        serve_forks(patterns, setup)
    else:
        run_job(sys.argv[1:6], patterns, setup)
