"""Exceptions are results: what replay raises is what live raised, attributes and cause included.

A step's exception is journaled as its type, message, args, JSON-able attributes and cause, and
rebuilt from that record on replay (and when a failed run's error is raised again). The workflow
sees the original exception live only when the rebuilt one would be the same; otherwise it sees
`StepFailed`, live and on replay alike. The common exceptions rebuild faithfully: the OSError
family (errno, filename), httpx/httpx2 errors (their request and response), and the OpenAI and
Anthropic SDK errors (status, body, request id), raised here by the real libraries.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpcore
import httpcore2
import httpx
import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from journal import Journal, RecordedError, Redaction
from replay import StepFailed, run, step
from replay._session import rebuild_error
from replay._steps import as_replayed_error


class Flaky(Exception):
    """Attributes set from keyword arguments, not kept in `args`."""

    def __init__(self, message: str, *, status: int = 0, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Coded(ValueError):
    """A constructor that does not take its own `args` back."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}/{reason}")
        self.code = code
        self.reason = reason


class Plain(Exception):
    pass


class Holding(Exception):
    """Holds a live object: it cannot be journaled, so it cannot be rebuilt."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Leaky(Exception):
    """An attribute under a secret-looking name: the journal stores it redacted."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


def raised(call: Callable[[], Any]) -> Exception:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def round_trip(exc: BaseException) -> Exception:
    """The exception as replay rebuilds it from the journal's bytes."""
    rebuilt = RecordedError.decode(RecordedError.from_exception(exc).encode()).rebuild()
    assert rebuilt is not None, RecordedError.from_exception(exc)
    return rebuilt


def chained(outer: Exception, cause: BaseException) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


def without_traceback(exc: BaseException) -> RecordedError:
    return RecordedError.from_exception(exc).model_copy(update={"traceback": None})


# -- attributes and causes -------------------------------------------------------------------


def test_attributes_are_rebuilt() -> None:
    """status=503 retryable=True come back as set, not as the constructor's defaults."""
    rebuilt = round_trip(Flaky("upstream down", status=503, retryable=True))
    assert type(rebuilt) is Flaky and str(rebuilt) == "upstream down"
    assert (rebuilt.status, rebuilt.retryable) == (503, True)  # type: ignore[attr-defined]


def test_a_constructor_that_does_not_take_its_args_back_is_rebuilt() -> None:
    """Coded(7, 'bad') has args ('7/bad',): rebuilt without calling Coded('7/bad')."""
    rebuilt = round_trip(Coded(7, "bad"))
    assert type(rebuilt) is Coded and str(rebuilt) == "7/bad"
    assert (rebuilt.code, rebuilt.reason, rebuilt.args) == (7, "bad", ("7/bad",))  # type: ignore[attr-defined]


def test_cause_is_rebuilt_recursively() -> None:
    """`raise Outer from Inner`: the rebuilt exception's __cause__ is the rebuilt Inner."""
    inner = chained(KeyError("k"), Flaky("root", status=1))
    outer = chained(Plain("outer"), inner)
    rebuilt = round_trip(outer)
    assert type(rebuilt.__cause__) is KeyError and rebuilt.__cause__.args == ("k",)
    root = rebuilt.__cause__.__cause__
    assert type(root) is Flaky and root.status == 1  # type: ignore[attr-defined]
    assert root.__cause__ is None and rebuilt.__suppress_context__


def test_notes_are_rebuilt() -> None:
    """`add_note` text comes back."""
    exc = Plain("x")
    exc.add_note("while asking the model")
    assert round_trip(exc).__notes__ == ["while asking the model"]


def test_an_unjournalable_attribute_means_no_rebuild() -> None:
    """A live object as an attribute: the exception is not rebuilt at all (never half of it)."""
    assert RecordedError.from_exception(Holding("x")).rebuild() is None


def test_an_unjournalable_cause_means_no_rebuild() -> None:
    """The whole chain is rebuilt or nothing: a rebuilt exception never loses its cause."""
    assert RecordedError.from_exception(chained(Plain("x"), Holding("y"))).rebuild() is None


def test_records_written_before_attributes_were_kept_still_rebuild() -> None:
    """A record without attribute information rebuilds as it did: type(*args), same message."""
    legacy = RecordedError.decode(
        b'{"type":"tests.test_exceptions:Plain","message":"old","args":["old"],"traceback":null}'
    )
    rebuilt = legacy.rebuild()
    assert type(rebuilt) is Plain and str(rebuilt) == "old"


def test_classes_are_never_imported_to_rebuild() -> None:
    """Only classes already imported are rebuilt, whatever the record asks for."""
    for kind in ("os_evil_module_xyz:Boom", "builtins:print", "os:system"):
        recorded = RecordedError(type=kind, message="x", args=["x"], attributes={})
        assert recorded.rebuild() is None


def failing(call: Callable[[], Any]) -> Callable[[], Exception]:
    return lambda: raised(call)


@pytest.mark.parametrize(
    "make",
    [
        failing(lambda: json.loads("{not json")),
        lambda: subprocess.CalledProcessError(2, ["ls", "x"], output=b"out", stderr=b"\xff"),
        lambda: subprocess.CalledProcessError(1, ("git", "push"), output="text"),
        lambda: KeyError("missing"),
        lambda: StopIteration(5),
        failing(lambda: b"\xff".decode()),
        failing(lambda: compile("x = (", "prompt.py", "exec")),
        lambda: TimeoutError("deadline"),
    ],
    ids=[
        "JSONDecodeError",
        "CalledProcessError-bytes",
        "CalledProcessError-tuple",
        "KeyError",
        "StopIteration",
        "UnicodeDecodeError",
        "SyntaxError",
        "TimeoutError",
    ],
)
def test_common_exceptions_are_rebuilt(make: Callable[[], Exception]) -> None:
    """Everyday exceptions come back whole: JSONDecodeError's doc and position, a failed
    command's exit status, command tuple and bytes output, bytes and tuples in args."""
    original = make()
    rebuilt = round_trip(original)
    assert type(rebuilt) is type(original) and str(rebuilt) == str(original)
    assert rebuilt.args == original.args and vars(rebuilt) == vars(original)


def test_exception_groups_are_rebuilt_with_their_members() -> None:
    """An ExceptionGroup (what a TaskGroup raises) comes back with each member rebuilt."""
    original = ExceptionGroup("two failed", [Flaky("a", status=500), KeyError("b")])
    rebuilt = round_trip(original)
    assert type(rebuilt) is ExceptionGroup and str(rebuilt) == "two failed (2 sub-exceptions)"
    first, second = rebuilt.exceptions  # type: ignore[attr-defined]
    assert type(first) is Flaky and first.status == 500 and second.args == ("b",)


class Strict(BaseModel):
    n: int


@pytest.mark.parametrize(
    "make",
    [failing(lambda: Strict(n="x")), lambda: ValueError(threading.Lock())],
    ids=["pydantic ValidationError", "live object in args"],
)
def test_exceptions_that_cannot_be_rebuilt_are_not(make: Callable[[], Exception]) -> None:
    """Where the parts cannot be kept (pydantic's ValidationError, a live object in args),
    there is no rebuild: the engine raises StepFailed live and on replay."""
    assert RecordedError.from_exception(make()).rebuild() is None


def test_rebuilding_an_http_error_never_imports_its_library() -> None:
    """A record naming httpx2's error and response is not rebuilt in a process that has not
    imported httpx2, and reading it does not import it."""
    record = RecordedError.from_exception(
        raised(
            lambda: (
                httpx2.Client(transport=httpx2.MockTransport(answering(500, b"")))
                .get("https://api.test/")
                .raise_for_status()
            )
        )
    )
    script = (
        "import sys\n"
        "from journal import RecordedError\n"
        f"record = RecordedError.decode({record.encode()!r})\n"
        "assert record.rebuild() is None\n"
        "assert 'httpx2' not in sys.modules and 'httpx' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


# -- OSError ---------------------------------------------------------------------------------


def test_file_not_found_is_rebuilt_with_errno_and_filename(tmp_path: Path) -> None:
    """FileNotFoundError from open() comes back as FileNotFoundError, errno 2, filename."""
    missing = tmp_path / "missing.txt"
    original = raised(lambda: missing.read_text())
    rebuilt = round_trip(original)
    assert type(rebuilt) is FileNotFoundError
    assert isinstance(rebuilt, OSError)
    assert (rebuilt.errno, rebuilt.strerror, rebuilt.filename) == (
        errno.ENOENT,
        original.strerror,  # type: ignore[attr-defined]
        str(missing),
    )
    assert str(rebuilt) == str(original)


@pytest.mark.parametrize(
    "original",
    [
        OSError(errno.ENOENT, "No such file or directory", "a.txt"),
        OSError(errno.EACCES, "Permission denied", b"\xffbin"),
        OSError(errno.EEXIST, "File exists", "a", None, "b"),
        OSError("just a message"),
        OSError(),
        TimeoutError(),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        BlockingIOError(errno.EAGAIN, "again", 12),
    ],
    ids=repr,
)
def test_os_errors_are_rebuilt_with_their_fields(original: OSError) -> None:
    """OSError(2, ...) is a FileNotFoundError; errno, strerror, filename, filename2 survive."""
    rebuilt = round_trip(original)
    assert type(rebuilt) is type(original) and isinstance(rebuilt, OSError)
    assert str(rebuilt) == str(original) and rebuilt.args == original.args
    for field in ("errno", "strerror", "filename", "filename2"):
        assert getattr(rebuilt, field) == getattr(original, field), field
    if isinstance(original, BlockingIOError):
        assert rebuilt.characters_written == original.characters_written  # type: ignore[attr-defined]


def test_rename_error_keeps_both_filenames(tmp_path: Path) -> None:
    """os.rename's error names both paths."""
    original = raised(lambda: os.rename(tmp_path / "a", tmp_path / "b"))
    rebuilt = round_trip(original)
    assert (rebuilt.filename, rebuilt.filename2) == (str(tmp_path / "a"), str(tmp_path / "b"))  # type: ignore[attr-defined]


# -- httpx and httpx2 ------------------------------------------------------------------------


def answering(status: int, body: bytes, **headers: str) -> Callable[[Any], Any]:
    def handler(request: Any) -> Any:
        module = httpx2 if isinstance(request, httpx2.Request) else httpx
        return module.Response(status, content=body, headers=headers)

    return handler


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_http_status_error_is_rebuilt_with_request_and_response(http: Any) -> None:
    """raise_for_status()'s error: method, URL, status, headers and body all come back."""
    handler = answering(503, b'{"error":"busy"}', **{"content-type": "application/json"})
    client = http.Client(transport=http.MockTransport(handler))
    original = raised(lambda: client.get("https://api.test/v1/items?page=2").raise_for_status())
    rebuilt = round_trip(original)
    assert type(rebuilt) is http.HTTPStatusError and str(rebuilt) == str(original)
    assert (rebuilt.request.method, str(rebuilt.request.url)) == (  # type: ignore[attr-defined]
        "GET",
        "https://api.test/v1/items?page=2",
    )
    response = rebuilt.response  # type: ignore[attr-defined]
    assert isinstance(response, http.Response) and response.request is rebuilt.request  # type: ignore[attr-defined]
    assert response.status_code == 503 and response.json() == {"error": "busy"}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_http_status_error_of_an_unread_streamed_response_stays_unread(http: Any) -> None:
    """A streamed response's body was never read: the rebuilt one is unread too."""

    def streaming(request: Any) -> Any:
        return http.Response(500, stream=http.ByteStream(b"oops"))

    client = http.Client(transport=http.MockTransport(streaming))
    with client.stream("GET", "https://api.test/") as streamed:
        original = raised(streamed.raise_for_status)
    rebuilt = round_trip(original)
    with pytest.raises(http.ResponseNotRead):
        _ = rebuilt.response.content  # type: ignore[attr-defined]


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_transport_errors_are_rebuilt_with_their_request(http: Any) -> None:
    """ConnectError and ReadTimeout raised inside a client carry the request that failed."""
    for error in (http.ConnectError, http.ReadTimeout):

        def refuse(request: Any, error: Any = error) -> Any:
            raise error("connection refused")

        client = http.Client(transport=http.MockTransport(refuse))
        original = raised(lambda client=client: client.post("https://api.test/x", json={}))
        rebuilt = round_trip(original)
        assert type(rebuilt) is error and str(rebuilt) == "connection refused"
        assert str(rebuilt.request.url) == "https://api.test/x"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("http", "core"), [(httpx, httpcore), (httpx2, httpcore2)], ids=["httpx", "httpx2"]
)
def test_a_transport_failure_chain_is_rebuilt(http: Any, core: Any) -> None:
    """ConnectError from httpcore's ConnectError(ConnectionRefusedError(...)), as the libraries
    chain them: the cause, and the exception inside the cause's args, come back."""
    inner = core.ConnectError(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    original = chained(http.ConnectError(str(inner)), inner)
    rebuilt = round_trip(original)
    assert type(rebuilt) is http.ConnectError and type(rebuilt.__cause__) is core.ConnectError
    (refused,) = rebuilt.__cause__.args
    assert type(refused) is ConnectionRefusedError and refused.errno == errno.ECONNREFUSED


# -- OpenAI and Anthropic SDKs ---------------------------------------------------------------


def openai_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://llm.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def anthropic_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://llm.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def ask_openai(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )


def ask_anthropic(client: anthropic.Anthropic) -> Any:
    return client.messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )


OPENAI_400 = {
    "error": {
        "message": "max_tokens is too large",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "integer_above_max_value",
    }
}
ANTHROPIC_400 = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
    "request_id": "req_1",
}


def sdk_error(status: int, body: dict[str, Any], **headers: str) -> Callable[[Any], Any]:
    return answering(
        status, json.dumps(body).encode(), **{"content-type": "application/json"}, **headers
    )


def assert_same_status_error(original: Any, rebuilt: Any) -> None:
    assert type(rebuilt) is type(original) and str(rebuilt) == str(original)
    for name in ("status_code", "body", "request_id", "message"):
        assert getattr(rebuilt, name) == getattr(original, name), name
    assert rebuilt.response.status_code == original.response.status_code
    assert rebuilt.response.json() == original.response.json()
    assert str(rebuilt.request.url) == str(original.request.url)
    assert rebuilt.request.method == original.request.method


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, openai.BadRequestError), (503, openai.InternalServerError)],
)
def test_openai_status_errors_are_rebuilt(status: int, error: type[Exception]) -> None:
    """The SDK's own error for a 400 or a 503: status, body, code, param and request id."""
    client = openai_client(sdk_error(status, OPENAI_400, **{"x-request-id": "req_abc"}))
    original = raised(lambda: ask_openai(client))
    assert type(original) is error
    rebuilt = round_trip(original)
    assert_same_status_error(original, rebuilt)
    assert rebuilt.request_id == "req_abc"  # type: ignore[attr-defined]
    assert (rebuilt.code, rebuilt.param, rebuilt.type) == (  # type: ignore[attr-defined]
        "integer_above_max_value",
        "max_tokens",
        "invalid_request_error",
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, anthropic.BadRequestError), (529, anthropic.OverloadedError)],
)
def test_anthropic_status_errors_are_rebuilt(status: int, error: type[Exception]) -> None:
    """The Anthropic SDK's error: status, body, request id and the parsed error type."""
    client = anthropic_client(sdk_error(status, ANTHROPIC_400, **{"request-id": "req_1"}))
    original = raised(lambda: ask_anthropic(client))
    assert type(original) is error
    rebuilt = round_trip(original)
    assert_same_status_error(original, rebuilt)
    assert (rebuilt.type, rebuilt.api_message) == (  # type: ignore[attr-defined]
        "invalid_request_error",
        "max_tokens: too large",
    )


@pytest.mark.parametrize(
    ("client", "ask", "connection", "timeout"),
    [
        (openai_client, ask_openai, openai.APIConnectionError, openai.APITimeoutError),
        (anthropic_client, ask_anthropic, anthropic.APIConnectionError, anthropic.APITimeoutError),
    ],
    ids=["openai", "anthropic"],
)
def test_sdk_connection_and_timeout_errors_are_rebuilt(
    client: Any, ask: Any, connection: type[Exception], timeout: type[Exception]
) -> None:
    """APIConnectionError (cause: the transport's ConnectError) and APITimeoutError."""
    for transport_error, expected in (
        (httpx2.ConnectError, connection),
        (httpx2.ReadTimeout, timeout),
    ):

        def fail(request: httpx2.Request, error: Any = transport_error) -> httpx2.Response:
            raise error("network down")

        original = raised(lambda fail=fail: ask(client(fail)))
        assert type(original) is expected
        rebuilt = round_trip(original)
        assert type(rebuilt) is expected and str(rebuilt) == str(original)
        assert str(rebuilt.request.url) == str(original.request.url)  # type: ignore[attr-defined]
        assert type(rebuilt.__cause__) is type(original.__cause__) is transport_error


# -- live sees what replay sees --------------------------------------------------------------

EXCEPTIONS = [
    Flaky("down", status=503, retryable=True),
    Coded(3, "no"),
    Holding("live object"),
    Leaky("expired", token="tok-123"),
    chained(Plain("outer"), Flaky("inner", status=1)),
    chained(Plain("outer"), Holding("inner")),
    OSError(errno.ENOENT, "No such file or directory", "x"),
]


@pytest.mark.parametrize("original", EXCEPTIONS, ids=repr)
def test_live_sees_what_replay_rebuilds(journal: Journal, original: Exception) -> None:
    """The original exception live only if replay rebuilds an equal one from the stored (and
    redacted) record; StepFailed both times otherwise, with the same text."""
    redact = journal.redactor()
    live = as_replayed_error(original, redact)
    payload = RecordedError.from_exception(original).encode()
    replayed = rebuild_error(redact(payload) if redact is not None else payload)
    assert type(live) is type(replayed)
    if isinstance(live, StepFailed):
        assert (live.type_name, live.message) == (replayed.type_name, replayed.message)  # type: ignore[attr-defined]
    else:
        assert live is original
        assert without_traceback(replayed) == without_traceback(original)


# -- through a run ---------------------------------------------------------------------------


@step
async def call_upstream() -> str:
    raise Flaky("upstream down", status=503, retryable=True)


@step
async def read_config(path: str) -> str:
    return Path(path).read_text()


@step
async def wrapped() -> str:
    try:
        await call_upstream()
    except Flaky as exc:
        raise Plain("could not fetch") from exc
    return "unreachable"


@step
async def hold() -> str:
    raise Holding("cannot journal a lock")


def test_attributes_live_and_on_replay(journal: Journal) -> None:
    """Live sees status=503 retryable=True, and so does replay."""
    seen: list[tuple[str, int, bool]] = []

    async def wf() -> str:
        try:
            return await call_upstream()
        except Flaky as exc:
            seen.append((type(exc).__name__, exc.status, exc.retryable))
            return "handled"

    asyncio.run(run(wf, journal=journal, run_id="attrs"))
    asyncio.run(run(wf, journal=journal, run_id="attrs", mode="replay"))
    assert seen == [("Flaky", 503, True)] * 2


def test_file_not_found_is_caught_live_and_on_replay(journal: Journal, tmp_path: Path) -> None:
    """`except FileNotFoundError` matches live and on replay, with the same filename."""
    seen: list[tuple[int | None, str]] = []
    missing = str(tmp_path / "settings.toml")

    async def wf() -> str:
        try:
            return await read_config(missing)
        except FileNotFoundError as exc:
            seen.append((exc.errno, exc.filename))
            return "defaults"

    assert asyncio.run(run(wf, journal=journal, run_id="fnf")) == "defaults"
    assert asyncio.run(run(wf, journal=journal, run_id="fnf", mode="replay")) == "defaults"
    assert seen == [(errno.ENOENT, missing)] * 2


def test_cause_live_and_on_replay(journal: Journal) -> None:
    """`__cause__` is there live and on replay, with its own attributes."""
    causes: list[tuple[str, int]] = []

    async def wf() -> str:
        try:
            return await wrapped()
        except Plain as exc:
            cause = exc.__cause__
            assert isinstance(cause, Flaky)
            causes.append((str(cause), cause.status))
            return "handled"

    asyncio.run(run(wf, journal=journal, run_id="cause"))
    asyncio.run(run(wf, journal=journal, run_id="cause", mode="replay"))
    assert causes == [("upstream down", 503)] * 2


def test_unrebuildable_exception_is_step_failed_live_and_on_replay(journal: Journal) -> None:
    """An exception holding a live object is StepFailed live and on replay, with its text."""
    seen: list[tuple[str, str]] = []

    async def wf() -> str:
        try:
            return await hold()
        except StepFailed as exc:
            seen.append((exc.type_name, exc.message))
            return "handled"

    asyncio.run(run(wf, journal=journal, run_id="hold"))
    asyncio.run(run(wf, journal=journal, run_id="hold", mode="replay"))
    assert seen == [("tests.test_exceptions:Holding", "cannot journal a lock")] * 2


def test_a_failed_runs_error_is_raised_again_with_its_attributes(journal: Journal) -> None:
    """run() on a run that failed raises its recorded error again, attributes included."""

    async def wf() -> str:
        raise Flaky("gave up", status=429, retryable=False)

    with pytest.raises(Flaky) as first:
        asyncio.run(run(wf, journal=journal, run_id="failed"))
    with pytest.raises(Flaky) as again:
        asyncio.run(run(wf, journal=journal, run_id="failed"))
    assert (
        (again.value.status, again.value.retryable) == (first.value.status, False) == (429, False)
    )


def test_openai_error_inside_a_step_live_and_on_replay(journal: Journal) -> None:
    """A real SDK 503 inside a step: caught as InternalServerError with its status and body,
    live and on replay (which makes no request)."""
    requests: list[str] = []

    def busy(request: httpx2.Request) -> httpx2.Response:
        requests.append(str(request.url))
        return sdk_error(503, OPENAI_400, **{"x-request-id": "req_9"})(request)  # type: ignore[no-any-return]

    @step
    async def completion() -> str:
        return str(ask_openai(openai_client(busy)))

    seen: list[tuple[int, Any, str | None]] = []

    async def wf() -> str:
        try:
            return await completion()
        except openai.InternalServerError as exc:
            seen.append((exc.status_code, exc.body, exc.request_id))
            return "later"

    asyncio.run(run(wf, journal=journal, run_id="sdk"))
    asyncio.run(run(wf, journal=journal, run_id="sdk", mode="replay"))
    assert seen == [(503, OPENAI_400["error"], "req_9")] * 2
    assert len(requests) == 1


# -- the law ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
attribute_names = st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True).filter(
    lambda n: (
        n not in {"args", "status", "retryable", "code", "reason"}
        and not Redaction().is_secret_key(n)
    )
)


@st.composite
def exceptions(draw: st.DrawFn, depth: int = 0) -> BaseException:
    kind = draw(st.sampled_from(["flaky", "coded", "plain", "value", "key", "os"]))
    if kind == "flaky":
        exc: Exception = Flaky(draw(st.text(max_size=5)), status=draw(st.integers(0, 599)))
    elif kind == "coded":
        exc = Coded(draw(st.integers(-(2**63), 2**63 - 1)), draw(st.text(max_size=5)))
    elif kind == "plain":
        exc = Plain(*draw(st.lists(json_values, max_size=3)))
    elif kind == "value":
        exc = ValueError(draw(st.text(max_size=5)))
    elif kind == "key":
        exc = KeyError(draw(st.text(max_size=5)))
    else:
        exc = OSError(
            draw(st.sampled_from([errno.ENOENT, errno.EACCES, errno.EEXIST, 999])),
            draw(st.text(max_size=5)),
            draw(st.none() | st.text(max_size=5)),
        )
    for name, value in draw(st.dictionaries(attribute_names, json_values, max_size=2)).items():
        setattr(exc, name, value)
    if depth < 3 and draw(st.booleans()):
        return chained(exc, draw(exceptions(depth + 1)))
    return exc


def assert_same(original: BaseException | None, rebuilt: BaseException | None) -> None:
    if original is None:
        assert rebuilt is None
        return
    assert type(rebuilt) is type(original)
    assert str(rebuilt) == str(original) and rebuilt.args == original.args
    assert vars(rebuilt) == vars(original)
    if isinstance(original, OSError):
        for field in ("errno", "strerror", "filename", "filename2"):
            assert getattr(rebuilt, field) == getattr(original, field)
    assert_same(original.__cause__, rebuilt.__cause__)


@given(exceptions())
def test_record_then_rebuild_keeps_type_message_attributes_and_cause(exc: BaseException) -> None:
    """For any exception of JSON-able parts: same type, message, args, attributes, cause."""
    assert_same(exc, round_trip(exc))


@given(exceptions(), st.sampled_from(["", "handle", "token"]))
def test_live_and_replay_agree_for_any_exception(exc: BaseException, extra: str) -> None:
    """For any exception, with or without a part the journal cannot hold (a lock) or must not
    hold (a secret): live sees the original only when replay rebuilds the same one from the
    stored record; otherwise both see StepFailed with the same text."""
    assert isinstance(exc, Exception)
    if extra == "handle":
        exc.handle = threading.Lock()  # type: ignore[attr-defined]
    elif extra == "token":
        exc.token = "tok-secret"  # type: ignore[attr-defined]
    redact = Redaction().bind(b"salt" * 8)
    live = as_replayed_error(exc, redact)
    replayed = rebuild_error(redact(RecordedError.from_exception(exc).encode()))
    if isinstance(live, StepFailed):
        assert isinstance(replayed, StepFailed) and extra
        assert (live.type_name, live.message) == (replayed.type_name, replayed.message)
    else:
        assert live is exc and not extra
        assert_same(exc, replayed)
