"""The journal's head: one hash chain over the states of all its runs.

A run's own chain proves its events were not edited, but nothing inside a run can prove that
the run still exists, that it has not been cut short, or that its status was not set back
(a finished run made `running` again, its seal cleared and its last events removed). The head
binds those. Every time a run is created, suspended, finished or removed by retention, an
entry is appended to one journal-wide chain, in the same transaction::

    hash[n] = MAC(b"journal-replay/head/v1" + hash[n-1] + fields(entry n))   hash[0] = 64 zeros

An entry holds the run's id, why it was written, the run's status, how many events it had, the
hash of the last of them, its seal and its chain scheme. The head is `n:hash[n]` of the last
entry: kept somewhere else (a ticket, a log, another machine), it proves that nothing recorded
up to it was removed or rewritten (`journal verify --since HEAD`). MAC is the journal's chain:
HMAC-SHA-256 with `JOURNAL_HMAC_KEY`, so that without the key no entry can be forged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ._chain import Chain, microseconds

Reason = Literal["created", "suspended", "finished", "removed", "adopted", "forked", "reopened"]
"""Why an entry was written. `adopted`: the run existed before the journal kept a head;
`forked`: a fork's copied events are in place (before it is ever resumed); `reopened`: a
failed run is retried in place, its failure kept in the marker event appended with it."""

ZERO = "0" * 64
"""The hash entry 1 links to."""


@dataclass(frozen=True)
class HeadEntry:
    """One entry of the journal's head chain: a run's state at one moment."""

    n: int
    run_id: str
    reason: Reason
    status: str
    events: int
    """How many events the run had."""
    last_hash: str | None
    """The hash of its last event; before it has any, its genesis (the hash of its header:
    workflow, inputs, parent, start), so that a run not started yet is bound too. None
    without a chain."""
    seal: str | None
    run_chain: str | None
    """The run's chain scheme (`sha256`, `hmac-sha256:<key id>`, or None)."""
    at: datetime
    scheme: str
    """This entry's own MAC: the chain scheme of the process that wrote it."""
    prev: str
    hash: str
    damage: str | None = None
    """What is wrong with an entry read from edited storage (not part of its hash)."""

    def fields(self) -> bytes:
        return orjson.dumps(
            [
                self.n,
                self.run_id,
                self.reason,
                self.status,
                self.events,
                self.last_hash,
                self.seal,
                self.run_chain,
                microseconds(self.at),
            ]
        )


def next_entry(
    chain: Chain,
    run_id: str,
    reason: Reason,
    run: tuple[Any, Any, Any],
    last: tuple[Any, Any] | None,
    top: tuple[Any, Any] | None,
    genesis: str | None = None,
) -> HeadEntry:
    """The entry a store appends for `run_id` now, hashed with `chain`: `run` is the run's
    `(status, seal, chain)`, `last` its last event's `(seq, hash)`, `top` the head's last
    entry's `(n, hash)`; the store reads them inside the transaction that appends."""
    entry = HeadEntry(
        n=top[0] + 1 if top else 1,
        run_id=run_id,
        reason=reason,
        status=str(run[0]),
        events=int(last[0]) if last else 0,
        last_hash=last[1] if last else genesis,
        seal=run[1],
        run_chain=run[2],
        at=datetime.now(UTC),
        scheme=chain.scheme,
        prev=top[1] if top else ZERO,
        hash="",
    )
    return replace(entry, hash=entry_hash(chain, entry))


def genesis_of(chain: Chain, run: Any) -> str | None:
    """The run's genesis hash, if `chain` is the run's own (else it cannot be computed)."""
    return chain.genesis(run) if run.chain == chain.scheme else None


def entry_row(entry: HeadEntry, at: Any) -> tuple[Any, ...]:
    """The entry as the SQL stores' `heads` columns hold it (`at` in the store's own type)."""
    return (
        entry.n,
        entry.run_id,
        entry.reason,
        entry.status,
        entry.events,
        entry.last_hash,
        entry.seal,
        entry.run_chain,
        at,
        entry.scheme,
        entry.prev,
        entry.hash,
    )


def entry_hash(chain: Chain, entry: HeadEntry) -> str:
    return chain.mac(b"journal-replay/head/v1" + entry.prev.encode() + entry.fields())


def head_text(entry: HeadEntry | None) -> str:
    """The head as users keep it: `n:hash`."""
    return "0:" + ZERO if entry is None else f"{entry.n}:{entry.hash}"


def parse_head(text: str) -> tuple[int, str]:
    """`n:hash` back to its parts; ValueError with the expected form otherwise."""
    number, _, digest = text.strip().partition(":")
    if (
        not number.isdigit()
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(
            f"{text!r} is not a journal head. Expected N:HASH as `journal head` prints it, "
            "e.g. 42:3f2a...(64 hex characters)."
        )
    return int(number), digest


@dataclass(frozen=True)
class RunState:
    """What the journal holds for one run now, as the head's entries are checked against it."""

    status: str
    events: int
    hashes: Mapping[int, str]
    """seq -> hash of the events (enough to check each entry's `last_hash`)."""
    seal: str | None
    chain: str | None
    genesis: str | None = None
    """The hash of the run's header, if the verifier can compute it (its chain's key)."""


@dataclass(frozen=True)
class HeadProblem:
    """A place where the head and the journal disagree."""

    n: int | None
    """The entry, or None for a run the head does not know."""
    run_id: str | None
    detail: str


def check_chain(
    chains: Mapping[str, Chain],
    entries: Iterable[HeadEntry],
    since: tuple[int, str] | None,
    signed_by: str | None = None,
) -> tuple[list[HeadProblem], list[HeadEntry], set[str]]:
    """Check that the entries link and that each one's MAC holds (with the chain of its scheme,
    if it is in `chains`); and that entry `since[0]` has hash `since[1]`. `signed_by`: the
    scheme of the key the verifier holds: every entry must be signed with it (an attacker
    without the key could otherwise rewrite the head with plain SHA-256).

    Returns the problems, the entries read, and the schemes whose key was missing."""
    problems: list[HeadProblem] = []
    read: list[HeadEntry] = []
    missing: set[str] = set()
    prev, expected = ZERO, 1
    for entry in entries:
        read.append(entry)
        if entry.n != expected:
            gap = (
                f"entry {expected}"
                if entry.n == expected + 1
                else f"entries {expected}-{entry.n - 1}"
            )
            problems.append(HeadProblem(expected, None, f"{gap} of the head removed"))
            return problems, read, missing
        if entry.prev != prev:
            problems.append(
                HeadProblem(
                    entry.n,
                    None,
                    f"entry {entry.n} (run {entry.run_id!r}) does not link to entry "
                    f"{entry.n - 1}: an entry before it was removed or replaced",
                )
            )
            return problems, read, missing
        if entry.damage is not None:
            problems.append(
                HeadProblem(entry.n, None, f"entry {entry.n} was edited: {entry.damage}")
            )
            return problems, read, missing
        if signed_by is not None and entry.scheme != signed_by:
            problems.append(
                HeadProblem(
                    entry.n,
                    None,
                    f"entry {entry.n} (run {entry.run_id!r}) is not signed with this journal's "
                    f"key ({signed_by}) but with {entry.scheme}: a signed journal's head takes "
                    "only signed entries, so it was written without the key",
                )
            )
            return problems, read, missing
        if (
            entry.run_chain is not None
            and entry.run_chain.startswith("hmac")
            and (entry.scheme != entry.run_chain)
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    None,
                    f"entry {entry.n} is for run {entry.run_id!r}, signed with "
                    f"{entry.run_chain}, but the entry itself is not: it was written without "
                    "that key",
                )
            )
            return problems, read, missing
        chain = chains.get(entry.scheme)
        if chain is None:
            missing.add(entry.scheme)
        elif entry_hash(chain, entry) != entry.hash:
            problems.append(
                HeadProblem(
                    entry.n,
                    None,
                    f"entry {entry.n} (run {entry.run_id!r}) no longer matches its hash: the "
                    "entry was edited",
                )
            )
            return problems, read, missing
        prev, expected = entry.hash, expected + 1
    if since is not None:
        number, digest = since
        if number > len(read):
            problems.append(
                HeadProblem(
                    number,
                    None,
                    f"the kept head is entry {number}, and the journal's head has only "
                    f"{len(read)} entries: entries after {len(read)} were removed",
                )
            )
        elif number > 0 and read[number - 1].hash != digest:
            problems.append(
                HeadProblem(
                    number,
                    None,
                    f"entry {number}'s hash is not the kept head's: entries up to it were "
                    "rewritten",
                )
            )
    return problems, read, missing


def check_runs(entries: Iterable[HeadEntry], runs: Mapping[str, RunState]) -> list[HeadProblem]:
    """Each run against the head: it is known to the head, it still holds every state an entry
    recorded (its events up to that count, unchanged), and its last entry's status, seal and
    chain scheme are its own."""
    problems: list[HeadProblem] = []
    entries = list(entries)
    # A run id used again after retention removed its run starts a new life: the entries of
    # the old one are checked among themselves, never against the new run.
    last_life: dict[str, int] = {}
    removed: set[str] = set()
    for entry in entries:
        if entry.reason == "removed":
            removed.add(entry.run_id)
        elif entry.reason == "created" and entry.run_id in removed:
            last_life[entry.run_id] = entry.n
            removed.discard(entry.run_id)
    latest: dict[str, HeadEntry] = {}
    first: dict[str, HeadEntry] = {}
    for entry in entries:
        if entry.n == last_life.get(entry.run_id):
            latest.pop(entry.run_id, None)
            first.pop(entry.run_id, None)
        state = runs.get(entry.run_id)
        if entry.n < last_life.get(entry.run_id, 0):
            state = None  # an earlier life's run: gone, as its removal entry says
        before = latest.get(entry.run_id)
        begun = first.setdefault(entry.run_id, entry)
        if entry.run_chain != begun.run_chain:
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"the run was chained with {begun.run_chain} (entry {begun.n}) and is "
                    f"{entry.run_chain} here: its chain scheme was changed",
                )
            )
        if before is None and entry.reason not in ("created", "adopted"):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"the head's first entry for the run says {entry.reason}, not created: "
                    "the run's row was put in the journal by hand (before the run started)",
                )
            )
        if (
            before is not None
            and before.reason in ("finished", "adopted")
            and before.status in _FINISHED
            and entry.reason not in ("reopened", "removed")
            and not _same_end(before, entry)
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"the run had finished {before.status} (entry {before.n}) and is "
                    f"{entry.reason} here: it was set back and run again",
                )
            )
        if entry.reason == "reopened" and (
            before is None
            or before.reason not in ("finished", "adopted")
            or before.status != "failed"
            or entry.events <= before.events
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    "the run was reopened here, but it had not failed before (or no retry "
                    "marker was appended): a finished run was set back",
                )
            )
        if entry.reason == "removed" and before is not None and _removal_differs(before, entry):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"the run's removal does not match its last state ({before.reason}, "
                    f"{before.status}, {before.events} events, its seal): the run was edited "
                    "before it was removed, or the removal was not made by retention",
                )
            )
        if entry.reason == "removed" or state is None:
            latest[entry.run_id] = entry
            continue  # judged below, by its latest entry
        if entry.events > state.events:
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"the run had {entry.events} events here and has {state.events} now: "
                    "events were removed",
                )
            )
        elif (
            not entry.events
            and entry.last_hash is not None
            and state.genesis is not None
            and state.genesis != entry.last_hash
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    "the run's header (workflow, inputs, parent, start time, version) is not "
                    "the one recorded here: it was edited",
                )
            )
        elif (
            entry.events
            and entry.last_hash is not None
            and state.hashes.get(entry.events) != entry.last_hash
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    entry.run_id,
                    f"event {entry.events} is not the one recorded here: the run's events "
                    "were rewritten",
                )
            )
        latest[entry.run_id] = entry
    for run_id, entry in latest.items():
        state = runs.get(run_id)
        if entry.reason == "removed":
            if state is not None:
                problems.append(
                    HeadProblem(entry.n, run_id, "the run was removed here, and is back")
                )
            continue
        if state is None:
            problems.append(
                HeadProblem(entry.n, run_id, "the run is missing: it was removed, not by retention")
            )
            continue
        if state.status in _FINISHED and not (
            entry.reason in ("finished", "adopted") and entry.status == state.status
        ):
            problems.append(
                HeadProblem(
                    entry.n,
                    run_id,
                    f"the run is {state.status}, and the head's last entry for it says "
                    f"{entry.status} ({entry.reason}): its status was rewritten",
                )
            )
            continue
        if entry.run_chain != state.chain:
            problems.append(
                HeadProblem(
                    entry.n,
                    run_id,
                    f"the run's chain scheme was {entry.run_chain} and is now {state.chain}: "
                    "it was changed",
                )
            )
        elif entry.reason in ("finished", "adopted") and entry.status in _FINISHED:
            if state.status != entry.status:
                problems.append(
                    HeadProblem(
                        entry.n,
                        run_id,
                        f"the run finished {entry.status} here and is {state.status} now: its "
                        "status was set back",
                    )
                )
            elif state.seal != entry.seal:
                problems.append(
                    HeadProblem(
                        entry.n,
                        run_id,
                        "the run's seal is not the one recorded here: its outcome (status, "
                        "result, error or last events) was rewritten and resealed",
                    )
                )
            elif state.events != entry.events:
                problems.append(
                    HeadProblem(
                        entry.n,
                        run_id,
                        f"the run finished with {entry.events} events and has {state.events}",
                    )
                )
    for run_id in runs.keys() - latest.keys():
        problems.append(
            HeadProblem(None, run_id, "the head has no entry for this run: it was added by hand")
        )
    return problems


_FINISHED = ("completed", "failed", "cancelled")


def _same_end(before: HeadEntry, entry: HeadEntry) -> bool:
    """A run finished again exactly as it had (a worker that claimed it as another finished
    it served every step and sealed the same outcome): not a rewrite."""
    return (
        entry.reason == "finished"
        and entry.status == before.status
        and entry.seal == before.seal
        and entry.events == before.events
        and entry.last_hash == before.last_hash
    )


def _removal_differs(before: HeadEntry, removal: HeadEntry) -> bool:
    """A removal by retention removes the run as the head last saw it: the same status, seal
    and events; and a finished run only once the head saw it finish."""
    if before.run_chain != removal.run_chain:
        return True
    if removal.status in _FINISHED or before.status in _FINISHED:
        return (
            before.reason not in ("finished", "adopted")
            or before.status != removal.status
            or before.seal != removal.seal
            or before.events != removal.events
        )
    # An unfinished run may have grown (and been claimed: waiting -> running) since.
    return before.seal != removal.seal or before.events > removal.events
