"""Recomputing a run's hash chain and naming the first link that no longer holds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import orjson

from ._chain import HMAC_KEY_ENV, Chain, describe_mismatch
from ._codec import canonical_json, fingerprint
from ._events import Event, EventStatus, Run, RunStatus
from ._heads import HeadEntry, RunState, check_chain, check_runs, genesis_of
from .stores._damage import damage_of
from .stores._protocol import JournalStore

Verdict = Literal["intact", "broken", "unchained", "key_needed"]
_FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
_PLAIN = Chain()
HEAD_ROW = "(journal head)"
"""The run id under which `verify_journal` reports what is wrong with the head itself."""


@dataclass(frozen=True)
class Break:
    """The first place a run's chain fails: where, which field, and what that means."""

    seq: int | None
    """The event's seq, or None for the run itself (its header or its seal)."""
    field: str
    """`header` (the run's), `seq`, `prev_hash`, `hash`, one of the event's own fields when it
    can be told (`payload`, `args`), or `seal`."""
    detail: str


@dataclass(frozen=True)
class RunVerification:
    """The outcome of checking one run's chain."""

    run_id: str
    verdict: Verdict
    events: int
    """Events checked."""
    sealed: bool
    """The run is finished and its seal (outcome and last event) checked out."""
    broken: Break | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Nothing was found edited. An unchained run is not proof of anything, but not broken."""
        return self.verdict in ("intact", "unchained")

    def describe(self) -> str:
        """The verdict in words, without the run id."""
        if self.verdict == "intact":
            sealed = "sealed" if self.sealed else "not finished, so not sealed yet"
            return f"intact ({self.events} events, {sealed})"
        if self.verdict == "broken" and self.broken is not None:
            where = "run" if self.broken.seq is None else f"seq {self.broken.seq}"
            return f"BROKEN at {where}, field {self.broken.field}: {self.broken.detail}"
        return f"{self.verdict.replace('_', ' ')}: {self.note}"

    def __str__(self) -> str:
        return f"{self.run_id}: {self.describe()}"


_ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def broken_at(run_id: str, where: str, detail: str, events: int = 0) -> RunVerification:
    """A run (or the head's row) found edited, at `where` (a field, or a head entry) rather
    than at an event's seq."""
    return RunVerification(run_id, "broken", events, False, Break(None, where, detail))


@dataclass(frozen=True)
class Checked:
    """Where an intact prefix of a run's chain ends: its last seq and hash, so that a check of
    the events after it need not read the prefix again (a live page following a long run)."""

    seq: int
    hash: str
    events: int
    """Events checked in the prefix."""


def verify_run(
    chain: Chain, run: Run, events: Iterable[Event], *, after: Checked | None = None
) -> RunVerification:
    """Recompute `run`'s chain over `events` (in seq order, read once) and its seal.

    With `after`, `events` are those after a prefix found intact (ending at `after`); a link back
    into the prefix is reported as a plain break, without the seq it links to."""
    damage = damage_of(run)
    if damage is not None:
        return RunVerification(run.run_id, "broken", 0, False, _damaged(None, damage))
    if run.status not in _ENDED and (
        run.result is not None or run.error is not None or run.seal is not None
    ):
        field = "seal" if run.seal is not None else "result" if run.result is not None else "error"
        return broken_at(
            run.run_id,
            field,
            f"the run is {run.status.value} and holds a {field}, which only a finished run "
            "has: it was edited in",
        )
    if run.chain is None:
        first = next(iter(events), None)
        if first is not None and (first.hash is not None or first.prev_hash is not None):
            return broken_at(
                run.run_id,
                "chain",
                "the run says it is not chained, and its events carry hashes: its chain "
                "scheme was removed",
            )
        return RunVerification(
            run.run_id,
            "unchained",
            0,
            False,
            note="recorded by a version of journal-replay that did not chain events",
        )
    if run.chain == "sha256":
        chain = _PLAIN  # a plain chain needs no key, whichever this process holds
    if run.chain != chain.scheme:
        return RunVerification(
            run.run_id,
            "key_needed",
            0,
            False,
            note=describe_mismatch(run.run_id, run.chain, chain.scheme),
        )
    expected_prev = chain.genesis(run) if after is None else after.hash
    expected_seq = 1 if after is None else after.seq + 1
    seen: dict[str, int] = {}
    count = 0 if after is None else after.events
    stream = iter(events)
    for event in stream:
        count += 1
        damage = damage_of(event)
        if damage is not None:
            return RunVerification(run.run_id, "broken", count, False, _damaged(event.seq, damage))
        broken = _check_event(chain, event, expected_seq, expected_prev, seen)
        if broken is not None:
            if broken.field == "prev_hash" and event.prev_hash not in seen:
                broken = _look_ahead(broken, event, stream)
            return RunVerification(run.run_id, "broken", count, False, broken)
        assert event.hash is not None
        seen[event.hash] = event.seq
        expected_prev = event.hash
        expected_seq += 1
    if run.status not in _FINISHED:
        return RunVerification(run.run_id, "intact", count, False)
    if run.seal is None:
        detail = f"the run is {run.status.value} but has no seal: it was removed"
        return broken_at(run.run_id, "seal", detail, count)
    seal = chain.seal(expected_seq - 1, expected_prev, run.status, run.result, run.error)
    if seal != run.seal:
        return broken_at(
            run.run_id,
            "seal",
            f"the run's outcome (status {run.status.value}, result, error) or its last events "
            f"no longer match its seal: the outcome was edited, or events after seq "
            f"{expected_seq - 1} were removed",
            count,
        )
    return RunVerification(run.run_id, "intact", count, True)


def _check_event(
    chain: Chain, event: Event, expected_seq: int, expected_prev: str, seen: dict[str, int]
) -> Break | None:
    if event.seq != expected_seq:
        if event.seq > expected_seq:
            missing = (
                f"seq {expected_seq}"
                if event.seq == expected_seq + 1
                else f"seqs {expected_seq} to {event.seq - 1}"
            )
            return Break(expected_seq, "seq", f"{missing} missing: removed from the journal")
        return Break(
            event.seq, "seq", f"seq {event.seq} appears again after seq {expected_seq - 1}"
        )
    if event.hash is None or event.prev_hash is None:
        return Break(event.seq, "hash", "the event has no hash: it was inserted by hand")
    if event.prev_hash != expected_prev:
        if expected_seq == 1:
            return Break(
                None,
                "header",
                "the run's header (workflow, inputs, parent, start time, version) no longer "
                "matches the genesis hash its first event links to: it was edited",
            )
        if event.prev_hash in seen:
            return Break(
                event.seq,
                "prev_hash",
                f"it links to seq {seen[event.prev_hash]}, not to seq {event.seq - 1}: events "
                "were reordered",
            )
        return Break(
            event.seq,
            "prev_hash",
            f"it does not link to seq {event.seq - 1}: an event before it was removed, "
            "replaced or reordered",
        )
    if chain.link(event.prev_hash, event) != event.hash:
        field, detail = _edited_field(event)
        return Break(event.seq, field, detail)
    return None


def _damaged(seq: int | None, damage: tuple[str, str]) -> Break:
    field, what = damage
    return Break(seq, field, f"its {field} was edited: {what}")


def _look_ahead(broken: Break, event: Event, rest: Iterable[Event]) -> Break:
    """A link to an event further on means the two were swapped: say so, it is the finding."""
    for later in rest:
        if later.hash == event.prev_hash:
            return Break(
                event.seq,
                "prev_hash",
                f"it links to seq {later.seq}, which comes after it: events were reordered",
            )
    return broken


def _edited_field(event: Event) -> tuple[str, str]:
    """Which field of an event whose hash fails was edited, as far as the event itself tells."""
    for name, value in (("payload", event.payload), ("args", event.args)):
        if value is not None:
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                return name, f"its {name} is no longer the JSON that was recorded (bytes edited)"
    call = event.payload if event.status is EventStatus.STARTED else event.args
    if call is not None and event.kind.value != "fork":
        recorded = orjson.loads(call)
        if not isinstance(recorded, dict):
            field = "payload" if event.status is EventStatus.STARTED else "args"
            return field, f"its {field} is no longer the call record that was written"
        arguments = recorded.get("args")
        if fingerprint(event.name, canonical_json(arguments)) != event.fingerprint:
            return "args", "its arguments or name no longer match its fingerprint: they were edited"
    return (
        "hash",
        "its contents no longer match its hash: one of key, kind, name, status, attempt, "
        "created_at, payload or the hash itself was edited",
    )


class HeadCheck:
    """The journal's head checked against runs read one after the other (from a store, or
    from an export, streamed): `tap` each run's events as they are verified, then `results`."""

    def __init__(self, chain: Chain, entries: list[HeadEntry]) -> None:
        self.chain = chain
        self.entries = entries
        self.needed: dict[str, set[int]] = {}
        for entry in entries:
            self.needed.setdefault(entry.run_id, set()).add(entry.events)
        self.states: dict[str, RunState] = {}
        self.duplicates: set[str] = set()
        """Run ids met twice: two rows (or records) for one run, one of them forged."""

    def verify(self, run: Run, events: Iterable[Event]) -> RunVerification:
        """`verify_run`, noting what the head needs of the run's events (all are read)."""
        want = self.needed.get(run.run_id, set())
        hashes: dict[int, str] = {}
        last = 0

        def tap() -> Iterator[Event]:
            nonlocal last
            for event in events:
                if event.seq in want and event.hash is not None:
                    hashes[event.seq] = event.hash
                last = max(last, event.seq)
                yield event

        tapped = tap()
        verdict = verify_run(self.chain, run, tapped)
        for _ in tapped:
            pass  # the rest too: a run verify could not check still has the head's hashes
        if run.run_id in self.states:
            self.duplicates.add(run.run_id)
        genesis = None
        if damage_of(run) is None:
            genesis = genesis_of(self.chain, run) or genesis_of(_PLAIN, run)
        self.states[run.run_id] = RunState(
            run.status.value, last, hashes, run.seal, run.chain, genesis
        )
        return verdict

    def results(
        self,
        verdicts: list[RunVerification],
        since: tuple[int, str] | None,
        *,
        every_run: bool,
    ) -> list[RunVerification]:
        """`verdicts` with what the head finds folded in, and rows for the head itself.
        `every_run`: the runs verified are all there are (not one run, not an export of some),
        so a run the head lacks, or one it has that is gone, is an edit too."""
        chains = {self.chain.scheme: self.chain, _PLAIN.scheme: _PLAIN}
        keyed = self.chain.scheme if self.chain.scheme != _PLAIN.scheme else None
        problems, _, missing = check_chain(chains, self.entries, since, keyed)
        entries = self.entries
        if not every_run:
            entries = [e for e in entries if e.run_id in self.states]
        problems += check_runs(entries, self.states)
        by_run = {v.run_id: v for v in verdicts}
        for run_id in self.duplicates:
            by_run[run_id] = broken_at(
                run_id,
                "run_id",
                "the run appears twice (two rows for one id): one is forged, and a reader may "
                "meet either",
            )
        extra: list[RunVerification] = []
        for problem in problems:
            where = "head" if problem.n is None else f"head entry {problem.n}"
            if problem.run_id is None:
                extra.append(broken_at(HEAD_ROW, where, problem.detail))
                continue
            found = by_run.get(problem.run_id)
            if found is None:
                extra.append(broken_at(problem.run_id, where, problem.detail))
            elif found.verdict != "broken":
                by_run[problem.run_id] = broken_at(
                    found.run_id, where, problem.detail, found.events
                )
        if missing and not problems and all(v.verdict != "key_needed" for v in by_run.values()):
            extra.append(
                RunVerification(
                    HEAD_ROW,
                    "key_needed",
                    len(self.entries),
                    False,
                    note="entries of the head are signed with "
                    + ", ".join(sorted(missing))
                    + f", and this process has {self.chain.scheme}. Fix: set {HMAC_KEY_ENV} to "
                    "that key.",
                )
            )
        return [*by_run.values(), *extra]


def _without_head(
    chain: Chain, store: JournalStore, runs: list[Run], since: tuple[int, str] | None
) -> list[RunVerification]:
    """A journal from before the head, read as it is: each run by its own chain; the head's
    row says there is none (broken if a kept head says there was one)."""
    verdicts = [verify_run(chain, run, store.read_events(run.run_id)) for run in runs]
    if since is not None and since[0] > 0:
        head = broken_at(
            HEAD_ROW,
            "head",
            f"the kept head is entry {since[0]}, and the journal has no head at all: it was "
            "removed",
        )
    else:
        head = RunVerification(
            HEAD_ROW,
            "unchained",
            0,
            False,
            note="the journal is from before the head (its runs are checked by their own "
            "chains only); a writer opening it upgrades it and starts its head",
        )
    return [*verdicts, head]


def verify_journal(
    chain: Chain,
    store: JournalStore,
    runs: list[Run],
    since: tuple[int, str] | None = None,
    *,
    every_run: bool = True,
) -> list[RunVerification]:
    """Verify `runs` (each one's chain and seal), and the journal's head against them: every
    run it knows still holds the states it recorded, and its last entry's outcome. With
    `since` (a head kept elsewhere), also that the head still holds that entry unchanged."""
    if not getattr(store, "has_head", True):
        return _without_head(chain, store, runs, since)
    check = HeadCheck(chain, store.read_heads())
    verdicts = []
    for run in runs:
        events = store.read_events(run.run_id)
        verdict = check.verify(run, events)
        hidden = store.count_events(run.run_id) - len(events)
        if hidden and verdict.verdict != "broken":  # rows at seq 0 or below: no reader sees them
            verdict = broken_at(
                run.run_id,
                "seq",
                f"{hidden} event rows lie outside the run's sequence (seq below 1), where no "
                "reader looks: they were put there by hand",
                verdict.events,
            )
        verdicts.append(verdict)
    return check.results(verdicts, since, every_run=every_run)
