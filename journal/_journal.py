"""`Journal`: the handle users open, by path or URL, over any store."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

from ._chain import Chain
from ._codec import canonical_json
from ._config import DEFAULT_URL, load_config
from ._diff import RunDiff, diff_runs
from ._errors import JournalUnavailable, PayloadTooLarge, RunFinished, RunNotFound
from ._events import Event, Run, RunStatus
from ._export import ExportFormat, verify_export, write_export
from ._fork import fork_run
from ._heads import HeadEntry, parse_head
from ._inspect import Prices, RunDigest, TimelineEntry, digest, parse_since, timeline
from ._log import get_logger
from ._redact import SALT_NAME, Redaction, Redactor, new_salt
from ._retention import select_for_removal
from ._verify import HEAD_ROW, RunVerification, verify_journal
from .stores import JournalStore, MemoryStore, SQLiteStore
from .stores._ownership import owner_is_gone
from .stores._sqlite import Durability

log = get_logger("journal")

DEFAULT_PATH = Path(DEFAULT_URL)
_DEFAULT_REDACTION = Redaction()
STORE_ENTRY_POINTS = "journal.stores"
"""Third-party stores register here: name = URL scheme, value = a callable taking the URL."""


def open_store(
    url: str | os.PathLike[str] | None,
    durability: Durability,
    *,
    read_only: bool = False,
    head_chain: Chain | None = None,
) -> JournalStore:
    """The store a path or URL names: a file path, `sqlite:///path`, `memory://`,
    `postgresql://user@host/db?schema=name` (the `postgres` extra), or a scheme a package
    registered in the `journal.stores` entry-point group. None: the configured URL."""
    if url is None:
        url = load_config().url
    text = os.fspath(url)
    if text.startswith("sqlite://"):
        path = text.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise JournalUnavailable(
                f"{text!r} is not a valid SQLite URL. Use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (three slashes, then the path), or a plain path."
            )
        return SQLiteStore(
            path[1:] or DEFAULT_PATH,
            durability=durability,
            read_only=read_only,
            head_chain=head_chain,
        )
    if text.startswith("memory:"):
        return MemoryStore()
    if text.startswith(("postgresql:", "postgres:")):
        from .stores._postgres import PostgresStore

        return PostgresStore.from_url(text, read_only=read_only, head_chain=head_chain)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        for entry in entry_points(group=STORE_ENTRY_POINTS, name=scheme):
            store: JournalStore = entry.load()(text)
            return store
        raise JournalUnavailable(
            f"Unknown journal URL scheme {scheme!r} in {text!r}. Expected a file path, "
            "sqlite:///path.db, memory://, postgresql://user@host/db, or a scheme an installed "
            f"package registers in the {STORE_ENTRY_POINTS!r} entry-point group."
        )
    return SQLiteStore(text, durability=durability, read_only=read_only, head_chain=head_chain)


ENGINE_SIGNALS = "replay."
"""Signal names the replay engine keeps for itself: never sent through `Journal.signal`."""


class Journal:
    """An append-only journal of workflow runs.

    >>> j = Journal("runs.db")            # or "sqlite:///runs.db"; default .journal/journal.db
    >>> j = Journal(store=MemoryStore())  # in tests

    Arguments left out come from the configuration (`JOURNAL_URL` and friends, `journal.toml`,
    `[tool.journal]` in pyproject.toml; see `journal._config`), then the defaults.
    `durability="full"` makes every commit survive power loss (an fsync per commit); the
    default "normal" survives any process crash, including `kill -9`. `hmac_key` (default:
    the `JOURNAL_HMAC_KEY` environment variable) turns each run's hash chain into a signature.
    `redaction` says which values are secrets, replaced before anything is written (default:
    `Redaction()`, values under keys like authorization, api_key, password, token, cookie);
    `None` turns redaction off. `max_payload_bytes` caps one event's payload (default 10 MB):
    a bigger value is refused with an error naming the step, and nothing is written for it.
    `read_only=True` opens an existing journal to read (verify, export, replay, serve finished
    runs): nothing is written, not even the schema, and a missing journal is an error.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        store: JournalStore | None = None,
        durability: Durability | None = None,
        hmac_key: str | bytes | None = None,
        redaction: Redaction | None = _DEFAULT_REDACTION,
        max_payload_bytes: int | None = None,
        read_only: bool = False,
    ) -> None:
        if store is not None and url is not None:
            raise ValueError("Pass either a url/path or a store to Journal(), not both.")
        settings = load_config()
        if max_payload_bytes is None:
            max_payload_bytes = settings.max_payload_bytes
        if durability is None:
            durability = "full" if settings.durability == "full" else "normal"
        if max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be positive, not {max_payload_bytes}")
        self.settings = settings
        """The configuration in force (see `journal._config`): retention for `gc`, sources."""
        self.redaction = redaction
        self.max_payload_bytes = max_payload_bytes
        self._redactor: Redactor | None = None
        self.chain = Chain(hmac_key) if hmac_key is not None else Chain.from_env()
        if store is None:
            store = open_store(  # the chain at once: an upgrade adopts its runs in one go
                settings.url if url is None else url,
                durability,
                read_only=read_only,
                head_chain=self.chain,
            )
        self.store: JournalStore = store
        store.head_chain = self.chain
        store.adopt_runs()

    def redactor(self) -> Redactor | None:
        """The redaction policy bound to this journal's secret salt (None if redaction is off)."""
        if self.redaction is None:
            return None
        if self._redactor is None:
            self._redactor = self.redaction.bind(self.store.secret(SALT_NAME, new_salt))
        return self._redactor

    def run(self, run_id: str) -> Run:
        """The run named `run_id`; `RunNotFound` if there is none."""
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id, hint=self._nearest_hint(run_id))
        return run

    def runs(
        self,
        *,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first."""
        return self.store.list_runs(
            status=None if status is None else RunStatus(status), workflow=workflow, limit=limit
        )

    def interrupted(self, *, workflow: str | None = None) -> list[Run]:
        """Runs that need resuming: `running`, with no live owner (it crashed, was killed, or
        its lease ran out). Newest first; `journal runs --status interrupted`."""
        now = datetime.now(UTC)
        return [
            run
            for run in self.store.list_runs(status=RunStatus.RUNNING, workflow=workflow)
            if run.owner is None or owner_is_gone(run.owner, now)
        ]

    def due(self) -> list[Run]:
        """`waiting` runs whose time has come: a sleep ended, a signal arrived or timed out."""
        return self.store.list_due(datetime.now(UTC))

    def signal(self, run_id: str, name: str, value: Any) -> int:
        """Send `value` (JSON) as signal `name` to the run; its number among that name's values.

        A run waiting for it becomes due now; a run that has not asked yet gets it when it
        does (nothing sent is lost), and so does a failed run once retried. A completed or
        cancelled run never asks again: `RunFinished`. The value is redacted and size-checked
        like any payload.
        """
        if name.startswith(ENGINE_SIGNALS):
            raise ValueError(
                f"signal name {name!r} starts with {ENGINE_SIGNALS!r}, which the replay engine "
                "keeps for its own signals (a child run's end, a cancellation). Fix: choose "
                "another name; to cancel a run, use `journal cancel` or replay.cancel()."
            )
        run = self.run(run_id)
        if run.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            raise RunFinished(
                run_id,
                run.status.value,
                f"it will never ask for signal {name!r}, so the value would never be read. "
                "Fix: send it to a run that is still running, waiting or failed (a retry "
                "reads it).",
            )
        payload = canonical_json(value)
        redactor = self.redactor()
        if redactor is not None:
            payload = redactor(payload)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(f"signal {name!r}", len(payload), self.max_payload_bytes)
        return self.store.send_signal(run_id, name, payload)

    def events(self, run_id: str) -> list[Event]:
        """Every event of the run, in the order it was appended."""
        self.run(run_id)
        return self.store.read_events(run_id)

    def digests(
        self,
        *,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        prices: Prices | None = None,
        version: str | None = None,
    ) -> list[RunDigest]:
        """Runs, newest first, each with its step count, duration and LLM token usage
        (`journal runs`); with `prices` ({model: {"input": $/1M tokens, "output": ...}}), an
        estimated cost. `status="interrupted"` lists the runs `interrupted()` returns;
        `version`, only runs started by that version of the code. The first `offset` matching
        runs are skipped (the next page)."""
        digests = []
        if status == "interrupted":
            runs = self.interrupted(workflow=workflow)
        else:
            runs = self.runs(status=status, workflow=workflow, limit=None)
        skipped = 0
        for run in runs:
            if since is not None and run.created_at < since:
                break  # newest first: every later run is older still
            if version is not None and run.version != version:
                continue
            if skipped < offset:
                skipped += 1
                continue
            digests.append(digest(run, self.store.read_events(run.run_id), prices))
            if limit is not None and len(digests) >= limit:
                break
        return digests

    def iter_events(self, run_id: str, *, page: int = 1000) -> Iterator[Event]:
        """The run's events in order, read `page` at a time: constant memory for any length."""
        after = 0
        while True:
            events = self.store.read_events(run_id, after_seq=after, limit=page)
            yield from events
            if len(events) < page:
                return
            after = events[-1].seq

    def export(
        self,
        out: TextIO,
        run_ids: Iterable[str] | None = None,
        *,
        format: ExportFormat = "jsonl",
        on_event: Callable[[], None] | None = None,
    ) -> int:
        """Write runs (default: all, newest first) to `out`; returns the number of events.

        `jsonl` and `json` carry every field the hash chain covers, and the journal's head,
        so the file verifies on its own (`Journal.verify_export`); `csv` is one row per event
        for spreadsheets;
        `html` is one run's self-contained timeline page. Events are read page by page and
        written as they come, so memory stays constant. `on_event` is called per event.
        """
        runs = (
            self.store.list_runs() if run_ids is None else [self.run(run_id) for run_id in run_ids]
        )
        if format == "html" and len(runs) != 1:
            raise ValueError(
                f"an HTML export is one run's timeline, and {len(runs)} runs were selected. "
                "Fix: name one run (journal export RUN --format html)."
            )
        return write_export(
            out,
            runs,
            self.iter_events,
            format,
            chain=self.chain,
            heads=self.store.read_heads(),
            on_event=on_event,
            every_run=run_ids is None,
        )

    def export_otlp(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> int:
        """Send runs (default: all) as OpenTelemetry traces to an OTLP/HTTP endpoint; returns
        the number of spans sent. Each run is a trace, each step attempt a span, with the ids
        a live `replay.otel.instrument()` gave the same run.

        `endpoint`: a collector's address (`http://host:4318`, `/v1/traces` is added) or the
        full traces URL; default: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
        `OTEL_EXPORTER_OTLP_ENDPOINT`, then `http://localhost:4318`. Headers default to
        `OTEL_EXPORTER_OTLP_HEADERS`. Needs the `otel` extra (ImportError says so). A refused
        export raises `JournalError` with the endpoint's answer."""
        from ._otel import export_runs

        runs = (
            self.store.list_runs() if run_ids is None else [self.run(run_id) for run_id in run_ids]
        )
        return export_runs(
            ((run, self.iter_events(run.run_id)) for run in runs),
            endpoint=endpoint,
            headers=headers,
            timeout=timeout,
        )

    def verify_export(
        self, path: str | os.PathLike[str], *, since: str | None = None
    ) -> list[RunVerification]:
        """Verify every run in a JSONL or JSON export from the file alone, offline: the runs'
        chains, and the journal's head it carries against them (and against `since`, a head
        kept elsewhere)."""
        return verify_export(Path(path), self.chain, None if since is None else parse_head(since))

    def gc(
        self,
        *,
        keep_last: int | None = None,
        older_than: timedelta | None = None,
        statuses: Iterable[RunStatus | str] | None = None,
        dry_run: bool = False,
    ) -> list[Run]:
        """Remove whole finished runs by a retention policy; the runs removed (or, with
        `dry_run`, that would be). Owned runs are never removed; each removal is logged in
        the journal's retention log. See `select_for_removal` for the rule. With neither limit
        given, the configured `[retention]` policy applies, if there is one."""
        now = datetime.now(UTC)
        policy = self.settings.retention
        if keep_last is None and older_than is None and policy:
            keep_last = policy.get("keep_last")
            if policy.get("older_than"):
                older_than = now - parse_since(str(policy["older_than"]), now=now)
            statuses = statuses or policy.get("statuses")
        chosen = select_for_removal(
            self.store.list_runs(),
            keep_last=keep_last,
            older_than=older_than,
            statuses=None if statuses is None else [RunStatus(s) for s in statuses],
            now=now,
        )
        chosen = self._removable(chosen)
        if dry_run or not chosen:
            return chosen
        self.store.delete_runs([run.run_id for run in chosen])
        return [run for run in chosen if self.store.get_run(run.run_id) is None]

    def _removable(self, runs: list[Run]) -> list[Run]:
        """The runs retention may remove: those that verify, their chains and the head's
        entries for them alike. An edited run is evidence, and removing it would have the head
        record its removal as routine."""
        if not runs:
            return runs
        verdicts = verify_journal(self.chain, self.store, runs, every_run=False)
        broken = {v.run_id: v for v in verdicts if not v.ok}
        for run_id, verdict in broken.items():
            log.warning(
                "journal.gc_kept_run",
                run_id=run_id,
                verdict=verdict.verdict,
                why=verdict.describe(),
                fix="run `journal verify` on the journal; a run that does not verify is kept",
            )
        if any(v.run_id == HEAD_ROW for v in broken.values()):
            return []  # the head itself does not verify: remove nothing
        return [run for run in runs if run.run_id not in broken]

    def timeline(self, run_id: str) -> list[TimelineEntry]:
        """The run's events in order, with task depth and step durations (`journal show`)."""
        return timeline(self.events(run_id))

    def diff(self, run_a: str, run_b: str) -> RunDiff:
        """Compare two runs step by step (paired by key): the first point where they differ,
        and per step what changed (name, arguments, outcome, status, attempts)."""
        a, b = self.run(run_a), self.run(run_b)
        return diff_runs(a, self.iter_events(run_a), b, self.iter_events(run_b))

    def fork(
        self,
        run_id: str,
        *,
        at: int | None = None,
        new_run_id: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Run:
        """A new run holding `run_id`'s events before seq `at`; resuming it goes live from there.

        >>> j.fork("order-7", at=12, new_run_id="order-7-retry")        # retry from seq 12
        >>> j.fork("order-7", overrides={"0:3": {"answer": "no"}})     # what if step 0:3 said no

        `overrides` maps step keys to the JSON value their recorded result is replaced with;
        without `at` the fork keeps everything up to the last overridden step. The fork names
        its parent and fork point (`Run.parent_run_id`, `Run.fork_seq`) and ends with a `fork`
        marker event holding the parent's seal. Resume it with `replay.run(..., run_id=...)` or
        `journal resume`. `ForkRefused` for a seq out of range, an unknown step, or a parent
        whose chain is broken before the fork point.
        """
        self.run(run_id)
        return fork_run(
            self.store,
            self.chain,
            self.redactor(),
            self.max_payload_bytes,
            run_id,
            at=at,
            new_run_id=new_run_id,
            overrides=overrides or {},
        )

    def verify(
        self, run_id: str | None = None, *, since: str | None = None
    ) -> list[RunVerification]:
        """Recompute the hash chain and seal of one run, or of every run (newest first).

        Each result names the first broken link: the seq and the field that no longer
        matches. The journal's head is checked against the runs too (a run cut short, set
        back to running, removed or added by hand); `since`, a head `N:HASH` kept elsewhere,
        also proves that nothing recorded up to it was removed or rewritten. `JournalError`s
        only for an unknown run; tampering is reported, not raised.
        """
        runs = [self.run(run_id)] if run_id is not None else self.store.list_runs()
        kept = None if since is None else parse_head(since)
        return verify_journal(self.chain, self.store, runs, kept, every_run=run_id is None)

    def head(self) -> HeadEntry | None:
        """The journal head's last entry (None for a journal with no runs): `head_text(...)`
        is what to keep elsewhere, and `verify(since=...)` checks against it."""
        return self.store.last_head()

    def _nearest_hint(self, run_id: str) -> str:
        known = [run.run_id for run in self.store.list_runs(limit=200)]
        close = [rid for rid in known if run_id in rid or rid in run_id][:3]
        if close:
            return f"Did you mean {', '.join(map(repr, close))}?"
        return "List runs with Journal.runs()."

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
