"""Exports: a journal's runs as JSONL, JSON, CSV or an HTML timeline, written as they are read.

Every format but CSV carries the hashes, so an exported file verifies on its own, offline, with
`verify_export` (`journal verify --file`). Payloads are exported as their exact JSON text (a
string), because the chain hashes those exact bytes: `jq '.payload | fromjson'` reads one.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import orjson

from ._chain import Chain
from ._errors import JournalError
from ._events import KIND_BY_VALUE, STATUS_BY_VALUE, Event, Run, RunStatus, trusted_event
from ._heads import HeadEntry
from ._html import write_html_timeline
from ._verify import HEAD_ROW, HeadCheck, RunVerification, broken_at, verify_run

ExportFormat = Literal["jsonl", "json", "csv", "html"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "json", "csv", "html")
EXPORT_VERSION = "journal-replay/export/v2"
"""v2 carries the journal's head and a manifest of the runs it holds; v1 (written before
either) is still read and verified, its runs by their own chains."""
_FORMATS_READ = (EXPORT_VERSION, "journal-replay/export/v1")
CSV_COLUMNS = (
    "run_id",
    "seq",
    "key",
    "kind",
    "name",
    "status",
    "attempt",
    "created_at",
    "fingerprint",
    "payload",
    "args",
    "prev_hash",
    "hash",
)

EventPages = Callable[[str], Iterable[Event]]
"""How the exporter reads a run's events: lazily, page by page (constant memory)."""


class ExportUnreadable(JournalError):
    """A file given to `verify --file` is not a journal export, or is cut short."""


def _put_bytes(record: dict[str, Any], name: str, value: bytes | None) -> None:
    """JSON text as a string; bytes that are not UTF-8 (edited ones) as base64, kept exact."""
    if value is None:
        record[name] = None
        return
    try:
        record[name] = value.decode()
    except UnicodeDecodeError:
        record[name] = None
        record[f"{name}_base64"] = base64.b64encode(value).decode()


def _get_bytes(record: dict[str, Any], name: str) -> bytes | None:
    encoded = record.get(f"{name}_base64")
    if encoded is not None:
        return base64.b64decode(encoded)
    text = record[name]
    return None if text is None else str(text).encode()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def run_record(run: Run) -> dict[str, Any]:
    """A run as the exports write it."""
    record: dict[str, Any] = {
        "type": "run",
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status.value,
        "inputs_fingerprint": run.inputs_fingerprint,
        "parent_run_id": run.parent_run_id,
        "fork_seq": run.fork_seq,
        "resumes": run.resumes,
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "finished_at": _iso(run.finished_at),
        "chain": run.chain,
        "seal": run.seal,
    }
    if run.version is not None:  # only then: exports of runs without one read as before
        record["version"] = run.version
    for name in ("inputs", "result", "error"):
        _put_bytes(record, name, getattr(run, name))
    return record


def event_record(event: Event) -> dict[str, Any]:
    """An event as the exports write it: every field the chain covers, exactly."""
    record: dict[str, Any] = {
        "type": "event",
        "run_id": event.run_id,
        "seq": event.seq,
        "key": event.key,
        "kind": event.kind.value,
        "name": event.name,
        "fingerprint": event.fingerprint,
        "status": event.status.value,
        "attempt": event.attempt,
        "created_at": _iso(event.created_at),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
    _put_bytes(record, "payload", event.payload)
    _put_bytes(record, "args", event.args)
    return record


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def run_from_record(record: dict[str, Any]) -> Run:
    return Run(
        run_id=record["run_id"],
        workflow=record["workflow"],
        inputs=_get_bytes(record, "inputs"),
        inputs_fingerprint=record["inputs_fingerprint"],
        status=RunStatus(record["status"]),
        result=_get_bytes(record, "result"),
        error=_get_bytes(record, "error"),
        parent_run_id=record["parent_run_id"],
        fork_seq=record["fork_seq"],
        resumes=record["resumes"],
        created_at=datetime.fromisoformat(record["created_at"]),
        updated_at=datetime.fromisoformat(record["updated_at"]),
        finished_at=_moment(record["finished_at"]),
        chain=record["chain"],
        seal=record["seal"],
        version=_str_or_none(record.get("version")),
    )


def event_from_record(record: dict[str, Any]) -> Event:
    return trusted_event(
        record["run_id"],
        _int(record["seq"]),
        _str(record["key"]),
        KIND_BY_VALUE[record["kind"]],
        _str(record["name"]),
        _str(record["fingerprint"]),
        STATUS_BY_VALUE[record["status"]],
        _int(record["attempt"]),
        _get_bytes(record, "payload"),
        datetime.fromisoformat(record["created_at"]),
        _get_bytes(record, "args"),
        record["prev_hash"],
        record["hash"],
    )


def _int(value: Any) -> int:
    """An integer as the export wrote it: `1.9` or `true` is an edit, not a 1."""
    if type(value) is not int:
        raise TypeError(f"{value!r} where an integer was written")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"{value!r} where text was written")
    return value


def _str_or_none(value: Any) -> str | None:
    return None if value is None else _str(value)


def write_export(
    out: TextIO,
    runs: Iterable[Run],
    events_of: EventPages,
    fmt: ExportFormat,
    *,
    chain: Chain,
    heads: Iterable[HeadEntry] = (),
    on_event: Callable[[], None] | None = None,
    every_run: bool = False,
) -> int:
    """Write `runs` and their events to `out` in `fmt`; the number of events written. JSONL
    and JSON carry the journal's `heads` entries too (before the runs), so that the export
    proves the exported runs' states against them, and a manifest: which runs it holds (all
    of the journal's, with `every_run`), MAC'd with the chain, so that a run cut from the file
    is found (with the key, by anyone who cannot sign)."""
    tick = on_event or (lambda: None)
    written = 0

    def counted(run: Run) -> Iterator[Event]:
        nonlocal written
        for event in events_of(run.run_id):
            written += 1
            tick()
            yield event

    runs = list(runs)
    heads = list(heads)
    manifest = _manifest(chain, every_run, [run.run_id for run in runs], heads)
    if fmt == "jsonl":
        header = {"type": "export", "format": EXPORT_VERSION, "exported_at": _now(), **manifest}
        out.write(_line(header))
        for entry in heads:
            out.write(_line(head_record(entry)))
        for run in runs:
            out.write(_line(run_record(run)))
            for event in counted(run):
                out.write(_line(event_record(event)))
    elif fmt == "json":
        fields = orjson.dumps(manifest).decode()[1:-1]
        out.write(f'{{"format":"{EXPORT_VERSION}","exported_at":"{_now()}",{fields},"heads":[')
        for index, entry in enumerate(heads):
            out.write(("," if index else "") + "\n" + orjson.dumps(head_record(entry)).decode())
        out.write('],"runs":[')
        for index, run in enumerate(runs):
            head = orjson.dumps(run_record(run)).decode()
            out.write(("," if index else "") + "\n" + head[:-1] + ',"events":[')
            for number, event in enumerate(counted(run)):
                out.write(
                    ("," if number else "") + "\n" + orjson.dumps(event_record(event)).decode()
                )
            out.write("]}")
        out.write("\n]}\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for run in runs:
            for event in counted(run):
                record = event_record(event)
                writer.writerow([_csv_cell(record[column]) for column in CSV_COLUMNS])
    elif fmt == "html":
        (run,) = runs
        verdict = verify_run(chain, run, events_of(run.run_id))
        write_html_timeline(
            out,
            run_record(run),
            (event_record(event) for event in counted(run)),
            {"ok": verdict.ok, "message": f"chain {verdict.describe()}"},
        )
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return written


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (OWASP's CSV injection rule): text that
    starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`. Run ids,
    step names and payloads come from the workflow, and may come from an attacker."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _line(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode() + "\n"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _manifest(
    chain: Chain, every_run: bool, run_ids: list[str], heads: list[HeadEntry]
) -> dict[str, Any]:
    scope = "all" if every_run else "some"
    head = heads[-1].hash if heads else ""
    return {
        "scope": scope,
        "run_count": len(run_ids),
        "manifest_scheme": chain.scheme,
        "manifest": _manifest_mac(chain, scope, run_ids, head),
    }


def _manifest_mac(chain: Chain, scope: str, run_ids: list[str], head: str) -> str:
    return chain.mac(b"journal-replay/export/v1" + orjson.dumps([scope, sorted(run_ids), head]))


def _check_manifest(
    header: dict[str, Any], chain: Chain, run_ids: list[str], heads: list[HeadEntry]
) -> tuple[bool, RunVerification | None]:
    """(whether the export holds all of the journal's runs, what is wrong with its manifest)."""
    if "manifest" not in header:
        return False, _manifest_broken(
            "the export's manifest (which runs it holds) was removed: runs may have been cut "
            "from it"
        )
    scheme = header.get("manifest_scheme")
    if not isinstance(scheme, str) or not (scheme == "sha256" or scheme.startswith("hmac-sha256:")):
        return False, _manifest_broken(f"the export's manifest scheme {scheme!r} was edited")
    every_run = header.get("scope") == "all"
    keyed = chain.scheme != "sha256"
    if keyed and scheme != chain.scheme:
        detail = (
            f"the export's manifest is signed with {scheme}, not with this key ({chain.scheme}):"
            " it was rewritten without the key"
        )
        return every_run, _manifest_broken(detail)
    signer = chain if scheme == chain.scheme else Chain() if scheme == "sha256" else None
    if signer is None:
        return every_run, None  # signed with a key this process does not have
    head = heads[-1].hash if heads else ""
    if _manifest_mac(signer, str(header.get("scope")), run_ids, head) != header["manifest"]:
        detail = "the runs in the file are not the ones exported: runs were cut from it or added"
        return every_run, _manifest_broken(detail)
    return every_run, None


def _manifest_broken(detail: str) -> RunVerification:
    return broken_at(HEAD_ROW, "manifest", detail)


def head_record(entry: HeadEntry) -> dict[str, Any]:
    return {
        "type": "head",
        "n": entry.n,
        "run_id": entry.run_id,
        "reason": entry.reason,
        "status": entry.status,
        "events": entry.events,
        "last_hash": entry.last_hash,
        "seal": entry.seal,
        "run_chain": entry.run_chain,
        "at": entry.at.isoformat(),
        "scheme": entry.scheme,
        "prev": entry.prev,
        "hash": entry.hash,
    }


def head_from_record(record: dict[str, Any]) -> HeadEntry:
    return HeadEntry(
        n=_int(record["n"]),
        run_id=_str(record["run_id"]),
        reason=record["reason"],
        status=_str(record["status"]),
        events=_int(record["events"]),
        last_hash=_str_or_none(record["last_hash"]),
        seal=_str_or_none(record["seal"]),
        run_chain=_str_or_none(record["run_chain"]),
        at=datetime.fromisoformat(record["at"]),
        scheme=_str(record["scheme"]),
        prev=_str(record["prev"]),
        hash=_str(record["hash"]),
    )


def verify_export(
    path: Path, chain: Chain, since: tuple[int, str] | None = None
) -> list[RunVerification]:
    """Verify every run in an exported JSONL or JSON file, offline, from the file alone; and
    the journal's head it carries against them (and against `since`)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            try:
                header = orjson.loads(first)
            except orjson.JSONDecodeError:
                header = None
            if isinstance(header, dict) and header.get("type") == "export":
                if header.get("format") not in _FORMATS_READ:
                    raise ExportUnreadable(
                        f"{path} is an export of format {header.get('format')!r}, which this "
                        f"version does not read ({', '.join(_FORMATS_READ)}). Fix: verify it "
                        "with the version of journal-replay that wrote it, or a newer one."
                    )
                return _verify_jsonl(handle, chain, path, since, header)
            handle.seek(0)
            document = orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ExportUnreadable(
            f"{path} is not a journal export ({exc}). Fix: pass a file written by "
            "`journal export --format jsonl` or `--format json`."
        ) from exc
    if not isinstance(document, dict) or document.get("format") not in _FORMATS_READ:
        raise ExportUnreadable(
            f"{path} is JSON but not a journal export (no format {EXPORT_VERSION!r}). "
            "CSV and HTML exports carry no full chain; verify a JSONL or JSON export."
        )
    try:
        entries = [head_from_record(r) for r in document.get("heads", [])]
        check = HeadCheck(chain, entries)
        verdicts = [
            check.verify(
                run_from_record(run),
                (event_from_record(event) for event in run.get("events", [])),
            )
            for run in document["runs"]
        ]
        ids = [str(run["run_id"]) for run in document["runs"]]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ExportUnreadable(f"{path}: a record is not a journal export record ({exc}).") from exc
    if document.get("format") != EXPORT_VERSION:
        return _without_head(verdicts, since)
    every_run, wrong = _check_manifest(document, chain, ids, entries)
    results = check.results(verdicts, since, every_run=every_run)
    return results if wrong is None else [*results, wrong]


def _verify_jsonl(
    handle: IO[bytes],
    chain: Chain,
    path: Path,
    since: tuple[int, str] | None,
    header: dict[str, Any],
) -> list[RunVerification]:
    """Runs streamed one after the other (constant memory in their events); the head's
    entries come first, so what they need of each run is known when it is read."""
    records = (orjson.loads(line) for line in handle if line.strip())
    pending: list[dict[str, Any]] = []
    results: list[RunVerification] = []

    def events_until_next_run() -> Iterator[Event]:
        for record in records:
            if record.get("type") == "run":
                pending.append(record)
                return
            if record.get("type") != "event":
                raise ExportUnreadable(f"{path}: unexpected record {str(record)[:80]}")
            yield event_from_record(record)

    try:
        entries: list[HeadEntry] = []
        for record in records:
            if record.get("type") != "head":
                pending.append(record)
                break
            entries.append(head_from_record(record))
        check = HeadCheck(chain, entries)
        while pending:
            current = pending.pop()
            if current.get("type") != "run":
                raise ExportUnreadable(
                    f"{path}: a {current.get('type')} record comes where a run record belongs; "
                    "the file was cut or edited."
                )
            results.append(check.verify(run_from_record(current), events_until_next_run()))
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ExportUnreadable(f"{path}: a line is not a journal export record ({exc}).") from exc
    if header.get("format") != EXPORT_VERSION:
        return _without_head(results, since)
    every_run, wrong = _check_manifest(header, chain, [v.run_id for v in results], entries)
    verdicts = check.results(results, since, every_run=every_run)
    return verdicts if wrong is None else [*verdicts, wrong]


def _without_head(
    verdicts: list[RunVerification], since: tuple[int, str] | None
) -> list[RunVerification]:
    """An export from before the head (format v1): its runs, each by its own chain."""
    if since is not None and since[0] > 0:
        return [
            *verdicts,
            _manifest_broken(
                f"the kept head is entry {since[0]}, and this export (format v1, from before "
                "the head) carries none: it cannot show that nothing was removed"
            ),
        ]
    note = (
        "an export from before the head (format v1): its runs are checked by their own chains "
        "only, not which runs it should hold"
    )
    return [*verdicts, RunVerification(HEAD_ROW, "unchained", 0, False, note=note)]
