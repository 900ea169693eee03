"""Help texts shared by the commands that read a dataset or a training configuration."""

from __future__ import annotations

from typing import Annotated

import typer

DATA_HELP = "Dataset folder (from `eoca simulate` / `eoca import`), or 'hillstrom' for the real e-mail test."
CONFIG_HELP = "Training YAML; see src/eoca/configs/train.yaml for every key."
SET_HELP = "Override one training key, e.g. --set lr=0.02 --set params.dropout=0.3 (repeatable)."

Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it exists (it is swapped in whole when complete).")
]
"""The ``--overwrite`` flag of every command that writes an output folder."""
