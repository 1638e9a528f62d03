"""Where journals are kept: the store protocol and the built-in stores."""

from ._memory import MemoryStore
from ._protocol import JournalStore
from ._sqlite import SQLiteStore

__all__ = ["JournalStore", "MemoryStore", "SQLiteStore"]
