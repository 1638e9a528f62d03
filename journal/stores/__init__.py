"""Where journals are kept: the store protocol and the built-in stores.

`PostgresStore` needs the `postgres` extra (psycopg 3), so it is imported when first asked for.
"""

from typing import TYPE_CHECKING, Any

from ._memory import MemoryStore
from ._protocol import JournalStore
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["JournalStore", "MemoryStore", "PostgresStore", "SQLiteStore"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
