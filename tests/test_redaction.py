"""Secrets never reach the disk, replay still matches, and oversized payloads are refused."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import replay
from journal import Journal, PayloadTooLarge, Redaction

SECRET = "sk-live-4f9c2e7d1b8a6350"


@replay.step(kind="llm")
async def call_model(prompt: str, headers: dict[str, str]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"text": f"reply to {prompt}", "session_token": SECRET + "-session", "max_tokens": 64}


@replay.step(kind="tool")
def login(user: str, password: str) -> str:
    if password != SECRET:
        raise PermissionError(f"bad password for {user}")
    return "ok"


async def agent(prompt: str, api_key: str) -> str:
    reply = await call_model(prompt, {"Authorization": f"Bearer {api_key}", "X-Trace": "t1"})
    login("ada", api_key)
    return str(reply["text"])


def every_byte_on_disk(folder: Path) -> bytes:
    """The database, its WAL and anything else SQLite left in the folder."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def test_secrets_in_arguments_results_and_inputs_never_reach_the_file(tmp_path: Path) -> None:
    """The secret is in the workflow's inputs, a header, a step argument and a result: the
    database file and its WAL hold none of them, before or after close."""
    journal = Journal(tmp_path / "j.db")
    result = asyncio.run(replay.run(agent, "hi", SECRET, journal=journal, run_id="r"))
    assert result == "reply to hi"
    assert SECRET.encode() not in every_byte_on_disk(tmp_path)  # WAL not yet checkpointed
    events = journal.events("r")
    journal.close()
    assert SECRET.encode() not in every_byte_on_disk(tmp_path)
    first_call = orjson.loads(events[0].payload or b"")["args"]
    assert first_call["headers"]["Authorization"].startswith("[redacted ")
    assert first_call["headers"]["X-Trace"] == "t1"  # only secrets are touched
    assert first_call["prompt"] == "hi"
    reply = orjson.loads(events[1].payload or b"")
    assert reply["session_token"].startswith("[redacted ") and reply["max_tokens"] == 64


def test_live_code_sees_the_markers_replay_will_serve(tmp_path: Path) -> None:
    """A redacted result is returned live as it will be served on replay: live == replay."""
    seen: list[dict[str, Any]] = []

    async def keeps_reply() -> None:
        seen.append(await call_model("x", {}))

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(keeps_reply, journal=journal, run_id="r"))
        asyncio.run(replay.run(keeps_reply, journal=journal, run_id="r", mode="replay"))
    assert seen[0] == seen[1]
    assert seen[0]["session_token"].startswith("[redacted ")


def test_a_redacted_run_replays_and_a_changed_secret_diverges(tmp_path: Path) -> None:
    """Replay with the same secret matches (keyed hash); a different secret is a divergence."""
    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(agent, "hi", SECRET, journal=journal, run_id="r"))
        outcome = asyncio.run(
            replay.run_with_summary(agent, "hi", SECRET, journal=journal, run_id="r2")
        )
        assert outcome.summary.executed == 2
        replayed = asyncio.run(
            replay.run_with_summary(agent, "hi", SECRET, journal=journal, run_id="r", mode="replay")
        )
        assert replayed.summary.served == 2 and replayed.result == "reply to hi"

        async def other_key_same_inputs(prompt: str, api_key: str) -> str:
            return await agent(prompt, "sk-a-different-key")

        other_key_same_inputs.__qualname__ = agent.__qualname__
        with pytest.raises(replay.NonDeterminismError) as err:
            asyncio.run(
                replay.run(
                    other_key_same_inputs, "hi", SECRET, journal=journal, run_id="r", mode="replay"
                )
            )
    assert "headers" in str(err.value) and "[redacted " in str(err.value)
    assert "sk-a-different-key" not in str(err.value)


def test_recorded_redacted_inputs_replay_when_passed_through(tmp_path: Path) -> None:
    """`journal replay` feeds back the recorded inputs, where a secret input is its marker.
    A marker passed on unchanged is not hashed again, so such a run replays; a secret that
    the code transforms (say into a header) cannot be rebuilt from its marker and diverges,
    which docs/audit.md says: keep secrets out of workflow inputs."""

    async def signs_in(user: str, api_key: str) -> str:
        return login(user, api_key)

    async def builds_header(prompt: str, api_key: str) -> str:
        return str((await call_model(prompt, {"Authorization": f"Bearer {api_key}"}))["text"])

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(signs_in, "ada", SECRET, journal=journal, run_id="passed"))
        asyncio.run(replay.run(builds_header, "hi", SECRET, journal=journal, run_id="derived"))
        recorded = orjson.loads(journal.run("passed").inputs or b"")["args"]
        assert recorded[0] == "ada" and recorded[1].startswith("[redacted ")
        outcome = asyncio.run(
            replay.run_with_summary(
                signs_in, *recorded, journal=journal, run_id="passed", mode="replay"
            )
        )
        assert outcome.result == "ok" and outcome.summary.served == 1
        derived = orjson.loads(journal.run("derived").inputs or b"")["args"]
        with pytest.raises(replay.NonDeterminismError, match="Authorization"):
            asyncio.run(
                replay.run(
                    builds_header, *derived, journal=journal, run_id="derived", mode="replay"
                )
            )


def test_users_add_keys_and_rules(tmp_path: Path) -> None:
    """Own key patterns and a value rule add to the defaults; defaults=False replaces them."""

    @replay.step
    def profile(person: dict[str, Any]) -> str:
        return "done"

    async def workflow() -> None:
        profile({"name": "Ada", "ssn": "123-45-6789", "home_pin": "0042", "note": "ghp_abcdef"})

    policy = Redaction(keys=["ssn", "*_pin"], rule=lambda key, value: str(value).startswith("ghp_"))
    with Journal(tmp_path / "j.db", redaction=policy) as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        started, _ = journal.events("r")  # a sync step writes its start before it runs
    person = orjson.loads(started.payload or b"")["args"]["person"]
    assert person["name"] == "Ada"
    assert all(person[k].startswith("[redacted ") for k in ("ssn", "home_pin", "note"))
    assert not Redaction(keys=["ssn"], defaults=False).is_secret_key("password")
    assert Redaction().is_secret_key("X-Api-Key") and Redaction().is_secret_key("OPENAI_API_KEY")
    assert not Redaction().is_secret_key("max_tokens")
    with pytest.raises(ValueError, match="bare"):
        Redaction(keys=["*"])


def test_a_value_rule_redacts_a_whole_result_and_list_items(tmp_path: Path) -> None:
    """The rule reaches values that sit under no key: a step's whole result (a bare string)
    and the items of a list."""
    ghp = lambda key, value: str(value).startswith("ghp_")  # noqa: E731

    @replay.step
    async def token() -> str:
        return "ghp_wholeResult1"

    @replay.step
    async def tokens() -> list[str]:
        return ["plain", "ghp_listItem2"]

    async def workflow() -> None:
        await token()
        await tokens()

    with Journal(tmp_path / "j.db", redaction=Redaction(rule=ghp)) as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        payloads = [e.payload or b"" for e in journal.events("r")]
    stored = b"".join(payloads)
    assert b"ghp_wholeResult1" not in stored and b"ghp_listItem2" not in stored
    assert b'"plain"' in stored


def test_a_header_pair_in_the_arguments_is_scrubbed_from_the_result(tmp_path: Path) -> None:
    """`[name, value]` pairs with a secret name (headers as HTTP libraries list them): the
    value is redacted in the arguments and scrubbed wherever the result repeats it."""

    @replay.step
    async def call(headers: list[list[str]]) -> str:
        return f"sent with {headers[0][1]}"

    async def workflow() -> str:
        return await call([["Authorization", "Bearer PairSecret3w4x"]])

    with Journal(tmp_path / "j.db") as journal:
        asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"PairSecret3w4x" not in stored


def test_a_result_that_repeats_a_secret_argument_is_scrubbed(tmp_path: Path) -> None:
    """A tool that echoes the key it was called with: the result is journaled with the key's
    marker, and live code gets the same value replay will serve."""

    @replay.step
    async def whoami(api_key: str) -> dict[str, str]:
        return {"you": f"the holder of {api_key}"}

    async def workflow() -> str:
        return (await whoami("EchoedKey5y6z7a8b"))["you"]

    with Journal(tmp_path / "j.db") as journal:
        live = asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        replayed = asyncio.run(
            replay.run_with_summary(workflow, journal=journal, run_id="r", mode="replay")
        )
    assert live.startswith("the holder of [redacted ") and replayed.result == live
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"EchoedKey5y6z7a8b" not in stored


def test_only_a_small_object_of_a_secret_name_and_its_value_is_a_named_secret(
    tmp_path: Path,
) -> None:
    """`{"name": "DB_PASSWORD", "value": ...}` with up to two more fields (a type, a source) is
    a named secret; a record of five fields that happens to have a name and a value is data."""
    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
    assert redactor is not None
    four = {"name": "DB_PASSWORD", "value": "NamedFour1c2d", "type": "env", "from": "k8s"}
    five = {**four, "value": "RecordFive3e4f", "owner": "ops"}
    redacted = redactor(orjson.dumps({"four": four, "five": five}))
    assert b"NamedFour1c2d" not in redacted and b"RecordFive3e4f" in redacted


def test_redaction_can_be_turned_off(tmp_path: Path) -> None:
    """redaction=None writes values as they are (for journals that hold no secrets)."""
    with Journal(tmp_path / "j.db", redaction=None) as journal:
        asyncio.run(replay.run(agent, "hi", SECRET, journal=journal, run_id="r"))
        assert SECRET.encode() in (journal.run("r").inputs or b"")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    # No '/', '=' or '@': a short string of those could be a URL with a secret parameter.
    | st.text(st.characters(blacklist_characters="/=@", blacklist_categories=("Cs",)), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "token", "Api-Key", "max_tokens", "password", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


_SECRET_KEYS = {"token", "Api-Key", "password"}
_MARKER = re.compile(r"\[redacted [0-9a-f]{16}\]")


def _empty(value: Any) -> bool:
    """What redaction leaves alone under a secret key: a flag, or nothing."""
    return isinstance(value, bool) or (isinstance(value, str | list | dict) and not value)


def _secrets_in(value: Any) -> set[str]:
    """The strings under secret keys long enough to be scrubbed wherever else they appear."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k in _SECRET_KEYS and isinstance(v, str)}
        return {f for f in found if len(f) >= 4}.union(*map(_secrets_in, value.values()))
    if isinstance(value, list):
        return set().union(*map(_secrets_in, value))
    return set()


def _redacted_as_expected(value: Any, redacted: Any, secrets: set[str]) -> None:
    """`redacted` is `value` with each non-null value under a secret key replaced by a marker,
    a secret's text elsewhere replaced by a marker, and nothing else changed."""
    if isinstance(value, dict):
        assert isinstance(redacted, dict) and redacted.keys() == value.keys()
        for key, item in value.items():
            if key in _SECRET_KEYS and item is not None and not _empty(item):
                assert isinstance(redacted[key], str) and _MARKER.fullmatch(redacted[key])
            else:
                _redacted_as_expected(item, redacted[key], secrets)
    elif isinstance(value, list):
        assert isinstance(redacted, list) and len(redacted) == len(value)
        for item, got in zip(value, redacted, strict=True):
            _redacted_as_expected(item, got, secrets)
    elif isinstance(value, str) and any(secret in value for secret in secrets):
        assert isinstance(redacted, str) and _MARKER.search(redacted)
        assert not any(secret in _MARKER.sub("", redacted) for secret in secrets)
    else:
        assert redacted == value


@given(json_values)
def test_redaction_replaces_exactly_the_values_under_secret_keys(value: Any) -> None:
    """Every non-null value under a secret key becomes a marker, and so does the text of such
    a secret wherever else it appears; keys and everything else are left as they were
    (`max_tokens` included); redacting twice equals redacting once."""
    redactor = Redaction().bind(b"salt" * 8)
    payload = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    once = redactor(payload)
    _redacted_as_expected(value, orjson.loads(once), _secrets_in(value))
    assert redactor(once) == once


def test_nothing_to_redact_costs_no_copy() -> None:
    """Bytes without any secret-looking word come back as the very same object."""
    redactor = Redaction().bind(b"s" * 32)
    payload = b'{"prompt":"hello","max_tokens":5}'
    assert redactor(payload) is payload


def test_an_oversized_result_is_refused_naming_the_step(tmp_path: Path) -> None:
    """A result over the limit raises NotJournalable naming the step and both sizes; no
    completed row is written, and resuming runs the step again."""
    calls: list[int] = []

    @replay.step(name="fetch_page")
    async def fetch_page(url: str) -> str:
        calls.append(1)
        await asyncio.sleep(0)
        return "x" * 5000

    async def workflow() -> str:
        return await fetch_page("https://example.com")

    with Journal(tmp_path / "j.db", max_payload_bytes=4000) as journal:
        with pytest.raises(replay.NotJournalable) as err:
            asyncio.run(replay.run(workflow, journal=journal, run_id="r"))
        message = str(err.value)
        assert "fetch_page" in message and "0:1" in message
        assert "5.0 kB" in message and "4.0 kB" in message and "max_payload_bytes" in message
        assert [e.status.value for e in journal.events("r")] == ["started"]
        (verdict,) = journal.verify("r")
        assert verdict.ok


def test_oversized_arguments_and_inputs_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Arguments over the limit fail before the step starts; so do oversized inputs."""

    @replay.step
    def summarise(text: str) -> str:
        raise AssertionError("must not run")

    async def workflow(text: str) -> str:
        return summarise(text * 2)

    with Journal(tmp_path / "j.db", max_payload_bytes=2500) as journal:
        with pytest.raises(replay.NotJournalable, match="arguments"):
            asyncio.run(replay.run(workflow, "y" * 1500, journal=journal, run_id="r"))
        assert journal.events("r") == []
        with pytest.raises(PayloadTooLarge, match="inputs"):
            asyncio.run(replay.run(workflow, "y" * 4000, journal=journal, run_id="r2"))
        assert [r.run_id for r in journal.runs()] == ["r"]
    with pytest.raises(ValueError, match="positive"):
        Journal(tmp_path / "k.db", max_payload_bytes=0)


@pytest.mark.parametrize(
    "value",
    [
        {"password": "password"},  # the secret is the name of the key it sits under
        {"token": "a", "x": {"token": "oken"}},  # a piece of a key name elsewhere
        {"password": "redacted"},  # a piece of every marker
        {"token": "cted", "note": "[redacted 0123456789abcdef]"},
    ],
)
def test_scrubbing_a_secret_everywhere_never_renames_keys_or_breaks_markers(value: Any) -> None:
    """A secret is scrubbed from strings, never from key names or from the markers already
    written: a short, common secret once turned `token` into `t[redacted ...]` and nested
    markers into one another."""
    redactor = Redaction().bind(b"salt" * 8)
    once = redactor(orjson.dumps(value))
    redacted = orjson.loads(once)
    assert redacted.keys() == value.keys()
    assert all(_MARKER.fullmatch(v) for k, v in redacted.items() if k in _SECRET_KEYS)
    assert redactor(once) == once


# -- edges a mutation run found untested ----------------------------------------------------------


def test_a_secret_of_four_characters_is_scrubbed_and_of_three_is_not(tmp_path: Path) -> None:
    """Four characters is the shortest secret scrubbed from text (shorter would mangle words)."""
    from journal import Journal

    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
        assert redactor is not None
        scrubbed = redactor.scrub_secrets(b'"key abcd and xyz refused"', ["abcd", "xyz"])
    assert b"abcd" not in scrubbed and b"xyz" in scrubbed


def test_a_secret_named_beside_its_value_is_found_for_scrubbing(tmp_path: Path) -> None:
    """`{"name": "Authorization", "value": ...}` (HAR files, header lists): its value is one of
    the call's secrets, so an error quoting it is scrubbed too."""
    from journal import Journal

    with Journal(tmp_path / "j.db") as journal:
        redactor = journal.redactor()
        assert redactor is not None
        found = redactor.secrets_in(
            {"headers": [{"name": "Authorization", "value": "Bearer tok-123456"}]}
        )
    assert "Bearer tok-123456" in found
