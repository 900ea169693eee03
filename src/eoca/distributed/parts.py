"""Partitioned Parquet datasets: a folder of part files, each holding a range of customers.

Layout (what the huge-instance generator, ``eoca score --engine dask`` and ``eoca allocate --engine dask``
write and read)::

    scores/      part-00000.parquet, part-00001.parquet, ...   long (customer_id, fund_id, etv) or wide
    customers/   part-00000.parquet, part-00001.parquet, ...   customer_id, risk_tolerance
    allocation/  part-00000.parquet, ...                       customer_id, fund_id (K rows per customer)

Part ``i`` of scores holds the scores of exactly the customers of part ``i`` of customers (in any order); the
customers of different parts are disjoint ranges of ids. Files whose names start with '.' or '_' are ignored
(temporary names, markers). A folder is written under a temporary name and renamed into place when every part
is complete, so a reader never sees half a dataset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eoca.errors import DataValidationError
from eoca.io import output_folder

__all__ = ["atomic_dir", "list_parts", "pair_parts", "part_name", "part_rows"]


def part_name(i: int) -> str:
    """File name of part ``i`` (zero-padded so names sort in customer order)."""
    return f"part-{i:05d}.parquet"


def list_parts(folder: str | os.PathLike[str], what: str) -> list[Path]:
    """The part files of a partitioned dataset, sorted by name; ``what`` names the dataset in errors."""
    d = Path(folder)
    if not d.exists():
        raise DataValidationError(f"{what} folder {d} does not exist")
    if not d.is_dir():
        raise DataValidationError(f"{what}: {d} is a file; --engine dask reads a folder of Parquet parts")
    parts = sorted(p for p in d.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))
    if not parts:
        raise DataValidationError(f"{what} folder {d} holds no .parquet part files")
    return parts


def pair_parts(scores: str | os.PathLike[str], customers: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(scores part, customers part) pairs matched by file name; every part must have its partner."""
    sp = {p.name: p for p in list_parts(scores, "scores")}
    cp = {p.name: p for p in list_parts(customers, "customers")}
    only_s, only_c = sorted(set(sp) - set(cp)), sorted(set(cp) - set(sp))
    if only_s or only_c:
        raise DataValidationError(
            f"scores folder {scores} and customers folder {customers} must hold parts with the same names "
            f"(part i of scores scores the customers of part i); only in scores: {only_s[:5]}, only in "
            f"customers: {only_c[:5]}"
        )
    return [(sp[n], cp[n]) for n in sorted(sp)]


def part_rows(path: str | os.PathLike[str]) -> int:
    """Rows of one Parquet part, from its footer (no data read)."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except FileNotFoundError:
        raise DataValidationError(f"part file {path} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"part file {path}: cannot read as Parquet ({exc})") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds it replaces ``path`` whole
    (:func:`eoca.io.output_folder` with overwrite: a failure removes the temporary folder and leaves any earlier
    ``path`` untouched)."""
    with output_folder(path, overwrite=True) as work:
        yield work
