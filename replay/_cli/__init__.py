"""The `journal` command: a thin coat over `Journal` methods (every command has a Python twin).

Exit codes: 0 success; 1 the journal said no (unknown run, unreadable or missing database,
bad value for an option); 2 bad usage (unknown option, missing argument); 3 the check failed:
`journal replay` found that the run no longer reproduces, `journal verify` found an edit,
`journal diff` found the runs differ, `journal upgrade-check` found a run that would diverge.
"""

from ._app import app

# isort: off
from . import (
    _inspecting,
    _debugging,
    _upgrading,
    _operating,
    _auditing,
    _ui,
    _browsing,
    _playbooks,
)  # registration order is `journal --help` order
# isort: on

__all__ = ["app", "main"]
_COMMAND_MODULES = (
    _auditing,
    _browsing,
    _debugging,
    _inspecting,
    _operating,
    _playbooks,
    _upgrading,
    _ui,
)  # imported for their @app.command


def main() -> None:
    """Entry point of the `journal` script."""
    app()
