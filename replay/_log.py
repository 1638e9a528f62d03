"""Structured logs through the standard `logging` tree (see `journal._log`): the `replay` logger."""

from __future__ import annotations

from journal._log import get_logger

__all__ = ["get_logger"]
