"""LangGraph on PostgreSQL: a graph run killed mid-run is finished by `journal worker` from
the journal alone, with no LangGraph checkpointer (tests/frameworks/langgraph_postgres.py).

Under CI a missing PostgreSQL fails this test instead of skipping it (tests/conftest.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from journal import EventStatus, Journal, RunNotFound, RunStatus
from tests.conftest import PG_URL, postgres_store
from tests.frameworks.harness import body_of
from tests.llm_server import requests_logged, serve

ROOT = Path(__file__).resolve().parents[2]
JOURNAL_SCRIPT = str(Path(sys.executable).with_name("journal"))
MODULE = "tests.frameworks.langgraph_postgres"
RUN_ID = "graph-1"
HELD = 3
"""The request in flight at the kill: the second model request, after the first model answer
and the Paris tool call were journaled."""
ANSWER = "final: [[lookup:Paris]] [[lookup:Rome]]"


def _completed(journal: Journal) -> int:
    try:
        events = journal.events(RUN_ID)
    except RunNotFound:  # not started yet
        return 0
    return sum(e.status is EventStatus.COMPLETED for e in events)


def _start_and_kill(db: str, base_url: str, log: Path) -> tuple[list[str], int]:
    """Start the run in a service process; SIGKILL it once request HELD reached the server
    and the journal holds every earlier one as completed. What arrived, and what was
    journaled, at the kill."""
    starter = subprocess.Popen(
        [sys.executable, "-c", f"from {MODULE} import start; start()", db, base_url, RUN_ID],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline() == "checkpointer: None\n"
        deadline = time.monotonic() + 60
        with Journal(db, read_only=True) as journal:
            while len(requests_logged(log)) < HELD or _completed(journal) < HELD - 1:
                assert starter.poll() is None, starter.communicate()[1]
                assert time.monotonic() < deadline, f"request {HELD} never arrived"
                time.sleep(0.02)
    finally:
        starter.send_signal(signal.SIGKILL)
        _, err = starter.communicate(timeout=30)  # reaped: its pid is gone, the run is free
    assert starter.returncode == -signal.SIGKILL, err
    with Journal(db, read_only=True) as journal:
        return [body_of(r) for r in requests_logged(log)], _completed(journal)


def _journal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOURNAL_SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_a_graph_killed_mid_run_is_finished_by_a_worker_from_postgres(
    pg_schema: str, tmp_path: Path
) -> None:
    """A StateGraph with a ToolNode over langchain-openai, started as a run on a PostgreSQL
    journal, is SIGKILLed while its second model request is in flight. `journal worker --once`
    finishes it: the model answer and the tool call journaled before the kill are served, not
    asked again; the request in flight is the only one the server gets twice; each tool ran
    once. With the server stopped, `journal replay` reproduces the run, sending nothing."""
    postgres_store(pg_schema).close()  # skips (or fails under CI) when there is no server
    db = f"{PG_URL}?schema={pg_schema}"
    log = tmp_path / "requests.log"
    server = serve(log, slow={HELD: 60.0})
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        at_kill, journaled = _start_and_kill(db, base_url, log)
        assert (len(at_kill), journaled) == (HELD, HELD - 1)
        with Journal(db, read_only=True) as journal:
            assert [r.run_id for r in journal.interrupted()] == [RUN_ID]

        worked = _journal("worker", "--once", "--import", MODULE, "--db", db, "--json")
        assert worked.returncode == 0, worked.stderr
        assert json.loads(worked.stdout)["completed"] == 1
    finally:
        server.stop()
    paid = [body_of(r) for r in requests_logged(log)]

    with Journal(db, read_only=True) as journal:
        run = journal.run(RUN_ID)
        assert (run.status, run.result, run.resumes) == (
            RunStatus.COMPLETED,
            json.dumps(ANSWER).encode(),
            1,
        )
        events = journal.events(RUN_ID)
    tools = [body for body in paid if body.startswith("/v1/tools/")]
    assert Counter(tools) == Counter(
        ['/v1/tools/lookup {"city": "Paris"}', '/v1/tools/lookup {"city": "Rome"}']
    )
    assert Counter(paid) - Counter(set(paid)) == Counter([at_kill[HELD - 1]])  # paid twice
    assert len(paid) == 6  # 3 model requests and 2 tool calls, and the one in flight again
    reasked = [e for e in events if e.attempt == 2]
    assert [(e.kind.value, e.status.value) for e in reasked] == [
        ("llm", "started"),
        ("llm", "completed"),
    ]

    replayed = _journal("replay", RUN_ID, "--db", db, "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["reproduced"] is True
    assert (report["summary"]["served"], report["summary"]["executed"]) == (5, 0)
    assert len(requests_logged(log)) == len(paid)  # the server is gone: nothing was sent
    figures = {
        "journaled_at_kill": journaled,
        "reexecuted": len(reasked) // 2,
        "paid_in_all": len(paid),
        "replay": [report["summary"]["served"], report["summary"]["executed"]],
    }
    print(f"FIGURES {json.dumps(figures)}")  # docs/frameworks.md quotes them (pytest -s)
