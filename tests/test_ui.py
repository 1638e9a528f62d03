"""`journal ui` without a browser: pages, filters, errors, escaping, headers and actions through
Starlette's TestClient over real journals; the live streams and the command through a real
server. The same pages in Chromium: tests/test_ui_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import markupsafe
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

import replay
from journal import Journal, RunStatus, RunVerification
from replay._cli import app as cli
from replay._ui import create_app
from tests.conftest import PG_URL, drop_schema, postgres_store
from tests.ui_runs import HOSTILE, HOSTILE_RUN_ID, SCRIPT, Server, live_run, record
from tests.ui_runs import research as _research

BASE = "http://127.0.0.1"
RUN_IDS = ["queued-2", "cats-1-dogs", "approve-3", HOSTILE_RUN_ID, "refund-7", "cats-1"]
"""Every recorded run, newest first."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "journal.db"
    with Journal(path) as journal:
        record(journal)
    return path


@pytest.fixture(scope="module")
def client(recorded: Path) -> Iterator[TestClient]:
    """The read-only app (as `journal ui` serves it by default) over the recorded journal."""
    with Journal(recorded, read_only=True) as journal:
        yield TestClient(create_app(journal), base_url=BASE)


@pytest.fixture
def writable(recorded: Path, tmp_path: Path) -> Iterator[tuple[Journal, TestClient]]:
    """A copy of the recorded journal, served with --allow-actions."""
    shutil.copyfile(recorded, tmp_path / "journal.db")
    with Journal(tmp_path / "journal.db") as journal:
        yield journal, TestClient(create_app(journal, allow_actions=True), base_url=BASE)


def _ids(page: str, attribute: str = "data-id") -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'<tr class="[^"]*" {attribute}="([^"]*)"', page)]


# -- pages ---------------------------------------------------------------------------------------


def test_runs_list_shows_every_run_newest_first(client: TestClient) -> None:
    """Each run is a row with its state; a fork names its parent; LLM tokens are summed."""
    page = client.get("/").text
    assert _ids(page) == RUN_IDS
    assert 'data-id="approve-3" data-status="waiting"' in page
    assert 'data-id="cats-1-dogs" data-status="interrupted"' in page  # a fork, to resume
    assert 'data-id="queued-2" data-status="submitted"' in page  # for a worker to start
    assert 'href="/run?id=cats-1">cats-1</a> at 4' in page
    assert '<td class="num">42 / 7</td>' in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, ["refund-7"]),
        ({"status": "waiting"}, ["approve-3"]),
        ({"status": "submitted"}, ["queued-2"]),
        ({"status": "interrupted"}, ["cats-1-dogs"]),
        ({"status": "running"}, ["queued-2", "cats-1-dogs"]),
        ({"status": "completed"}, [HOSTILE_RUN_ID, "cats-1"]),
        ({"workflow": "RESEARCH"}, ["queued-2", "cats-1-dogs", "cats-1"]),
        ({"q": "above the limit"}, ["refund-7"]),  # the run's recorded error
        ({"q": '["<script>'}, [HOSTILE_RUN_ID]),  # its inputs
        ({"since": "1h", "q": "cats"}, ["cats-1-dogs", "cats-1"]),
        ({"since": "2999-01-01"}, []),
        ({"status": "completed", "workflow": "research"}, ["cats-1"]),
    ],
)
def test_filters_select_runs(
    client: TestClient, query: dict[str, str], expected: list[str]
) -> None:
    """Status (and the interrupted/submitted states), workflow, age and text, combined."""
    response = client.get("/", params=query)
    assert response.status_code == 200
    assert _ids(response.text) == expected
    assert _ids(client.get("/runs/rows", params=query).text) == expected
    if not expected:
        assert "No run matches these filters." in response.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "done"}, "status &#39;done&#39; is not a run status. Expected one of running,"),
        ({"since": "yesterday"}, "Expected an age such as 30m, 2h, 7d, 1w, or an ISO date"),
        ({"offset": "-3"}, "offset must be a whole number (0 or more), not &#39;-3&#39;."),
    ],
)
def test_bad_filters_say_what_was_expected(
    client: TestClient, query: dict[str, str], message: str
) -> None:
    response = client.get("/", params=query)
    assert response.status_code == 400
    assert message in response.text


def test_the_list_pages_through_many_runs(tmp_path: Path) -> None:
    """50 runs a page, newest first; `older` and `newer` links carry the filters."""
    with Journal(tmp_path / "journal.db") as journal:
        for n in range(53):
            asyncio.run(replay.run(_noop, n, journal=journal, run_id=f"n-{n:02d}"))
        client = TestClient(create_app(journal), base_url=BASE)
        first = client.get("/", params={"q": "n-"}).text
        assert _ids(first)[:2] == ["n-52", "n-51"] and len(_ids(first)) == 50
        assert 'href="/?q=n-&amp;offset=50" id="older"' in first
        second = client.get("/", params={"q": "n-", "offset": "50"}).text
        assert _ids(second) == ["n-02", "n-01", "n-00"]
        assert 'id="older"' not in second and 'href="/?q=n-" id="newer"' in second


def test_a_page_of_the_list_reads_that_page_of_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a filter that must look at every run (workflow, text, interrupted/submitted),
    the list asks the store for the runs it shows and one more: it read every run of the
    journal for each page and each live refresh (3.4 s a page at 30,000 runs)."""
    with Journal(tmp_path / "journal.db") as journal:
        for n in range(120):
            replay.submit(_research, n, journal=journal, run_id=f"q-{n:03d}")
        handed: list[int] = []
        listing = journal.store.list_runs

        def counted(**options: Any) -> list[Any]:
            runs = listing(**options)
            handed.append(len(runs))
            return runs

        monkeypatch.setattr(journal.store, "list_runs", counted)
        client = TestClient(create_app(journal), base_url=BASE)
        for query, shown, read in [
            ({}, 50, 51),
            ({"offset": "50"}, 50, 101),
            ({"status": "running", "since": "1h"}, 50, 51),
            ({"offset": "100"}, 20, 120),
            ({"q": "q-00"}, 10, 120),  # text: every run is looked at
        ]:
            handed.clear()
            page = client.get("/runs/rows", params=query).text
            assert (len(_ids(page)), handed) == (shown, [read]), query
        assert _ids(client.get("/", params={"offset": "100"}).text)[-1] == "q-000"


async def _noop(n: int) -> int:
    return n


@replay.step(kind="llm")
async def _usage(input_tokens: Any, output_tokens: Any) -> dict[str, Any]:
    usage = {"model": "m-1", "input_tokens": input_tokens, "output_tokens": output_tokens}
    return {"status": 200, "body": "ok", "llm": usage}


async def _odd_usage() -> str:
    await _usage(5, 2)
    await _usage("many", [1])  # what a step may return: the journal keeps it as it is
    return "done"


def test_token_counts_that_are_not_numbers_do_not_break_the_pages(tmp_path: Path) -> None:
    """A step's recorded `llm` usage is the step's own return value: one run holding text
    where a count should be must not make the runs list (or its page) fail for every run."""
    with Journal(tmp_path / "journal.db") as journal:
        asyncio.run(replay.run(_odd_usage, journal=journal, run_id="odd-1"))
        client = TestClient(create_app(journal), base_url=BASE)
        listed = client.get("/")
        assert listed.status_code == 200 and _ids(listed.text) == ["odd-1"]
        assert '<td class="num">5 / 2</td>' in listed.text  # the counts that are counts
        page = client.get("/run", params={"id": "odd-1"})
        assert page.status_code == 200 and "5 in / 2 out" in page.text
        assert "m-1 · many in / [1] out" in html.unescape(page.text)  # shown as recorded


def test_run_page_shows_facts_outcome_steps_and_the_timeline(client: TestClient) -> None:
    page = client.get("/run", params={"id": "cats-1"}).text
    assert '<span id="run-status" class="badge st-completed" data-status="completed">' in page
    assert "chain intact (3 events, sealed)" in page
    assert [s for s in re.findall(r'<tr class="step" data-seq="(\d+)"', page)] == ["1", "2", "3"]
    assert "gpt-4o-mini · 42 in / 7 out" in page
    assert '<iframe id="timeline" src="/run/timeline?id=cats-1"' in page
    assert 'href="/run?id=cats-1-dogs">cats-1-dogs</a>' in page  # its fork
    assert 'href="/diff?a=cats-1&amp;b=cats-1-dogs">diff</a>' in page
    queued = client.get("/run", params={"id": "queued-2"}).text  # no event yet
    assert 'data-status="submitted"' in queued and '<tr class="step"' not in queued
    empty = client.get("/run/timeline", params={"id": "queued-2"}).text
    assert json.loads(re.search(r'id="jt-rows">(.*?)</script>', empty, re.S).group(1)) == []  # type: ignore[union-attr]
    failed = client.get("/run", params={"id": "refund-7"}).text
    assert "builtins:ValueError: refund of 250 is above the limit" in failed
    assert '<pre class="error traceback">Traceback (most recent call last):' in failed


def test_step_page_shows_pretty_json_and_llm_usage(client: TestClient) -> None:
    page = client.get("/run/step", params={"id": "cats-1", "seq": "3"}).text
    for field, value in [
        ("model", "gpt-4o-mini"),
        ("input_tokens", "42"),
        ("finish_reason", "stop"),
    ]:
        assert f'data-field="{field}">{value}</dd>' in page
    arguments = re.search(r'<pre id="arguments">(.*?)</pre>', page, re.S)
    assert arguments is not None
    assert json.loads(html.unescape(arguments.group(1)))["prompt"].startswith("cats: cats sleep")
    assert '\n  "body": "summary of cats: cats sleep 16' in html.unescape(page)  # indented
    assert 'id="previous"' in page and 'id="next"' not in page
    error = client.get("/run/step", params={"id": "refund-7", "seq": "1"}).text
    assert "builtins:ValueError: refund of 250" in error
    marker = client.get("/run/step", params={"id": "cats-1-dogs", "seq": "4"}).text
    assert "<h3>Marker</h3>" in marker and 'id="arguments"' not in marker
    assert '"parent_run_id": "cats-1"' in html.unescape(marker)


def test_the_timeline_is_the_html_exports_with_linked_assets(client: TestClient) -> None:
    """Same page as `journal export -f html`, but no inline script: rows are a JSON block."""
    page = client.get("/run/timeline", params={"id": "cats-1"}).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    inline = [body for attrs, body in scripts if "src=" not in attrs]
    assert all('type="application/json"' in attrs for attrs, body in scripts if body)
    assert len(inline) == 4  # fields, rows, run, meta
    rows = json.loads(re.search(r'id="jt-rows">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert [row[0] for row in rows] == [1, 2, 3]
    for name in ("served.js", "traceback.js", "timeline.js", "timeline.css"):
        assert name in page
        assert client.get(f"/assets/timeline/{name}").status_code == 200


def test_diff_and_verify_pages(client: TestClient) -> None:
    diff = client.get("/diff", params={"a": "cats-1", "b": "cats-1-dogs"}).text
    assert 'data-key="0:1" data-change="changed"' in diff
    assert 'First difference: step <span class="mono">0:1</span>' in diff
    same = client.get("/diff", params={"a": "cats-1", "b": "cats-1"}).text
    assert 'data-identical="true"' in same
    form = client.get("/diff").text
    assert '<option value="refund-7">' in form
    verify = client.get("/verify").text
    assert 'id="verify-verdict" data-ok="true"' in verify
    assert len(re.findall(r'data-verdict="intact"', verify)) >= len(RUN_IDS) - 1
    one = client.get("/verify", params={"id": "refund-7"}).text
    assert 'data-id="refund-7" data-verdict="intact"' in one


def test_the_verify_page_is_linear_in_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page tells the journal head's rows from the runs' without comparing each verdict
    with all the others: that made it quadratic (18 s for a journal of 5,000 runs whose
    verification takes 2 s; minutes at 30,000)."""
    with Journal(tmp_path / "journal.db") as journal:
        for n in range(100):
            replay.submit(_research, f"topic {n}", journal=journal, run_id=f"queued-{n}")
        compared = []
        equal = RunVerification.__eq__
        monkeypatch.setattr(
            RunVerification, "__eq__", lambda a, b: compared.append(1) or equal(a, b)
        )
        page = TestClient(create_app(journal), base_url=BASE).get("/verify").text
    assert page.count('data-verdict="intact"') == 100 and 'data-ok="true"' in page
    assert page.count('href="/run?id=queued-') == 100  # each run links to its page
    assert len(compared) == 0


@pytest.mark.parametrize(
    "path",
    ["/run", "/run/summary", "/run/outcome", "/run/rows", "/run/timeline", "/live/run", "/verify"],
)
def test_an_unknown_run_is_404_with_its_name(client: TestClient, path: str) -> None:
    response = client.get(path, params={"id": "nope-9", "seq": "1"})
    assert response.status_code == 404
    assert "No run &#39;nope-9&#39; in this journal" in response.text


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/run", {}, 400, "the &#39;id&#39; parameter is missing. Expected, e.g.: /run?id=RUN"),
        ("/run/step", {"id": "cats-1", "seq": "x"}, 400, "seq must be a whole number"),
        ("/run/step", {"id": "cats-1", "seq": "99"}, 404, "has no event at seq 99"),
        ("/run/rows", {"id": "cats-1", "after": "-1"}, 400, "after must be a whole number"),
        ("/diff", {"a": "cats-1", "b": "nope-9"}, 404, "No run &#39;nope-9&#39;"),
        ("/no/such/page", {}, 404, "Not Found"),
    ],
)  # fmt: skip
def test_bad_requests_say_what_was_wrong(
    client: TestClient, path: str, params: dict[str, str], status: int, message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status
    assert message in response.text


def test_every_response_carries_a_strict_content_security_policy(client: TestClient) -> None:
    for path in ("/", "/run?id=cats-1", "/run/timeline?id=cats-1", "/static/ui.js", "/run?id=x"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'self'" in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_a_page_asked_for_under_another_host_name_is_refused(client: TestClient) -> None:
    """A site that points its own name at 127.0.0.1 (DNS rebinding) cannot read the journal."""
    response = client.get("/", headers={"host": "attacker.example:8765"})
    assert response.status_code == 400 and "cats-1" not in response.text
    for ours in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765"):
        assert client.get("/", headers={"host": ours}).status_code == 200


def test_a_server_on_every_address_still_refuses_another_sites_name(recorded: Path) -> None:
    """With --host 0.0.0.0 (or ::) the page answers to any address and to this machine's
    names, but a site that points its own name at the machine (DNS rebinding) still gets 400:
    otherwise any page the user visits could read every run, and the actions' token."""
    with Journal(recorded, read_only=True) as journal:
        for wildcard in ("0.0.0.0", "::"):
            client = TestClient(create_app(journal, host=wildcard), base_url=BASE)
            refused = client.get("/", headers={"host": "attacker.example:8765"})
            assert refused.status_code == 400 and "cats-1" not in refused.text
            assert "refused a request for host 'attacker.example:8765'" in refused.text
            assert "Fix: open the address `journal ui` printed" in refused.text
            ours = ["192.168.1.20:8765", "[fe80::1]:8765", "localhost:8765", "10.0.0.7"]
            for host in [*ours, f"{socket.gethostname()}:8765"]:
                assert client.get("/", headers={"host": host}).status_code == 200, host
            for malformed in ("", "[::1", "a:b:c", "127.0.0.1:", "127.0.0.1:x"):
                assert client.get("/", headers={"host": malformed}).status_code == 400


def test_recorded_text_is_escaped_in_every_page(client: TestClient) -> None:
    """Run id, inputs, a step's arguments and result, the run's result: shown, never markup."""
    hostile = {"id": HOSTILE_RUN_ID}
    pages = {
        "/": {},
        "/run": hostile,
        "/run/summary": hostile,
        "/run/outcome": hostile,
        "/run/rows": hostile,
        "/run/step": {**hostile, "seq": "1"},
        "/diff": {"a": HOSTILE_RUN_ID, "b": "cats-1"},
        "/verify": {},
    }
    for path, params in pages.items():
        text = client.get(path, params=params).text
        assert SCRIPT not in text and "<img" not in text, path
        if path != "/run/rows":  # only links to the run there
            assert "&lt;img src=x onerror=" in text, path
    outcome = client.get("/run/outcome", params=hostile).text
    assert str(markupsafe.escape(json.dumps(HOSTILE, ensure_ascii=False))) in outcome
    timeline = client.get("/run/timeline", params=hostile).text
    assert "<img" not in timeline and "</script><script" not in timeline.replace(" ", "")


# -- actions -------------------------------------------------------------------------------------


def _form(client: TestClient, path: str, **fields: str) -> httpx.Response:
    token = re.search(r'name="token" value="([^"]+)"', client.get("/run?id=cats-1").text)
    assert token is not None
    return client.post(
        path,
        data={"token": token.group(1), **fields},
        headers={"origin": BASE},
        follow_redirects=False,
    )


def test_read_only_by_default_no_action_exists(client: TestClient, recorded: Path) -> None:
    """Without --allow-actions: no form on any page, and the action URLs are not there."""
    page = client.get("/run", params={"id": "approve-3"}).text
    assert 'method="post"' not in page and 'id="actions"' not in page
    assert 'id="mode"' in page and ">read-only</span>" in page
    forged = client.get("/run", params={"id": "approve-3", "did": "cancel"}).text
    assert 'id="notice"' not in forged  # no action here, so no "Run cancelled." either
    for action in ("signal", "cancel", "fork"):
        response = client.post(f"/run/{action}", data={"id": "approve-3", "name": "approval"})
        assert response.status_code == 404
    with Journal(recorded, read_only=True) as journal:
        assert journal.run("approve-3").status is RunStatus.WAITING


def test_signal_from_the_page_makes_a_waiting_run_due(
    writable: tuple[Journal, TestClient],
) -> None:
    """The twin of `journal signal`: a worker then finishes the run with the value sent."""
    journal, client = writable
    page = client.get("/run", params={"id": "approve-3"}).text
    assert '<input name="name" value="approval"' in page  # what the run waits for
    response = _form(client, "/run/signal", id="approve-3", name="approval", value="true")
    assert response.status_code == 303
    assert response.headers["location"] == "/run?id=approve-3&did=signal&name=approval&n=1"
    shown = client.get(response.headers["location"]).text
    assert "Signal approval #1 sent: the run was waiting for it and is due now" in shown
    assert [run.run_id for run in journal.due()] == ["approve-3"]
    asyncio.run(replay.Worker(journal).run_once())
    assert journal.run("approve-3").result == b'"approved"'


def test_cancel_from_the_page(writable: tuple[Journal, TestClient]) -> None:
    journal, client = writable
    response = _form(client, "/run/cancel", id="approve-3", reason="customer withdrew")
    assert response.headers["location"] == "/run?id=approve-3&did=cancel"
    assert journal.run("approve-3").status is RunStatus.CANCELLED
    again = _form(client, "/run/cancel", id="approve-3")
    assert again.status_code == 400 and "has already finished (cancelled)" in again.text


def test_fork_with_an_override_from_the_page(writable: tuple[Journal, TestClient]) -> None:
    """The twin of `journal fork --override`: the fork, resumed, returns the overridden answer."""
    journal, client = writable
    value = json.dumps({"status": 200, "body": "birds", "llm": {}})
    response = _form(client, "/run/fork", id="cats-1", key="0:1", value=value, **{"as": "birds"})
    assert response.headers["location"] == "/run?id=birds&did=fork&to=cats-1"
    assert "Forked from cats-1" in client.get(response.headers["location"]).text
    fork = journal.run("birds")
    assert (fork.parent_run_id, fork.fork_seq) == ("cats-1", 4)
    assert asyncio.run(replay.resume_run(journal, "birds")).result == "birds"


@pytest.mark.parametrize(
    ("path", "fields", "status", "message"),
    [
        ("/run/signal", {"id": "approve-3", "name": "approval", "value": "yes"}, 400,
         "the value &#39;yes&#39; is not JSON"),
        ("/run/signal", {"id": "approve-3", "name": "", "value": "1"}, 400,
         "the signal&#39;s name is empty"),
        ("/run/signal", {"id": "approve-3", "name": "replay.cancel", "value": "1"}, 400,
         "which the replay engine keeps for its own signals"),
        ("/run/signal", {"id": "nope-9", "name": "approval", "value": "1"}, 404, "No run"),
        ("/run/fork", {"id": "cats-1", "key": "9:9", "value": "1"}, 400,
         "Run &#39;cats-1&#39; has no step &#39;9:9&#39;"),
        ("/run/fork", {"id": "cats-1", "at": "first"}, 400, "expected a seq, a whole number"),
        ("/run/cancel", {"id": "cats-1"}, 400, "has already finished (completed)"),
    ],
)  # fmt: skip
def test_bad_action_inputs_say_what_was_wrong(
    writable: tuple[Journal, TestClient],
    path: str,
    fields: dict[str, str],
    status: int,
    message: str,
) -> None:
    journal, client = writable
    response = _form(client, path, **fields)
    assert response.status_code == status
    assert message in response.text
    assert journal.run("approve-3").status is RunStatus.WAITING


def test_actions_refuse_forged_requests(writable: tuple[Journal, TestClient]) -> None:
    """No token, a wrong one, another origin, or not a form: refused, and nothing written."""
    journal, client = writable
    token = re.search(r'name="token" value="([^"]+)"', client.get("/run?id=cats-1").text)
    assert token is not None
    good = {"id": "approve-3", "reason": "x", "token": token.group(1)}
    refused = [
        client.post("/run/cancel", data={**good, "token": ""}),
        client.post("/run/cancel", data={**good, "token": "guessed"}),
        client.post("/run/cancel", data=good, headers={"origin": "https://attacker.example"}),
        client.post("/run/cancel", data=good, headers={"referer": "https://attacker.example/x"}),
        client.post("/run/cancel", json=good),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 415]
    assert "does not carry this server&#39;s token" in refused[0].text
    assert "sent from https://attacker.example, not from this page" in refused[2].text
    assert journal.run("approve-3").status is RunStatus.WAITING
    other_app = TestClient(create_app(journal, allow_actions=True), base_url=BASE)
    assert other_app.post("/run/cancel", data=good).status_code == 403  # a per-process token


# -- live updates and the command, through a real server -----------------------------------------


def _next_event(lines: Iterator[str], name: str) -> dict[str, Any]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == name:
            parsed: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return parsed
    raise AssertionError(f"the stream ended before a {name!r} event")


@pytest.fixture(params=["sqlite", "postgres"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    schema = request.getfixturevalue("pg_schema")
    postgres_store(schema).close()  # creates it, or skips (fails on CI) without a server
    return f"{PG_URL}?schema={schema}"


def test_streams_report_new_runs_and_steps_as_they_are_recorded(journal_url: str) -> None:
    """On SQLite and PostgreSQL alike: a run another connection starts is a `runs` event; its
    steps are `steps` events carrying the last seq as the event id; the end is a `run` event.
    Stopping the server ends the open streams at once. The server reads the journal opened
    read-only, as `journal ui` does."""
    with Journal(journal_url) as writer:
        asyncio.run(replay.run(_noop, 1, journal=writer, run_id="before"))
    with Journal(journal_url, read_only=True) as journal, httpx.Client() as http:
        server = Server(journal)
        try:
            with http.stream("GET", f"{server.url}/live/runs", timeout=10) as runs:
                lines = runs.iter_lines()
                assert next(lines) == ": watching the runs"
                with live_run(journal_url, "live-1") as gates:
                    assert _next_event(lines, "runs")["added"] == 1
                    url = f"{server.url}/live/run?id=live-1&after=1"
                    with http.stream("GET", url, timeout=10) as steps:
                        assert steps.headers["content-type"].startswith("text/event-stream")
                        seen = steps.iter_lines()
                        gates.release(0)
                        event = _next_event(seen, "steps")
                        assert event["last_seq"] >= 2 and event["state"] == "running"
                        gates.release_all()
                        while _next_event(seen, "run")["status"] != "completed":
                            pass
                        assert journal.run("live-1").status is RunStatus.COMPLETED
                    with http.stream("GET", url, headers={"last-event-id": "3"}) as resumed:
                        lines_after = resumed.iter_lines()
                        resumed_at = _next_event(lines_after, "steps")
                        assert (resumed_at["last_seq"], resumed_at["added"]) == (6, 3)
            with http.stream("GET", f"{server.url}/live/runs", timeout=10) as still_open:
                next(still_open.iter_lines())
                assert server.stop() < 2
        finally:
            server.stop() if server.thread.is_alive() else None


def test_a_stream_refuses_a_seq_no_journal_can_hold(client: TestClient) -> None:
    """A reconnecting page sends its last event id back: one past what a journal can hold (a
    forged header, a mangled address) is a 400 before the stream opens, not a stream that dies
    on its first read with a traceback in the terminal."""
    huge = "9" * 30
    for response in (
        client.get("/live/run", params={"id": "cats-1", "after": huge}),
        client.get("/live/run", params={"id": "cats-1"}, headers={"last-event-id": huge}),
    ):
        assert response.status_code == 400
        assert f"after {huge} is too large: expected a whole number up to" in response.text
    endless = client.get("/", params={"offset": "9" * 5000}).text  # not echoed whole
    assert "offset 999999999999999999999999999999… is too large" in endless
    assert len(endless) < 10_000


def test_a_journal_failing_under_an_open_stream_ends_it_cleanly(pg_schema: str) -> None:
    """PostgreSQL's tables gone (or its connection lost) while pages are open: their streams
    end as streams end, so the browser reconnects and its next request gets the error page;
    they were cut off mid-response, with an ASGI traceback in the terminal."""
    postgres_store(pg_schema).close()  # creates it, or skips (fails on CI) without a server
    url = f"{PG_URL}?schema={pg_schema}"
    with Journal(url) as writer:
        asyncio.run(replay.run(_noop, 1, journal=writer, run_id="before"))
    with Journal(url, read_only=True) as journal, httpx.Client(timeout=10) as http:
        server = Server(journal)
        try:
            with (
                http.stream("GET", f"{server.url}/live/runs") as runs,
                http.stream("GET", f"{server.url}/live/run?id=before") as run,
            ):
                streams = [runs.iter_lines(), run.iter_lines()]
                assert [next(lines).split()[:2] for lines in streams] == [[":", "watching"]] * 2
                drop_schema(pg_schema)
                for lines in streams:
                    assert all(line == "" or line.startswith(":") for line in lines)
            again = http.get(f"{server.url}/live/run?id=before")
            assert again.status_code == 500 and "could not answer" in again.text
        finally:
            server.stop()


@contextlib.contextmanager
def _journal_ui(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`journal ui --port 0 ARGS` running, and the URL it printed; killed on exit if need be."""
    script = Path(sys.executable).with_name("journal")
    command = [str(script), "ui", "--port", "0", *args]
    with subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.search(r"http://\S+", line)
            assert found, line + (proc.stderr.read() if proc.stderr else "")
            yield proc, found.group(0)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_command_serves_read_only_on_loopback_and_stops_on_ctrl_c(recorded: Path) -> None:
    """It prints its URL, serves the journal read-only, and Ctrl+C ends it at once, quietly,
    though a page holds a live stream open. Listening beyond loopback takes --host, and warns.
    (Both commands start together: a process start costs seconds on a busy machine.)"""
    with (
        _journal_ui("--db", str(recorded)) as (proc, url),
        _journal_ui("--db", str(recorded), "--host", "0.0.0.0") as (exposed, exposed_url),
    ):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        page = httpx.get(url + "/run?id=refund-7").text
        assert "refund-7" in page and 'method="post"' not in page
        assert httpx.post(url + "/run/cancel", data={"id": "refund-7"}).status_code == 404
        with httpx.stream("GET", url + "/live/runs", timeout=5) as stream:
            next(stream.iter_lines())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0  # it does not wait for the stream to end
        assert proc.stderr is not None and proc.stderr.read() == ""

        assert exposed_url.startswith("http://0.0.0.0:") and exposed.stderr is not None
        warning = exposed.stderr.readline()
        assert "warning: listening on 0.0.0.0: anyone who can reach this machine" in warning
        exposed.send_signal(signal.SIGINT)
        assert exposed.wait(5) == 0


def test_a_taken_port_and_a_missing_journal_are_clear_errors(
    recorded: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(cli, ["ui", "--db", str(recorded), "--port", port])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Fix: choose another --port (0 picks a free one)" in result.output
    missing = CliRunner().invoke(cli, ["ui", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and "no journal at" in missing.output


def test_without_the_extra_the_command_says_how_to_install_it(
    recorded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after `pip install journal-replay` without `[ui]`: the packages cannot be found."""
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(cli, ["ui", "--db", str(recorded)])
    assert result.exit_code == 1
    assert "journal ui needs starlette, uvicorn, which the `ui` extra installs" in result.output
    assert "pip install 'journal-replay[ui]'" in result.output
