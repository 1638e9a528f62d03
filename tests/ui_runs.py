"""Real runs for the `journal ui` tests: recorded by the engine into a real journal, some of them
carrying hostile text, and a run that stays live until the test lets each step finish."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import replay
from journal import Journal
from replay import run, signal, step

SCRIPT = "<script>window.pwned = (window.pwned || 0) + 1</script>"
IMG = '<img src=x onerror="window.pwned = (window.pwned || 0) + 1">'
HOSTILE = f"{SCRIPT} {IMG} </pre></td></tr></table>\" ' & done"
"""Recorded text that would run script if any page treated it as markup."""
HOSTILE_RUN_ID = f"evil-{IMG}&id=x#frag/../?q="
"""A run id with every character a URL or an attribute could trip over."""
USAGE = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "input_tokens": 42,
    "output_tokens": 7,
    "finish_reason": "stop",
}


@step(kind="tool")
async def search(query: str) -> list[str]:
    return [f"{query}: cats sleep 16 hours a day", f"{query}: cats purr at 25 Hz"]


@step(kind="llm")
async def complete(prompt: str) -> dict[str, Any]:
    """The shape the HTTP integrations record for an LLM response: status, body and `llm`."""
    return {"status": 200, "body": f"summary of {prompt[:20]}", "llm": USAGE}


@step(kind="tool")
async def refund(amount: int) -> str:
    if amount > 200:
        raise ValueError(f"refund of {amount} is above the limit {HOSTILE}")
    return f"refunded {amount}"


async def research(topic: str) -> str:
    found = await asyncio.gather(search(topic), search(topic + " facts"))
    answer = await complete(" ".join(line for lines in found for line in lines))
    return str(answer["body"])


async def refund_flow(amount: int) -> str:
    return await refund(amount)


async def echo(text: str) -> str:
    """Inputs, a step result and the run's result all carry `text`."""
    return await search(text) and text


async def approval(amount: int) -> str:
    await search(f"order {amount}")
    decision = await signal("approval")
    return "approved" if decision else "declined"


def record(journal: Journal) -> None:
    """Six runs: completed (with an LLM step), failed, hostile, waiting, a fork nobody resumed
    yet, and a run submitted for a worker, not started."""
    asyncio.run(run(research, "cats", journal=journal, run_id="cats-1"))
    with contextlib.suppress(ValueError):
        asyncio.run(run(refund_flow, 250, journal=journal, run_id="refund-7"))
    asyncio.run(run(echo, HOSTILE, journal=journal, run_id=HOSTILE_RUN_ID))
    with contextlib.suppress(replay.Suspended):
        asyncio.run(run(approval, 30, journal=journal, run_id="approve-3"))
    dogs = {"status": 200, "body": "dogs", "llm": USAGE}
    journal.fork("cats-1", new_run_id="cats-1-dogs", overrides={"0:1": dogs})
    replay.submit(research, "birds", journal=journal, run_id="queued-2")


class Gates:
    """A live run's steps, each held open until the test releases it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.gates = [threading.Event() for _ in range(count)]
        self.entered = [threading.Event() for _ in range(count)]

    def release(self, index: int) -> None:
        self.gates[index].set()

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


_gates: dict[str, Gates] = {}


@step(kind="tool")
async def gated(run_name: str, index: int) -> int:
    gates = _gates[run_name]
    gates.entered[index].set()
    await asyncio.to_thread(gates.gates[index].wait, 30)
    return index


async def stepwise(run_name: str, count: int) -> int:
    total = 0
    for index in range(count):
        total += await gated(run_name, index)
    return total


@contextlib.contextmanager
def live_run(url: str, run_id: str, count: int = 3) -> Iterator[Gates]:
    """Runs `stepwise` as `run_id` in a thread, on its own connection to the journal at `url`
    (as another process would); each step waits for `Gates.release`. All are released, and
    the run finished, on exit."""
    gates = _gates[run_id] = Gates(count)
    thread, failure = _in_thread(url, run_id, stepwise, run_id, count)
    try:
        assert gates.entered[0].wait(10), "the live run never reached its first step"
        yield gates
    finally:
        gates.release_all()
        thread.join(15)
        _gates.pop(run_id, None)
    assert not thread.is_alive(), "the live run did not finish"
    assert not failure, failure


class Server:
    """The app served by uvicorn in a thread on a free port, as `journal ui` serves it."""

    def __init__(self, journal: Journal, **options: Any) -> None:
        import uvicorn

        from replay._ui import bind, create_app, url_of
        from replay._ui._serve import _Server

        self.app = create_app(journal, poll_seconds=0.05, **options)
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self.server = _Server(config, self.app.state.ui.stopping)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    def stop(self) -> float:
        """Stops it as Ctrl+C would; the seconds that took."""
        began = time.monotonic()
        self.server.handle_exit(2, None)
        self.thread.join(10)
        assert not self.thread.is_alive()
        return time.monotonic() - began


@step(kind="tool")
async def tick(index: int) -> int:
    return index


_stops: dict[str, threading.Event] = {}


async def busy(run_name: str, first: int) -> int:
    """`first` steps at once, then one every 20 ms until the test is done: a big run, still
    recording."""
    stop = _stops[run_name]
    index = 0
    while index < first or not stop.is_set():
        await tick(index)
        index += 1
        if index >= first:
            await asyncio.sleep(0.02)
    return index


def _in_thread(
    url: str, run_id: str, workflow: Any, *args: Any
) -> tuple[threading.Thread, list[BaseException]]:
    """`workflow(*args)` run as `run_id` in a started thread, on its own connection to the
    journal at `url` (as another process would); what it raised lands in the list."""
    failure: list[BaseException] = []

    def body() -> None:
        with Journal(url) as journal:
            try:
                asyncio.run(run(workflow, *args, journal=journal, run_id=run_id))
            except BaseException as exc:  # surfaced in the test's thread
                failure.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, failure


@contextlib.contextmanager
def busy_run(url: str, run_id: str, first: int) -> Iterator[Journal]:
    """Runs `busy` as `run_id` in a thread, on its own connection to the journal at `url`,
    until exit; yields once it has recorded `first` events (the journal, read-only)."""
    stop = _stops[run_id] = threading.Event()
    Journal(url).close()  # the schema, before a read-only connection opens it
    thread, failure = _in_thread(url, run_id, busy, run_id, first)
    try:
        with Journal(url, read_only=True) as journal:
            deadline = time.monotonic() + 120
            while journal.store.get_run(run_id) is None or (
                journal.store.count_events(run_id) < first
            ):
                assert not failure and thread.is_alive(), failure or "the busy run ended"
                assert time.monotonic() < deadline, "the busy run did not record its events"
                time.sleep(0.05)
            yield journal
    finally:
        stop.set()
        thread.join(30)
        _stops.pop(run_id, None)
    assert not thread.is_alive(), "the busy run did not finish"
    assert not failure, failure
