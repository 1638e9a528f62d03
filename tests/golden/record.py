"""Record a golden set: `python -m tests.golden.record tests/data/golden/<version>`.

Run it once per format version, into a new folder; never over an existing set (the point of a
golden set is that it was written by an older version). It writes two journals (unsigned, and
signed with `workflows.HMAC_KEY`), their exports, and `expected.json`: what every later version
must find in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

import replay
from journal import Journal
from journal._export import EXPORT_VERSION
from journal._heads import head_text
from journal.stores._sqlite import SCHEMA_VERSION

from . import conversation, workflows

JOURNALS = {"unsigned": None, "signed": workflows.HMAC_KEY}
EXPORTS = {"unsigned": ("jsonl", "csv"), "signed": ("json", "jsonl")}


async def _record(journal: Journal) -> None:
    workflows.flaky_failures[0] = 1
    await replay.run(workflows.research, "cats", journal=journal, run_id="research-done")
    with contextlib.suppress(workflows.NoSuchTopic):
        await replay.run(workflows.doomed, "dodos", journal=journal, run_id="research-failed")
    for run_id, topic in (("research-waiting", "owls"), ("research-approved", "bees")):
        with contextlib.suppress(replay.Suspended):
            await replay.run(workflows.approved_research, topic, journal=journal, run_id=run_id)
    journal.signal("research-approved", "approval", {"by": "ana"})
    await replay.run(
        workflows.approved_research, "bees", journal=journal, run_id="research-approved"
    )
    fetch = next(e for e in journal.events("research-done") if e.name.endswith("flaky_fetch"))
    journal.fork("research-done", at=fetch.seq, new_run_id="research-fork")
    await replay.resume_run(journal, "research-fork")
    workflows.checker_broken[0] = True
    with contextlib.suppress(ValueError):
        await replay.run(workflows.checked_research, "ants", journal=journal, run_id="retried")
    workflows.checker_broken[0] = False
    await replay.retry(workflows.checked_research, "ants", journal=journal, run_id="retried")
    with contextlib.suppress(replay.Suspended):
        await replay.run(workflows.approved_research, "wasps", journal=journal, run_id="dropped")
    replay.cancel(journal, "dropped", "no longer needed")
    await replay.run(conversation.converse, "cats", journal=journal, run_id="conversation")


def _expected(journal: Journal) -> dict[str, Any]:
    runs = []
    verdicts = {v.run_id: v for v in journal.verify()}
    for run in journal.runs(limit=None):
        verdict = verdicts[run.run_id]
        runs.append(
            {
                "run_id": run.run_id,
                "workflow": run.workflow,
                "status": run.status.value,
                "parent_run_id": run.parent_run_id,
                "fork_seq": run.fork_seq,
                "events": len(journal.events(run.run_id)),
                "verdict": verdict.verdict,
                "sealed": verdict.sealed,
                "result": None if run.result is None else orjson.loads(run.result),
                "error_type": None if run.error is None else orjson.loads(run.error)["type"],
                **({} if run.version is None else {"version": run.version}),
            }
        )
    return {"head": head_text(journal.head()), "runs": runs}


def record(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} holds a golden set already: record a new one elsewhere.")
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {
        "library_version": version("journal-replay"),
        "schema_version": SCHEMA_VERSION,
        "export_format": EXPORT_VERSION,
        "journals": {},
    }
    for name, key in JOURNALS.items():
        path = folder / f"{name}.db"
        with Journal(path, hmac_key=key) as journal:
            asyncio.run(_record(journal))
            expected["journals"][name] = _expected(journal)
            for fmt in EXPORTS[name]:
                out = io.StringIO()
                journal.export(out, format=fmt)  # type: ignore[arg-type]
                (folder / f"{name}.{fmt}").write_bytes(out.getvalue().encode())
        with sqlite3.connect(path) as conn:  # one self-contained file, no -wal beside it
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (folder / "expected.json").write_bytes(
        orjson.dumps(expected, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


if __name__ == "__main__":
    record(Path(sys.argv[1]))
