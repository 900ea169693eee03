"""CSV output of metric rows (lists of flat dicts), written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from eoca.io import atomic_path


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as CSV; missing values (``None``) become empty cells, never a made-up number."""
    table = pa.Table.from_pylist([dict(r) for r in rows]) if rows else pa.table({})
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp)
    return Path(path)
