"""Journal the LLM and tool calls of code you do not own, at the HTTP layer.

AsyncJournalTransport   wraps an httpx2 / httpx async transport (OpenAI, Anthropic SDKs)
JournalTransport        the same for synchronous clients
instrument()            journal every httpx2 / httpx client's requests made inside a run
uninstrument()          undo instrument()
"""

from ._http import AsyncJournalTransport, JournalTransport
from ._instrument import instrument, uninstrument
from ._litellm import route_litellm

__all__ = [
    "AsyncJournalTransport",
    "JournalTransport",
    "instrument",
    "route_litellm",
    "uninstrument",
]
