"""The ``eoca`` Typer application; command modules register themselves on :data:`app`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="eoca",
    help=(
        "eoca: decide which fund each customer is shown so that total expected transaction value (ETV) is "
        "maximised while every delivery contract and risk rule is kept. Predict ETV, allocate exactly, evaluate."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
