"""The hash chain: an intact journal verifies; every kind of edit is found and located."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import replay
from journal import ChainKeyMismatch, Journal
from journal._chain import Chain, microseconds
from journal._heads import ZERO, HeadEntry, entry_hash, entry_row, head_text
from journal.stores._sqlite import _dt, _ts


@replay.step(kind="llm")
async def ask(prompt: str) -> str:
    await asyncio.sleep(0)
    return f"answer to {prompt}"


@replay.step(kind="tool")
async def search(query: str) -> list[str]:
    return [f"{query}-1", f"{query}-2"]  # never waits: one row, as the seqs below assume


async def agent(topic: str) -> str:
    found = await search(topic)
    answer = await ask(f"summarise {found}")
    return answer.upper()


def record(path: Path, run_id: str = "r1", **journal_options: str) -> Journal:
    journal = Journal(path, **journal_options)  # type: ignore[arg-type]
    asyncio.run(replay.run(agent, "cats", journal=journal, run_id=run_id))
    return journal


def tamper(path: Path, *statements: str) -> None:
    """Edit the file as an attacker with sqlite3 would: triggers dropped first."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute("DROP TRIGGER events_are_append_only_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_an_untouched_run_is_intact_and_sealed(db_path: Path) -> None:
    """A finished run verifies: every link recomputes and the seal covers its outcome."""
    with record(db_path) as journal:
        (verdict,) = journal.verify("r1")
        events = journal.events("r1")
    assert verdict.ok and verdict.verdict == "intact" and verdict.sealed
    assert verdict.events == len(events) == 3
    assert str(verdict) == "r1: intact (3 events, sealed)"
    assert events[0].prev_hash is not None
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]


def test_a_run_in_progress_verifies_without_a_seal(db_path: Path) -> None:
    """An interrupted run's events verify; it has no seal until it finishes."""

    async def crashes() -> None:
        await search("dogs")
        raise KeyboardInterrupt

    journal = Journal(db_path)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(crashes, journal=journal, run_id="open"))
    (verdict,) = journal.verify("open")
    assert verdict.verdict == "intact" and not verdict.sealed and verdict.events == 1
    journal.close()


TAMPERING: dict[str, tuple[tuple[str, ...], int | None, str, str]] = {
    "flip a byte in a payload": (
        (
            "UPDATE events SET payload = CAST(REPLACE(payload, 'cats', 'dogs') AS BLOB)"
            " WHERE seq = 3",
        ),
        3,
        "hash",
        "contents no longer match",
    ),
    "break a payload's JSON": (
        ("UPDATE events SET payload = CAST(SUBSTR(payload, 2) AS BLOB) WHERE seq = 3",),
        3,
        "payload",
        "no longer the JSON",
    ),
    "edit a call's arguments": (
        ("UPDATE events SET args = CAST(REPLACE(args, 'cats', 'dogs') AS BLOB) WHERE seq = 1",),
        1,
        "args",
        "no longer match its fingerprint",
    ),
    "delete an event": (("DELETE FROM events WHERE seq = 2",), 2, "seq", "seq 2 missing"),
    "delete the first two events": (
        ("DELETE FROM events WHERE seq IN (1, 2)",),
        1,
        "seq",
        "seqs 1 to 2 missing",
    ),
    "delete the last event": (("DELETE FROM events WHERE seq = 3",), None, "seal", "removed"),
    "reorder two events": (
        (
            "UPDATE events SET seq = 100 WHERE seq = 2",
            "UPDATE events SET seq = 2 WHERE seq = 3",
            "UPDATE events SET seq = 3 WHERE seq = 100",
        ),
        2,
        "prev_hash",
        "it links to seq 3, which comes after it: events were reordered",
    ),
    "replace an event's link": (
        (f"UPDATE events SET prev_hash = '{'0' * 64}' WHERE seq = 3",),
        3,
        "prev_hash",
        "it does not link to seq 2: an event before it was removed, replaced or reordered",
    ),
    "edit the result": (
        ("UPDATE runs SET result = CAST('\"ALL FINE\"' AS BLOB)",),
        None,
        "seal",
        "outcome",
    ),
    "edit the inputs": (
        ("UPDATE runs SET inputs = CAST(REPLACE(inputs, 'cats', 'dogs') AS BLOB)",),
        None,
        "header",
        "header",
    ),
    "remove the seal": (("UPDATE runs SET seal = NULL",), None, "seal", "no seal"),
    "retime an event": (
        ("UPDATE events SET created_at = created_at - 3600 WHERE seq = 2",),
        2,
        "hash",
        "created_at",
    ),
}


@pytest.mark.parametrize("edit", sorted(TAMPERING))
def test_verify_names_the_spot_of_every_edit(db_path: Path, edit: str) -> None:
    """Each edit made with sqlite3 breaks the chain at the right seq and field."""
    record(db_path).close()
    statements, seq, field, words = TAMPERING[edit]
    tamper(db_path, *statements)
    with Journal(db_path) as journal:
        (verdict,) = journal.verify("r1")
    assert not verdict.ok and verdict.verdict == "broken", verdict
    assert verdict.broken is not None
    assert (verdict.broken.seq, verdict.broken.field) == (seq, field), verdict
    assert words in verdict.broken.detail


def test_a_rewritten_chain_passes_sha256_but_not_hmac(db_path: Path) -> None:
    """Without a key, an attacker who recomputes every hash wins; with HMAC they cannot."""

    def rewrite_result(journal_path: Path, forge: Chain) -> None:
        with Journal(journal_path) as journal:
            run = journal.run("r1")
            events = journal.events("r1")
        head = events[-1].hash
        assert head is not None
        seal = forge.seal(events[-1].seq, head, run.status, b'"FORGED"', None)
        tamper(
            journal_path, f"UPDATE runs SET result = CAST('\"FORGED\"' AS BLOB), seal = '{seal}'"
        )

    record(db_path).close()
    with Journal(db_path) as journal:
        kept = head_text(journal.head())
    rewrite_result(db_path, Chain())
    with Journal(db_path) as journal:
        (verdict,) = journal.verify("r1")
    assert verdict.broken is not None and "resealed" in verdict.broken.detail  # the head saw it
    rewrite_head(db_path, Chain())
    with Journal(db_path) as journal:
        assert journal.verify("r1")[0].ok  # the documented limit of a keyless chain...
        verdicts = journal.verify(since=kept)  # ...which a head kept elsewhere closes
    assert any(v.broken is not None and "kept head" in v.broken.detail for v in verdicts)

    signed = db_path.with_name("signed.db")
    record(signed, hmac_key="k" * 32).close()
    rewrite_result(signed, Chain())  # the attacker does not have the key
    rewrite_head(signed, Chain())
    with Journal(signed, hmac_key="k" * 32) as journal:
        verdicts = {v.run_id: v for v in journal.verify("r1")}
    verdict = verdicts["r1"]
    assert not verdict.ok and verdict.broken is not None and verdict.broken.field == "seal"
    head = verdicts["(journal head)"]  # and the head, rebuilt without the key, is not signed
    assert head.broken is not None and "not signed with this journal's key" in head.broken.detail


def rewrite_head(path: Path, forge: Chain) -> None:
    """Recompute the journal's head over the runs as they are now, as an attacker would."""
    with Journal(path) as journal:
        entries = journal.store.read_heads()
        runs = {run.run_id: run for run in journal.runs()}
        counts = {run_id: journal.store.count_events(run_id) for run_id in runs}
        last = {run_id: journal.store.last_hash(run_id) for run_id in runs}
    forged, prev = [], ZERO
    for entry in entries:
        run = runs[entry.run_id]
        if entry.reason == "finished":
            entry = replace(
                entry,
                seal=run.seal,
                status=run.status.value,
                events=counts[entry.run_id],
                last_hash=last[entry.run_id],
            )
        entry = replace(entry, prev=prev, scheme=forge.scheme)
        entry = replace(entry, hash=entry_hash(forge, entry))
        forged.append(entry)
        prev = entry.hash
    replace_heads(path, forged)


def replace_heads(path: Path, entries: list[HeadEntry]) -> None:
    """Put `entries` in place of the journal's head, with sqlite3, triggers dropped."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER heads_are_append_only_delete")
    conn.execute("DELETE FROM heads")
    conn.executemany(
        "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [entry_row(e, _ts(e.at)) for e in entries],
    )
    conn.commit()
    conn.close()


def test_hmac_runs_need_their_key(db_path: Path) -> None:
    """A signed run names the key id it needs; resuming or verifying without it is refused."""
    record(db_path, hmac_key="secret-one").close()
    with Journal(db_path, hmac_key="secret-one") as journal:
        assert journal.verify("r1")[0].sealed
        assert journal.run("r1").chain == Chain("secret-one").scheme
    with Journal(db_path) as journal:
        (verdict,) = journal.verify("r1")
    assert verdict.verdict == "key_needed" and not verdict.ok
    assert verdict.events == 0 and not verdict.sealed  # nothing could be checked
    assert Chain("secret-one").scheme.split(":")[1] in verdict.note
    assert "JOURNAL_HMAC_KEY is not set" in verdict.note

    async def interrupted() -> None:
        await search("x")
        raise KeyboardInterrupt

    signed = Journal(db_path, hmac_key="secret-one")
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(replay.run(interrupted, journal=signed, run_id="open"))
    signed.close()
    with Journal(db_path, hmac_key="secret-two") as other, pytest.raises(ChainKeyMismatch) as err:
        asyncio.run(replay.run(interrupted, journal=other, run_id="open"))
    assert "set JOURNAL_HMAC_KEY to the key the run was recorded with" in str(err.value)


def test_the_key_comes_from_the_environment(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JOURNAL_HMAC_KEY signs new runs; an empty key is refused with a fix."""
    monkeypatch.setenv("JOURNAL_HMAC_KEY", "from-env")
    record(db_path).close()
    with Journal(db_path) as journal:
        assert journal.run("r1").chain == Chain("from-env").scheme
        assert journal.verify()[0].sealed
    with pytest.raises(ValueError, match="empty HMAC key"):
        Chain(b"")


def test_tampering_is_found_in_every_run(db_path: Path) -> None:
    """verify() with no run checks them all and reports each separately."""
    journal = record(db_path, "a")
    asyncio.run(replay.run(agent, "dogs", journal=journal, run_id="b"))
    journal.close()
    tamper(db_path, "UPDATE events SET attempt = 2 WHERE run_id = 'a' AND seq = 1")
    with Journal(db_path) as journal:
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["b"].ok and not verdicts["a"].ok
    assert verdicts["a"].broken is not None and verdicts["a"].broken.seq == 1


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)))
def test_sqlite_timestamps_round_trip_to_the_microsecond(moment: datetime) -> None:
    """What the chain hashes (integer microseconds) survives the store's REAL column."""
    moment = moment.replace(tzinfo=UTC)
    assert _dt(_ts(moment)) == moment
    assert microseconds(_dt(_ts(moment))) == microseconds(moment)
    assert microseconds(moment + timedelta(microseconds=1)) == microseconds(moment) + 1


# -- what a verdict says, exactly (mutants of the reporting survived) ------------------------------


def test_a_run_removed_by_hand_is_reported_by_name(tmp_path: Path) -> None:
    from tests.test_tamper import edit_sqlite, record

    path = tmp_path / "j.db"
    record(path, "T-1")
    record(path, "T-2")
    edit_sqlite(
        path, "DELETE FROM events WHERE run_id = 'T-1'", "DELETE FROM runs WHERE run_id = 'T-1'"
    )
    with Journal(path, read_only=True) as journal:
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["T-2"].verdict == "intact"
    gone = verdicts["T-1"]
    assert gone.verdict == "broken" and gone.broken is not None
    assert "the run is missing: it was removed, not by retention" in gone.broken.detail
    assert gone.broken.field.startswith("head entry ")


@pytest.mark.parametrize("field", ["seal", "result", "error"])
def test_an_outcome_edited_into_an_unfinished_run_is_named(tmp_path: Path, field: str) -> None:
    from tests.test_tamper import edit_sqlite

    path = tmp_path / "j.db"
    with Journal(path) as journal:
        replay.submit(queued_work, 1, journal=journal, run_id="q")
    value = "'x'" if field == "seal" else "x'7b7d'"
    edit_sqlite(path, f"UPDATE runs SET {field} = {value} WHERE run_id = 'q'")
    with Journal(path, read_only=True) as journal:
        (verdict,) = journal.verify("q")
    assert verdict.verdict == "broken" and verdict.broken is not None
    assert (verdict.broken.seq, verdict.broken.field) == (None, field)
    assert verdict.events == 0


async def queued_work(n: int) -> int:
    return n


def test_a_run_recorded_before_chains_verifies_as_unchained(tmp_path: Path) -> None:
    """A run whose events carry no hashes (written before journals were chained) is
    `unchained`, with no seal: not broken."""
    from journal import MemoryStore
    from tests.factories import make_event, make_owner, make_run

    journal = Journal(store=MemoryStore())
    store = journal.store
    store.create_run(make_run("old"))  # no `chain`: as such a version wrote it
    store.claim("old", make_owner("t"), resuming=False)
    store.append("old", "t", [make_event(1, run_id="old"), make_event(2, run_id="old")])
    (verdict,) = journal.verify("old")
    assert (verdict.verdict, verdict.events, verdict.sealed) == ("unchained", 0, False)
    assert "did not chain events" in verdict.note


def test_a_removed_tail_names_the_last_seq_left(tmp_path: Path) -> None:
    from tests.test_tamper import edit_sqlite, record

    path = tmp_path / "j.db"
    record(path, "T-1")
    with Journal(path, read_only=True) as journal:
        last = len(journal.events("T-1"))
    edit_sqlite(path, f"DELETE FROM events WHERE run_id = 'T-1' AND seq = {last}")
    with Journal(path, read_only=True) as journal:
        (verdict,) = journal.verify("T-1")
    assert verdict.broken is not None and verdict.broken.field == "seal"
    assert f"events after seq {last - 1} were removed" in verdict.broken.detail


def test_a_head_signed_with_a_key_this_process_lacks_says_which(db_path: Path) -> None:
    """Every run removed by retention (with the key): what is left is the signed head, and
    verify without the key says that its entries need a key, naming it; with it, intact."""
    key = "secret-one"
    with record(db_path, hmac_key=key) as journal:
        assert [r.run_id for r in journal.gc(keep_last=0, statuses=["completed"])] == ["r1"]
        entries = len(journal.store.read_heads())
        assert all(v.ok for v in journal.verify())
    with Journal(db_path) as journal:
        (head,) = journal.verify()
    assert (head.run_id, head.verdict, head.events, head.sealed) == (
        "(journal head)",
        "key_needed",
        entries,
        False,
    )
    assert f"signed with {Chain(key).scheme}, and this process has sha256" in head.note
    assert "set JOURNAL_HMAC_KEY to that key" in head.note


async def no_steps(topic: str) -> str:
    return topic


def test_runs_with_no_events_verify(db_path: Path) -> None:
    """A submitted run no process has started, and a run that finished without a step: no
    events, their headers bound by the head, which counts none."""
    with Journal(db_path) as journal:
        replay.submit(agent, "owls", journal=journal, run_id="later")
        assert asyncio.run(replay.run(no_steps, "bats", journal=journal, run_id="bare")) == "bats"
        assert journal.events("later") == [] and journal.events("bare") == []
        verdicts = {v.run_id: v for v in journal.verify()}
    assert verdicts["later"].verdict == "intact" and verdicts["later"].events == 0
    assert verdicts["bare"].verdict == "intact" and verdicts["bare"].sealed
