"""Command-line interface. Each sub-module defines one group of commands on the shared Typer ``app``."""

from __future__ import annotations

import sys

from eoca.cli.app import app
from eoca.errors import EocaError

__all__ = ["app", "main"]


def _register_commands() -> None:
    # Importing a command module registers its commands on ``app``; kept in one place so the CLI's surface is
    # visible at a glance.
    from eoca.cli import (
        allocate,  # noqa: F401
        budget,  # noqa: F401
        data,  # noqa: F401
        evaluate,  # noqa: F401
        run,  # noqa: F401
        score,  # noqa: F401
        simulate,  # noqa: F401
        train,  # noqa: F401
    )


_register_commands()


def main() -> None:
    """Entry point of the ``eoca`` console script: user errors become a clear message and exit code 2."""
    try:
        app()
    except EocaError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
