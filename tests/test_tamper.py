"""Edits an adversary makes with sqlite3, psql or a text editor: `journal verify` exits 3 and
names the spot; `show` and `export` read the edited journal without crashing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from unittest import mock

import orjson
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal
from journal._chain import Chain
from journal._heads import entry_hash, head_text
from replay._cli import app

from . import test_verify as verify_cases
from .conftest import PG_URL, postgres_store

runner = CliRunner()


@replay.step(kind="tool")
async def refund(order: str, amount: float) -> dict[str, float]:
    await asyncio.sleep(0)
    return {"refunded": amount}


async def support(order: str) -> str:
    done = await refund(order, 250.0)
    return f"refunded {done['refunded']}"


def record(path: Path, run_id: str = "T-1", **options: str) -> None:
    with Journal(path, **options) as journal:  # type: ignore[arg-type]
        asyncio.run(replay.run(support, "A-1", journal=journal, run_id=run_id))


def edit_sqlite(path: Path, *statements: str) -> None:
    """As an attacker with sqlite3: the append-only triggers dropped first."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS events_are_append_only_update")
    conn.execute("DROP TRIGGER IF EXISTS events_are_append_only_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def cli(*args: str, key: str | None = None) -> tuple[int, str]:
    env = {"JOURNAL_HMAC_KEY": key} if key else None
    result = runner.invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure of its own
    return result.exit_code, result.output


# Each: the statements, then where verify must point: (seq or None for the run, field).
STORAGE_EDITS: dict[str, tuple[tuple[str, ...], int | None, str]] = {
    "replace() leaves a payload as TEXT": (
        ("UPDATE events SET payload = replace(payload, '250.0', '150.0') WHERE seq = 2",),
        2,
        "payload",
    ),
    "a payload re-typed as TEXT, same text": (
        ("UPDATE events SET payload = CAST(payload AS TEXT) WHERE seq = 1",),
        1,
        "payload",
    ),
    "an unknown event status": (
        ("UPDATE events SET status = 'approved' WHERE seq = 2",),
        2,
        "status",
    ),
    "an unknown event kind": (("UPDATE events SET kind = 'human' WHERE seq = 2",), 2, "kind"),
    "a time that is no time": (
        ("UPDATE events SET created_at = 'yesterday' WHERE seq = 2",),
        2,
        "created_at",
    ),
    "a key as bytes": (("UPDATE events SET key = CAST(key AS BLOB) WHERE seq = 1",), 1, "key"),
    "a started payload that is not an object": (
        ("UPDATE events SET payload = CAST('[1, 2]' AS BLOB) WHERE seq = 1",),
        1,
        "payload",
    ),
    "the run's result as TEXT": (
        ("UPDATE runs SET result = replace(result, '250.0', '150.0')",),
        None,
        "result",
    ),
    "the run's inputs as TEXT": (
        ("UPDATE runs SET inputs = CAST(inputs AS TEXT)",),
        None,
        "inputs",
    ),
    "an unknown run status": (("UPDATE runs SET status = 'approved'",), None, "status"),
}


@pytest.mark.parametrize("key", [None, "k" * 32], ids=["sha256", "hmac"])
@pytest.mark.parametrize("edit", sorted(STORAGE_EDITS))
def test_storage_edits_are_found_not_crashed_on(db_path: Path, edit: str, key: str | None) -> None:
    """Values of a type the journal never writes are edits: verify exits 3 at the right seq and
    field; show, export and verify of the export run to the end; signed or not."""
    record(db_path, **({"hmac_key": key} if key else {}))
    statements, seq, field = STORAGE_EDITS[edit]
    edit_sqlite(db_path, *statements)
    with Journal(db_path, hmac_key=key) as journal:
        (verdict,) = journal.verify("T-1")
    assert verdict.verdict == "broken" and verdict.broken is not None, verdict
    assert (verdict.broken.seq, verdict.broken.field) == (seq, field), verdict
    assert not verdict.sealed and verdict.events == (seq or 0), verdict  # checked up to there

    code, output = cli("verify", "T-1", "--db", str(db_path), key=key)
    assert code == 3, output
    code, output = cli("show", "T-1", "--db", str(db_path), "--payloads", key=key)
    assert code == 0, output
    exported = db_path.with_name("export.jsonl")
    for fmt in ("jsonl", "json", "csv", "html"):
        args = ("export", "T-1", "--db", str(db_path), "-f", fmt, "-o", str(exported))
        code, output = cli(*args, key=key)
        assert code == 0, output
    cli("export", "T-1", "--db", str(db_path), "-f", "jsonl", "-o", str(exported), key=key)
    code, output = cli("verify", "--file", str(exported), key=key)
    assert code == (0 if edit in SAME_CONTENT else 3), output


SAME_CONTENT = {
    "a payload re-typed as TEXT, same text",
    "a key as bytes",
    "the run's inputs as TEXT",
}
"""Edits of the storage type only: an export holds the same bytes, and verifies."""


@pytest.fixture
def pg_journal(pg_schema: str) -> Iterator[tuple[Journal, str]]:
    journal = Journal(store=postgres_store(pg_schema))
    asyncio.run(replay.run(support, "A-1", journal=journal, run_id="T-1"))
    yield journal, pg_schema
    journal.close()


@pytest.mark.parametrize(
    ("statement", "seq", "field"),
    [
        ("UPDATE {s}.events SET status = 'approved' WHERE seq = 2", 2, "status"),
        ("UPDATE {s}.events SET kind = 'human' WHERE seq = 2", 2, "kind"),
        ("UPDATE {s}.runs SET status = 'approved'", None, "status"),
    ],
)
def test_postgres_values_the_journal_never_writes_are_edits(
    pg_journal: tuple[Journal, str], statement: str, seq: int | None, field: str
) -> None:
    import psycopg

    journal, schema = pg_journal
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.events DISABLE TRIGGER USER")
        conn.execute(statement.format(s=schema))  # type: ignore[arg-type]
    (verdict,) = journal.verify("T-1")
    assert verdict.verdict == "broken" and verdict.broken is not None, verdict
    assert (verdict.broken.seq, verdict.broken.field) == (seq, field), verdict
    assert journal.events("T-1")  # reading does not crash


@pytest.mark.parametrize("edit", sorted(verify_cases.TAMPERING))
def test_show_and_export_read_every_edited_journal(db_path: Path, edit: str) -> None:
    """Every content edit of the chain suite: show and every export format still work, verify
    exits 3, and so does verify of the JSONL export."""
    verify_cases.record(db_path).close()
    verify_cases.tamper(db_path, *verify_cases.TAMPERING[edit][0])
    assert cli("verify", "r1", "--db", str(db_path))[0] == 3
    assert cli("show", "r1", "--db", str(db_path), "--payloads")[0] == 0
    exported = db_path.with_name("export")
    for fmt in ("json", "csv", "html", "jsonl"):
        assert cli("export", "r1", "--db", str(db_path), "-f", fmt, "-o", str(exported))[0] == 0
    assert cli("verify", "--file", str(exported))[0] == 3


# -- the journal's head: what no run's own chain can see -------------------------------------


def record_two(path: Path, *, before_versions: bool = False, **options: str) -> str:
    """Two finished runs and one left running (crashed); the head as it was then.
    `before_versions`: the runs keep no version, as a journal-replay from before versions
    (and its schema) recorded them."""
    with contextlib.ExitStack() as stack:
        if before_versions:
            stack.enter_context(mock.patch("replay._run.version_of", lambda workflow: None))
        return _record_two(path, **options)


def _record_two(path: Path, **options: str) -> str:
    with Journal(path, **options) as journal:  # type: ignore[arg-type]
        asyncio.run(replay.run(support, "A-1", journal=journal, run_id="T-1"))
        asyncio.run(replay.run(support, "A-2", journal=journal, run_id="T-2"))

        async def crashes() -> None:
            await refund("A-3", 1.0)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            asyncio.run(replay.run(crashes, journal=journal, run_id="T-3"))
        return head_text(journal.head())


HEAD_EDITS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "a finished run set back to running, seal cleared, last event cut": (
        (
            "UPDATE runs SET status = 'running', seal = NULL, result = NULL, finished_at = NULL"
            " WHERE run_id = 'T-1'",
            "DELETE FROM events WHERE run_id = 'T-1' AND seq = 2",
        ),
        "T-1",
        "events were removed",
    ),
    "a finished run set back to waiting": (
        ("UPDATE runs SET status = 'waiting', seal = NULL, result = NULL WHERE run_id = 'T-1'",),
        "T-1",
        "set back",
    ),
    "a finished run removed": (
        ("DELETE FROM events WHERE run_id = 'T-2'", "DELETE FROM runs WHERE run_id = 'T-2'"),
        "T-2",
        "missing",
    ),
    "a crashed run removed": (
        ("DELETE FROM events WHERE run_id = 'T-3'", "DELETE FROM runs WHERE run_id = 'T-3'"),
        "T-3",
        "missing",
    ),
    "a crashed run cut short": (("DELETE FROM events WHERE run_id = 'T-3'",), "", ""),
    "a run added by hand": (
        (
            "INSERT INTO runs SELECT 'T-9', workflow, inputs, inputs_fingerprint, status, result,"
            " error, owner, owner_token, parent_run_id, fork_seq, resumes, created_at,"
            " updated_at, finished_at, chain, seal, wake_at, waiting_for, version FROM runs"
            " WHERE run_id = 'T-3'",
        ),
        "T-9",
        "added by hand",
    ),
    "the chain scheme unset": (("UPDATE runs SET chain = NULL WHERE run_id = 'T-1'",), "T-1", ""),
    "a head entry edited": (
        (
            "DROP TRIGGER heads_are_append_only_update",
            "UPDATE heads SET status = 'failed' WHERE n = 2",
        ),
        "(journal head)",
        "edited",
    ),
    "a head entry removed": (
        ("DROP TRIGGER heads_are_append_only_delete", "DELETE FROM heads WHERE n = 2"),
        "(journal head)",
        "removed",
    ),
}


@pytest.mark.parametrize("signed", [False, True], ids=["sha256", "hmac"])
@pytest.mark.parametrize("edit", sorted(HEAD_EDITS))
def test_the_head_catches_what_no_run_chain_can(db_path: Path, edit: str, signed: bool) -> None:
    """Truncation, status rewrites, removed and added runs: verify exits 3 and names the run
    (or the head); so does verify of an export made after the edit."""
    options = {"hmac_key": "k" * 32} if signed else {}
    record_two(db_path, **options)
    statements, run_id, words = HEAD_EDITS[edit]
    edit_sqlite(db_path, *statements)
    with Journal(db_path, **options) as journal:  # type: ignore[arg-type]
        verdicts = {v.run_id: v for v in journal.verify()}
    if not run_id:  # the tail of an unfinished run after its last head entry: not proven
        assert all(v.ok for v in verdicts.values()), verdicts
        return
    found = verdicts[run_id]
    assert found.verdict == "broken" and found.broken is not None, verdicts
    assert words in found.broken.detail, found
    exported = db_path.with_name("all.jsonl")
    env = {"JOURNAL_HMAC_KEY": "k" * 32} if signed else {}
    result = runner.invoke(
        app, ["export", "--all", "--db", str(db_path), "-o", str(exported)], env=env
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["verify", "--file", str(exported)], env=env)
    assert result.exit_code == 3, result.output  # a whole-journal export knows every run


def test_a_rewrite_that_recomputes_the_head_is_caught_by_a_kept_head(db_path: Path) -> None:
    """An attacker who removes the head's last entry and sets its run back to the state the
    entry before recorded leaves a consistent journal: only a head kept elsewhere shows it,
    and it does, for the journal and for an export."""
    kept = record_two(db_path)
    with Journal(db_path) as journal:
        entry = journal.head()
        assert entry is not None and entry.run_id == "T-3"
        finished_t2 = [e for e in journal.store.read_heads() if e.run_id == "T-2"][-1]
    edit_sqlite(
        db_path,
        "DROP TRIGGER heads_are_append_only_delete",
        f"DELETE FROM heads WHERE n >= {finished_t2.n}",
        "DELETE FROM events WHERE run_id = 'T-3'",
        "DELETE FROM runs WHERE run_id = 'T-3'",
        "UPDATE runs SET status = 'running', seal = NULL, result = NULL WHERE run_id = 'T-2'",
        "DELETE FROM events WHERE run_id = 'T-2' AND seq = 2",
    )
    code, output = cli("verify", "--db", str(db_path))
    assert code == 0, output  # consistent: what a kept head is for
    code, output = cli("verify", "--db", str(db_path), "--since", kept)
    assert code == 3 and "removed" in output, output
    exported = db_path.with_name("all.jsonl")
    assert cli("export", "--all", "--db", str(db_path), "-o", str(exported))[0] == 0
    code, output = cli("verify", "--file", str(exported), "--since", kept)
    assert code == 3, output


def _rechain(path: Path, run_id: str, forge: Chain) -> None:
    """Recompute a run's whole chain and seal with `forge`, as an attacker would."""
    with Journal(path, hmac_key="k" * 32) as journal:
        run = journal.run(run_id).model_copy(update={"chain": forge.scheme})
        events, _ = forge.extend(forge.genesis(run), journal.events(run_id))
    seal = forge.seal(events[-1].seq, events[-1].hash or "", run.status, run.result, run.error)
    edit_sqlite(
        path,
        *(
            f"UPDATE events SET prev_hash = '{e.prev_hash}', hash = '{e.hash}'"
            f" WHERE run_id = '{run_id}' AND seq = {e.seq}"
            for e in events
        ),
        f"UPDATE runs SET chain = '{forge.scheme}', seal = '{seal}' WHERE run_id = '{run_id}'",
    )


@pytest.mark.parametrize("forge", ["sha256", "another key"])
def test_a_signed_run_rechained_is_broken_never_key_needed(db_path: Path, forge: str) -> None:
    """A signed run re-hashed with plain SHA-256, or re-signed with another key, is broken
    when verified with the real key (the head's signed entry names its scheme)."""
    record_two(db_path, hmac_key="k" * 32)
    _rechain(db_path, "T-1", Chain() if forge == "sha256" else Chain("another key"))
    with Journal(db_path, hmac_key="k" * 32) as journal:
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["T-1"].verdict == "broken", verdicts["T-1"]
    assert verdicts["T-1"].broken is not None and verdicts["T-1"].broken.field.startswith("head")
    code, output = cli("verify", "--db", str(db_path))
    assert code in (1, 3) and "unset" not in output.lower()


def test_an_export_with_its_chain_scheme_nulled_is_broken(db_path: Path) -> None:
    """`"chain": null` in an export does not make an edited run "unchained"."""
    record(db_path)
    exported = db_path.with_name("one.jsonl")
    assert cli("export", "T-1", "--db", str(db_path), "-o", str(exported))[0] == 0
    lines = []
    for line in exported.read_text().splitlines():
        record_ = orjson.loads(line)
        if record_.get("type") == "run":
            record_["chain"] = None
            record_["result"] = '"refunded 1000000.0"'
        lines.append(orjson.dumps(record_).decode())
    exported.write_text("\n".join(lines) + "\n")
    code, output = cli("verify", "--file", str(exported))
    assert code == 3, output


def test_retention_is_not_tampering(db_path: Path) -> None:
    """`journal gc` removes runs through the head (a `removed` entry): the journal stays
    intact; the removed run put back by hand is not."""
    record_two(db_path)
    with Journal(db_path) as journal:
        assert [run.run_id for run in journal.gc(keep_last=0, statuses=["completed"])]
        assert all(v.ok for v in journal.verify())
        assert {e.reason for e in journal.store.read_heads()} >= {"removed"}
    code, output = cli("verify", "--db", str(db_path))
    assert code == 0, output


def test_a_journal_from_before_the_head_adopts_its_runs(db_path: Path) -> None:
    """A journal written before the head existed (schema 3): the first open gives each run an
    `adopted` entry; later edits to them are caught like any other."""
    record_two(db_path, before_versions=True)
    edit_sqlite(
        db_path,
        "DROP TABLE heads",
        "ALTER TABLE runs DROP COLUMN version",
        "PRAGMA user_version = 3",
    )
    with Journal(db_path) as journal:
        reasons = [(e.run_id, e.reason) for e in journal.store.read_heads()]
        assert sorted(reasons) == [("T-1", "adopted"), ("T-2", "adopted"), ("T-3", "adopted")]
        assert all(v.ok for v in journal.verify())
    with Journal(db_path) as journal:
        assert len(journal.store.read_heads()) == 3  # once only
        assert journal.store.adopt_runs() == 0
    edit_sqlite(db_path, "UPDATE runs SET status = 'running', seal = NULL WHERE run_id = 'T-1'")
    assert cli("verify", "--db", str(db_path))[0] == 3


def test_a_store_opened_by_hand_on_a_journal_from_before_the_head_adopts_when_given_a_chain(
    db_path: Path,
) -> None:
    """`SQLiteStore(path)` upgrades a schema-3 file without a chain to sign with: its runs are
    adopted when a Journal takes the store (and gives it the chain), once."""
    from journal.stores import SQLiteStore

    record_two(db_path, before_versions=True)
    edit_sqlite(
        db_path,
        "DROP TABLE heads",
        "ALTER TABLE runs DROP COLUMN version",
        "PRAGMA user_version = 3",
    )
    store = SQLiteStore(db_path)
    assert store.read_heads() == []  # upgraded, nothing adopted yet: no chain
    with Journal(store=store) as journal:
        reasons = sorted((e.run_id, e.reason) for e in journal.store.read_heads())
        assert reasons == [("T-1", "adopted"), ("T-2", "adopted"), ("T-3", "adopted")]
        assert journal.store.adopt_runs() == 0  # once only
        assert all(v.ok for v in journal.verify())


def test_the_head_holds_under_concurrent_writers(tmp_path: Path) -> None:
    """Runs finishing at once in several processes' journals (threads with their own
    connections here): the head stays one unbroken chain."""
    import threading

    path = tmp_path / "busy.db"
    Journal(path).close()

    def worker(index: int) -> None:
        with Journal(path) as journal:
            for number in range(5):
                asyncio.run(
                    replay.run(
                        support,
                        f"A-{index}-{number}",
                        journal=journal,
                        run_id=f"W-{index}-{number}",
                    )
                )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Journal(path) as journal:
        verdicts = journal.verify()
        assert len(journal.store.read_heads()) == 40
    assert len(verdicts) == 20 and all(v.verdict == "intact" for v in verdicts), verdicts


def test_postgres_head_catches_a_status_set_back_and_holds_under_concurrency(
    pg_schema: str,
) -> None:
    """On PostgreSQL: runs finished from several connections at once keep one unbroken head
    (appends are serialised across processes); a run set back to running is caught; a schema
    from before the head adopts its runs once."""
    import threading

    import psycopg

    postgres_store(pg_schema).close()

    def worker(index: int) -> None:
        with Journal(store=postgres_store(pg_schema)) as journal:
            for number in range(4):
                run_id = f"P-{index}-{number}"
                asyncio.run(replay.run(support, run_id, journal=journal, run_id=run_id))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Journal(store=postgres_store(pg_schema)) as journal:
        assert len(journal.store.read_heads()) == 24
        assert all(v.verdict == "intact" for v in journal.verify())
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {pg_schema}.runs SET status = 'running', seal = NULL"  # type: ignore[arg-type]
            " WHERE run_id = 'P-1-1'"
        )
    with Journal(store=postgres_store(pg_schema)) as journal:
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["P-1-1"].verdict == "broken", verdicts["P-1-1"]

    with psycopg.connect(PG_URL, autocommit=True) as conn:  # as schema version 1 left it
        conn.execute(f"DROP TABLE {pg_schema}.heads")  # type: ignore[arg-type]
        conn.execute(
            f"UPDATE {pg_schema}.meta SET value = '1' WHERE name = 'schema_version'"  # type: ignore[arg-type]
        )
    with Journal(store=postgres_store(pg_schema)) as journal:
        assert {e.reason for e in journal.store.read_heads()} == {"adopted"}
        assert len(journal.store.read_heads()) == 12


# -- a second round: forging the head without the key, laundering, damaged head rows ---------


def _plain_head(path: Path) -> None:
    """Rebuild the head with plain SHA-256 entries, as an attacker without the key can."""
    with Journal(path) as journal:
        entries = journal.store.read_heads()
    forged, prev = [], "0" * 64
    plain = Chain()
    for entry in entries:
        entry = replace(entry, prev=prev, scheme=plain.scheme)
        entry = replace(entry, hash=entry_hash(plain, entry))
        forged.append(entry)
        prev = entry.hash
    verify_cases.replace_heads(path, forged)


def test_a_signed_head_rebuilt_without_the_key_is_broken(db_path: Path) -> None:
    """Without the key, an attacker rebuilds the head with plain SHA-256 (after removing a
    signed run): verify with the key takes only signed entries, and exits 3."""
    record_two(db_path, hmac_key="k" * 32)
    edit_sqlite(
        db_path, "DELETE FROM events WHERE run_id = 'T-2'", "DELETE FROM runs WHERE run_id = 'T-2'"
    )
    _plain_head(db_path)
    code, output = cli("verify", "--db", str(db_path), key="k" * 32)
    assert code == 3 and "not signed with this journal's key" in output, output


def test_setting_the_adoption_marker_launders_nothing(db_path: Path) -> None:
    """A run added by hand, then the once-only adoption marker set again: opening the journal
    with the key does not sign the forged run into the head."""
    record_two(db_path, hmac_key="k" * 32)
    edit_sqlite(
        db_path,
        "INSERT INTO runs SELECT 'X-9', workflow, inputs, inputs_fingerprint, status, result,"
        " error, owner, owner_token, parent_run_id, fork_seq, resumes, created_at, updated_at,"
        " finished_at, chain, seal, wake_at, waiting_for, version FROM runs WHERE run_id = 'T-3'",
        "INSERT OR REPLACE INTO meta VALUES ('heads_pending', x'01')",
    )
    with Journal(db_path, hmac_key="k" * 32) as journal:
        assert all(e.run_id != "X-9" for e in journal.store.read_heads())
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["X-9"].verdict == "broken", verdicts["X-9"]


def test_a_removal_not_made_by_retention_is_broken(db_path: Path) -> None:
    """A finished run deleted and a `removed` entry appended by hand (its seal not the run's):
    the head says the removal was not retention's, even against a kept head."""
    kept = record_two(db_path)
    with Journal(db_path) as journal:
        last = journal.head()
    assert last is not None
    removed = replace(last, n=last.n + 1, run_id="T-2", reason="removed", seal=None, prev=last.hash)
    removed = replace(removed, hash=entry_hash(Chain(), removed))
    edit_sqlite(
        db_path,
        "DELETE FROM events WHERE run_id = 'T-2'",
        "DELETE FROM runs WHERE run_id = 'T-2'",
        "INSERT INTO heads VALUES ("
        f"{removed.n}, 'T-2', 'removed', 'completed', {removed.events}, NULL, NULL, "
        f"'sha256', {removed.at.timestamp()}, 'sha256', '{removed.prev}', '{removed.hash}')",
    )
    code, output = cli("verify", "--db", str(db_path), "--since", kept)
    assert code == 3 and "not made by retention" in output, output


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE heads SET at = 'yesterday' WHERE n = 2",
        "UPDATE heads SET at = 1e300 WHERE n = 2",
        "UPDATE heads SET events = 'x' WHERE n = 2",
        "UPDATE heads SET run_id = x'00ff' WHERE n = 2",
        "UPDATE heads SET hash = x'00' WHERE n = 2",
    ],
)
def test_head_rows_edited_into_other_types_are_edits_not_crashes(
    db_path: Path, statement: str
) -> None:
    record_two(db_path)
    edit_sqlite(db_path, "DROP TRIGGER heads_are_append_only_update", statement)
    code, output = cli("verify", "--db", str(db_path))
    assert code == 3 and "entry 2 was edited" in output, output
    assert cli("head", "--db", str(db_path))[0] == 0
    exported = db_path.with_name("all.jsonl")
    for fmt in ("jsonl", "json"):
        args = ("export", "--all", "--db", str(db_path), "-f", fmt, "-o", str(exported))
        assert cli(*args)[0] == 0


@pytest.mark.parametrize("key", [None, "k" * 32], ids=["sha256", "hmac"])
def test_a_run_cut_from_a_whole_journal_export_is_found(db_path: Path, key: str | None) -> None:
    """`export --all` says it holds every run, in a manifest MAC'd with the journal's chain:
    cutting a run's lines from the file is found; with the key, even when the attacker
    rewrites the manifest without it."""
    record_two(db_path, **({"hmac_key": key} if key else {}))
    exported = db_path.with_name("all.jsonl")
    assert cli("export", "--all", "--db", str(db_path), "-o", str(exported), key=key)[0] == 0
    assert cli("verify", "--file", str(exported), key=key)[0] == 0
    kept = []
    for line in exported.read_text().splitlines():
        record_ = orjson.loads(line)
        if record_.get("type") in ("run", "event") and record_["run_id"] == "T-2":
            continue
        kept.append(record_)
    exported.write_text("\n".join(orjson.dumps(r).decode() for r in kept) + "\n")
    code, output = cli("verify", "--file", str(exported), key=key)
    assert code == 3 and "T-2" in output, output
    if key:  # re-made without the key: plain SHA-256 over the runs left
        header = kept[0]
        ids = [r["run_id"] for r in kept if r.get("type") == "run"]
        heads = [r for r in kept if r.get("type") == "head"]
        plain = Chain()
        header["manifest_scheme"] = plain.scheme
        header["manifest"] = plain.mac(
            b"journal-replay/export/v1" + orjson.dumps(["some", sorted(ids), heads[-1]["hash"]])
        )
        header["scope"] = "some"
        exported.write_text("\n".join(orjson.dumps(r).decode() for r in kept) + "\n")
        code, output = cli("verify", "--file", str(exported), key=key)
        assert code == 3 and "manifest" in output, output
