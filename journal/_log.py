"""Structured logs through the standard `logging` tree, so a library stays quiet by default.

Events are key=value lines on the `replay` and `journal` loggers. Both carry a NullHandler, as
libraries should: nothing is printed until the application configures logging (docs/deployment.md,
"Logs"); `journal -v` prints them on stderr.

structlog renders them, and is imported at the first line a logger would emit: importing it
(with the rich tracebacks it brings) costs more than the rest of the engine, and a process whose
logging is off never pays it.
"""

from __future__ import annotations

import logging
from typing import Any

for _name in ("journal", "replay"):
    logging.getLogger(_name).addHandler(logging.NullHandler())


class _Logger:
    """A structlog BoundLogger for `name`, made when a line at an enabled level comes."""

    __slots__ = ("_bound", "_stdlib")

    def __init__(self, name: str) -> None:
        self._stdlib = logging.getLogger(name)
        self._bound: Any = None

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not self._stdlib.isEnabledFor(level):
            return
        if self._bound is None:
            self._bound = _structlog_logger(self._stdlib)
        getattr(self._bound, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)


def _structlog_logger(stdlib: logging.Logger) -> Any:
    import structlog

    return structlog.wrap_logger(
        stdlib,
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event", "run_id"]),
        ],
    )


def get_logger(name: str) -> Any:
    return _Logger(name)
