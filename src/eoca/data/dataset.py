"""A loaded dataset: validated Arrow tables plus the spec that describes them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from eoca.config import format_validation_error, read_yaml
from eoca.data.schema import ALL_TABLES, OPTIONAL_TABLES, SPEC_FILE, DatasetSpec, SplitSpec
from eoca.data.validate import check_dataset, check_table
from eoca.errors import ConfigError, DataValidationError
from eoca.io import write_parquet, write_yaml

SPLITS = ("train", "valid", "test")


def load_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """The spec of the dataset in folder ``path`` (or of the spec file ``path`` itself), validated."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".parquet", ".csv", ".gz", ".pq"):
        raise DataValidationError(
            f"{path}: is a data file; expected a dataset folder holding {SPEC_FILE} and Parquet tables "
            "(create one with `eoca simulate` or `eoca import`)"
        )
    if path.is_dir():
        path = path / SPEC_FILE
    if not path.exists():
        raise DataValidationError(
            f"{path}: no dataset spec found. A dataset is a folder with {SPEC_FILE} and Parquet tables; create one "
            "with `eoca simulate` or `eoca import`."
        )
    raw = read_yaml(path, "dataset spec")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc


@dataclass
class Dataset:
    """Validated tables of one dataset.

    Attributes:
        spec: the dataset's description (``dataset.yaml``).
        customers: one row per customer (``customer_id``, ``risk_tolerance``, features).
        funds: one row per fund (``fund_id``, ``risk_level``, features).
        exposures: one row per delivered (customer, fund) pair with its outcome.
        events, consumption, truth: optional tables (behaviour sequences, consumption graph, simulator oracle).
        root: the folder it was loaded from, if any.
    """

    spec: DatasetSpec
    customers: pa.Table
    funds: pa.Table
    exposures: pa.Table
    events: pa.Table | None = None
    consumption: pa.Table | None = None
    truth: pa.Table | None = None
    root: Path | None = None
    sources: dict[str, str] = field(default_factory=dict, repr=False)
    """Where each table came from (for error messages), when not from ``root``: e.g. a user's CSV file."""
    _split_cache: np.ndarray | None = field(default=None, repr=False)

    # -- construction -------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for t in OPTIONAL_TABLES:
            if getattr(self, t) is not None and getattr(self.spec, t) is None:
                raise DataValidationError(f"table '{t}' given but dataset.yaml does not declare it")

    def tables(self) -> dict[str, pa.Table]:
        return {t: getattr(self, t) for t in ALL_TABLES if getattr(self, t) is not None}

    def validate(self) -> Dataset:
        """Run every per-table and cross-table check; raises :class:`DataValidationError` on the first failure."""
        tables = self.tables()
        for name, table in tables.items():
            check_table(name, table, getattr(self.spec, name), self._file(name))
        check_dataset(self.spec, tables, {name: self._file(name) for name in tables})
        return self

    def _file(self, name: str) -> str:
        if name in self.sources:
            return self.sources[name]
        rel = getattr(self.spec, name).file
        return str(self.root / rel) if self.root is not None else rel

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, validate: bool = True, with_truth: bool = True) -> Dataset:
        """Load and validate the dataset in folder ``path``."""
        root = Path(path)
        spec = load_spec(root)
        tables: dict[str, pa.Table] = {}
        for name in ALL_TABLES:
            ts = getattr(spec, name)
            if ts is None or (name == "truth" and not with_truth):
                continue
            file = root / ts.file
            if not file.exists():
                raise DataValidationError(f"table '{name}': file {file} named in {root / SPEC_FILE} does not exist")
            try:
                tables[name] = pq.read_table(file)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataValidationError(f"table '{name}' ({file}): not a readable Parquet file: {exc}") from exc
        ds = cls(spec=spec, root=root, **tables)
        return ds.validate() if validate else ds

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write every table and ``dataset.yaml`` into folder ``path`` (each file atomically; the spec last,
        so a folder without ``dataset.yaml`` is recognisably incomplete)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables().items():
            write_parquet(table, root / getattr(self.spec, name).file)
        write_yaml(self.spec.model_dump(mode="json", exclude_none=True), root / SPEC_FILE)
        self.root = root
        self.sources = {}
        return root

    # -- conveniences used across eoca -----------------------------------------------------------------------
    @property
    def n_customers(self) -> int:
        return self.customers.num_rows

    @property
    def n_funds(self) -> int:
        return self.funds.num_rows

    @property
    def has_clicks(self) -> bool:
        return "clicked" in self.exposures.column_names

    @property
    def has_events(self) -> bool:
        return self.events is not None and self.events.num_rows > 0

    @property
    def has_graph(self) -> bool:
        return self.consumption is not None and self.consumption.num_rows > 0

    def customer_index(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row positions in ``customers`` of the given customer ids (int64, shape (n,)); unknown ids raise."""
        return _index_of(ids, self.customers.column("customer_id"), "customers")

    def fund_index(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row positions in ``funds`` of the given fund ids (int64, shape (n,)); unknown ids raise."""
        return _index_of(ids, self.funds.column("fund_id"), "funds")

    def split_labels(self) -> np.ndarray:
        """Split of every exposure row: array of shape (n_exposures,) with values 0=train, 1=valid, 2=test."""
        if self._split_cache is None:
            self._split_cache = compute_split(self)
        return self._split_cache

    def split_mask(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.split_labels() == SPLITS.index(split)

    def test_start(self) -> int | None:
        """First time value of the test period for time-based splits, else None."""
        if self.spec.split.by_customer:
            return None
        if self.spec.split.test_start is not None:
            return self.spec.split.test_start
        return int(pc.max(self.exposures.column("time")).as_py())


def _index_of(ids: pa.Array | pa.ChunkedArray, keys: pa.ChunkedArray, what: str) -> np.ndarray:
    key_arr = keys.combine_chunks()
    ids_arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if ids_arr.type != key_arr.type:
        ids_arr = pc.cast(ids_arr, key_arr.type)
    idx = pc.index_in(ids_arr, value_set=key_arr)
    if idx.null_count:
        bad = np.flatnonzero(np.asarray(idx.is_null().to_numpy(zero_copy_only=False)))
        raise DataValidationError(
            f"{len(bad):,} id(s) not found in {what}, e.g. {ids_arr.take(pa.array(bad[:5])).to_pylist()}"
        )
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)


def _uniform_hash(values: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-uniform numbers in [0, 1) from integer keys, independent of row order."""
    x = values.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def compute_split(ds: Dataset) -> np.ndarray:
    """Assign each exposure to train (0), valid (1) or test (2) by the spec's split rule.

    The random parts hash the row's customer position (and, for validation, the row number) with the seed, so
    the split depends only on the data and the seed, not on the machine or the reading order.
    """
    cust_pos = ds.customer_index(ds.exposures.column("customer_id"))
    times = None
    if not ds.spec.split.by_customer:
        times = np.asarray(ds.exposures.column("time").to_numpy(), dtype=np.int64)
    labels = split_rows(ds.spec.split, cust_pos, times)
    if not (labels == 0).any():
        raise DataValidationError(no_training_message(ds.spec.name, ds.spec.split))
    return labels


def no_training_message(name: str, rule: SplitSpec) -> str:
    return (
        f"dataset '{name}': the split rule {rule.model_dump(exclude_none=True)} leaves no training "
        "exposures; lower split.test_start / split.test_fraction / split.validation_fraction"
    )


def split_rows(rule: SplitSpec, cust_pos: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """The split labels (0 train, 1 valid, 2 test; int8, shape (n,)) of exposures whose customers sit at
    ``cust_pos`` in the customers table and whose delivery times are ``times`` (needed by time-based rules).

    The one implementation of the split rule, shared by :func:`compute_split` and the importer (which needs the
    training rows before a dataset exists, to fill missing values with training means).
    """
    n = cust_pos.size
    labels = np.zeros(n, dtype=np.int8)
    if rule.test_fraction is not None:
        test = _uniform_hash(cust_pos, rule.seed) < rule.test_fraction
    elif rule.folds is not None:
        test = np.floor(_uniform_hash(cust_pos, rule.seed) * rule.folds).astype(np.int64) == rule.fold
    else:
        if times is None:
            raise ValueError("a time-based split needs the exposures' times")
        start = rule.test_start if rule.test_start is not None else (int(times.max()) if n else 0)
        test = times >= start
    labels[test] = 2
    rest = ~test
    if rule.validation_fraction > 0:
        # Validation is drawn by customer so a customer's exposures do not straddle train and validation.
        valid = _uniform_hash(cust_pos, rule.seed + 1) < rule.validation_fraction
        labels[rest & valid] = 1
    return labels


def split_exposures(dataset: Dataset, split: str) -> dict[str, np.ndarray]:
    """The exposures of ``split`` (in file order): ``customer_pos``, ``fund_pos``, ``converted``, ``amount``,
    and ``clicked`` / ``weight`` (sampling weights) where the dataset has them; every array has shape (m,)."""
    rows = np.flatnonzero(dataset.split_mask(split))
    exp = dataset.exposures
    out = {
        "customer_pos": dataset.customer_index(exp.column("customer_id"))[rows],
        "fund_pos": dataset.fund_index(exp.column("fund_id"))[rows],
        "converted": np.asarray(exp.column("converted").to_numpy(), dtype=np.float64)[rows],
        "amount": np.asarray(exp.column("amount").to_numpy(), dtype=np.float64)[rows],
    }
    for extra in ("clicked", "weight"):
        if extra in exp.column_names:
            out[extra] = np.asarray(exp.column(extra).to_numpy(), dtype=np.float64)[rows]
    return out
