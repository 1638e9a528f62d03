"""One run as a self-contained HTML page: a Gantt of its steps; a click shows request and response.

The page is a single file a journal's reader can attach to a ticket or open from `file://` offline:
its CSS and JS are inline and a Content-Security-Policy forbids every network request, so
payloads from an untrusted journal can neither load anything nor phone home.

Events are streamed into the page as they are read (one line of a JS array each), so a run of any
length costs constant memory here; the browser builds the timeline from that array on load.

The same page is what `journal ui` shows for a run, served rather than saved: with `assets`, the
CSS and JS are linked from that URL and the rows are a JSON data block, so the page runs under a
Content-Security-Policy that allows no inline script at all.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TextIO

from ._events import EventKind

_ROW_FIELDS = (
    "seq",
    "key",
    "kind",
    "name",
    "status",
    "attempt",
    "t",
    "created_at",
    "payload",
    "args",
    "fingerprint",
    "hash",
)
"""The columns of each event row in the page; `t` is milliseconds since the run was created.

Rows are arrays, not objects: at 10,000 events repeating the field names would double the page.
The JS reads the names from the page, so this tuple is the only place that orders them.
"""

_MS = timedelta(milliseconds=1)
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
_SERVED_CSP = "default-src 'none'; style-src 'self'; script-src 'self'; img-src data:"


def write_html_timeline(
    out: TextIO,
    run: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    verification: Mapping[str, Any] | None = None,
    *,
    assets: str | None = None,
    header: bool = True,
) -> None:
    """Write one run's timeline page to `out`, reading `events` once, in `seq` order.

    `run` and `events` are the records the JSONL export writes; `verification` is the hash
    chain's check (`{"ok": bool, "message": str}`) or None when it was not checked. The output
    is pure ASCII, so any text encoding of `out` will do. Raises ValueError when a record's
    `created_at` is not an ISO-8601 time.

    `assets` is the URL the files of `timeline_assets()` are served from: the page then links
    them instead of holding them, and needs no inline script (`journal ui`). `header=False`
    leaves out the run's facts, for a page that shows them around the timeline.
    """
    origin = datetime.fromisoformat(run["created_at"])
    title = f"Run {run['run_id']} - journal-replay timeline"
    csp = _CSP if assets is None else _SERVED_CSP
    out.write(
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n"
    )
    if assets is None:
        out.write(
            f"<style>\n{_asset('timeline.css')}</style>\n"
            f"<script>\nvar JT_FIELDS = {_script_json(_ROW_FIELDS)};\nvar JT_ROWS = [\n"
        )
    else:
        out.write(
            f'<link rel="stylesheet" href="{_text(assets)}/timeline.css">\n'
            f'<script type="application/json" id="jt-fields">{_script_json(_ROW_FIELDS)}</script>\n'
            '<script type="application/json" id="jt-rows">[\n'
        )
    count = 0
    last_ms: float | None = None
    for event in events:
        last_ms = _ms_since(origin, event["created_at"])
        row = [last_ms if name == "t" else event.get(name) for name in _ROW_FIELDS]
        if assets is not None and count:
            out.write(",\n")  # a JSON array: no trailing comma
        out.write(_script_json(row))
        if assets is None:
            out.write(",\n")
        count += 1
    finished = run.get("finished_at")
    end_ms = None if finished is None else _ms_since(origin, finished)
    meta = {"kinds": [kind.value for kind in EventKind], "end_ms": end_ms}
    out.write(
        ("];\n</script>\n" if assets is None else "\n]</script>\n")
        + f'<script type="application/json" id="jt-run">{_script_json(dict(run))}</script>\n'
        f'<script type="application/json" id="jt-meta">{_script_json(meta)}</script>\n'
        "</head>\n<body>\n"
    )
    if header:
        out.write(_header(run, verification, count, end_ms, last_ms))
    out.write(_toolbar())
    out.write(
        '<main>\n<div id="scroller"><div id="inner">\n'
        '<div id="axis-row"><div id="corner">task</div><div id="axis"></div></div>\n'
        '<div id="rows"><div id="labels"></div><div id="plot"></div></div>\n'
        "</div></div>\n"
        '<aside id="detail" aria-live="polite"></aside>\n</main>\n'
    )
    if assets is None:
        out.write(
            f"<script>\n{_asset('traceback.js')}</script>\n"
            f"<script>\n{_asset('timeline.js')}</script>\n</body>\n</html>\n"
        )
    else:
        out.write(
            "".join(
                f'<script src="{_text(assets)}/{name}"></script>\n'
                for name in ("served.js", "traceback.js", "timeline.js")
            )
            + "</body>\n</html>\n"
        )


def timeline_assets() -> Traversable:
    """The folder of the page's CSS and JS (package data), for a server to serve as `assets`."""
    return resources.files("journal") / "_timeline_assets"


def _header(
    run: Mapping[str, Any],
    verification: Mapping[str, Any] | None,
    count: int,
    end_ms: float | None,
    last_ms: float | None,
) -> str:
    """The run's facts, rendered here so they read the same with or without the timeline."""
    status = str(run.get("status"))
    if end_ms is not None:
        duration = _duration_text(end_ms)
    elif last_ms is not None:
        duration = f"{_duration_text(last_ms)} to the last event (not finished)"
    else:
        duration = "no events yet"
    facts = [
        ("workflow", run.get("workflow") or "journaled block"),
        ("created", _time_text(run["created_at"])),
        ("duration", duration),
        ("events", str(count)),
        ("resumes", str(run.get("resumes", 0))),
    ]
    if run.get("finished_at"):
        facts.insert(2, ("finished", _time_text(run["finished_at"])))
    if run.get("version"):
        facts.append(("version", str(run["version"])))
    if run.get("parent_run_id"):
        fork_point = f" at seq {run['fork_seq']}" if run.get("fork_seq") is not None else ""
        facts.append(("forked from", f"{run['parent_run_id']}{fork_point}"))
    listed = "".join(
        f"<div><dt>{_text(name)}</dt><dd>{_text(value)}</dd></div>" for name, value in facts
    )
    if verification is None:
        check, label = "unchecked", "chain not checked"
    elif verification.get("ok"):
        check, label = "ok", f"chain ok: {verification.get('message', '')}"
    else:
        check, label = "broken", f"chain BROKEN: {verification.get('message', '')}"
    return (
        "<header>\n"
        f'<div class="title"><h1 id="run-id">{_text(run["run_id"])}</h1>'
        f'<span class="badge st-{_text(status)}" id="run-status">{_text(status)}</span>'
        f'<span class="badge verify-{check}" id="verification">{_text(label)}</span></div>\n'
        f'<dl class="facts">{listed}</dl>\n'
        "</header>\n"
    )


def _toolbar() -> str:
    """The legend (one swatch per event kind, then the status marks), summary and zoom."""
    kinds = "".join(
        f'<span><i class="swatch k-{kind.value}"></i>{kind.value}</span>' for kind in EventKind
    )
    marks = (
        '<span><i class="swatch k-step s-retrying"></i>retrying</span>'
        '<span><i class="swatch k-step s-failed"></i>failed</span>'
        '<span><i class="swatch k-step s-open"></i>no outcome (interrupted)</span>'
        '<span><i class="swatch k-step superseded"></i>superseded by a fork or retry</span>'
        '<span><i class="swatch resume-swatch"></i>resumed after a crash</span>'
    )
    finding = (
        '<div class="finding"><button id="first-failure" type="button">First failure</button>'
        '<label>kind <select id="filter-kind"><option value="">all</option></select></label>'
        '<label>status <select id="filter-status"><option value="">all</option></select></label>'
        '<span id="filter-count"></span></div>'
    )
    return (
        '<div id="toolbar"><div class="legend">'
        f'{kinds}<span class="sep"></span>{marks}</div>'
        f'{finding}<span id="summary"></span>'
        '<div class="zoom"><button id="show-run" type="button">Run details</button>'
        '<button id="zoom-out" type="button" title="Zoom out (Ctrl+wheel)">&minus;</button>'
        '<button id="zoom-fit" type="button">Fit</button>'
        '<button id="zoom-in" type="button" title="Zoom in (Ctrl+wheel)">+</button></div>'
        "</div>\n"
    )


def _script_json(value: Any) -> str:
    """JSON that is inert inside `<script>`: no `</script>`, `<!--`, and U+2028/9 as escapes."""
    return json.dumps(value, separators=(",", ":")).translate(_SCRIPT_SAFE)


def _text(value: object) -> str:
    """HTML text, ASCII only (non-ASCII as character references) so `out`'s encoding is moot."""
    return html.escape(str(value)).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _ms_since(origin: datetime, moment: str) -> float:
    return round((datetime.fromisoformat(moment) - origin) / _MS, 3)


def _time_text(moment: str) -> str:
    """`2026-11-25 14:00:03.123 UTC`: the recorded instant to the millisecond, readable."""
    parsed = datetime.fromisoformat(moment)
    offset = parsed.strftime("%z")
    zone = "UTC" if offset in ("+0000", "") else offset
    return f"{parsed:%Y-%m-%d %H:%M:%S}.{parsed.microsecond // 1000:03d} {zone}"


def _duration_text(ms: float) -> str:
    """A duration at the precision a reader wants: `4.2 ms`, `850 ms`, `12.35 s`, `4 min 05 s`."""
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@cache
def _asset(name: str) -> str:
    """The page's CSS or JS, shipped as package data in `journal/_timeline_assets/`."""
    return (resources.files("journal") / "_timeline_assets" / name).read_text(encoding="utf-8")
