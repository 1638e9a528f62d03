"""Playbooks programs as journaled runs: the workflow behind `journal playbooks run`.

Playbooks (PyPI `playbooks`) calls its LLM through litellm, synchronously, for two things: the
compiler turns a `.pb` program into Playbooks assembly (one call, made before the program
starts), and the interpreter asks what to do at each turn. `route_litellm()` journals both at
the HTTP layer, so a resumed or replayed run pays for neither again. Playbooks' own LLM
response cache is turned off inside the run: it answers before the transport, so what it
served would never reach the journal, and it matches by content, without order or divergence
checks. Needs the `playbooks` extra, in an environment of its own (Playbooks pins
pytest-asyncio at run time).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .._log import get_logger
from ._litellm import route_litellm

log = get_logger("replay")

DEFAULT_APPLICATION = "playbooks.applications.agent_chat"
"""Playbooks' terminal application: what `playbooks run` starts unless told otherwise."""

INSTALL_HINT = (
    "pip install 'journal-replay[playbooks]', in a virtual environment of its own: Playbooks "
    "pins pytest-asyncio (and so pytest<9) and rich<15 at run time"
)


async def playbooks_program(program: str, application: str = DEFAULT_APPLICATION) -> None:
    """Run the Playbooks program at `program` (`.pb`, or a compiled `.pbasm`) to its end with
    Playbooks' `application` module; a workflow: start, resume and replay it with `run()`.

    >>> await run(playbooks_program, "hello.pb", journal=j, run_id="hello-1")

    Every LLM call is a journaled step, the compiler's first. An edited program diverges at
    its first changed call (for a `.pb`, the compile). The program's human turns read
    standard input. `ImportError` naming the fix if Playbooks is not installed.
    """
    # litellm fetches its model price list over the network when imported, outside any
    # journal: a run (and its offline replay) uses the list litellm ships instead, unless set.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        llm_helper: Any = importlib.import_module("playbooks.utils.llm_helper")
    except ImportError as exc:
        raise ImportError(
            f"running a Playbooks program needs Playbooks ({exc}). Fix: {INSTALL_HINT}."
        ) from exc
    route_litellm()
    if llm_helper.llm_cache_enabled:
        log.warning(
            "playbooks.llm_cache_off",
            reason="LLM_CACHE_ENABLED is set, but answers from Playbooks' cache would bypass "
            "the journal: it is off for this run",
        )
    llm_helper.llm_cache_enabled = False  # read by get_completion at each call
    llm_helper.cache = None
    runner: Any = importlib.import_module(application)
    await runner.main(program_paths=[program], verbose=False)
