"""The HTML timeline of one run: a self-contained page, streamed, and rendered in real Chromium.

The unit tests read the page as text. The browser tests load it from file:// in headless
Chromium through selenium; without Chromium they skip locally and fail on CI (CI=true).
"""

from __future__ import annotations

import io
import itertools
import json
import re
import struct
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from journal import EventKind
from journal._html import _asset, write_html_timeline

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

T0 = datetime(2026, 11, 25, 14, 0, 0, 123456, tzinfo=UTC)
RUN_ID = "support-ticket-4711"
HOSTILE = "</script><script>window.pwned = 1</script> <!-- \u2028\u2029 </SCRIPT > & done"


def _at(ms: float) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat()


def _call(site: str, **args: Any) -> str:
    return json.dumps({"args": args, "site": site})


def _error(exc_type: str, message: str) -> str:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "agent.py", line 40, in fetch_page\n'
        "    raise TimeoutError(...)\n"
        f"{exc_type.rpartition(':')[2]}: {message}\n"
    )
    return json.dumps(
        {"type": exc_type, "message": message, "args": [message], "traceback": traceback}
    )


class _Events:
    """Event records as the JSONL export writes them, appended seq by seq."""

    def __init__(self, run_id: str = RUN_ID) -> None:
        self.run_id = run_id
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        self.last_hash: str | None = None

    def add(
        self,
        ms: float,
        key: str,
        kind: str,
        name: str,
        status: str,
        payload: str | None = None,
        *,
        attempt: int = 1,
        args: str | None = None,
    ) -> None:
        self.seq += 1
        seq, prev, self.last_hash = self.seq, self.last_hash, f"h{self.seq:04d}"
        self.rows.append(
            {
                "type": "event",
                "run_id": self.run_id,
                "seq": seq,
                "key": key,
                "kind": kind,
                "name": name,
                "fingerprint": f"fp-{name}-{seq}",
                "status": status,
                "attempt": attempt,
                "created_at": _at(ms),
                "payload": payload,
                "args": args,
                "prev_hash": prev,
                "hash": self.last_hash,
            }
        )


def _run(**changes: Any) -> dict[str, Any]:
    run = {
        "type": "run",
        "run_id": RUN_ID,
        "workflow": "support.agent:answer_ticket",
        "status": "running",
        "inputs": json.dumps({"args": [4711], "kwargs": {}}),
        "result": None,
        "error": None,
        "parent_run_id": None,
        "fork_seq": None,
        "resumes": 1,
        "created_at": T0.isoformat(),
        "updated_at": _at(9300),
        "finished_at": None,
        "chain": "h0016",
        "seal": None,
    }
    run.update(changes)
    return run


def agent_events() -> list[dict[str, Any]]:
    """An agent run that crashed and resumed with changed code: 16 rows, 9 attempts, 1 fork.

    The clock (never waited), an LLM plan, two tools in parallel tasks (fetch_page times out
    once and is retried), a random draw, a failed send_email, then on resume a fork at 0:4
    (send_email became post_to_slack) and an LLM step in flight at a second crash.
    """
    fetch = _call("agent.py:36", url="https://example.org/cats")
    hits = json.dumps([{"title": "Cats sleep 16 hours a day", "score": 0.93}])
    timeout = _error("builtins:TimeoutError", "read timed out after 0.7 s")
    smtp = _error("smtplib:SMTPServerDisconnected", "Connection unexpectedly closed")
    fork = json.dumps({"superseded_from_seq": 11, "key": "0:4"})
    e = _Events()
    e.add(0.3, "0:1", "clock", "replay.now", "completed", '"14:00"', args=_call("agent.py:31"))
    e.add(1, "0:2", "llm", "plan", "started", _call("agent.py:32", prompt="Plan ticket 4711"))
    e.add(820, "0:2", "llm", "plan", "completed", '{"tools": ["search", "fetch_page"]}')
    e.add(822, "0/1:1", "tool", "search", "started", _call("agent.py:35", q="cat facts"))
    e.add(823, "0/2:1", "tool", "fetch_page", "started", fetch)
    e.add(1100, "0/1:1", "tool", "search", "completed", hits)
    e.add(1500, "0/2:1", "tool", "fetch_page", "retrying", timeout)
    e.add(1750, "0/2:1", "tool", "fetch_page", "started", fetch, attempt=2)
    e.add(2100, "0/2:1", "tool", "fetch_page", "completed", '"<p>purr</p>"', attempt=2)
    e.add(2101, "0:3", "random", "replay.random", "completed", "0.4187", args=_call("a.py:38"))
    e.add(2110, "0:4", "tool", "send_email", "started", _call("agent.py:41", to="ops"))
    e.add(2400, "0:4", "tool", "send_email", "failed", smtp)
    # resumed with changed code: 0:4 now posts to Slack, so the journal forks there
    e.add(9000, "0:4", "fork", "replay.fork", "completed", fork)
    e.add(9001, "0:4", "tool", "post_to_slack", "started", _call("agent.py:41", ch="#ops"))
    e.add(9200, "0:4", "tool", "post_to_slack", "completed", '{"ok": true}')
    e.add(9300, "0:5", "llm", "summarise", "started", _call("agent.py:44", words=80))
    return e.rows


AGENT_BARS = 9
"""clock, plan, search, fetch_page x2, random, send_email, post_to_slack, summarise."""


def many_events(count: int) -> Iterator[dict[str, Any]]:
    """`count` rows over 20 parallel tasks: tool/llm steps that waited, every 10th a lone row."""
    e = _Events("bulk")
    ms = 0.0
    step = 0
    while e.seq < count:
        task = f"0/{step % 20 + 1}"
        key = f"{task}:{step // 20 + 1}"
        kind = "llm" if step % 3 == 0 else "tool"
        ms += 3
        if step % 10 == 9 or e.seq == count - 1:
            e.add(ms, key, "random", "replay.random", "completed", "0.5", args=_call("bulk.py:9"))
        else:
            e.add(ms, key, kind, f"call_{step}", "started", payload=_call("bulk.py:7", n=step))
            e.add(ms + 2.5, key, kind, f"call_{step}", "completed", payload=json.dumps(step))
        step += 1
        yield from e.rows
        e.rows.clear()


def _page(run: dict[str, Any], events: Any, verification: Any = None) -> str:
    out = io.StringIO()
    write_html_timeline(out, run, events, verification)
    return out.getvalue()


# -- the page as text ----------------------------------------------------------------------------


def test_page_references_nothing_on_the_network() -> None:
    """No src/href/url()/@import anywhere; a CSP forbids fetches; URLs in payloads stay data."""
    page = _page(_run(), agent_events())
    assert re.search(r"\b(?:src|href|srcset|action|poster)\s*=", page, re.I) is None
    assert not re.search(r"url\s*\(|@import|<link|<iframe|<img|<object|<embed", page, re.I)
    assert "default-src 'none'" in page
    assert "https://example.org/cats" in page  # the tool's argument, as data
    without_urls = [e for e in agent_events() if "https://" not in (e["payload"] or "")]
    assert not re.search(r"https?:", _page(_run(), without_urls), re.I)


def test_payload_text_cannot_break_out_of_the_script() -> None:
    """`</script>`, `<!--` and U+2028/9 in a payload are escaped, and the text round-trips."""
    events = agent_events()
    events[5]["payload"] = json.dumps(HOSTILE)
    events[5]["name"] = HOSTILE
    page = _page(_run(run_id=HOSTILE), events)
    lowered = page.lower()
    # rows, run, meta, the traceback view, the app
    assert lowered.count("<script") == lowered.count("</script") == 5
    assert "<!--" not in page
    assert "\u2028" not in page and "\u2029" not in page
    assert page.isascii()
    rows_text = page.split("var JT_ROWS = [\n", 1)[1].split("];\n</script>", 1)[0]
    rows = [json.loads(line.rstrip(",")) for line in rows_text.splitlines()]
    assert rows[5][3] == HOSTILE
    assert json.loads(rows[5][8]) == HOSTILE


def test_events_are_read_once_and_written_as_they_come() -> None:
    """`events` is iterated once, and each event is in `out` before the next one is read."""
    out = io.StringIO()
    written: list[int] = []

    class Once:
        iterations = 0

        def __iter__(self) -> Iterator[dict[str, Any]]:
            Once.iterations += 1
            for event in agent_events():
                written.append(len(out.getvalue()))
                yield event

    write_html_timeline(out, _run(), Once())
    assert Once.iterations == 1
    assert len(written) == 16
    assert all(a < b for a, b in itertools.pairwise(written))


def test_ten_thousand_events_stream_in_constant_memory() -> None:
    """A 10,000-event generator is consumed fully while Python holds far less than the page."""

    class Sink(io.StringIO):
        size = 0

        def write(self, text: str) -> int:
            Sink.size += len(text)
            return len(text)

    events = many_events(10_000)
    tracemalloc.start()
    try:
        write_html_timeline(Sink(), _run(run_id="bulk"), events)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert next(events, None) is None
    assert Sink.size > 1_000_000
    assert peak < 250_000, f"peak {peak} bytes for a {Sink.size}-character page"


def test_header_shows_the_run() -> None:
    """Run id, workflow, status, duration, resumes and fork origin are in the page as text."""
    page = _page(
        _run(
            status="completed",
            finished_at=_at(12_345),
            resumes=2,
            parent_run_id="support-ticket-4700",
            fork_seq=7,
            run_id="ticket <4711> & co",
        ),
        agent_events(),
    )
    header = page.split("<header>", 1)[1].split("</header>", 1)[0]
    assert "ticket &lt;4711&gt; &amp; co" in header
    assert "support.agent:answer_ticket" in header
    assert 'class="badge st-completed"' in header
    assert "<dt>duration</dt><dd>12.35 s</dd>" in header
    assert "<dt>resumes</dt><dd>2</dd>" in header
    assert "<dt>events</dt><dd>16</dd>" in header
    assert "<dt>forked from</dt><dd>support-ticket-4700 at seq 7</dd>" in header
    assert "<dt>created</dt><dd>2026-11-25 14:00:00.123 UTC</dd>" in header


def test_unfinished_run_lasts_until_its_last_event() -> None:
    """A run with no finished_at is measured to its last event, and says it is not finished."""
    page = _page(_run(), agent_events())
    assert "<dt>duration</dt><dd>9.30 s to the last event (not finished)</dd>" in page


@pytest.mark.parametrize(
    ("verification", "css", "text"),
    [
        ({"ok": True, "message": "chain intact: 16 events, sealed"}, "verify-ok",
         "chain ok: chain intact: 16 events, sealed"),
        ({"ok": False, "message": "broken at seq 7: hash mismatch"}, "verify-broken",
         "chain BROKEN: broken at seq 7: hash mismatch"),
        (None, "verify-unchecked", "chain not checked"),
    ],
)  # fmt: skip
def test_header_shows_the_verification(
    verification: dict[str, Any] | None, css: str, text: str
) -> None:
    """The chain check reads ok / BROKEN / not checked, each with its own colour class."""
    page = _page(_run(), agent_events(), verification)
    assert f'<span class="badge {css}" id="verification">{text}</span>' in page
    assert f".{css} {{" in _asset("timeline.css")


def test_every_event_kind_has_a_colour_and_a_legend_entry() -> None:
    """A new EventKind without a colour would draw unmarked bars: each has a rule and a swatch."""
    css = _asset("timeline.css")
    page = _page(_run(), [])
    for kind in EventKind:
        assert f".k-{kind.value} {{" in css
        assert f'<i class="swatch k-{kind.value}"></i>{kind.value}' in page


# -- the page in headless Chromium -------------------------------------------------------------
# (the `browser` fixture lives in conftest.py: the `journal ui` tests drive the same Chromium)


def _open(browser: WebDriver, path: Path, run: dict[str, Any], events: Any) -> float:
    """Write the page, load it from file://, wait until the timeline is drawn; seconds taken."""
    from selenium.webdriver.support.ui import WebDriverWait

    with path.open("w", encoding="utf-8") as out:
        write_html_timeline(out, run, events)
    began = time.perf_counter()
    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(
        lambda b: b.execute_script("return document.documentElement.dataset.timeline") == "ready"
    )
    return time.perf_counter() - began


def _bars(browser: WebDriver, selector: str = ".bar") -> Any:
    return browser.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def test_one_bar_per_step_attempt(browser: WebDriver, tmp_path: Path) -> None:
    """9 attempts -> 9 `.bar`s (keyed, seq'd, marked by status); the fork is a marker."""
    _open(browser, tmp_path / "run.html", _run(), agent_events())
    assert _bars(browser) == AGENT_BARS
    assert browser.execute_script("return journalTimeline.barCount") == AGENT_BARS
    keyed = browser.execute_script(
        "return [...document.querySelectorAll('.bar')].map(b => [b.dataset.key, +b.dataset.seq])"
    )
    assert keyed == [
        ["0:1", 1], ["0:2", 2], ["0/1:1", 4], ["0/2:1", 5], ["0/2:1", 8],
        ["0:3", 10], ["0:4", 11], ["0:4", 14], ["0:5", 16],
    ]  # fmt: skip
    assert _bars(browser, ".bar.s-retrying[data-seq='5']") == 1
    assert _bars(browser, ".bar.s-failed.superseded[data-seq='11']") == 1
    assert _bars(browser, ".bar.s-open[data-key='0:5']") == 1
    assert _bars(browser, ".marker.k-fork[data-seq='13']") == 1
    lanes = browser.execute_script(
        "return [...document.querySelectorAll('.lane-label')].map(l => l.textContent)"
    )
    assert lanes == ["0 (workflow)", "0/1", "0/2"]


def test_page_loads_nothing_and_logs_no_errors(browser: WebDriver, tmp_path: Path) -> None:
    """Offline from file://: no resource is requested and the console shows no error."""
    _open(browser, tmp_path / "run.html", _run(), agent_events())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_clicking_a_bar_shows_its_request_and_response(browser: WebDriver, tmp_path: Path) -> None:
    """A click on a bar fills the detail panel with its name, arguments and result or error."""
    from selenium.webdriver.common.by import By

    _open(browser, tmp_path / "run.html", _run(), agent_events())
    browser.find_element(By.CSS_SELECTOR, ".bar[data-key='0/1:1']").click()
    detail = browser.find_element(By.ID, "detail").text
    assert "search" in detail
    assert '"q": "cat facts"' in detail
    assert '"title": "Cats sleep 16 hours a day"' in detail
    assert "agent.py:35" in detail

    browser.find_element(By.CSS_SELECTOR, ".bar[data-seq='5']").click()
    detail = browser.find_element(By.ID, "detail").text
    assert "builtins:TimeoutError: read timed out after 0.7 s" in detail
    assert "attempt 2: completed" in detail
    assert browser.find_elements(By.CSS_SELECTOR, ".bar.selected[data-seq='5']")


def test_hostile_payload_is_shown_as_text(browser: WebDriver, tmp_path: Path) -> None:
    """A result holding `</script><script>...` is displayed literally and never runs."""
    from selenium.webdriver.common.by import By

    events = agent_events()
    events[5]["payload"] = json.dumps(HOSTILE)
    _open(browser, tmp_path / "run.html", _run(), events)
    assert browser.execute_script("return window.pwned") is None
    browser.find_element(By.CSS_SELECTOR, ".bar[data-key='0/1:1']").click()
    shown = browser.execute_script("return document.querySelector('#detail').textContent")
    assert json.dumps(HOSTILE, indent=2, ensure_ascii=False) in shown


def test_screenshot_is_a_real_picture(browser: WebDriver, tmp_path: Path) -> None:
    """The rendered page screenshots as a full-window PNG with real content, not a blank."""
    _open(browser, tmp_path / "run.html", _run(), agent_events())
    browser.execute_script("journalTimeline.select('0/2:1', 1)")
    shot = tmp_path / "timeline.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == tuple(browser.execute_script("return [innerWidth, innerHeight]"))
    assert len(png) > 20_000


def test_ten_thousand_events_render_every_bar(browser: WebDriver, tmp_path: Path) -> None:
    """A 10,000-event run loads from file:// and draws one bar per attempt (time printed)."""
    expected = sum(1 for e in many_events(10_000) if e["status"] == "started" or e["args"])
    seconds = _open(browser, tmp_path / "bulk.html", _run(run_id="bulk"), many_events(10_000))
    assert _bars(browser) == expected
    render_ms = browser.execute_script("return journalTimeline.renderMs")
    print(
        f"\n10,000 events, {expected} bars: loaded and drawn in {seconds * 1000:.0f} ms, "
        f"of which building the timeline {render_ms:.0f} ms"
    )


def test_llm_usage_recorded_by_the_integrations_is_shown(
    browser: WebDriver, tmp_path: Path
) -> None:
    """A response carrying the HTTP integration's `llm` metadata shows model, tokens and finish
    reason among the step's facts."""
    from selenium.webdriver.common.by import By

    events = agent_events()
    llm_done = next(
        e for e in events if e["kind"] == "llm" and e["status"] == "completed" and e["payload"]
    )
    usage = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 12,
             "output_tokens": 5, "finish_reason": "stop"}  # fmt: skip
    llm_done["payload"] = json.dumps({"status": 200, "body": "{}", "llm": usage})
    _open(browser, tmp_path / "run.html", _run(), events)
    browser.find_element(By.CSS_SELECTOR, f".bar[data-key='{llm_done['key']}']").click()
    detail = browser.find_element(By.ID, "detail").text
    assert "gpt-4o-mini" in detail and "12 in, 5 out" in detail and "stop" in detail


# -- finding one's way in an incident: first failure, filters, sittings, tracebacks ----------------


def crashed_and_retried_events() -> list[dict[str, Any]]:
    """A run that crashed with two steps in flight, was resumed (both ran again), failed, and
    was retried in place: 0:3 failed, a retry marker, 0:3 again."""
    e = _Events()
    e.add(0, "0:1", "llm", "plan", "started", _call("agent.py:10", prompt="plan"))
    e.add(50, "0/1:1", "tool", "fetch", "started", _call("agent.py:12", url="a"))
    e.add(51, "0/2:1", "tool", "fetch", "started", _call("agent.py:12", url="b"))
    # the process was killed here; a later one resumed the run
    e.add(4000, "0/1:1", "tool", "fetch", "started", _call("agent.py:12", url="a"), attempt=2)
    e.add(4001, "0/2:1", "tool", "fetch", "started", _call("agent.py:12", url="b"), attempt=2)
    e.add(4100, "0/1:1", "tool", "fetch", "completed", '"A"', attempt=2)
    e.add(4120, "0/2:1", "tool", "fetch", "completed", '"B"', attempt=2)
    e.add(4200, "0:3", "tool", "parse", "failed", _library_error(), args=_call("agent.py:20"))
    retry = json.dumps({"superseded_from_seq": 8, "reason": "retry", "keys": ["0:3"]})
    e.add(9000, "retry@9", "fork", "replay.retry", "completed", retry)
    e.add(9001, "0:3", "tool", "parse", "completed", '"ok"', args=_call("agent.py:20"))
    return e.rows


def _library_error() -> str:
    site = "/home/dev/.venv/lib/python3.11/site-packages"
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/agent/flow.py", line 20, in parse\n'
        "    return parse_page(html)\n"
        '  File "/srv/app/agent/tools/pages.py", line 7, in parse_page\n'
        "    return lxml_parse(text)\n"
        f'  File "{site}/lxml/html/__init__.py", line 875, in fromstring\n'
        "    doc = document_fromstring(html)\n"
        f'  File "{site}/lxml/html/__init__.py", line 761, in document_fromstring\n'
        "    raise etree.ParserError(\n"
        "lxml.etree.ParserError: Document is empty\n"
    )
    return json.dumps(
        {"type": "lxml.etree:ParserError", "message": "Document is empty", "traceback": traceback}
    )


def test_first_failure_jumps_to_the_first_failed_step(browser: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, tmp_path / "run.html", _run(), crashed_and_retried_events())
    browser.find_element(By.ID, "first-failure").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".bar.selected[data-key='0:3'][data-seq='8']")
    assert "lxml.etree:ParserError: Document is empty" in browser.find_element(By.ID, "detail").text

    # A run where nothing failed: the button is off.
    _open(browser, tmp_path / "fine.html", _run(), agent_events()[:3])
    assert not browser.find_element(By.ID, "first-failure").is_enabled()


def test_filters_by_kind_and_status_hide_the_other_bars(browser: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    _open(browser, tmp_path / "run.html", _run(), agent_events())
    visible = "return [...document.querySelectorAll('.bar')].filter(b => b.offsetParent).length"
    assert browser.execute_script(visible) == AGENT_BARS
    kind = Select(browser.find_element("id", "filter-kind"))
    status = Select(browser.find_element("id", "filter-status"))
    kind.select_by_value("llm")
    assert browser.execute_script(visible) == 2  # plan, summarise
    assert browser.find_element("id", "filter-count").text == f"showing 2 of {AGENT_BARS}"
    kind.select_by_value("tool")
    status.select_by_value("failed")
    keys = "return [...document.querySelectorAll('.bar')].filter(b => b.offsetParent)" \
        ".map(b => b.dataset.seq)"  # fmt: skip
    assert browser.execute_script(keys) == ["11"]  # send_email
    status.select_by_value("open")
    assert browser.execute_script(visible) == 0  # the step without outcome is an llm step
    kind.select_by_value("")
    assert browser.execute_script(keys) == ["16"]
    status.select_by_value("")
    assert browser.execute_script(visible) == AGENT_BARS
    assert browser.find_element("id", "filter-count").text == ""


def test_a_crash_and_resume_and_a_retry_are_marked(browser: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, tmp_path / "run.html", _run(), crashed_and_retried_events())
    marks = browser.find_elements(By.CSS_SELECTOR, ".resume-mark")
    assert len(marks) == 1 and marks[0].get_attribute("data-seq") == "4"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".sitting-line")) == 1
    marks[0].click()
    detail = browser.find_element(By.ID, "detail").text
    assert "resumed" in detail and "0/1:1, 0/2:1" in detail
    assert "1 resume(s) after a crash" in browser.find_element(By.ID, "summary").text

    retry = browser.find_element(By.CSS_SELECTOR, ".marker.retry[data-seq='9']")
    retry.click()
    assert "retried after its failure" in browser.find_element(By.ID, "detail").text
    assert browser.find_elements(By.CSS_SELECTOR, ".bar.superseded[data-seq='8']")


def test_tracebacks_fold_library_frames_and_show_relative_paths(
    browser: WebDriver, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, tmp_path / "run.html", _run(), crashed_and_retried_events())
    browser.find_element(By.CSS_SELECTOR, ".bar[data-seq='8']").click()
    box = browser.find_element(By.CSS_SELECTOR, "#detail .traceback")
    assert "paths relative to /srv/app/agent/" in box.text
    assert 'File "flow.py", line 20, in parse' in box.text
    assert 'File "tools/pages.py", line 7, in parse_page' in box.text
    fold = box.find_element(By.CSS_SELECTOR, "details.tb-library")
    assert fold.get_attribute("open") is None
    assert fold.find_element(By.TAG_NAME, "summary").text == "2 library frames (lxml)"
    assert "document_fromstring" not in box.text  # folded away until opened
    fold.find_element(By.TAG_NAME, "summary").click()
    assert 'File "site-packages/lxml/html/__init__.py", line 761' in box.text
    assert "lxml.etree.ParserError: Document is empty" in box.text


def test_a_hostile_traceback_is_shown_as_text(browser: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    events = crashed_and_retried_events()
    error = json.loads(events[7]["payload"])
    error["traceback"] = (
        error["traceback"]
        .replace("in parse\n", "in <img src=x onerror=window.pwned=1>\n")
        .replace("Document is empty", HOSTILE)
    )
    events[7]["payload"] = json.dumps(error)
    _open(browser, tmp_path / "run.html", _run(), events)
    browser.find_element(By.CSS_SELECTOR, ".bar[data-seq='8']").click()
    assert browser.execute_script("return window.pwned") is None
    shown = browser.find_element(By.CSS_SELECTOR, "#detail .traceback").text
    assert "in <img src=x onerror=window.pwned=1>" in shown
    assert not browser.find_elements(By.CSS_SELECTOR, "#detail img")
