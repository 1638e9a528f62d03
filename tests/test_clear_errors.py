"""Bad input gets an error that names the cause, the run and the step, and the fix: never a
raw RecursionError, TypeError or traceback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner

import replay
from journal import Journal, MemoryStore
from replay._cli import app


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def _cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@replay.step(kind="tool")
async def take(value: Any) -> str:
    return "taken"


@replay.step(kind="tool")
async def give(value: Any) -> Any:
    return value


BAD_VALUES = {
    "nested 10,000 deep": lambda: _deep(10_000),
    "cyclic": _cyclic,
    "lone surrogate": lambda: {"text": "caf\udce9"},
}


@pytest.mark.parametrize("what", sorted(BAD_VALUES))
@pytest.mark.parametrize("where", ["argument", "input", "result"])
def test_values_json_cannot_hold_are_not_journalable(what: str, where: str) -> None:
    value = BAD_VALUES[what]()

    async def workflow(given: Any = None) -> Any:
        if where == "argument":
            return await take(value)
        if where == "result":
            return await give(value)
        return "started"

    journal = Journal(store=MemoryStore())
    args = (value,) if where == "input" else ()
    with pytest.raises(replay.NotJournalable) as err:
        asyncio.run(replay.run(workflow, *args, journal=journal, run_id="bad"))
    message = str(err.value)
    assert "Run 'bad'" in message and "Fix:" in message, message
    assert ("inputs" if where == "input" else "step 0:1") in message, message


@pytest.mark.parametrize("run_id", ["", "  ", "r\ud800"])
def test_a_run_id_that_cannot_be_resumed_is_refused(run_id: str) -> None:
    async def workflow() -> str:
        return "x"

    journal = Journal(store=MemoryStore())
    with pytest.raises(ValueError, match="run_id") as err:
        asyncio.run(replay.run(workflow, journal=journal, run_id=run_id))
    assert "Fix:" in str(err.value)
    assert journal.runs() == []


def test_an_invalid_postgres_schema_is_a_one_line_cli_error() -> None:
    from .conftest import PG_URL

    result = CliRunner().invoke(app, ["runs", "--db", f"{PG_URL}?schema=Bad-Name"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "schema must be" in result.output
