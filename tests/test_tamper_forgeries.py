"""Forgeries found by the third adversarial round on the audit trail, on SQLite and PostgreSQL:
each one passed `journal verify` (or crashed it) before its fix; each must be found now.

The helpers (`record`, `record_two`, `edit_sqlite`, `cli`) are those of test_tamper.py.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import psycopg
import pytest

import replay
from journal import Journal, RunStatus, fingerprint
from journal.stores import PostgresStore

from .conftest import PG_URL
from .test_tamper import cli, edit_sqlite, record, record_two, support

KEY = "k" * 32


def _verdicts(path: Path, key: str | None = KEY, since: str | None = None) -> dict[str, str]:
    with Journal(path, hmac_key=key, read_only=True) as journal:
        return {v.run_id: v.verdict for v in journal.verify(since=since)}


def test_an_emptied_head_is_not_adopted_again_by_the_next_process(db_path: Path) -> None:
    """The head emptied and the upgrade's marker set by hand: the next process with the key
    adopts nothing (only the process that upgraded the file does), so the run cut short and
    the run deleted stay visible."""
    record_two(db_path, hmac_key=KEY)
    edit_sqlite(
        db_path,
        "DROP TRIGGER heads_are_append_only_delete",
        "DELETE FROM heads",
        "INSERT OR REPLACE INTO meta VALUES ('heads_pending', x'01')",
        "UPDATE runs SET status = 'running', seal = NULL, result = NULL WHERE run_id = 'T-1'",
        "DELETE FROM events WHERE run_id = 'T-1' AND seq = 2",
        "DELETE FROM events WHERE run_id = 'T-2'",
        "DELETE FROM runs WHERE run_id = 'T-2'",
    )
    with Journal(db_path, hmac_key=KEY) as journal:  # an ordinary writer opens it
        assert journal.store.read_heads() == []
    assert _verdicts(db_path)["T-1"] == "broken"


def test_a_run_row_planted_before_its_start_is_found(db_path: Path) -> None:
    """A row planted for a run id about to be used (a forged parent, a date in 2001): the run
    starts on it, but the head's first entry for it is not `created`."""
    record(db_path, hmac_key=KEY)
    edit_sqlite(
        db_path,
        "INSERT INTO runs (run_id, workflow, inputs, inputs_fingerprint, status, parent_run_id,"
        " fork_seq, resumes, created_at, updated_at, chain)"
        " SELECT 'T-5', workflow, inputs, inputs_fingerprint, 'running', 'T-1', 1, 0,"
        f" 978307200, 978307200, '{Journal(db_path, hmac_key=KEY).chain.scheme}'"
        " FROM runs WHERE run_id = 'T-1'",
    )
    record(db_path, run_id="T-5", hmac_key=KEY)
    assert _verdicts(db_path)["T-5"] == "broken"


def test_retention_keeps_an_edited_run_and_a_forged_removal_is_found(db_path: Path) -> None:
    """A crashed run set to completed by hand is evidence: gc keeps it. And a removal entry
    that says `completed` for a run the head last saw running is not retention's."""
    kept = record_two(db_path, hmac_key=KEY)
    edit_sqlite(db_path, "UPDATE runs SET status = 'completed', owner = NULL WHERE run_id = 'T-3'")
    with Journal(db_path, hmac_key=KEY) as journal:
        removed = journal.gc(keep_last=0, statuses=["completed"])
        assert "T-3" not in {run.run_id for run in removed}
        assert journal.run("T-3").status is RunStatus.COMPLETED  # kept, as edited
    code, output = cli("verify", "--db", str(db_path), "--since", kept, key=KEY)
    assert code == 3 and "T-3" in output, output


def test_a_fork_is_covered_by_the_head_before_it_is_resumed(db_path: Path) -> None:
    """A fork's copied events have a head entry of their own (`forked`): removing them, or
    re-parenting the fork, is found although the fork never ran."""
    record(db_path, hmac_key=KEY)
    with Journal(db_path, hmac_key=KEY) as journal:
        journal.fork("T-1", at=2, new_run_id="T-1-what-if")
        assert [e.reason for e in journal.store.read_heads() if e.run_id == "T-1-what-if"] == [
            "created",
            "forked",
        ]
    edit_sqlite(db_path, "DELETE FROM events WHERE run_id = 'T-1-what-if'")
    assert _verdicts(db_path)["T-1-what-if"] == "broken"


def test_the_header_of_a_run_not_started_yet_is_bound_by_the_head(db_path: Path) -> None:
    """A submitted run has no event to link to its genesis: its `created` entry carries the
    genesis hash, so rewriting its inputs before a worker starts it is found."""
    with Journal(db_path, hmac_key=KEY) as journal:
        replay.submit(support, "A-7", journal=journal, run_id="S-1")
        (entry,) = journal.store.read_heads()
        assert entry.events == 0 and entry.last_hash == journal.chain.genesis(journal.run("S-1"))
    edit_sqlite(
        db_path,
        "UPDATE runs SET inputs = CAST(REPLACE(inputs, 'A-7', 'ATTACKER') AS BLOB)"
        " WHERE run_id = 'S-1'",
    )
    assert _verdicts(db_path)["S-1"] == "broken"


def test_a_second_row_for_one_run_id_is_found(db_path: Path) -> None:
    """The genuine row's id turned into a BLOB and a forged TEXT copy inserted: both rows are
    read, and the run is broken, in the journal and in an export of it."""
    record(db_path, hmac_key=KEY)
    edit_sqlite(
        db_path,
        "CREATE TABLE copy AS SELECT * FROM runs",
        "UPDATE runs SET run_id = CAST(run_id AS BLOB)",
        "UPDATE copy SET result = CAST('\"refunded 1.0\"' AS BLOB)",
        "INSERT INTO runs SELECT * FROM copy",
    )
    assert _verdicts(db_path)["T-1"] == "broken"
    code, output = cli("verify", "--db", str(db_path), key=KEY)
    assert code == 3, output


def test_rows_below_seq_1_are_found_and_never_served(db_path: Path) -> None:
    record(db_path, hmac_key=KEY)
    edit_sqlite(
        db_path,
        "INSERT INTO events SELECT run_id, 0, key, kind, name, fingerprint, status, attempt,"
        " payload, created_at, args, prev_hash, hash FROM events WHERE seq = 2",
    )
    assert _verdicts(db_path)["T-1"] == "broken"
    with Journal(db_path, hmac_key=KEY) as journal:
        assert [row[0] for row in journal.store.read_rows("T-1")] == [1, 2]


def test_text_that_is_not_utf8_is_an_edit_not_a_crash(db_path: Path) -> None:
    record(db_path, hmac_key=KEY)
    edit_sqlite(db_path, "UPDATE events SET key = CAST(x'ff3a31' AS TEXT) WHERE seq = 1")
    code, output = cli("verify", "--db", str(db_path), key=KEY)
    assert code == 3, output
    for command in (["show", "T-1"], ["export", "T-1"], ["runs"], ["head"]):
        code, output = cli(*command, "--db", str(db_path), key=KEY)
        assert code == 0, output


def test_an_unfinished_run_holding_an_outcome_is_edited(db_path: Path) -> None:
    record_two(db_path, hmac_key=KEY)
    edit_sqlite(db_path, "UPDATE runs SET result = CAST('\"paid\"' AS BLOB) WHERE run_id = 'T-3'")
    assert _verdicts(db_path)["T-3"] == "broken"


def _export(path: Path, key: str | None = KEY) -> list[bytes]:
    out = io.StringIO()
    with Journal(path, hmac_key=key, read_only=True) as journal:
        journal.export(out)
    return out.getvalue().encode().splitlines(keepends=True)


def _without_run(lines: list[bytes], run_id: str) -> list[bytes]:
    """The export with a run's own records cut (its head entries kept)."""
    return [
        line
        for line in lines
        if not (
            orjson.loads(line).get("type") in ("run", "event")
            and orjson.loads(line).get("run_id") == run_id
        )
    ]


@pytest.mark.parametrize(
    "edit",
    ["manifest removed", "manifest scheme nulled", "a run twice, forged copy first"],
)
def test_an_edited_export_is_broken(db_path: Path, tmp_path: Path, edit: str) -> None:
    """A run cut from an export whose manifest was removed, or whose manifest's scheme was
    nulled (unsigned: it once skipped the check); a run held twice, a forged copy first."""
    key = None if edit == "manifest scheme nulled" else KEY
    record_two(db_path, hmac_key=key)  # type: ignore[arg-type]
    lines = _export(db_path, key)
    header = orjson.loads(lines[0])
    if edit == "a run twice, forged copy first":
        first = next(i for i, line in enumerate(lines) if orjson.loads(line)["type"] == "run")
        run = orjson.loads(lines[first])
        copy = [orjson.dumps({**run, "result": "forged"}) + b"\n"]
        copy += [line for line in lines if b'"type":"event"' in line and b'"T-1"' in line]
        lines = lines[:first] + copy + lines[first:]
    else:
        lines = _without_run(lines, "T-2")
    if edit == "manifest scheme nulled":
        header["manifest_scheme"] = None
        header["scope"] = "some"
    else:
        header.pop("manifest")
    lines[0] = orjson.dumps(header) + b"\n"
    path = tmp_path / "edited.jsonl"
    path.write_bytes(b"".join(lines))
    code, output = cli("verify", "--file", str(path), key=key)
    assert code == 3, output


@pytest.mark.parametrize("line", [b"[]\n", b"null\n", b'"text"\n'])
def test_an_export_line_that_is_no_record_is_a_clear_error(
    db_path: Path, tmp_path: Path, line: bytes
) -> None:
    record(db_path, hmac_key=KEY)
    lines = _export(db_path)
    path = tmp_path / "edited.jsonl"
    path.write_bytes(b"".join([*lines[:-1], line, lines[-1]]))
    code, output = cli("verify", "--file", str(path), key=KEY)
    assert code == 1 and "not a journal export record" in output, output


def _pg_url(schema: str, options: str = "") -> str:
    return f"{PG_URL}?schema={schema}{options}"


def test_postgres_an_altered_column_is_a_clear_error(pg_schema: str) -> None:
    """A column's type changed or dropped by hand: every reading command says the tables were
    altered, in one line, never a traceback."""
    url = _pg_url(pg_schema)
    with Journal(url, hmac_key=KEY) as journal:
        asyncio.run(replay.run(support, "A-1", journal=journal, run_id="T-1"))
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {pg_schema}.events DROP COLUMN hash")
    for command in (["verify"], ["show", "T-1"], ["runs"]):
        code, output = cli(*command, "--db", url, key=KEY)
        assert code == 1 and "altered by hand" in output, output


def test_postgres_created_at_retyped_is_an_edit(pg_schema: str) -> None:
    url = _pg_url(pg_schema)
    with Journal(url, hmac_key=KEY) as journal:
        asyncio.run(replay.run(support, "A-1", journal=journal, run_id="T-1"))
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {pg_schema}.events ALTER COLUMN created_at TYPE timestamp")
        conn.execute(f"ALTER TABLE {pg_schema}.heads ALTER COLUMN at TYPE timestamp")
    code, output = cli("verify", "--db", url, key=KEY)
    assert code == 3, output


def test_postgres_writers_hold_under_repeatable_read(pg_schema: str) -> None:
    """A database whose default isolation is REPEATABLE READ (here set in the URL, which must
    reach libpq as written): concurrent writers still number the head's entries in turn."""
    options = "&options=-c%20default_transaction_isolation%3Drepeatable%5C%20read"
    url = _pg_url(pg_schema, options)
    store = PostgresStore.from_url(url)
    assert store.schema == pg_schema
    with psycopg.connect(store.url) as conn:
        shown = conn.execute("SHOW default_transaction_isolation").fetchone()
        assert shown == ("repeatable read",)
    store.close()
    failures: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            with Journal(url, hmac_key=KEY) as journal:
                for i in range(6):
                    asyncio.run(
                        replay.run(support, f"A-{i}", journal=journal, run_id=f"W{number}-{i}")
                    )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with Journal(url, hmac_key=KEY) as journal:
        assert all(v.ok for v in journal.verify())
        assert len(journal.store.read_heads()) == 36


# Fourth round: around the third round's checks, and false alarms on honest use.


def _as_schema_3(path: Path) -> None:
    """The journal as a version from before the head left it: no head table, schema 3."""
    edit_sqlite(
        path,
        "DROP TRIGGER heads_are_append_only_delete",
        "DROP TRIGGER heads_are_append_only_update",
        "DROP TABLE heads",
        "DELETE FROM meta WHERE name = 'heads_pending'",
        "ALTER TABLE runs DROP COLUMN version",
        "PRAGMA user_version = 3",
    )


def test_a_journal_from_before_the_head_verifies_read_only_and_adopts_when_upgraded(
    db_path: Path,
) -> None:
    """Read as it is, its runs verify by their chains (it once said every run was "added by
    hand"); the first writer upgrades it and adopts its runs in the upgrade's transaction."""
    record_two(db_path, before_versions=True, hmac_key=KEY)
    _as_schema_3(db_path)
    with Journal(db_path, hmac_key=KEY, read_only=True) as journal:
        verdicts = {v.run_id: v for v in journal.verify()}
    assert all(v.ok for v in verdicts.values()), verdicts
    assert "before the head" in verdicts["(journal head)"].note
    code, output = cli("verify", "--db", str(db_path), "--since", "1:" + "0" * 64, key=KEY)
    assert code == 3, output  # a kept head says there was one
    with Journal(db_path, hmac_key=KEY) as journal:
        assert {e.reason for e in journal.store.read_heads()} == {"adopted"}
    assert set(_verdicts(db_path).values()) == {"intact"}


_DIES_WHILE_ADOPTING = """
import os, sys
from journal import Journal
from journal.stores import _sqlite_heads

def die(*args, **kwargs):
    os._exit(9)

_sqlite_heads.adopt_runs = die
Journal(sys.argv[1], hmac_key=sys.argv[2])
"""


def test_a_process_killed_while_upgrading_leaves_the_journal_as_it_was(db_path: Path) -> None:
    """The upgrade and the adoption of the old runs are one transaction: killed between them,
    the journal is still schema 3, and the next writer upgrades and adopts (a marker once
    stayed set with no process ever allowed to adopt: every old run "added by hand")."""
    record_two(db_path, before_versions=True, hmac_key=KEY)
    _as_schema_3(db_path)
    died = subprocess.run(
        [sys.executable, "-c", _DIES_WHILE_ADOPTING, str(db_path), KEY], capture_output=True
    )
    assert died.returncode == 9
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    conn.close()
    with Journal(db_path, hmac_key=KEY):
        pass
    assert set(_verdicts(db_path).values()) == {"intact"}


def test_a_run_id_used_again_after_retention_verifies(db_path: Path) -> None:
    record(db_path, run_id="daily", hmac_key=KEY)
    with Journal(db_path, hmac_key=KEY) as journal:
        assert [r.run_id for r in journal.gc(keep_last=0)] == ["daily"]
    record(db_path, run_id="daily", hmac_key=KEY)
    assert set(_verdicts(db_path).values()) == {"intact"}


def test_a_run_unchained_by_hand_is_kept_by_gc_and_found(db_path: Path) -> None:
    """Events re-hashed to NULL and the run's chain scheme nulled: its own chain says
    "unchained", but the head knew it chained, so it is broken and retention keeps it."""
    kept = record_two(db_path, hmac_key=KEY)
    edit_sqlite(
        db_path,
        "UPDATE events SET payload = CAST(REPLACE(payload, '250.0', '25.0') AS BLOB),"
        " prev_hash = NULL, hash = NULL WHERE run_id = 'T-1'",
        "UPDATE runs SET chain = NULL WHERE run_id = 'T-1'",
    )
    with Journal(db_path, hmac_key=KEY) as journal:
        assert "T-1" not in {r.run_id for r in journal.gc(keep_last=0)}
    code, output = cli("verify", "--db", str(db_path), "--since", kept, key=KEY)
    assert code == 3 and "T-1" in output, output


def test_a_submitted_run_unchained_by_hand_stays_broken_after_a_worker_ran_it(
    db_path: Path,
) -> None:
    with Journal(db_path, hmac_key=KEY) as journal:
        replay.submit(support, "A-7", journal=journal, run_id="S-1")
    forged = b'{"args":["ATTACKER"],"kwargs":{}}'
    edit_sqlite(  # the inputs' fingerprint needs no key: recomputed too
        db_path,
        f"UPDATE runs SET inputs = CAST('{forged.decode()}' AS BLOB), inputs_fingerprint ="
        f" '{fingerprint('inputs', forged)}', chain = NULL WHERE run_id = 'S-1'",
    )
    with Journal(db_path, hmac_key=KEY) as journal:
        asyncio.run(replay.resume_run(journal, "S-1"))
    assert _verdicts(db_path)["S-1"] == "broken"


def test_an_export_from_before_the_head_verifies_by_its_runs(db_path: Path, tmp_path: Path) -> None:
    """Format v1 (no head, no manifest): its runs verify by their chains, with a note; against
    a kept head it is broken, since it cannot show that nothing was removed."""
    kept = record_two(db_path, hmac_key=KEY)
    lines = _export(db_path)
    header = orjson.loads(lines[0])
    for field in ("scope", "run_count", "manifest_scheme", "manifest"):
        header.pop(field)
    header["format"] = "journal-replay/export/v1"
    body = [line for line in lines[1:] if orjson.loads(line)["type"] != "head"]
    path = tmp_path / "v1.jsonl"
    path.write_bytes(orjson.dumps(header) + b"\n" + b"".join(body))
    code, output = cli("verify", "--file", str(path), key=KEY)
    assert code == 0 and "before the head" in output, output
    code, output = cli("verify", "--file", str(path), "--since", kept, key=KEY)
    assert code == 3, output
