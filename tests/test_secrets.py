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
