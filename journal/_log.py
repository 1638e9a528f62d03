"""Structured logs through the standard `logging` tree, so a library stays quiet by default.

Events are key=value lines on the `replay` and `journal` loggers: enable them with
`logging.getLogger("replay").setLevel(logging.INFO)` (plus a handler), or route them into an
application's own structlog configuration.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(
        logging.getLogger(name),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event", "run_id"]),
        ],
    )
