"""`journal ui` in real headless Chromium (selenium): the pages render under their
Content-Security-Policy without one console error, a live run's steps appear without a reload,
recorded script never runs, and the actions exist only with --allow-actions.

Chromium is the HTML timeline tests' (the `browser` fixture in conftest.py): missing, these tests
skip locally and fail on CI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from journal import Journal, RunStatus
from replay._ui._views import href
from tests.ui_runs import HOSTILE, HOSTILE_RUN_ID, SCRIPT, Server, busy_run, live_run, record

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    """The recorded journal, served read-only (the default) by a real server."""
    path = tmp_path_factory.mktemp("ui-browser") / "journal.db"
    with Journal(path) as journal:
        record(journal)
    with Journal(path, read_only=True) as journal:
        server = Server(journal)
        yield path, server
        server.stop()


def _text_of(browser: WebDriver, element_id: str, expected: str | None = None) -> str:
    """The text of the element `element_id` once the page after a click has it (`expected`, or
    any text): read in the page, so a re-render between finding and reading it (the action's
    redirect, the live stream) is not a stale element. The last text seen if it never comes."""
    script = (
        "const e = document.getElementById(arguments[0]); const t = e ? e.innerText.trim() : '';"
        " return (arguments[1] === null ? t !== '' : t === arguments[1]) ? t : null"
    )
    try:
        return str(_until(browser, script, element_id, expected))
    except Exception:  # a timeout: what the page shows is what the assertion reports
        return str(browser.execute_script(script.rsplit("return", 1)[0] + "return t", element_id))


def _until(browser: WebDriver, script: str, *args: Any, timeout: float = 10) -> Any:
    """Waits until `script` returns something truthy, and returns it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(
        lambda b: b.execute_script(script, *args), message=script
    )


def _open_streams(browser: WebDriver, requests: set[Any], count: int) -> None:
    """Waits until the server has `count` requests in flight (its open streams)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda _: len(requests) == count, message=f"{len(requests)} streams open, not {count}"
    )


FRAME = "document.getElementById('timeline').contentDocument"
TIMELINE_READY = f"return {FRAME}.documentElement.dataset.timeline === 'ready'"


def _bars(browser: WebDriver) -> int:
    count: int = browser.execute_script(f"return {FRAME}.querySelectorAll('.bar').length")
    return count


def _errors(browser: WebDriver) -> list[dict[str, Any]]:
    """Console errors since the last call: a blocked script or style (CSP) would be one."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_pages_render_in_chromium(browser: WebDriver, served: tuple[Path, Server]) -> None:
    """List, run (with the export's timeline and its detail panel), step, diff and verify all
    render, and the strict policy blocks nothing they need."""
    from selenium.webdriver.common.by import By

    _, server = served
    _errors(browser)
    browser.get(server.url + "/")
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.run")) == 6
    _until(browser, "return document.getElementById('live').dataset.state === 'on'")

    browser.find_element(By.LINK_TEXT, "cats-1").click()
    assert browser.find_element(By.ID, "run-status").text == "completed"
    _until(browser, TIMELINE_READY)
    assert _bars(browser) == 3
    browser.switch_to.frame("timeline")
    browser.find_element(By.CSS_SELECTOR, ".bar[data-key='0:1']").click()
    detail = browser.find_element(By.ID, "detail").text
    assert "gpt-4o-mini" in detail and "42 in, 7 out" in detail
    browser.switch_to.default_content()

    browser.find_element(By.CSS_SELECTOR, "tr.step[data-seq='3'] td.name a").click()
    assert browser.find_element(By.CSS_SELECTOR, "#llm [data-field='model']").text == "gpt-4o-mini"
    assert '"prompt": "cats: cats sleep 16' in browser.find_element(By.ID, "arguments").text

    browser.get(server.url + href("/diff", a="cats-1", b="cats-1-dogs"))
    assert "First difference: step 0:1" in browser.find_element(By.ID, "verdict").text
    browser.get(server.url + "/verify")
    assert browser.find_element(By.ID, "verify-verdict").text == "nothing edited"
    assert _errors(browser) == []


def test_a_live_runs_steps_appear_without_a_reload(
    browser: WebDriver, served: tuple[Path, Server]
) -> None:
    """A run another connection records shows up on the open list, and its steps on its open
    page (table and timeline) as they are journaled; the page never reloads."""
    from selenium.webdriver.common.by import By

    path, server = served
    browser.get(server.url + "/")
    _until(browser, "return document.getElementById('live').dataset.state === 'on'")
    browser.execute_script("window.notReloaded = true")
    with live_run(str(path), "live-7", count=3) as gates:
        _until(browser, "return document.querySelector(\"tr.run[data-id='live-7']\")")
        assert browser.execute_script("return window.notReloaded") is True

        browser.find_element(By.LINK_TEXT, "live-7").click()
        _until(browser, TIMELINE_READY)
        browser.execute_script("window.notReloaded = true")
        # Read in the page: the live stream may re-render it between finding and reading
        status = "return document.getElementById('run-status').dataset.status"
        assert browser.execute_script(status) == "running"
        seqs = "return [...document.querySelectorAll('tr.step')].map(r => +r.dataset.seq)"
        assert browser.execute_script(seqs) == [1]
        assert _bars(browser) == 1

        gates.release(0)
        _until(browser, "return document.querySelector(\"tr.step[data-seq='3']\")")
        assert browser.execute_script(seqs) == [1, 2, 3]
        assert _text_of(browser, "event-count", "3") == "3"
        _until(browser, f"return {FRAME}.querySelectorAll('.bar').length === 2")

        gates.release_all()
        _until(browser, "return document.getElementById('run-status').dataset.status === "
               "'completed'")  # fmt: skip
        _until(browser, "return document.querySelectorAll('tr.step').length === 6")
        _until(browser, f"return {FRAME}.querySelectorAll('.bar.s-completed').length === 3")
        assert browser.execute_script("return window.notReloaded") is True
    assert _errors(browser) == []


def test_recorded_script_never_runs_and_shows_as_text(
    browser: WebDriver, served: tuple[Path, Server]
) -> None:
    """`<script>` and `<img onerror>` in a run id, inputs, results, an error and a step: every
    page shows them as text, and none runs (each would count up `window.pwned`)."""
    from selenium.webdriver.common.by import By

    _, server = served
    pages = [
        "/",
        href("/run", id=HOSTILE_RUN_ID),
        href("/run/step", id=HOSTILE_RUN_ID, seq=1),
        href("/run", id="refund-7"),
        href("/diff", a=HOSTILE_RUN_ID, b="cats-1"),
    ]  # every page's escaping is checked without a browser too (test_ui.py)
    for page in pages:
        browser.get(server.url + page)
        if "/run?" in page:
            _until(browser, TIMELINE_READY)
            browser.switch_to.frame("timeline")
            browser.find_element(By.CSS_SELECTOR, ".bar").click()
            assert browser.execute_script("return window.pwned") is None, page
            browser.switch_to.default_content()
        assert browser.execute_script("return window.pwned") is None, page
        assert browser.execute_script("return document.images.length") == 0, page

    browser.get(server.url + href("/run", id=HOSTILE_RUN_ID))
    assert browser.find_element(By.ID, "run-id").text == HOSTILE_RUN_ID
    assert SCRIPT in browser.find_element(By.ID, "outcome").text
    browser.get(server.url + href("/run/step", id="refund-7", seq=1))
    headline = browser.find_element(By.CSS_SELECTOR, "#payload .headline").text
    assert headline == f"builtins:ValueError: refund of 250 is above the limit {HOSTILE}"


def test_actions_exist_only_with_the_flag_and_work(
    browser: WebDriver, served: tuple[Path, Server], tmp_path: Path
) -> None:
    """Read-only by default: no action on the page. With --allow-actions: signal a waiting
    run, cancel one, fork with an override, each from its form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, read_only = served
    browser.get(read_only.url + href("/run", id="approve-3"))
    assert browser.find_elements(By.ID, "actions") == []
    assert browser.find_element(By.ID, "mode").text == "read-only"

    shutil.copyfile(served[0], tmp_path / "journal.db")
    with Journal(tmp_path / "journal.db") as journal:
        server = Server(journal, allow_actions=True)
        try:
            browser.get(server.url + href("/run", id="approve-3"))
            assert browser.find_element(By.ID, "mode").text == "actions enabled"
            browser.find_element(By.CSS_SELECTOR, "[data-action='signal'] button").click()
            notice = _text_of(browser, "notice")
            assert "Signal approval #1 sent: the run was waiting for it and is due now" in notice
            assert [run.run_id for run in journal.due()] == ["approve-3"]

            form = browser.find_element(By.CSS_SELECTOR, "[data-action='cancel']")
            form.find_element(By.NAME, "reason").send_keys("customer withdrew")
            form.find_element(By.TAG_NAME, "button").click()
            assert _text_of(browser, "notice", "Run cancelled.") == "Run cancelled."
            assert _text_of(browser, "run-status", "cancelled") == "cancelled"
            assert journal.run("approve-3").status is RunStatus.CANCELLED

            browser.get(server.url + href("/run", id="cats-1"))
            form = browser.find_element(By.CSS_SELECTOR, "[data-action='fork']")
            Select(form.find_element(By.NAME, "key")).select_by_value("0:1")
            form.find_element(By.NAME, "value").send_keys('{"status": 200, "body": "fish"}')
            form.find_element(By.NAME, "as").send_keys("cats-1-fish")
            form.find_element(By.TAG_NAME, "button").click()
            assert _text_of(browser, "run-id", "cats-1-fish") == "cats-1-fish"
            assert journal.run("cats-1-fish").parent_run_id == "cats-1"
            assert _errors(browser) == []
        finally:
            server.stop()


def test_a_page_in_a_background_tab_lets_its_stream_go(
    browser: WebDriver, served: tuple[Path, Server]
) -> None:
    """A browser opens at most six connections to one server and each open page's stream
    holds one, so with six pages open a seventh stayed blank. A page in a background tab now
    closes its stream, and catches up when it is shown again. (The server's requests in
    flight are its open streams once the pages have loaded.)"""
    path, server = served
    streams = server.server.server_state.tasks
    first = browser.current_window_handle
    browser.get(server.url + "/")
    _until(browser, "return document.getElementById('live').dataset.state === 'on'")
    try:
        browser.switch_to.new_window("tab")
        browser.get(server.url + href("/run", id="cats-1"))
        _until(browser, "return document.getElementById('live').dataset.state === 'on'")
        _open_streams(browser, streams, 1)
        with live_run(str(path), "live-8", count=1):
            browser.switch_to.window(first)  # shown again: it reconnects and catches up
            _until(browser, "return document.querySelector(\"tr.run[data-id='live-8']\")")
            _until(browser, "return document.getElementById('live').dataset.state === 'on'")
            _open_streams(browser, streams, 1)
    finally:
        for handle in browser.window_handles:
            if handle != first:
                browser.switch_to.window(handle)
                browser.close()
        browser.switch_to.window(first)
    assert _errors(browser) == []


WATCH_BLANK = """
window.blank = 0;
window.watch = setInterval(() => {
  let drawn = false;
  try {
    drawn = document.getElementById('timeline').contentDocument.documentElement
      .dataset.timeline === 'ready';
  } catch (_) { /* no document */ }
  if (!drawn) window.blank++;
}, 20);
"""
"""Counts, every 20 ms, the moments the page's timeline frame shows no drawn timeline."""
DRAWN_MORE = f"""
try {{
  const d = {FRAME}, bars = d.querySelectorAll('.bar').length;
  return d.documentElement.dataset.timeline === 'ready' && bars > arguments[0] && bars;
}} catch (_) {{ return false; }}
"""
"""The timeline's bars, once it is drawn with more than `arguments[0]` of them."""


def test_a_big_live_runs_timeline_is_never_blank(browser: WebDriver, tmp_path: Path) -> None:
    """A run of several thousand events, still recording: the page's timeline was reloaded in
    place every 700 ms, and loading and drawing it took longer than that, so it stayed blank.
    Now the next timeline is drawn in a hidden frame and shown once drawn, and reloads wait
    for the last one (and longer, the longer it took)."""
    path = tmp_path / "journal.db"
    with busy_run(str(path), "busy-1", first=3000) as journal:
        server = Server(journal)
        try:
            browser.get(server.url + href("/run", id="busy-1"))
            drawn = _until(browser, DRAWN_MORE, 0, timeout=60)
            assert drawn >= 3000
            browser.execute_script(WATCH_BLANK)
            for _ in range(2):  # redrawn twice with the run's new rows, never blank
                drawn = _until(browser, DRAWN_MORE, drawn, timeout=60)
                assert browser.execute_script("return window.blank") == 0
            assert browser.execute_script("return document.querySelectorAll('iframe').length") <= 2
            assert _errors(browser) == []
        finally:
            browser.get("about:blank")  # the page, still following the run, lets it go
            server.stop()
