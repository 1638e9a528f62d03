"""Every run records the version of the code that started it; workers and `journal resume`
continue only versions they accept. Two deploys of one module, in real processes, share one
journal file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import replay
from journal import Journal
from journal.stores import SQLiteStore
from tests.conftest import PG_URL, postgres_store
from tests.factories import make_owner, make_run

_SHOP = """\
import replay
from replay import step

@step
async def pack(order: str) -> str:
    return "{tag}:" + order

async def ship(order: str) -> str:
    packed = await pack(order)
    await replay.signal("go")
    return packed
"""

_START = """\
import asyncio, sys
import replay, shop
from journal import Journal

with Journal(sys.argv[1]) as journal:
    try:
        asyncio.run(replay.run(shop.ship, sys.argv[2], journal=journal, run_id=sys.argv[2]))
    except replay.Suspended:
        print("waiting")
"""


def _deploy(folder: Path, tag: str) -> Path:
    folder.mkdir()
    (folder / "shop.py").write_text(_SHOP.format(tag=tag))
    (folder / "start.py").write_text(_START)
    return folder


def _in(folder: Path, *args: str, version: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("JOURNAL_VERSION", None)
    if version is not None:
        env["JOURNAL_VERSION"] = version
    return subprocess.run(
        [sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=120, env=env
    )


def _journal(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _in(folder, "-c", "from replay._cli import main; main()", *args)


def _source_version(folder: Path) -> str:
    return "src:" + hashlib.sha256((folder / "shop.py").read_bytes()).hexdigest()[:12]


def test_a_worker_continues_only_the_runs_of_its_own_version(tmp_path: Path) -> None:
    """Deploys A and B of one module share a journal. B's worker leaves A's run alone (and
    says so), A's worker finishes it on A's code; `journal resume` from B refuses it until told
    to accept A; `journal runs --version` lists each deploy's runs."""
    db = str(tmp_path / "runs.db")
    old, new = _deploy(tmp_path / "a", "A"), _deploy(tmp_path / "b", "B")
    version_a, version_b = _source_version(old), _source_version(new)
    assert version_a != version_b
    assert _in(old, "start.py", db, "order-a").stdout.strip() == "waiting"
    assert _in(new, "start.py", db, "order-b").stdout.strip() == "waiting"
    with Journal(db) as journal:
        assert journal.run("order-a").version == version_a
        assert journal.run("order-b").version == version_b
        journal.signal("order-a", "go", True)
        journal.signal("order-b", "go", True)
        before = len(journal.events("order-a"))

    refused = _journal(new, "resume", "order-a", "--db", db)
    assert refused.returncode == 1
    assert f"started by version '{version_a}'" in refused.stderr
    assert f"--accept-version {version_a}" in refused.stderr

    worked = _journal(new, "worker", "--import", "shop", "--once", "--db", db, "--json")
    assert worked.returncode == 0, worked.stderr
    stats = json.loads(worked.stdout)
    assert (stats["completed"], stats["other_version"], stats["skipped"]) == (1, 1, 0)
    with Journal(db) as journal:
        assert journal.run("order-b").result == b'"B:order-b"'
        assert journal.run("order-a").status.value == "waiting"
        assert len(journal.events("order-a")) == before  # not touched

    worked = _journal(old, "worker", "--import", "shop", "--once", "--db", db, "--json")
    assert json.loads(worked.stdout)["completed"] == 1, worked.stderr
    with Journal(db) as journal:
        assert journal.run("order-a").result == b'"A:order-a"'  # on A's own code

    listed = _journal(old, "runs", "--db", db, "--version", version_a, "--json")
    assert [run["run_id"] for run in json.loads(listed.stdout)] == ["order-a"]
    assert json.loads(listed.stdout)[0]["version"] == version_a
    table = _journal(old, "runs", "--db", db)
    assert "version" in table.stdout and version_b in table.stdout
    shown = _journal(old, "show", "order-a", "--db", db)
    assert f"version {version_a}" in shown.stdout


def test_accepting_a_version_continues_its_runs(tmp_path: Path) -> None:
    """A deploy that says it can run the old version's runs (checked by upgrade-check first)
    continues them: `--accept-version` on resume and on the worker, '*' for any."""
    db = str(tmp_path / "runs.db")
    old, new = _deploy(tmp_path / "a", "A"), _deploy(tmp_path / "b", "B")
    for run_id in ("one", "two"):
        assert _in(old, "start.py", db, run_id).stdout.strip() == "waiting"
    with Journal(db) as journal:
        journal.signal("one", "go", True)
        journal.signal("two", "go", True)
    resumed = _journal(
        new, "resume", "one", "--db", db, "--accept-version", _source_version(old), "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["result"] == "A:one"  # served, not run again by B
    worked = _journal(new, "worker", "--once", "--db", db, "--accept-version", "*", "--json")
    assert json.loads(worked.stdout)["completed"] == 1, worked.stderr


def test_the_configured_version_comes_first(tmp_path: Path) -> None:
    """JOURNAL_VERSION, else `version` in journal.toml / [tool.journal], else the source hash."""
    folder = _deploy(tmp_path / "app", "A")
    db = str(tmp_path / "runs.db")
    _in(folder, "start.py", db, "by-env", version="2026.11.3")
    (folder / "pyproject.toml").write_text('[tool.journal]\nversion = "release-7"\n')
    _in(folder, "start.py", db, "by-file")
    (folder / "pyproject.toml").write_text('[tool.journal]\nversion = ""\n')
    broken = _in(folder, "start.py", db, "bad")
    assert broken.returncode != 0 and "must be a short line of text" in broken.stderr
    (folder / "pyproject.toml").unlink()
    _in(folder, "start.py", db, "by-source")
    with Journal(db) as journal:
        versions = {r: journal.run(r).version for r in ("by-env", "by-file", "by-source")}
        assert [v.verdict for v in journal.verify()] == ["intact"] * 3
    assert versions == {
        "by-env": "2026.11.3",
        "by-file": "release-7",
        "by-source": _source_version(folder),
    }


@replay.step
async def _echo(text: str) -> str:
    return text


async def _flow(text: str) -> str:
    return await _echo(text)


def test_the_version_is_bound_by_the_chain_and_exported_only_when_set(tmp_path: Path) -> None:
    """The version is part of the run's hashed header: edited, verify names the header. A fork
    has none (it is made to go on with new code). Exports carry it when the run has one."""
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        asyncio.run(replay.run(_flow, "x", journal=journal, run_id="r"))
        fork = journal.fork("r", at=2, new_run_id="f")
        assert fork.version is None and journal.run("r").version is not None
        out = tmp_path / "all.jsonl"
        with out.open("w") as stream:
            journal.export(stream, ["r", "f"])
        records = [json.loads(line) for line in out.read_text().splitlines()]
        runs = {r["run_id"]: r for r in records if r["type"] == "run"}
        assert runs["r"]["version"] == journal.run("r").version and "version" not in runs["f"]
        assert all(v.ok for v in journal.verify_export(out))
        page = tmp_path / "r.html"
        with page.open("w") as stream:
            journal.export(stream, ["r"], format="html")
        assert f"<dt>version</dt><dd>{journal.run('r').version}</dd>" in page.read_text()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET version = 'src:000000000000' WHERE run_id = 'r'")
    conn.commit()
    conn.close()
    with Journal(path) as journal:
        (verdict,) = journal.verify("r")
    assert verdict.verdict == "broken" and verdict.broken is not None
    assert verdict.broken.field == "header"


def test_an_older_sqlite_journal_is_read_as_it_is_and_upgraded_by_a_writer(
    tmp_path: Path,
) -> None:
    """Schema 4 (before versions): opened to read, its runs have no version and nothing is
    written; a writer adds the column and new runs record theirs."""
    golden = Path(__file__).parent / "data" / "golden" / "v0.1.0-schema4" / "unsigned.db"
    path = tmp_path / "old.db"
    shutil.copy(golden, path)
    with Journal(path, read_only=True) as journal:
        runs = journal.runs(limit=None)
        assert runs and {r.version for r in runs} == {None}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()
    with Journal(path) as journal:
        asyncio.run(replay.run(_flow, "y", journal=journal, run_id="new-run"))
        assert journal.run("new-run").version is not None
        assert all(v.ok for v in journal.verify())
    store = SQLiteStore(path, read_only=True)
    assert {r.version is None for r in store.list_runs()} == {True, False}
    store.close()


def test_postgres_keeps_the_version_and_upgrades_an_older_schema(pg_schema: str) -> None:
    """On PostgreSQL too: stored and read back; a schema 2 (before versions) opened to read
    has runs without one, and a writer adds the column without adopting anything again."""
    store = postgres_store(pg_schema)
    store.create_run(make_run("v").model_copy(update={"version": "release-1"}))
    store.create_run(make_run("none"))
    assert store.get_run("v").version == "release-1"  # type: ignore[union-attr]
    assert store.get_run("none").version is None  # type: ignore[union-attr]
    store.claim("v", make_owner(), resuming=False)
    store.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:  # as schema version 2 left it
        conn.execute(f"ALTER TABLE {pg_schema}.runs DROP COLUMN version")  # type: ignore[arg-type]
        conn.execute(
            f"UPDATE {pg_schema}.meta SET value = '2' WHERE name = 'schema_version'"  # type: ignore[arg-type]
        )
    from journal.stores import PostgresStore

    reader = PostgresStore(PG_URL, schema=pg_schema, read_only=True)
    assert {r.version for r in reader.list_runs()} == {None}
    reader.close()
    with Journal(store=postgres_store(pg_schema)) as journal:  # a writer, with the head's chain
        journal.store.create_run(make_run("later").model_copy(update={"version": "release-2"}))
        assert journal.run("later").version == "release-2"
        assert journal.run("v").version is None  # the column was gone: its value with it
        assert not any(e.reason == "adopted" for e in journal.store.read_heads())


def test_a_run_recorded_before_versions_is_continued_by_any_worker(tmp_path: Path) -> None:
    """No version (a run from before versions, or a fork): nothing to refuse it on."""
    from replay._versions import accepts

    run = make_run("old")
    assert accepts(run, "src:aaaaaaaaaaaa", ())
    versioned = run.model_copy(update={"version": "v1"})
    assert not accepts(versioned, "v2", ()) and accepts(versioned, "v2", ("v1",))
    assert accepts(versioned, "v2", ("*",)) and accepts(versioned, "v1", ())
    with pytest.raises(replay.VersionNotAccepted, match="accept_versions=\\['v1'\\]"):
        from replay._versions import check_version

        check_version(versioned, _flow, ())


def test_the_version_is_that_of_the_code_imported_not_of_the_file_now(tmp_path: Path) -> None:
    """A deploy that replaces a module's file under a running process: the process still runs
    the code it imported, so its runs record that code's version, and a worker created then
    does not take the new deploy's runs for its own."""
    folder = _deploy(tmp_path / "app", "A")
    script = """\
import asyncio, hashlib, pathlib, sys
import replay, shop
from journal import Journal

first = "src:" + hashlib.sha256(pathlib.Path("shop.py").read_bytes()).hexdigest()[:12]
worker = replay.Worker(Journal(sys.argv[1]), imports=["shop"])
pathlib.Path("shop.py").write_text(pathlib.Path("shop.py").read_text().replace('"A:"', '"B:"'))
with Journal(sys.argv[1]) as journal:
    try:
        asyncio.run(replay.run(shop.ship, "x", journal=journal, run_id="late"))
    except replay.Suspended:
        pass
    print(journal.run("late").version == first, journal.events("late")[0].payload)
"""
    done = _in(folder, "-c", script, str(tmp_path / "runs.db"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "True" and "A:x" in done.stdout


def test_accepted_versions_are_a_list_not_a_string(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        with pytest.raises(TypeError, match=r"accept_versions=\['release-6'\]"):
            replay.Worker(journal, accept_versions="release-6")
        asyncio.run(replay.run(_flow, "z", journal=journal, run_id="z"))
        with pytest.raises(TypeError, match="not the string"):
            asyncio.run(replay.resume_run(journal, "z", accept_versions="6"))
