"""Finding a stream's terminal event as its bytes pass, however the bytes are cut."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from replay.integrations._sse import TerminalEvent

PLAIN_TYPES = ["message_start", "content_block_delta", "response.output_text.delta", "ping"]
TERMINALS = [
    ("", "[DONE]"),
    ("message_stop", '{"type": "message_stop"}'),
    ("response.completed", '{"type": "response.completed", "response": {}}'),
    ("", '{"type": "response.incomplete", "response": {}}'),  # a server that names no events
    ("", '{"type": "message_stop"}'),
    ("response.completed", '{"response": {}}'),  # named by its event line only
]


@st.composite
def sse_bodies(draw: st.DrawFn) -> tuple[bytes, int, str]:
    """(body, end, newline): events, one terminal event, maybe trailing bytes; `end` is where
    the blank line closing the terminal event begins, plus its first byte."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(PLAIN_TYPES))
        # Text that mentions a terminal event's name must not end the stream.
        words = draw(st.sampled_from(["hi", "[DONE] soon", "message_stop", "response.completed"]))
        lines = [f"data: {json.dumps({'type': kind, 'text': words})}"]
        if draw(st.booleans()):
            lines.insert(0, f"event: {kind}")
        if draw(st.booleans()):
            lines.insert(0, ": a comment")
        text += newline.join(lines) + newline + newline
    name, data = draw(st.sampled_from(TERMINALS))
    lines = [f"data: {data}"] if not name else [f"event: {name}", f"data: {data}"]
    text += newline.join(lines) + newline
    end = len(text.encode()) + 1
    text += newline + draw(st.sampled_from(["", ": keep-alive" + newline + newline, "junk"]))
    return text.encode(), end, newline


@given(body=sse_bodies(), data=st.data())
def test_the_end_is_seen_at_the_chunk_that_completes_the_terminal_event(
    body: tuple[bytes, int, str], data: st.DataObject
) -> None:
    """For any cut of a stream into chunks, `feed` first answers True for the chunk that holds
    the terminal event's closing blank line, never before (whatever earlier events mention),
    and keeps answering True after."""
    raw, end, _ = body
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    watcher = TerminalEvent()
    read = 0
    for chunk in chunks:
        read += len(chunk)
        ended = watcher.feed(chunk)
        assert ended == (read >= end), (chunks, read, end)
    assert watcher.feed(b"more") is True


def test_events_without_a_terminal_event_never_end_the_stream() -> None:
    """A stream cut before its terminal event, or one with none (a non-LLM SSE feed), is not
    seen as ended: only the end of its body can tell."""
    watcher = TerminalEvent()
    body = b'event: update\ndata: {"type": "message_start"}\n\ndata: [DON'
    assert not any(watcher.feed(body[i : i + 3]) for i in range(0, len(body), 3))
    assert not watcher.feed(b"E]\n")  # the data line is whole, the event not yet
    assert watcher.feed(b"\n")
