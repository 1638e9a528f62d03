"""The law every framework pattern is held to: record, SIGKILL mid-request, resume, replay.

1. A clean run, in a subprocess on its own journal and server, gives the expected answer and
   the requests an uncrashed run pays for (model requests and tool calls, as the server saw
   them).
2. A second run, on a fresh journal and a server that holds request number `hold` open, is
   SIGKILLed once that request has reached the server and every earlier one is journaled as
   completed: exactly one request is in flight.
3. A new subprocess resumes the run. It answers as the clean run did; the server was paid for
   the clean run's requests plus the one in flight, once more: nothing completed before the
   kill was asked again. The resume served every completed request from the journal and
   re-executed the one in flight (its start was durable).
4. With the server stopped, a third subprocess replays the run: the same answer, every step
   served, nothing sent.

Where two tool calls run in parallel, the tests choose which one reaches the journal first
(`Pattern.late`), and choose the other one on resume: live timing differs between sittings,
and the journal must not depend on it. Each run is a child process forked from the driver
script in `--forks` mode (drivers/_driver.py), so the framework is imported once per session.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.llm_server import requests_logged, serve

DRIVERS = Path(__file__).parent / "drivers"
ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "agent-1"
API_KEY = b"sk-framework-secret-0000"
HOLD_SECONDS = 30.0
"""How long the server holds the chosen request: far longer than the kill takes."""
DEADLINE = 30.0
"""Seconds a driver run may take before the test kills it and fails."""
SETTLE = 2.0
"""Seconds to wait, once the held request arrived, for the journal to hold every earlier one."""
LATE_SECONDS = 0.2
"""How much later the `late` tool call starts than its parallel sibling."""


@dataclass(frozen=True)
class Pattern:
    """One agent pattern of one framework's driver, and which request to kill it in."""

    driver: str
    """Script name under drivers/, without `drive_` and `.py`: `openai_agents`."""
    name: str
    """The pattern the driver runs: `run`, `parallel`, ..."""
    hold: int
    """The request (1-based, in arrival order) in flight at the kill."""
    late: tuple[str, str] | None = None
    """Parallel tool calls: the city whose call starts late when recording, and on resume."""

    def env(self, sitting: int) -> dict[str, str]:
        """The driver's environment for a recording sitting (0) or the resume (1)."""
        if self.late is None:
            return {}
        return {"DRIVER_LATE_TOOLS": json.dumps({self.late[sitting]: LATE_SECONDS})}


Drivers = Callable[[str], "Forks"]
"""The session's drivers by name (the `forks` fixture)."""


def session_forks(where: Callable[[str], Path]) -> Iterator[Drivers]:
    """The body of a session-scoped `forks` fixture: `forks("smolagents")` starts that
    driver on first use (its files under `where(driver)`); every one is closed at the end."""
    started: dict[str, Forks] = {}

    def get(driver: str) -> Forks:
        if driver not in started:
            started[driver] = Forks(driver, where(driver))
        return started[driver]

    yield get
    for running in started.values():
        running.close()


@dataclass(frozen=True)
class Report:
    """A driver's answer and its sitting's summary."""

    result: Any
    served: int
    executed: int
    reexecuted: int
    unconsumed: list[str]
    network: list[str] = field(default_factory=list)
    """Connections off this machine the driver refused (drivers that call forbid_network)."""


@dataclass(frozen=True)
class AtKill:
    """What had happened when the driver was killed."""

    arrived: list[dict[str, Any]]
    """The requests the server had received (its log lines)."""
    completed: int
    """Completed events in the journal."""


class Forks:
    """A driver script in `--forks` mode: each run is a child process forked from it."""

    def __init__(self, driver: str, where: Path) -> None:
        self.where = where
        self.jobs = 0
        self.log = (where / f"{driver}.forks.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVERS / f"drive_{driver}.py"), "--forks"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
        )

    def _line(self, expected: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(expected), f"driver --forks said {line!r}; see {self.log.name}"
        return line.split()[1]

    @contextmanager
    def start(self, argv: list[str], env: dict[str, str]) -> Iterator[Child]:
        """Fork a child running `argv`; it is killed if still running after DEADLINE."""
        assert self.proc.stdin is not None
        self.jobs += 1
        out, err = self.where / f"job{self.jobs}.out", self.where / f"job{self.jobs}.err"
        job = {"args": argv, "env": env, "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        child = Child(int(self._line("started")), out, err)
        watchdog = threading.Timer(DEADLINE, child.kill)
        watchdog.start()
        try:
            yield child
        finally:
            if child.code is None:
                child.kill()
                self.reap(child)
            watchdog.cancel()

    def reap(self, child: Child) -> int:
        """Wait for the child to end; its exit code (negative: the signal that killed it)."""
        child.code = int(self._line("exited"))
        return child.code

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the driver's loop ends
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.log.close()


@dataclass
class Child:
    """One driver run, forked."""

    pid: int
    stdout: Path
    stderr: Path
    code: int | None = None

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def errors(self) -> str:
        return self.stderr.read_text()[-4000:]


def body_of(request: dict[str, Any]) -> str:
    """A logged request as `path canonical-body`: the same call compares equal across runs."""
    try:
        body = json.dumps(json.loads(request["body"]), sort_keys=True)
    except ValueError:
        body = request["body"]
    return f"{request['path']} {body}"


def _argv(pattern: Pattern, db: Path, base_url: str, mode: str) -> list[str]:
    return [str(db), base_url, RUN_ID, pattern.name, mode]


def _report(stdout: Path) -> Report:
    lines = [line for line in stdout.read_text().splitlines() if line.startswith("REPORT ")]
    assert lines, f"the driver printed no report: {stdout.read_text()[-2000:]}"
    fields = json.loads(lines[-1].removeprefix("REPORT "))
    fields.pop("pid")
    return Report(**fields)


def run_driver(
    forks: Forks,
    pattern: Pattern,
    db: Path,
    base_url: str,
    mode: str,
    sitting: int = 0,
    env: dict[str, str] | None = None,
) -> Report:
    """Run the pattern to its end in a child process; its report (the child must exit 0)."""
    environment = {**pattern.env(sitting), **(env or {})}
    with forks.start(_argv(pattern, db, base_url, mode), environment) as child:
        code = forks.reap(child)
    assert code == 0, f"{pattern.driver} {pattern.name} ({mode}) exited {code}:\n{child.errors()}"
    report = _report(child.stdout)
    assert report.network == [], (
        f"{pattern.driver} {pattern.name} reached off the machine: {report.network}"
    )
    return report


def _completed_events(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE run_id = ? AND status = 'completed'", (RUN_ID,)
        ).fetchone()
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        conn.close()
    return int(count)


def kill_in_flight(forks: Forks, pattern: Pattern, db: Path, base_url: str, log: Path) -> AtKill:
    """Start the driver; SIGKILL it once request `hold` arrived and the journal holds every
    earlier request as completed (or `SETTLE` seconds after the arrival, whichever first)."""
    with forks.start(_argv(pattern, db, base_url, "resume"), pattern.env(0)) as child:
        deadline = time.monotonic() + DEADLINE
        settle: float | None = None
        while True:
            arrived = len(requests_logged(log))
            if arrived >= pattern.hold:
                settle = settle or time.monotonic() + SETTLE
                if _completed_events(db) >= arrived - 1 or time.monotonic() > settle:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"request {pattern.hold} never arrived ({arrived} did)")
            time.sleep(0.005)
        child.kill()
        code = forks.reap(child)
    assert code == -signal.SIGKILL, (
        f"the driver exited ({code}) before request {pattern.hold} was in flight:\n{child.errors()}"
    )
    return AtKill(requests_logged(log), _completed_events(db))


def crash_resume_replay(drivers: Drivers, tmp_path: Path, pattern: Pattern) -> None:
    """The law of the module docstring, for one pattern; fails with what went wrong."""
    forks = drivers(pattern.driver)
    clean_log = tmp_path / "clean.log"
    clean_server = serve(clean_log)
    try:
        clean_url = f"http://127.0.0.1:{clean_server.server_port}/v1"
        clean = run_driver(forks, pattern, tmp_path / "clean.db", clean_url, "resume")
    finally:
        clean_server.stop()
    paid_clean = [body_of(r) for r in requests_logged(clean_log)]
    assert len(paid_clean) > pattern.hold, "the held request must not be the last one"
    assert clean.executed == len(paid_clean) and clean.reexecuted == 0

    db, log = tmp_path / "journal.db", tmp_path / "requests.log"
    server = serve(log, slow={pattern.hold: HOLD_SECONDS})
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        at_kill = kill_in_flight(forks, pattern, db, base_url, log)
        in_flight = len(at_kill.arrived) - at_kill.completed
        assert in_flight == 1, (
            f"{len(at_kill.arrived)} requests reached the server before the kill but "
            f"{at_kill.completed} are journaled as completed: only the held one should be open"
        )
        resumed = run_driver(forks, pattern, db, base_url, "resume", sitting=1)
    finally:
        server.stop()
    assert resumed.result == clean.result

    held = next(body_of(r) for r in at_kill.arrived if r["n"] == pattern.hold)
    paid = [body_of(r) for r in requests_logged(log)]
    repaid = Counter(paid) - Counter(paid_clean)
    assert repaid == Counter([held]), f"paid twice: {dict(repaid)}; only the held one may be"
    assert Counter(paid_clean) - Counter(paid) == Counter(), "the resume skipped a request"
    assert len(paid) == len(paid_clean) + 1
    assert (resumed.served, resumed.reexecuted) == (at_kill.completed, 1), resumed
    assert resumed.served + resumed.executed + resumed.reexecuted == clean.executed
    assert resumed.unconsumed == []

    replayed = run_driver(forks, pattern, db, base_url, "replay")
    assert replayed.result == clean.result
    assert (replayed.served, replayed.executed, replayed.reexecuted) == (clean.executed, 0, 0)
    assert len(requests_logged(log)) == len(paid)  # stopped server, and nothing was sent
    assert API_KEY not in db.read_bytes()
    figures = {
        "pattern": f"{pattern.driver} {pattern.name}",
        "uncrashed_run_paid": len(paid_clean),
        "killed_in_request": pattern.hold,
        "journaled_at_kill": at_kill.completed,
        "resume": [resumed.served, resumed.reexecuted, resumed.executed],
        "paid_in_all": len(paid),
        "replay": [replayed.served, replayed.executed],
    }
    print(f"FIGURES {json.dumps(figures)}")  # docs/frameworks.md quotes them (pytest -s)


def record_then_replay(
    drivers: Drivers, tmp_path: Path, pattern: Pattern, held: tuple[int, ...]
) -> Report:
    """Record the pattern while the server holds requests `held` open (the code gives up on
    them: a timeout), then replay it with the server stopped: the same answer, nothing run
    live, nothing sent. The recorded sitting's report."""
    forks = drivers(pattern.driver)
    db, log = tmp_path / "journal.db", tmp_path / "requests.log"
    server = serve(log, slow=dict.fromkeys(held, HOLD_SECONDS))
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        recorded = run_driver(forks, pattern, db, base_url, "resume")
    finally:
        server.stop()
    sent = len(requests_logged(log))
    replayed = run_driver(forks, pattern, db, base_url, "replay")
    assert replayed.result == recorded.result
    assert (replayed.executed, replayed.reexecuted) == (0, 0)
    assert len(requests_logged(log)) == sent
    return recorded


def soak(drivers: Drivers, tmp_path: Path, pattern: Pattern, runs: int, together: int) -> None:
    """Record and replay the pattern `runs` times, each on a fresh journal, its `together`
    parallel sync tool calls sending their requests at the same moment: every run must
    record and replay (for races that only some runs hit)."""
    forks = drivers(pattern.driver)
    together_env = {"DRIVER_TOOLS_TOGETHER": str(together)}
    log = tmp_path / "requests.log"
    server = serve(log)
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    failed: list[str] = []
    try:
        for number in range(runs):
            db = tmp_path / f"journal{number}.db"
            try:
                recorded = run_driver(forks, pattern, db, base_url, "resume", env=together_env)
                replayed = run_driver(forks, pattern, db, base_url, "replay", env=together_env)
                assert replayed.result == recorded.result
            except AssertionError as exc:
                failed.append(str(exc).strip().splitlines()[-1])
    finally:
        server.stop()
    assert not failed, f"{len(failed)} of {runs} runs failed; the first: {failed[0]}"
