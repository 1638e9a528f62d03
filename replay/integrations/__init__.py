"""Journal the LLM and tool calls of code you do not own.

AsyncJournalTransport   wraps an httpx2 / httpx async transport (OpenAI, Anthropic SDKs)
JournalTransport        the same for synchronous clients
instrument()            journal every httpx2 / httpx client's requests made inside a run
uninstrument()          undo instrument()
route_litellm()         send litellm's requests through journaling transports
playbooks_program       a Playbooks program as a workflow (`journal playbooks run`)
JournalDurability       a pydantic-ai capability: model requests and tool calls journaled
"""

from typing import TYPE_CHECKING, Any

from ._http import AsyncJournalTransport, JournalTransport
from ._instrument import instrument, uninstrument
from ._litellm import route_litellm
from ._playbooks import playbooks_program

if TYPE_CHECKING:
    from ._pydantic_ai import JournalDurability

__all__ = [
    "AsyncJournalTransport",
    "JournalDurability",
    "JournalTransport",
    "instrument",
    "playbooks_program",
    "route_litellm",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    """`JournalDurability` imports pydantic-ai, so it loads only when asked for."""
    if name == "JournalDurability":
        try:
            from ._pydantic_ai import JournalDurability
        except ImportError as exc:
            raise ImportError(
                f"JournalDurability needs pydantic-ai ({exc}). Fix: pip install "
                "'journal-replay[pydantic-ai]'."
            ) from exc
        return JournalDurability
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
