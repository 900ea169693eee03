"""Resolve a ``--data`` argument to a dataset: one rule for every command."""

from __future__ import annotations

import os
from pathlib import Path

from eoca.data.dataset import Dataset


def open_dataset(data: str | os.PathLike[str], *, with_truth: bool = True) -> Dataset:
    """Open ``data``: a dataset folder; ``hillstrom`` (the real data set beside the checkout, see
    :func:`eoca.data.hillstrom.default_hillstrom_path`); or a path to a Hillstrom CSV."""
    from eoca.data.hillstrom import load_hillstrom

    if str(data) == "hillstrom":
        return load_hillstrom()
    p = Path(data)
    if p.is_file() and p.name.startswith("hillstrom"):
        return load_hillstrom(p)
    return Dataset.load(p, with_truth=with_truth)
