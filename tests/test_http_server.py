"""Real SDK clients against a local OpenAI-compatible server on 127.0.0.1, journaled ambiently.

The server counts every request that reaches it, so "no completed request is made twice" is
checked where it matters: at the provider, not in the journal.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

import replay
from journal import EventStatus, Journal
from replay.integrations import instrument, uninstrument
from tests.llm_server import requests_logged, serve

WORKER = Path(__file__).parent / "workers" / "llm_worker.py"


def questions(log: Path) -> list[str]:
    return [json.loads(r["body"])["messages"][-1]["content"] for r in requests_logged(log)]


@pytest.mark.usefixtures("instrumented")
def test_a_client_made_inside_the_run_is_journaled_and_replays_offline(
    server: tuple[str, Path], sqlite_journal: Journal
) -> None:
    """instrument(): a client built by code we do not own, with the SDK's default transport,
    is journaled inside `journaled(...)`; the replay sends nothing to the server."""
    base_url, log = server

    async def framework_code() -> list[str]:
        async with openai.AsyncOpenAI(api_key="sk-inner-secret-1111", base_url=base_url) as client:
            answers = []
            for prompt in ("plan", "act"):
                completion = await client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": prompt}]
                )
                answers.append(completion.choices[0].message.content or "")
            stream = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "stream it"}], stream=True
            )
            answers.append(
                "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            )
            return answers

    async def record(mode: replay._session.Mode) -> list[str]:
        async with replay.journaled(sqlite_journal, "agent-1", mode=mode):
            return await framework_code()

    live = asyncio.run(record("resume"))
    assert live == ["echo: plan", "echo: act", "echo: stream it "]
    assert len(requests_logged(log)) == 3
    replayed = asyncio.run(record("replay"))
    assert replayed == live and len(requests_logged(log)) == 3
    events = sqlite_journal.events("agent-1")
    assert {e.key for e in events} == {"0:1", "0:2", "0:3"}
    assert events[-1].status is EventStatus.COMPLETED
    assert json.loads(events[-1].payload or b"")["llm"]["output_tokens"] == 3


@pytest.mark.usefixtures("instrumented")
def test_outside_a_run_instrumented_clients_are_untouched(
    server: tuple[str, Path], sqlite_journal: Journal
) -> None:
    """With instrument() on, a request made outside any run goes straight to the server."""
    base_url, log = server

    async def ask() -> str:
        async with openai.AsyncOpenAI(api_key="sk-x", base_url=base_url) as client:
            completion = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "no run"}]
            )
            return completion.choices[0].message.content or ""

    assert asyncio.run(ask()) == "echo: no run" == asyncio.run(ask())
    assert len(requests_logged(log)) == 2 and sqlite_journal.runs() == []


@pytest.mark.usefixtures("instrumented")
def test_server_errors_are_retried_live_and_never_served(
    tmp_path: Path, sqlite_journal: Journal
) -> None:
    """The server fails the first request with 500; the SDK retries; the journal holds one
    step with a retrying attempt and the final answer, which replay serves at once."""
    log = tmp_path / "flaky.log"
    running = serve(log, fail_first=1)
    base_url = f"http://127.0.0.1:{running.server_port}/v1"

    async def agent() -> str:
        async with openai.AsyncOpenAI(api_key="sk-x", base_url=base_url, max_retries=2) as client:
            completion = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "flaky"}]
            )
            return completion.choices[0].message.content or ""

    try:
        assert asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="f")) == "echo: flaky"
        before = time.monotonic()
        replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="f", mode="replay"))
        assert replayed == "echo: flaky" and time.monotonic() - before < 0.5  # no retry wait
    finally:
        running.shutdown()
        running.server_close()
    assert len(requests_logged(log)) == 2
    statuses = [
        (e.status, e.attempt) for e in sqlite_journal.events("f") if e.status.value != "started"
    ]
    assert statuses == [(EventStatus.RETRYING, 1), (EventStatus.COMPLETED, 2)]


def _start_worker(db: Path, base_url: str, run_id: str, calls: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), base_url, run_id, str(calls)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def test_sigkill_mid_run_then_resume_repeats_no_completed_request(
    tmp_path: Path, server: tuple[str, Path]
) -> None:
    """A worker process is SIGKILLed after its third answer; a new process resumes the run.
    The server sees each of the first three questions exactly once; only the call in flight at
    the kill may reach it twice; the results equal an uncrashed run's."""
    base_url, log = server
    db = tmp_path / "journal.db"
    worker = _start_worker(db, base_url, "crash-1", 6)
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.strip() == "answered 3":
            break
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)  # reaps it and closes its pipes
    assert worker.returncode == -signal.SIGKILL
    asked_before = questions(log)
    assert asked_before[:3] == ["question 1", "question 2", "question 3"]

    resumed = _start_worker(db, base_url, "crash-1", 6)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["result"] == [f"echo: question {n}" for n in range(1, 7)]
    asked = questions(log)
    for n in (1, 2, 3):
        assert asked.count(f"question {n}") == 1, asked
    assert sorted(set(asked)) == sorted(f"question {n}" for n in range(1, 7))
    assert len(asked) <= 7  # at most the one call in flight at the kill went out twice
    assert report["served"] >= 3
    with Journal(db) as journal:
        (verdict,) = journal.verify("crash-1")
        assert verdict.sealed
        assert b"sk-worker-secret" not in db.read_bytes()


@pytest.mark.usefixtures("instrumented")
def test_anthropic_against_the_local_server(
    server: tuple[str, Path], sqlite_journal: Journal
) -> None:
    """The Anthropic SDK's own default client, instrumented, journals messages.create; replay
    sends nothing, and the x-api-key never reaches the journal."""
    import anthropic

    base_url, log = server
    root = base_url.removesuffix("/v1")

    async def agent() -> str:
        async with anthropic.AsyncAnthropic(api_key="sk-ant-secret-2222", base_url=root) as c:
            message = await c.messages.create(
                model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "hey"}]
            )
            return message.content[0].text  # type: ignore[union-attr]

    live = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="a"))
    replayed = asyncio.run(replay.run(agent, journal=sqlite_journal, run_id="a", mode="replay"))
    assert live == replayed == "echo: hey" and len(requests_logged(log)) == 1
    (event,) = [e for e in sqlite_journal.events("a") if e.status is EventStatus.COMPLETED]
    assert json.loads(event.payload or b"")["llm"]["provider"] == "anthropic"
    assert b"sk-ant-secret" not in (event.args or b"") + (event.payload or b"")


async def ask_server(base_url: str) -> str:
    """A workflow whose client is its own default one: journaled only under `instrument()`."""
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{base_url}/tools/lookup", json={"city": "Paris"})
        return str(reply.json()["result"])


def test_replay_and_resume_journal_http_as_the_run_was_recorded(
    tmp_path: Path, sqlite_journal: Journal
) -> None:
    """A run recorded under `instrument()` replays offline from the CLI's replay_run without
    the entry instrumenting anything: its requests are served, none is sent (the server is
    gone). Before, an "offline" replay sent real requests; with an API key set, it would pay."""
    log = tmp_path / "requests.log"
    running = serve(log)
    base_url = f"http://127.0.0.1:{running.server_port}/v1"
    instrument()
    try:
        recorded = asyncio.run(
            replay.run(ask_server, base_url, journal=sqlite_journal, run_id="http-rec")
        )
    finally:
        uninstrument()
        running.shutdown()
        running.server_close()
    assert len(requests_logged(log)) == 1
    outcome = asyncio.run(replay.replay_run(sqlite_journal, "http-rec"))
    assert outcome.result == recorded and outcome.summary.served == 1
    resumed = asyncio.run(replay.resume_run(sqlite_journal, "http-rec"))
    assert resumed.result == recorded
    assert len(requests_logged(log)) == 1
    from replay.integrations._instrument import is_instrumented

    assert not is_instrumented()  # switched off again afterwards
