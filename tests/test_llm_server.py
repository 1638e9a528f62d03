"""The offline LLM server's request log, which crash tests read while requests still arrive."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.llm_server import requests_logged, serve


def test_the_log_is_read_while_a_large_request_is_written(tmp_path: Path) -> None:
    """A reader polling the log never sees half a line: a request body of 2 MB is written in
    several pieces, and a test that counts arrivals meanwhile (as the crash harness does) must
    count whole requests only."""
    log = tmp_path / "requests.log"
    server = serve(log)
    url = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    try:
        senders = [
            threading.Thread(target=httpx.post, args=(url,), kwargs={"json": body, "timeout": 30})
            for _ in range(5)
        ]
        for sender in senders:
            sender.start()
        counts = []
        while any(sender.is_alive() for sender in senders):
            counts.append(len(requests_logged(log)))
        for sender in senders:
            sender.join()
    finally:
        server.stop()
    assert len(requests_logged(log)) == 5
    assert counts == sorted(counts)
