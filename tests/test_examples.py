"""The examples run as shipped and show what they claim, each in a subprocess as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, db: Path, *, timeout: float) -> str:
    """Run examples/NAME as a user would, on journal `db`; its standard output."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr  # e.g. a reset the stand-in API logged
    return proc.stdout


def test_quickstart_kills_resumes_and_replays(tmp_path: Path) -> None:
    """`make demo`: after SIGKILL the resume serves completed steps; replay runs nothing live."""
    db = tmp_path / "demo" / "journal.db"
    out = run_example("quickstart.py", db, timeout=60)
    resume = re.search(
        r"resume: (\d+) steps served from the journal, (\d+) re-executed .*, (\d+) executed live",
        out,
    )
    assert resume, out
    served, reexecuted, executed = map(int, resume.groups())
    assert served >= 6  # the kill came after 6 completed steps
    assert served + reexecuted + executed == 10  # every step answered exactly once
    assert "replay offline: 10 steps served, 0 executed; same report: True" in out
    paid = int(re.search(r"calls paid in all: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert 8 <= paid <= 8 + reexecuted  # only a step in flight at the kill may be paid twice


def test_support_triage_reproduces_a_failure_and_runs_a_what_if(tmp_path: Path) -> None:
    """The debugging example: the failed run replays offline to the same failure; the fork
    with an overridden answer serves the lookup and runs the rest live; all runs verify; the
    API key never reaches the journal file."""
    db = tmp_path / "support" / "journal.db"
    out = run_example("support_triage.py", db, timeout=60)
    assert "T-102 failed: RefundRefused: refund of 250.00 is above the 200.00 limit" in out
    assert "reproduced the failure from the journal alone" in out
    assert "2 served from the journal, 2 executed live" in out
    assert "result: sent to T-102: Refunded 150." in out
    assert "diff 0:2: changed ['outcome']" in out
    assert out.count("intact") == 3 and "sealed" in out
    assert "the API key is in the journal: False" in out
    on_disk = b"".join(p.read_bytes() for p in db.parent.iterdir())
    assert b"sk-demo-not-a-real-key" not in on_disk


def test_retry_failed_run_serves_the_paid_call_and_keeps_the_failure(tmp_path: Path) -> None:
    """The retry example: the failed run, retried after the fix, pays for one more LLM call
    (not two), its history holds the failed attempt and the marker, and it verifies."""
    db = tmp_path / "retry" / "journal.db"
    out = run_example("retry_failed_run.py", db, timeout=60)
    assert "failed: KeyError 'text'; LLM calls so far: 1" in out
    assert "recorded failure of run 'cats-research'" in out
    assert "LLM calls in all: 2" in out
    assert re.search(r"5 +0:3 +extract_text +failed", out), out
    assert re.search(r"6 +retry@6 +replay.retry +completed", out), out
    assert re.search(r"7 +0:3 +extract_text +completed", out), out
    assert "cats-research: intact (9 events, sealed)" in out


def test_openai_agent_resumes_after_sigkill_without_paying_twice(tmp_path: Path) -> None:
    """The integration example: plain OpenAI SDK code, journaled by instrument(); after the
    kill only unanswered requests reach the API; the replay with the API gone sends none."""
    db = tmp_path / "openai" / "journal.db"
    out = run_example("openai_agent.py", db, timeout=60)
    before = int(re.search(r"received so far: (\d+)", out).group(1))  # type: ignore[union-attr]
    on_resume = int(re.search(r"received on resume: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert 2 <= before <= 3 and before + on_resume <= 5
    assert "(replay): 4 served from the journal, 0 executed live" in out
    assert f"same report: True; requests in all: {before + on_resume}" in out
    assert b"sk-example-not-real" not in b"".join(p.read_bytes() for p in db.parent.iterdir())


def test_a_long_conversation_grows_the_journal_by_its_new_messages_only(tmp_path: Path) -> None:
    """The chunks example: each tenth turn adds about what the tenth added, while the request
    grows with the conversation; the run replays offline and verifies."""
    out = run_example("long_conversation.py", tmp_path / "chat" / "journal.db", timeout=60)
    turns = re.findall(r"turn (\d+): request about ([\d,]+) bytes, journal \+([\d,]+) bytes", out)
    assert [int(t) for t, _, _ in turns] == [10, 20, 30, 40], out
    requests = [int(r.replace(",", "")) for _, r, _ in turns]
    added = [int(a.replace(",", "")) for _, _, a in turns]
    assert requests[-1] > 3 * requests[0]  # the request grows with the conversation
    assert max(added) < 1.1 * min(added) and max(added) < requests[0] / 2  # the journal does not
    assert "replay offline: 40 served; same answers: True" in out
    assert "verify: True" in out


def test_pydantic_ai_agent_resumes_after_sigkill_and_replays_offline(tmp_path: Path) -> None:
    """The pydantic-ai example: killed while its tool ran, resumed paying only the request not
    yet answered, replayed with the server stopped paying none."""
    db = tmp_path / "pai" / "journal.db"
    out = run_example("pydantic_ai_agent.py", db, timeout=90)
    assert "1 model request paid so far" in out
    assert "replay offline: 3 steps served, 0 executed; 0 model requests paid" in out
    assert "same answer: True" in out
    assert "model requests paid in all: 2" in out


def test_otel_traces_shows_live_served_and_exported_spans_that_agree(tmp_path: Path) -> None:
    """The OpenTelemetry example: the crashed sitting's steps are live spans (the cut step
    unfinished), the resume's answered steps are served spans under the same run span, and
    the stand-in collector receives the live spans' very ids, parents and times."""
    db = tmp_path / "otel" / "journal.db"
    out = run_example("otel_traces.py", db, timeout=60)
    crashed, resumed = out.split("3. resumed")
    assert re.search(r"chat gpt-4o-mini +0:1 +completed .* tokens \d+\+6", crashed), out
    assert re.search(r"publish +0:4 +unfinished", crashed), out
    assert len(re.findall(r"0:\d +served ", resumed)) == 3 and "invoke_workflow research" in resumed
    roots = set(re.findall(r"parent ([0-9a-f]{16})", out))
    assert len(roots) == 1 and re.search(rf"{roots.pop()} invoke_workflow research .* root", out)
    assert "exported 6 spans of 1 run" in out
    assert "the collector got the live spans, same ids, parents and times: True" in out


def test_approval_waits_without_a_process_and_a_worker_finishes_it(tmp_path: Path) -> None:
    """The human-in-the-loop example: suspended while waiting, approved with `journal
    signal`, finished by `journal worker`, with the LLM draft paid once."""
    db = tmp_path / "approval" / "journal.db"
    out = run_example("approval.py", db, timeout=90)
    assert "run status: waiting, owner: None" in out
    assert "it was waiting for it and is due now" in out
    assert "worker done: 1 completed" in out
    assert "refund-order-7-42.5, approved by dana" in out
    assert out.count("drafting a refund") == 1


def test_event_driven_agent_resumes_in_recorded_order_and_replays_at_once(tmp_path: Path) -> None:
    """The concurrency example: searches in threads answer out of creation order, a reader
    task per answer, a journaled timeout, a child run. Killed with only the slow read in
    flight, the resume pays that read (and the summary not yet written) and nothing else; the
    offline replay pays nothing and gives the same report."""
    db = tmp_path / "events" / "journal.db"
    out = run_example("event_driven.py", db, timeout=60)
    assert "the searches answered in this order: ['news-hit', 'wiki-hit', 'archive-hit']" in out
    assert "paid on resume: ['read wiki-hit', 'summarise']" in out
    report = "report: facts from archive-hit | facts from news-hit | wiki-hit: no answer in time"
    assert out.count(report) == 2
    assert "(replay): 13 served from the journal, 0 executed live" in out
    assert "tool calls paid in all: 8" in out


def test_the_replay_test_example_replays_its_committed_journal(tmp_path: Path) -> None:
    """examples/replay_tests: the committed journal replays offline (nothing paid); a changed
    prompt fails with the divergence diff and names the flag that records it again."""
    import shutil

    folder = tmp_path / "replay_tests"
    shutil.copytree(ROOT / "examples" / "replay_tests", folder)

    def pytest_here(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )

    replayed = pytest_here("--journal-mode=replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    test_file = folder / "test_research.py"
    test_file.write_text(test_file.read_text().replace("three facts", "four facts"))
    changed = pytest_here()
    assert changed.returncode == 1 and "diverged from its journal at step 0:1" in changed.stdout
    assert "--journal-record" in changed.stdout  # recording again: tests/test_pytest_plugin.py
