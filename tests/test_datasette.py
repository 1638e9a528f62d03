"""`journal datasette`: a journal written by a real workflow, served by the real command on
127.0.0.1 and read over HTTP: described tables, readable JSON, and a file nobody writes to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import selectors
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal
from journal._browse_metadata import PLUGIN, TABLES, datasette_metadata
from replay import step
from replay._cli import app

ROOT = Path(__file__).resolve().parent.parent
JOURNAL_SCRIPT = str(Path(sys.executable).with_name("journal"))
cli = CliRunner()
RUN_IDS = "select run_id from runs order by run_id"
MARKUP = "<script>alert('recorded')</script>"
"""Recorded content that must reach the page as text, never as markup."""


@step(kind="tool")
async def forecast(city: str) -> dict[str, Any]:
    return {"city": city, "sky": f"clear {MARKUP}", "celsius": 21.5, "cities": ["Paris", city]}


async def trip(cities: list[str]) -> str:
    found = [await forecast(city) for city in cities]
    decision = await replay.signal("go")
    return f"{decision['by']} approved {len(found)} forecasts"


def record(path: Path) -> None:
    """A real run: two tool steps and a signal, suspended once while it waited."""
    with Journal(path) as journal:
        with contextlib.suppress(replay.Suspended):
            asyncio.run(replay.run(trip, ["Rome", "Oslo"], journal=journal, run_id="trip-1"))
        journal.signal("trip-1", "go", {"by": "dana"})
        asyncio.run(replay.run(trip, ["Rome", "Oslo"], journal=journal, run_id="trip-1"))


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    path = tmp_path / "travel.db"
    record(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            return ""
    return proc.stdout.readline()


@contextlib.contextmanager
def served(*args: str) -> Iterator[str]:
    """`journal datasette ARGS --port 0` running; the database's base URL it announced."""
    proc = subprocess.Popen(
        [JOURNAL_SCRIPT, "datasette", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = _read_line(proc, time.monotonic() + 30)
        assert "(Ctrl+C stops it)" in line, f"no announcement: {line!r} {proc.stderr}"
        url = next(word for word in line.split() if word.startswith("http://127.0.0.1:"))
        yield url
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def test_the_metadata_describes_every_table_and_column_of_the_schema(recorded: Path) -> None:
    """Every table and column a journal written now has is described, in schema order, and
    nothing is described that the schema lacks: a new column fails here until it is."""
    schema = _columns(recorded)
    described = {name: list(table.columns) for name, table in TABLES.items()}
    assert described == schema
    meta = datasette_metadata("travel")["databases"]["travel"]["tables"]
    assert all(meta[t]["columns"] and meta[t]["title"] and meta[t]["description"] for t in schema)


def test_the_served_journal_is_described_readable_untouched_and_live(recorded: Path) -> None:
    """The real command serves the journal on 127.0.0.1: tables carry their titles and column
    descriptions, JSON payloads show as escaped pretty JSON (not `<Binary>` links) and come
    back as JSON from the API with `_json`, the redaction salt reads as null even from SQL,
    and the journal file is byte for byte what it was. Then a writer that keeps the file
    open (its commits still in the write-ahead log) starts a run: the page shows it."""
    before = digest(recorded)
    with served("--db", str(recorded)) as url, httpx.Client(timeout=10) as http:
        assert url.endswith("/travel")
        events = http.get(f"{url}/events")
        assert events.status_code == 200
        page = events.text
        assert "<h1" in page and "Events" in page
        assert "One row per journaled await" in page
        assert "<dt>payload</dt><dd>JSON: the arguments and call site" in page
        assert '<pre class="journal-json"' in page
        assert "&#34;celsius&#34;: 21.5" in page  # pretty-printed: one key a line
        assert "&lt;script&gt;alert(&#39;recorded&#39;)&lt;/script&gt;" in page
        assert MARKUP not in page and "&lt;Binary" not in page
        assert " UTC</span>" in page  # created_at as a date
        assert '<td class="col-run_id type-str"><a href="/travel/runs/trip-1">trip-1</a>' in page

        rows = http.get(f"{url}/events.json?_shape=array&_json=payload&kind=tool&status=completed")
        assert [r["payload"] for r in rows.json()] == [
            {"city": c, "sky": f"clear {MARKUP}", "celsius": 21.5, "cities": ["Paris", c]}
            for c in ("Rome", "Oslo")
        ]
        runs = http.get(f"{url}/runs.json?_shape=array&_json=result").json()
        assert [(r["run_id"], r["status"], r["result"]) for r in runs] == [
            ("trip-1", "completed", "dana approved 2 forecasts")
        ]
        signals = http.get(f"{url}/signals.json?_shape=array&_json=payload").json()
        assert [s["payload"] for s in signals] == [{"by": "dana"}]
        described = http.get("/".join(url.split("/")[:3]) + "/-/metadata.json").json()
        shown = described["databases"]["travel"]["tables"]
        for name, table in TABLES.items():
            assert (shown[name]["title"], shown[name]["columns"]) == (table.title, table.columns)

        canned = http.get(f"{url}/run_events.json?run_id=trip-1&_shape=array").json()
        assert [(e["kind"], e["status"]) for e in canned] == [
            ("tool", "completed"),
            ("tool", "completed"),
            ("signal", "started"),
            ("signal", "completed"),
        ]
        assert json.loads(canned[-1]["payload"]) == {"by": "dana"}

        for query in (
            "/meta.json?_shape=array",
            ".json?sql=select+name,value+from+meta&_shape=array",
        ):
            shown = http.get(f"{url}{query}").json()
            assert shown == [{"name": "redaction-salt", "value": None}], shown
        download = http.get(f"{url}/meta/redaction-salt.blob?_blob_column=value")
        assert download.content == b""
        refused = http.get(f"{url}.json", params={"sql": "delete from events"})
        assert refused.status_code == 400
        assert digest(recorded) == before

        with Journal(recorded) as writer:
            with contextlib.suppress(replay.Suspended):  # waits for its signal
                asyncio.run(replay.run(trip, ["Lima"], journal=writer, run_id="trip-2"))
            assert recorded.with_name("travel.db-wal").stat().st_size > 0
            runs = http.get(f"{url}.json?sql={RUN_IDS}&_shape=arrayfirst").json()
            assert runs == ["trip-1", "trip-2"]


@step
async def summarize(messages: list[str]) -> int:
    await asyncio.sleep(0)  # waits, as a model call does: its started row holds the record
    return len(messages)


async def long_calls() -> int:
    history = [f"message {n}: " + "and so on, " * 30 for n in range(30)]
    return await summarize(history[:20]) + await summarize(history)


def test_a_long_call_record_kept_as_chunks_shows_whole(tmp_path: Path) -> None:
    """A call record stored as a template (4 KB or more) is shown put back together on the
    table page and in the canned query; the JSON API gives the stored template."""
    path = tmp_path / "long.db"
    with Journal(path) as journal:
        assert asyncio.run(replay.run(long_calls, journal=journal, run_id="long")) == 50
    with sqlite3.connect(path) as conn:
        stored = conn.execute(
            "SELECT payload FROM events WHERE status = 'started' ORDER BY seq DESC"
        ).fetchone()[0]
    assert stored.startswith(b"\x00journal-replay/chunks/v1")  # kept as a template
    with served("--db", str(path)) as url, httpx.Client(timeout=10) as http:
        page = http.get(f"{url}/events").text
        assert page.count("message 29: and so on") == 1 and page.count("message 19: and") == 2
        assert "chunks/v1" not in page
        canned = http.get(f"{url}/run_events?run_id=long").text
        assert canned.count("message 29: and so on") == 1, canned
        nodes = http.get(f"{url}/chunk_nodes.json?_shape=array").json()
        assert len(nodes) == 30  # the 20 items of the first list are the start of the second


def test_the_announced_address_opens_the_journal_whatever_its_file_name(
    recorded: Path,
) -> None:
    """A stem with a dot, a space and an accent: the address the command prints is the
    database's page (Datasette tilde-encodes the name in its URLs; the stem as it is was a
    404, or a broken link at the space)."""
    named = recorded.rename(recorded.with_name("café trip.2024.db"))
    with served("--db", str(named)) as url, httpx.Client(timeout=10) as http:
        assert http.get(url).status_code == 200
        runs = http.get(f"{url}.json?sql={RUN_IDS}&_shape=arrayfirst").json()
        assert runs == ["trip-1"]


def test_every_connection_to_a_journal_refuses_writes(recorded: Path) -> None:
    """A write reaching SQLite through Datasette (as a plugin's or a writable canned query's
    would) fails: the plugin makes every connection query-only, the write one included."""
    from journal._datasette import journal_datasette

    before = digest(recorded)
    datasette = journal_datasette(recorded, immutable=False)

    async def attempt() -> None:
        await datasette.databases["travel"].execute_write("DELETE FROM signals")

    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        asyncio.run(attempt())
    assert digest(recorded) == before


def test_immutable_mode_is_refused_while_the_log_holds_commits(recorded: Path) -> None:
    """`--immutable` ignores the write-ahead log: while a writer holds the journal (its new
    run only in the log) it is refused, with the reason and the fix; once the log is merged
    as the fix says, it opens and shows the new run."""
    wal = recorded.with_name("travel.db-wal")
    with Journal(recorded) as writer:
        with contextlib.suppress(replay.Suspended):  # waits for its signal
            asyncio.run(replay.run(trip, ["Lima"], journal=writer, run_id="trip-2"))
        assert wal.stat().st_size > 0
        refused = cli.invoke(app, ["datasette", "--db", str(recorded), "--immutable"])
        assert refused.exit_code == 1
    assert "write-ahead log" in refused.output and "drop --immutable" in refused.output
    fix = re.search(r"sqlite3 (\S+) '(PRAGMA wal_checkpoint\(TRUNCATE\))'", refused.output)
    assert fix and fix.group(1) == str(recorded), refused.output
    with contextlib.closing(sqlite3.connect(recorded)) as conn:
        conn.execute(fix.group(2))
    assert not wal.exists() or wal.stat().st_size == 0
    shown = asyncio.run(_get(recorded, f"/travel.json?sql={RUN_IDS}&_shape=arrayfirst"))
    assert shown == ["trip-1", "trip-2"]


def test_an_immutable_journal_cannot_be_downloaded_whole(recorded: Path) -> None:
    """Datasette offers an immutable database as a download of the whole file, salt and all:
    the page the salt reads as null on must not hand the file out."""
    from journal._datasette import journal_datasette

    salt = sqlite3.connect(recorded).execute("SELECT value FROM meta").fetchone()[0]
    datasette = journal_datasette(recorded, immutable=True)

    async def download() -> httpx.Response:
        return await datasette.client.get("/travel.db")

    response = asyncio.run(download())
    assert response.status_code == 403
    assert salt not in response.content


async def _get(path: Path, page: str, *, immutable: bool = True) -> Any:
    from journal._datasette import journal_datasette

    datasette = journal_datasette(path, immutable=immutable)
    assert datasette.databases[path.stem].is_mutable is not immutable
    response = await datasette.client.get(page)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_metadata_file_works_with_plain_datasette(recorded: Path, tmp_path: Path) -> None:
    """`--metadata-only` prints the metadata for `datasette -m`: a Datasette without the
    plugin takes it as it is and reads payloads as JSON text through the canned queries."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    made = cli.invoke(app, ["datasette", "--db", str(recorded), "--metadata-only"])
    assert made.exit_code == 0, made.output
    metadata = json.loads(made.output)
    assert metadata == json.loads(json.dumps(datasette_metadata("travel")))
    before = digest(recorded)
    plugin = pm.get_plugin(PLUGIN)
    if plugin is not None:
        pm.unregister(plugin)  # plain Datasette, as `datasette travel.db -m FILE` is
    datasette = Datasette([str(recorded)], metadata=metadata)

    async def get(page: str) -> Any:
        response = await datasette.client.get(page)
        assert response.status_code == 200, response.text
        return response.json() if page.endswith("array") else response.text

    events = asyncio.run(get("/travel/run_events.json?run_id=trip-1&_shape=array"))
    assert json.loads(events[1]["payload"])["sky"] == f"clear {MARKUP}"
    assert "One row per journaled await" in asyncio.run(get("/travel/events"))
    assert digest(recorded) == before


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("postgresql://127.0.0.1/test", "Datasette reads only SQLite"),
        ("nowhere.db", "no journal at nowhere.db"),
        ("notes.db", "not a journal"),
        ("what?.db", "# and % mean something else"),
        ("100%2E.db", "# and % mean something else"),
        ("_internal.db", "_internal is its own database"),
        ("--port=70000", "less than or equal to 65535"),
        ("--host=nowhere.invalid", "Fix: pass --host an address"),
    ],
)
def test_what_cannot_be_served_is_said_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    """Not a SQLite file, no file, a SQLite file that is not a journal, a path SQLite would
    misread as a URI (a % escape opens another file), a name Datasette keeps for itself, a
    port no socket has, an address that is not one: an error saying what is wrong and what
    to do, not a traceback."""
    with sqlite3.connect(tmp_path / "notes.db") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    record(tmp_path / "journal.db")
    monkeypatch.chdir(tmp_path)
    args = ["--db", "journal.db", target] if target.startswith("--") else ["--db", target]
    result = cli.invoke(app, ["datasette", *args])
    assert result.exit_code == (2 if "port" in target else 1), result.output
    assert message in result.output, result.output
    assert "Fix:" in result.output or "port" in target, result.output
