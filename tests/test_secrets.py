"""Secrets planted where agents put them (URL queries, error messages, a transport's failing
request) never reach the database, its WAL, any export, `journal show` or the logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pydantic
import pytest
from typer.testing import CliRunner

import replay
from journal import Journal
from replay._cli import app
from replay.integrations import AsyncJournalTransport

QUERY_SECRET = "AIzaQuerySecret9f3c2e7d"
SIGNATURE = "sigSecret4b8a6350e1"
ERROR_SECRET = "sk-live-error-2c9e7f3a5b"
TRANSPORT_SECRET = "tok-transport-8d1f4a"
MORE_SECRETS = (
    "AmzCred1x9",
    "AmzSig2y8",
    "AmzTok3z7",
    "NestedKey4w6",
    "KeyInError5v5",
    "OauthCode6u4",
)

runner = CliRunner()


@replay.step(kind="tool")
async def geocode(url: str) -> str:
    await asyncio.sleep(0)
    return "ok " + url.split("?")[0]


@replay.step(kind="tool")
async def charge(api_key: str, amount: int) -> str:
    await asyncio.sleep(0)
    raise PermissionError(f"key {api_key} may not charge {amount}")


async def agent() -> list[str]:
    done = [await geocode(f"https://maps.example/geo?key={QUERY_SECRET}&q=cats")]
    done.append(await geocode(f"https://files.example/a.pdf?X-Sig=1&sig={SIGNATURE}"))
    try:
        await charge(ERROR_SECRET, 5)
    except replay.StepFailed as exc:  # a redacted error is served as StepFailed, live too
        done.append(str(exc))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    async with httpx.AsyncClient(
        transport=AsyncJournalTransport(httpx.MockTransport(refuse))
    ) as client:
        try:
            await client.get(f"https://api.example/v1/items?token={TRANSPORT_SECRET}&page=2")
        except (httpx.ConnectError, replay.StepFailed) as exc:
            done.append(type(exc).__name__)
    done += await more_shapes()
    return done


@replay.step(kind="tool")
async def download(url: str) -> str:
    return "ok"


def _api(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/oauth":
        location = "https://app.example/cb?code=OauthCode6u4"
        return httpx.Response(302, headers={"location": location})
    return httpx.Response(403)


@replay.step(kind="tool")
async def get_report(path: str) -> int:
    """Builds its URL (with the key) inside the step; raise_for_status names the URL."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(_api)) as client:
        response = await client.get("https://api.example" + path, params={"key": "KeyInError5v5"})
        response.raise_for_status()
        return response.status_code


async def more_shapes() -> list[str]:
    """A presigned S3 URL, a URL inside a URL, a key in an error raised inside a step, a
    response's Location header, and secrets in the workflow's own result."""
    signed = "https://b.s3.amazonaws.com/o?X-Amz-Credential=AmzCred1x9&X-Amz-Signature=AmzSig2y8"
    await download(signed + "&X-Amz-Security-Token=AmzTok3z7")
    await download("https://proxy.example/f?url=" + quote("https://a.example/v1?key=NestedKey4w6"))
    with contextlib.suppress(httpx.HTTPStatusError, replay.StepFailed):
        await get_report("/r")
    async with httpx.AsyncClient(transport=AsyncJournalTransport(httpx.MockTransport(_api))) as c:
        await c.get("https://id.example/oauth")
    return ["shapes"]


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("where", ["database", "exports and show"])
def test_planted_secrets_never_reach_disk_exports_or_logs(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "journal"
    db = folder / "j.db"
    journal = Journal(db)
    result = asyncio.run(replay.run(agent, journal=journal, run_id="secrets"))
    # Live code sees what replay will serve: the secret is scrubbed from the message it gets.
    assert ERROR_SECRET not in result[2] and "[redacted " in result[2]
    secrets = [
        s.encode() for s in (QUERY_SECRET, SIGNATURE, ERROR_SECRET, TRANSPORT_SECRET, *MORE_SECRETS)
    ]
    if where == "database":
        on_disk = every_byte(folder)  # the WAL not checkpointed yet
        journal.close()
        on_disk += every_byte(folder)
        for secret in secrets:
            assert secret not in on_disk, secret
    else:
        journal.close()
        outputs = []
        for fmt in ("jsonl", "json", "csv", "html"):
            out = tmp_path / f"export.{fmt}"
            code = runner.invoke(
                app, ["export", "secrets", "--db", str(db), "-f", fmt, "-o", str(out)]
            ).exit_code
            assert code == 0
            outputs.append(out.read_bytes())
        shown = runner.invoke(app, ["show", "secrets", "--db", str(db), "--payloads"])
        assert shown.exit_code == 0
        outputs.append(shown.output.encode())
        ours = [
            r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("replay", "journal")
        ]
        outputs.append("\n".join(ours).encode())  # httpx's own logger prints URLs: not ours
        for secret in secrets:
            for output in outputs:
                assert secret not in output, secret
    with Journal(db) as again:
        replayed = asyncio.run(replay.run(agent, journal=again, run_id="secrets", mode="replay"))
    assert replayed == result


def test_secrets_in_the_workflows_result_never_reach_disk(tmp_path: Path) -> None:
    """The run's own result is redacted like a step's: the caller gets the markers a later
    call will be served, and the file holds none of the secrets."""

    async def logs_in() -> dict[str, str]:
        return {"token": "ResultToken7t3", "user": "ada"}

    folder = tmp_path / "journal"
    with Journal(folder / "j.db") as journal:
        result = asyncio.run(replay.run(logs_in, journal=journal, run_id="result"))
        again = asyncio.run(replay.run(logs_in, journal=journal, run_id="result"))
    assert result == again and result["user"] == "ada" and result["token"].startswith("[redacted")
    assert b"ResultToken7t3" not in every_byte(folder)


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ({"dsn": "postgresql://bob:Passw0rdX1@db.example/app"}, "Passw0rdX1"),
        ({"callback": "https://app.example/cb#access_token=FragTok2&state=1"}, "FragTok2"),
        ({"url": "https://a.example/v1?api_key[]=ArrKey3"}, "ArrKey3"),
        ({"headers": [["Authorization", "Bearer PairTok4"], ["X-Trace", "t1"]]}, "PairTok4"),
        ({"url": "https://gcs.example/o?X-Goog-Signature=GoogSig5"}, "GoogSig5"),
    ],
)
def test_more_places_secrets_hide_are_redacted_once_and_for_all(
    tmp_path: Path, value: dict[str, object], secret: str
) -> None:
    """A password in user:pass@, an OAuth fragment, an array parameter, a header as a
    [name, value] pair, a GCS signature: redacted in a step's arguments, idempotently, and
    the step replays."""

    @replay.step(kind="tool")
    async def call(request: dict[str, object]) -> str:
        return "ok"

    async def workflow() -> str:
        return await call(value)

    folder = tmp_path / "journal"
    with Journal(folder / "j.db") as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="shapes"))
        assert asyncio.run(replay.run(workflow, journal=journal, run_id="shapes", mode="replay"))
        redactor = journal.redactor()
    assert redactor is not None
    once = redactor(orjson.dumps(value))
    assert secret.encode() not in once and redactor(once) == once
    assert secret.encode() not in every_byte(folder)


# Third adversarial round: where secrets still reached the disk.

RUN_ERROR_SECRET = "RunErrKey8s2"
BASIC_PASSWORD = "BasicPw9r1x"
FORM_SECRET = "FormSecret7q0"
FORM_TOKEN = "FormToken6p9"
QUOTED_TOKEN = "Quoted+Tok/5o8=="
SSE_TOKEN = "SseToken4n7"
BARE_TOKEN = "BareTok3m6x"
SECRET_STR = "SecretStr2l5"
CAMEL_SECRET = "CamelSak1k4"
PROSE_SIG = "ProseSig0j3"
NAMED_VALUE = "NamedVal9i2"
ENV_LINE = "EnvLine8h1"
HEADER_LINE = "HeaderLine7g0"
THIRD_ROUND = (
    RUN_ERROR_SECRET,
    BASIC_PASSWORD,
    FORM_SECRET,
    FORM_TOKEN,
    quote(QUOTED_TOKEN, safe=""),
    QUOTED_TOKEN,
    SSE_TOKEN,
    BARE_TOKEN,
    SECRET_STR,
    CAMEL_SECRET,
    PROSE_SIG,
    NAMED_VALUE,
    ENV_LINE,
    HEADER_LINE,
)


def _third_round_api(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/token":  # RFC 6749: form-encoded request, and here answer
        return httpx.Response(
            200,
            headers={"content-type": "application/x-www-form-urlencoded"},
            content=f"access_token={FORM_TOKEN}&scope=repo".encode(),
        )
    if request.url.path == "/events":  # an MCP server's streamed answer
        body = f'event: message\ndata: {{"result": {{"access_token": "{SSE_TOKEN}"}}}}\n\n'
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    if request.url.path == "/signed":
        return httpx.Response(403, json={"error": "expired"})
    return httpx.Response(200, json={"ok": True})


@replay.step(kind="tool")
async def call_with(headers: dict[str, str]) -> str:
    raise PermissionError(f"token {BARE_TOKEN} was revoked")  # names the bare token


class Settings(pydantic.BaseModel):
    api_key: pydantic.SecretStr
    region: str


@replay.step(kind="tool")
async def configure(settings: Settings) -> str:
    raise ValueError(f"key {settings.api_key.get_secret_value()} is not valid in eu")


@replay.step(kind="tool")
async def remember(value: object) -> str:
    return "ok"


async def third_round() -> str:
    transport = AsyncJournalTransport(httpx.MockTransport(_third_round_api))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"https://bob:{BASIC_PASSWORD}@registry.example/v2/items")
        await client.post(
            "https://id.example/token",
            data={"grant_type": "client_credentials", "client_secret": FORM_SECRET},
        )
        await client.get("https://mcp.example/events")
        signed = await client.get(
            "https://s3.example/b/o", params={"X-Amz-Security-Token": QUOTED_TOKEN}
        )
        with contextlib.suppress(httpx.HTTPStatusError):
            signed.raise_for_status()  # its message quotes the URL, percent-encoded
    with contextlib.suppress(replay.StepFailed):
        await call_with({"Authorization": f"Bearer {BARE_TOKEN}"})
    with contextlib.suppress(replay.StepFailed):
        await configure(Settings(api_key=pydantic.SecretStr(SECRET_STR), region="eu"))
    await remember({"SecretAccessKey": CAMEL_SECRET, "maxTokens": 5})
    await remember(f"Fetch [the file](https://s3.example/x?X-Amz-Signature={PROSE_SIG}) now.")
    await remember({"env": [{"name": "OPENAI_API_KEY", "value": NAMED_VALUE}]})
    await remember([f"OPENAI_API_KEY={ENV_LINE}", "curl", f"Authorization: Bearer {HEADER_LINE}"])
    return await charge(RUN_ERROR_SECRET, 7)  # not caught: the run fails with the secret


def test_third_round_secrets_never_reach_disk_or_exports(tmp_path: Path) -> None:
    """The run's own failure (a step's cause in its traceback), a user:pass@ URL's step name,
    OAuth form bodies both ways, a percent-encoded signature in an HTTP error, a streamed
    event, the bare token of a `Bearer` header, a SecretStr, camelCase key names, a URL in
    prose or markdown, name/value lists, env and header lines: none reaches the disk, an
    export or `journal show`; and the run replays."""
    folder = tmp_path / "journal"
    db = folder / "j.db"
    with Journal(db) as journal, pytest.raises(replay.StepFailed):
        asyncio.run(replay.run(third_round, journal=journal, run_id="r3"))
    outputs = [every_byte(folder)]
    for fmt in ("jsonl", "json", "csv", "html"):
        out = tmp_path / f"export.{fmt}"
        assert runner.invoke(app, ["export", "r3", "--db", str(db), "-f", fmt, "-o", str(out)])
        outputs.append(out.read_bytes())
    shown = runner.invoke(app, ["show", "r3", "--db", str(db), "--payloads"])
    outputs.append(shown.output.encode())
    for secret in THIRD_ROUND:
        for output in outputs:
            assert secret.encode() not in output, secret
    with Journal(db) as journal:
        names = {e.name for e in journal.events("r3")}
        assert "GET registry.example/v2/items" in names
        with pytest.raises(replay.StepFailed):
            asyncio.run(replay.run(third_round, journal=journal, run_id="r3", mode="replay"))


def test_prose_with_a_colon_is_not_taken_for_a_url(tmp_path: Path) -> None:
    """`echo: ... ?sig=X please` once lost `please` and its first word's case to a marker:
    text is redacted only where it holds a URL, and nothing else in it changes."""
    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
    assert redactor is not None
    prose = orjson.dumps({"answer": "Echo: see ?sig=abc123 please"})
    assert redactor(prose) == prose
    sentence = {"m": "See https://x.example/a?sig=abc123def456 now"}
    linked = orjson.loads(redactor(orjson.dumps(sentence)))
    assert linked["m"].startswith("See https://x.example/a?sig=") and linked["m"].endswith(" now")
    assert "abc123def456" not in linked["m"]


# Fourth round: what redaction must leave alone, and the shapes it still missed.

ORDINARY_RESULTS = [
    {"hasPassword": False, "isSecret": False, "hasApiKey": False},  # flags stay flags
    {"status": 200, "cookies": []},
    [{"key": "password", "value": "Mot de passe"}, {"key": "token", "value": "Jeton"}],
    "Password: required",
    "Token: expired",
    "See [France](https://restcountries.example/v3.1/alpha?code=FR).",
    "https://example.com/?code=FR is the page about France, read it first",
    "/api/items?key=color",
    {"next_page_token": "abc", "token_type": "bearer", "max_tokens": 5},
]


@pytest.mark.parametrize("value", ORDINARY_RESULTS, ids=lambda v: str(v)[:40])
def test_an_ordinary_result_reaches_the_code_unchanged(tmp_path: Path, value: object) -> None:
    """A step's result is served redacted, live and on replay: a false positive changes what
    the workflow computes (`"hasPassword": false` became a truthy marker)."""

    @replay.step(kind="tool")
    async def fetch() -> object:
        return value

    async def workflow() -> object:
        return await fetch()

    with Journal(tmp_path / "j.db") as journal:
        assert asyncio.run(replay.run(workflow, journal=journal, run_id="r")) == value


LINES = {
    "a quoted env line": ('OPENAI_API_KEY="EnvQuoted1a2b"', "EnvQuoted1a2b"),
    "an exported env line": ("export OPENAI_API_KEY=EnvExport3c4d", "EnvExport3c4d"),
    "a header line without a space": ("Authorization:Bearer HdrNoSpace5e6f", "HdrNoSpace5e6f"),
    "a YAML line": ("api_key: 'YamlQuoted7g8h'", "YamlQuoted7g8h"),
    "an env file": ("LOG_LEVEL=info\nDB_PASSWORD=EnvFile9i0j\nPORT=8080\n", "EnvFile9i0j"),
}


@pytest.mark.parametrize("name", sorted(LINES))
def test_secret_lines_in_their_usual_spellings_are_redacted(tmp_path: Path, name: str) -> None:
    text, secret = LINES[name]
    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
    assert redactor is not None
    redacted = redactor(orjson.dumps({"config": text}))
    assert secret.encode() not in redacted and b"[redacted " in redacted, redacted


@pytest.mark.parametrize("padding", [0, 5_000], ids=["short", "in a long prompt"])
@pytest.mark.parametrize("name", sorted(LINES))
def test_secret_lines_in_a_step_argument_never_reach_the_file(
    tmp_path: Path, name: str, padding: int
) -> None:
    """A step called with a text that quotes a secret line (an env file pasted into a prompt
    of any length): the line's secret is redacted in the journal (the arguments' quick check
    once looked only at texts of 1,024 characters or less)."""
    text, secret = LINES[name]

    @replay.step(kind="llm")
    async def ask(prompt: str) -> str:
        return "ok"

    async def workflow() -> str:
        return await ask("context " * (padding // 8) + "\n" + text + "\nthanks")

    path = tmp_path / "j.db"
    with Journal(path) as journal:
        assert asyncio.run(replay.run(workflow, journal=journal, run_id="r")) == "ok"
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in stored


def test_more_shapes_of_the_fourth_round_are_redacted(tmp_path: Path) -> None:
    """An acronym before camelCase (`AWSSecretAccessKey`), capitalised name/value objects, a
    presigned link in a prompt longer than 64 kB, and a bytes key quoted in an error."""
    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
    assert redactor is not None
    prompt = "x" * 70_000 + " see https://s3.example/o?X-Amz-Signature=LongPromptSig1k2l end"
    payload = orjson.dumps(
        {
            "creds": {"AWSSecretAccessKey": "AcronymKey3m4n"},
            "env": [{"Name": "DB_PASSWORD", "Value": "CapsValue5o6p"}],
            "prompt": prompt,
        }
    )
    redacted = redactor(payload)
    for secret in (b"AcronymKey3m4n", b"CapsValue5o6p", b"LongPromptSig1k2l"):
        assert secret not in redacted, secret
    error = orjson.dumps({"message": "key b'BytesKey7q8r' may not charge"})
    scrubbed = redactor.scrub(error, {"api_key": b"BytesKey7q8r"})
    assert b"BytesKey7q8r" not in scrubbed


def _streams(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/multi":  # one event's JSON over two data lines, CRLF
        body = 'data: {"result":\r\ndata:  {"access_token": "SseMulti9s0t"}}\r\n\r\n'
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    if request.url.path == "/cr":  # lines ending in CR alone
        body = 'data: {"access_token": "SseCarriage1u2v"}\r\r'
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return httpx.Response(
        200,
        headers={"content-type": "Application/X-WWW-Form-Urlencoded"},
        content=b"access_token=FormCaps3w4x&scope=repo",
    )


def test_streams_and_forms_in_their_other_spellings_are_redacted(tmp_path: Path) -> None:
    seen: list[str] = []

    async def workflow() -> list[str]:
        transport = AsyncJournalTransport(httpx.MockTransport(_streams))
        async with httpx.AsyncClient(transport=transport) as client:
            for path in ("multi", "cr", "f"):
                seen.append((await client.get(f"https://x.example/{path}")).text)
        return seen  # the run's result is scrubbed of them, as a later call is served

    folder = tmp_path / "journal"
    with Journal(folder / "j.db") as journal:
        result = asyncio.run(replay.run(workflow, journal=journal, run_id="streams"))
    assert "SseMulti9s0t" in seen[0]  # the live code got the real stream
    assert "SseMulti9s0t" not in result[0] and "[redacted " in result[0]
    on_disk = every_byte(folder)
    for secret in (b"SseMulti9s0t", b"SseCarriage1u2v", b"FormCaps3w4x"):
        assert secret not in on_disk, secret


def test_a_reply_that_quotes_the_url_back_keeps_no_key_sent_in_its_query(tmp_path: Path) -> None:
    """A key sent in the URL (`?key=`, as Google's APIs take it) is redacted in the request,
    and a reply that quotes the URL back (a 404 naming the path) is scrubbed of it too; the
    served reply on resume is the scrubbed one."""

    def echo(request: httpx.Request) -> httpx.Response:
        asked = request.url.raw_path.decode()  # the path and its query, not a whole URL
        return httpx.Response(404, json={"error": f"no such page: {asked}"})

    async def asks() -> str:
        transport = AsyncJournalTransport(httpx.MockTransport(echo))
        async with httpx.AsyncClient(transport=transport) as c:
            reply = await c.get("https://maps.example/nowhere", params={"key": "EchoedKey8q2"})
        return str(reply.json()["error"])

    folder = tmp_path / "journal"
    with Journal(folder / "j.db") as journal:
        said = asyncio.run(replay.run(asks, journal=journal, run_id="echo"))
        again = asyncio.run(replay.run(asks, journal=journal, run_id="echo", mode="replay"))
    assert said == again and "/nowhere?key=" in said and "EchoedKey8q2" not in said
    assert b"EchoedKey8q2" not in every_byte(folder)
