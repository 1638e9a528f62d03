"""Structured logs through the standard `logging` tree, so a library stays quiet by default.

Events are key=value lines on the `replay` and `journal` loggers. Both carry a NullHandler, as
libraries should: nothing is printed until the application configures logging (docs/deployment.md,
"Logs"); `journal -v` prints them on stderr.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

for _name in ("journal", "replay"):
    logging.getLogger(_name).addHandler(logging.NullHandler())


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(
        logging.getLogger(name),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event", "run_id"]),
        ],
    )
