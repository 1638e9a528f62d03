"""Attacks on the PostgreSQL claim, the run's head entries and re-runs of a run read earlier
(a worker's look), on a real PostgreSQL server and real processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import replay
from journal import Journal, RunCancelled, RunStatus
from replay import step
from replay._rerun import resume_recorded
from tests.conftest import postgres_store
from tests.workers.effects import append_line

# -- workflows (importable as tests.test_claim_attack: a re-run loads them by that path) ----


def _effect(what: str) -> None:
    path = os.environ.get("CLAIM_ATTACK_EFFECTS")
    if path:
        append_line(path, what)


@step
async def act(i: int) -> int:
    _effect(f"step {i}")
    return i * 3


async def two_acts(n: int) -> int:
    _effect("body")
    return await act(n) + await act(n + 1)


@step
async def slow_act(run: str, i: int) -> int:
    await asyncio.sleep(0.03)
    _effect(f"step {run} {i}")
    return i


async def slow_acts(run: str) -> int:
    _effect(f"body {run}")
    return await slow_act(run, 0) + await slow_act(run, 1)


class Crash(BaseException):
    """The process dies here (a BaseException: nothing records it as the run's failure)."""


def _crash_at(where: str) -> None:
    if os.environ.get("CLAIM_ATTACK_CRASH") == where:
        raise Crash


async def _ask(base_url: str, question: str) -> str:
    import openai

    async with openai.AsyncOpenAI(api_key="sk-claim-0000", base_url=base_url) as client:
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": question}]
        )
    return completion.choices[0].message.content or ""


async def asking_child(base_url: str, name: str) -> list[str]:
    first = await _ask(base_url, f"{name} one")
    _crash_at(f"{name} after one")
    return [first, await _ask(base_url, f"{name} two")]


async def asking_parent(base_url: str, own_call: bool) -> list[str]:
    """Its own request (or none), then two child runs that each make two requests."""
    answers = [await _ask(base_url, "parent")] if own_call else []
    answers += await replay.run(asking_child, base_url, "a", journal=_journal(), run_id="kid-a")
    _crash_at("between children")
    answers += await replay.run(asking_child, base_url, "b", journal=_journal(), run_id="kid-b")
    return answers


async def failing_asker(base_url: str) -> list[str]:
    first = await _ask(base_url, "one")
    if os.environ.get("CLAIM_ATTACK_FAIL"):
        raise RuntimeError("the tool was down")
    return [first, await _ask(base_url, "two")]


async def napper() -> int:
    _effect("napper body")
    await act(1)
    await replay.sleep(0.5)
    await act(2)
    await replay.sleep(600)
    return await act(3)


_JOURNALS: dict[str, Journal] = {}


def _journal() -> Journal:
    """The journal $CLAIM_ATTACK_DB names, one per process (child runs go in it)."""
    url = os.environ["CLAIM_ATTACK_DB"]
    if url not in _JOURNALS:
        _JOURNALS[url] = Journal(url)
    return _JOURNALS[url]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("CLAIM_ATTACK_EFFECTS", str(path))
    return path


@pytest.fixture
def pg(pg_schema: str) -> Iterator[Journal]:
    journal = Journal(store=postgres_store(pg_schema))
    yield journal
    journal.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- 3. a run read earlier, changed before the claim -------------------------------------------


def test_stale_run_cancelled_before_the_claim_runs_nothing(pg: Journal, effects: Path) -> None:
    """A worker's look read the run `running`; it was cancelled before the worker claimed it.
    The worker must not run its steps (a cancelled run does nothing more)."""
    run_id = replay.submit(two_acts, 5, journal=pg, run_id="stale-cancel")
    stale = pg.run(run_id)
    replay.cancel(pg, run_id, "no longer wanted")
    assert pg.run(run_id).status is RunStatus.CANCELLED

    with pytest.raises(RunCancelled):
        asyncio.run(resume_recorded(pg, stale))
    assert [line for line in _lines(effects) if line.startswith("step")] == []
    assert pg.run(run_id).status is RunStatus.CANCELLED
    assert pg.events(run_id) == []


def test_stale_run_completed_before_the_claim_is_not_finished_again(
    pg: Journal, effects: Path
) -> None:
    """The look read the run `running`; another worker completed it before this one claimed it.
    This one returns the recorded result without sitting on it again: no second `finished`
    entry in the head, its owner-less end untouched."""
    run_id = replay.submit(two_acts, 5, journal=pg, run_id="stale-done")
    stale = pg.run(run_id)
    first = asyncio.run(replay.resume_run(pg, run_id))
    done = pg.run(run_id)
    heads_before = _head_count(pg)
    lines_before = _lines(effects)

    again = asyncio.run(resume_recorded(pg, stale))
    assert again.result == first.result == 33
    after = pg.run(run_id)
    assert after.status is RunStatus.COMPLETED
    assert after.finished_at == done.finished_at
    # (its `resumes` still counts the claim let go at once: the store counts claims)
    assert _head_count(pg) == heads_before
    assert _lines(effects) == lines_before
    assert all(v.ok for v in pg.verify())


def _head_count(journal: Journal) -> int:
    head = journal.head()
    return 0 if head is None else head.n


# -- 1. racing claims ---------------------------------------------------------------------------

_CLAIMER = """
import json, sys, time
from journal import RunLocked
from journal.stores import PostgresStore
from journal.stores._ownership import new_owner
url, schema, run_id, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = PostgresStore(url, schema=schema, max_size=1)
owner = new_owner(60.0)
time.sleep(max(0.0, start - time.time()))
try:
    run = store.claim(run_id, owner, resuming=True)
    print(json.dumps({"won": owner.token, "owner": run.owner.token, "status": run.status.value}))
except RunLocked:
    print(json.dumps({"won": None}))
sys.stdout.flush()
time.sleep(float(sys.argv[5]))
"""


def _race_threads(schema: str, run_id: str, n: int) -> list[object]:
    import threading

    from journal import RunLocked
    from journal.stores._ownership import new_owner

    stores = [postgres_store(schema) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def claim(i: int) -> None:
        owner = new_owner(60.0)
        barrier.wait()
        try:
            results[i] = stores[i].claim(run_id, owner, resuming=True)
        except RunLocked as locked:
            results[i] = locked

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    return results


@pytest.mark.parametrize("rounds", [8])
def test_threads_race_to_claim_an_unowned_run(pg: Journal, pg_schema: str, rounds: int) -> None:
    from journal import Run

    for r in range(rounds):
        run_id = replay.submit(two_acts, r, journal=pg, run_id=f"race-{r}")
        results = _race_threads(pg_schema, run_id, 10)
        won = [x for x in results if isinstance(x, Run)]
        assert len(won) == 1, results
        stored = pg.run(run_id)
        assert stored.owner is not None and stored.owner.token == won[0].owner.token
        assert stored.resumes == 1


def test_processes_race_to_claim_a_waiting_run(pg: Journal, pg_schema: str) -> None:
    """A due waiting run claimed by 6 processes at once: one wins, the run is running with its
    wake time and wait cleared, and counted resumed once."""
    import json
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime, timedelta

    from journal.stores._ownership import new_owner
    from tests.conftest import PG_URL

    run_id = replay.submit(two_acts, 1, journal=pg, run_id="waiting-race")
    owner = new_owner(60.0)
    pg.store.claim(run_id, owner, resuming=False)
    pg.store.suspend(
        run_id, owner.token, wake_at=datetime.now(UTC) - timedelta(seconds=1), waiting_for="x"
    )
    assert pg.run(run_id).status is RunStatus.WAITING
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, PG_URL, pg_schema, run_id, str(start), "3"],
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(6)
    ]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    winners = [o for o in outs if o["won"]]
    assert len(winners) == 1, outs
    assert winners[0]["status"] == "running"
    stored = pg.run(run_id)
    assert stored.status is RunStatus.RUNNING
    assert stored.wake_at is None and stored.waiting_for is None
    assert stored.resumes == 1


def test_claim_rules_on_postgres(pg: Journal) -> None:
    """A missing run, a dead owner on this host, an expired lease, a lease given up."""
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    from journal import RunLocked, RunNotFound
    from journal.stores._ownership import give_up, new_owner

    store = pg.store
    with pytest.raises(RunNotFound):
        store.claim("nope", new_owner(5.0), resuming=True)

    run_id = replay.submit(two_acts, 2, journal=pg, run_id="rules")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = new_owner(60.0).model_copy(update={"pid": dead.pid})
    store.claim(run_id, ghost, resuming=False)
    mine = new_owner(60.0)
    assert store.claim(run_id, mine, resuming=True).owner.token == mine.token  # dead pid

    other = new_owner(60.0)
    with pytest.raises(RunLocked):
        store.claim(run_id, other, resuming=True)  # this process, live lease
    give_up(mine.token)
    assert store.claim(run_id, other, resuming=True).owner.token == other.token

    expired = new_owner(60.0).model_copy(
        update={"host": "elsewhere", "lease_expires_at": datetime.now(UTC) - timedelta(seconds=1)}
    )
    store.release(run_id, other.token)
    store.claim(run_id, expired, resuming=False)
    third = new_owner(60.0)
    assert store.claim(run_id, third, resuming=True).owner.token == third.token
    live_elsewhere = new_owner(60.0).model_copy(update={"host": "elsewhere"})
    store.release(run_id, third.token)
    store.claim(run_id, live_elsewhere, resuming=False)
    with pytest.raises(RunLocked):
        store.claim(run_id, new_owner(60.0), resuming=True)
    assert pg.run(run_id).resumes == 3


# -- 2. the head under concurrent creates and finishes -----------------------------------------

_HAMMER = """
import asyncio, sys, time
import replay
from journal import Journal, RunLocked
from journal.stores import PostgresStore
from tests.test_claim_attack import two_acts
url, schema, me, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
journal = Journal(store=PostgresStore(url, schema=schema, max_size=2))
time.sleep(max(0.0, start - time.time()))

async def main():
    for i in range(25):
        for run_id in (f"own-{me}-{i}", f"shared-{i}"):
            replay.submit(two_acts, i, journal=journal, run_id=run_id)
            try:
                await replay.run(two_acts, i, journal=journal, run_id=run_id)
            except RunLocked:
                pass

asyncio.run(main())
journal.close()
"""


def test_processes_hammer_creates_and_finishes_head_stays_intact(
    pg: Journal, pg_schema: str
) -> None:
    import subprocess
    import sys
    import time

    import psycopg

    from tests.conftest import PG_URL

    pg.store.list_runs()  # the schema exists before the processes start
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, PG_URL, pg_schema, str(me), str(start)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for me in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    runs = pg.store.list_runs()
    assert len(runs) == 4 * 25 + 25
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    results = pg.verify()
    assert [v for v in results if not v.ok] == []
    with psycopg.connect(PG_URL) as conn:
        ns = [row[0] for row in conn.execute(f"SELECT n FROM {pg_schema}.heads ORDER BY n")]
        reasons = conn.execute(
            f"SELECT run_id, reason, count(*) FROM {pg_schema}.heads GROUP BY 1, 2"
        ).fetchall()
    assert ns == list(range(1, len(ns) + 1))
    created = {run_id: c for run_id, reason, c in reasons if reason == "created"}
    finished = {run_id: c for run_id, reason, c in reasons if reason == "finished"}
    assert len(created) == len(runs) and set(created.values()) == {1}
    assert len(finished) == len(runs) and set(finished.values()) == {1}


# -- 3. two workers, each working from its look ------------------------------------------------

_WORKER = """
import asyncio, json, sys, time
from journal import Journal
from journal.stores import PostgresStore
from replay import Worker
url, schema, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
journal = Journal(store=PostgresStore(url, schema=schema, max_size=2))
worker = Worker(journal, imports=["tests.test_claim_attack"], concurrency=1)
time.sleep(max(0.0, start - time.time()))
finished = asyncio.run(worker.run_once())
print(json.dumps({"finished": finished, **vars(worker.stats)}))
journal.close()
"""


def test_two_workers_never_sit_on_a_run_the_other_finished(
    pg: Journal, pg_schema: str, effects: Path
) -> None:
    """Two workers look at the same 16 runs at once and work through them one at a time:
    each run's body runs once in all, and each run is finished once."""
    import json
    import subprocess
    import sys
    import time

    import psycopg

    from tests.conftest import PG_URL

    ids = [replay.submit(slow_acts, f"w{i}", journal=pg, run_id=f"w{i}") for i in range(16)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    start = time.time() + 2.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, PG_URL, pg_schema, str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    stats = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
        stats.append(json.loads(out.decode().splitlines()[-1]))
    # each run counted finished by the one worker that finished it
    assert sum(s["finished"] for s in stats) == 16, stats
    assert sum(s["completed"] for s in stats) == 16, stats
    lines = _lines(effects)
    for run_id in ids:
        assert pg.run(run_id).status is RunStatus.COMPLETED
        assert lines.count(f"body {run_id}") == 1, (run_id, lines)
        assert pg.run(run_id).result == b"1"
    with psycopg.connect(PG_URL) as conn:
        finished = conn.execute(
            f"SELECT run_id, count(*) FROM {pg_schema}.heads WHERE reason = 'finished' GROUP BY 1"
        ).fetchall()
    assert sorted(finished) == sorted((run_id, 1) for run_id in ids)
    assert [v for v in pg.verify() if not v.ok] == []


# -- 4. re-runs serve the journaled HTTP requests ----------------------------------------------


@pytest.mark.parametrize("own_call", [True, False])
@pytest.mark.parametrize("crash", ["a after one", "between children"])
def test_cli_resume_and_replay_of_instrumented_runs_with_children(
    pg_schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    own_call: bool,
    crash: str,
    server: tuple[str, Path],
) -> None:
    """A parent run recorded through `instrument()` (its own request or none, then two child
    runs of two requests each), the process gone at `crash`. `journal resume` in a process
    that never calls `instrument()`: what was answered is served, every new request is made
    once and journaled; `journal replay` then reaches the server with nothing."""
    import json
    import subprocess
    import sys

    from replay.integrations import instrument, uninstrument
    from tests.conftest import PG_URL
    from tests.llm_server import requests_logged

    url = f"{PG_URL}?schema={pg_schema}"
    monkeypatch.setenv("CLAIM_ATTACK_DB", url)
    base_url, log = server
    try:
        journal = _journal()
        instrument()
        monkeypatch.setenv("CLAIM_ATTACK_CRASH", crash)
        try:
            with pytest.raises(Crash):
                asyncio.run(replay.run(asking_parent, base_url, own_call, journal=journal,
                                       run_id="parent"))  # fmt: skip
        finally:
            uninstrument()
            monkeypatch.delenv("CLAIM_ATTACK_CRASH")
        _JOURNALS.pop(url).close()
        before = len(requests_logged(log))
        assert before == (1 if own_call else 0) + (1 if crash == "a after one" else 2)

        script = str(Path(sys.executable).with_name("journal"))
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "CLAIM_ATTACK_DB": url}

        def cli(*args: str) -> tuple[int, str]:
            done = subprocess.run(
                [script, *args, "--db", url, "--json"],
                capture_output=True, text=True, env=env, timeout=120,
            )  # fmt: skip
            return done.returncode, done.stdout + done.stderr

        code, out = cli("resume", "parent")
        assert code == 0, out
        total = (1 if own_call else 0) + 4
        logged = requests_logged(log)
        assert len(logged) == total, out  # each request made once in all
        check = Journal(url)
        try:
            for run_id in ("kid-a", "kid-b"):
                llm = [e for e in check.events(run_id) if e.kind.value == "llm"]
                assert len({e.key for e in llm}) == 2, (run_id, out)  # both journaled
            assert check.run("parent").status is RunStatus.COMPLETED
            assert [v for v in check.verify() if not v.ok] == []
        finally:
            check.close()
        code, out = cli("replay", "parent")
        assert code == 0, out
        assert json.loads(out[: out.rfind("}") + 1] or "{}").get("reproduced", True)
        assert len(requests_logged(log)) == total, out  # nothing reached the server
    finally:
        for j in _JOURNALS.values():
            j.close()
        _JOURNALS.clear()


def test_stale_due_waiting_run_that_went_back_to_sleep_keeps_its_wake_time(
    pg: Journal, effects: Path
) -> None:
    """The look read the run waiting and due; another worker continued it and it went back to
    sleep for ten minutes. The stale resume runs no step again and leaves it asleep until
    the same time."""
    import time

    from replay._errors import Suspended

    run_id = replay.submit(napper, journal=pg, run_id="napper")
    with pytest.raises(Suspended):
        asyncio.run(replay.run(napper, journal=pg, run_id=run_id, suspend_after=0))
    time.sleep(0.7)
    stale = pg.run(run_id)
    with pytest.raises(Suspended):
        asyncio.run(replay.run(napper, journal=pg, run_id=run_id, suspend_after=0))
    asleep = pg.run(run_id)
    with pytest.raises(Suspended):
        asyncio.run(resume_recorded(pg, stale))
    after = pg.run(run_id)
    assert after.status is RunStatus.WAITING and after.owner is None
    assert after.wake_at == asleep.wake_at
    assert [line for line in _lines(effects) if line.startswith("step")] == ["step 1", "step 2"]


def test_cli_retry_of_an_instrumented_failed_run(
    pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[str, Path]
) -> None:
    """`journal retry` of a run recorded through `instrument()` that failed after its first
    request, in a process that never calls `instrument()`: the first request is served, the
    second made once and journaled; `journal replay` then reaches the server with nothing."""
    import subprocess
    import sys

    from replay.integrations import instrument, uninstrument
    from tests.conftest import PG_URL
    from tests.llm_server import requests_logged

    url = f"{PG_URL}?schema={pg_schema}"
    base_url, log = server
    with Journal(url) as journal:
        instrument()
        monkeypatch.setenv("CLAIM_ATTACK_FAIL", "1")
        try:
            with pytest.raises(RuntimeError):
                asyncio.run(replay.run(failing_asker, base_url, journal=journal,
                                       run_id="flaky"))  # fmt: skip
        finally:
            uninstrument()
            monkeypatch.delenv("CLAIM_ATTACK_FAIL")
    assert len(requests_logged(log)) == 1
    script = str(Path(sys.executable).with_name("journal"))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def cli(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [script, *args, "--db", url, "--json"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    code, out = cli("retry", "flaky")
    assert code == 0, out
    assert len(requests_logged(log)) == 2, out
    with Journal(url) as journal:
        llm = [e for e in journal.events("flaky") if e.kind.value == "llm"]
        assert len({e.key for e in llm}) == 2, out
        assert journal.run("flaky").status is RunStatus.COMPLETED
    for command in ("replay", "resume"):
        code, out = cli(command, "flaky")
        assert code == 0, out
    assert len(requests_logged(log)) == 2, out
