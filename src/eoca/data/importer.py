"""Import a user's CSV or Parquet files into an eoca dataset through a YAML mapping spec.

Two shapes of input are supported:

* **tables**: separate customers / funds / exposures (and optional events / consumption) files, each with a
  ``columns`` mapping from eoca's canonical names to the user's column names and a list of features;
* **customer_value**: a single customer-value table (one row per customer with features and a spend label, the
  shape of most CLV data). It becomes a dataset with one item, one exposure per customer.

Nothing is dropped: every source row becomes a row of the dataset or the import fails naming the row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eoca.config import read_yaml, validate_config
from eoca.data.dataset import Dataset
from eoca.data.schema import (
    OPTIONAL_TABLES,
    DatasetSpec,
    FeatureType,
    SplitSpec,
    TableSpec,
    canonical_columns,
)
from eoca.errors import DataValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureMap(_Strict):
    name: str
    column: str | None = Field(default=None, description="source column; defaults to name")
    type: FeatureType
    description: str = ""

    @property
    def source(self) -> str:
        return self.column or self.name


class TableMap(_Strict):
    path: str = Field(description="CSV (optionally .gz) or Parquet file, relative to the spec file")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical column -> source column")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="constant values for canonical columns absent from the source"
    )
    features: list[FeatureMap] = Field(default_factory=list)


class ItemSpec(_Strict):
    fund_id: str = "all"
    risk_level: int = 1


class CustomerValueMap(_Strict):
    path: str
    customer_id: str | None = Field(default=None, description="id column; omitted -> row number")
    amount: str = Field(description="spend / value column (>= 0)")
    converted: str | None = Field(default=None, description="0/1 column; omitted -> amount > 0")
    risk_tolerance: str | None = Field(default=None, description="column; omitted -> highest risk level")
    time: str | None = Field(default=None, description="column; omitted -> 0 for every row")
    features: list[FeatureMap] = Field(default_factory=list)
    item: ItemSpec = ItemSpec()


class ImportSpec(_Strict):
    name: str
    description: str = ""
    risk_levels: tuple[int, int] = (1, 5)
    split: SplitSpec = SplitSpec()
    sequence_length: int = 32
    tables: dict[str, TableMap] | None = None
    customer_value: CustomerValueMap | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> ImportSpec:
        if (self.tables is None) == (self.customer_value is None):
            raise ValueError("give exactly one of 'tables' (several files) or 'customer_value' (one table)")
        if self.tables is not None:
            allowed = {"customers", "funds", "exposures", *OPTIONAL_TABLES} - {"truth"}
            unknown = sorted(set(self.tables) - allowed)
            if unknown:
                raise ValueError(f"unknown table(s) {unknown}; allowed: {sorted(allowed)}")
            missing = [t for t in ("customers", "funds", "exposures") if t not in self.tables]
            if missing:
                raise ValueError(f"tables: missing {missing} (use customer_value for a single table)")
        return self


def read_source(path: Path) -> pa.Table:
    """Read a CSV (plain or compressed) or Parquet file; the error names the file."""
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    try:
        if path.suffix == ".parquet" or path.name.endswith(".parquet"):
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"{path}: cannot be read as CSV or Parquet: {exc}") from exc


def _column(src: pa.Table, column: str, file: Path, role: str) -> pa.ChunkedArray:
    if column not in src.column_names:
        raise DataValidationError(
            f"{file}: column '{column}' (mapped to '{role}') not found; the file has {src.column_names}"
        )
    return src.column(column)


def _feature_array(arr: pa.ChunkedArray, feat: FeatureMap, file: Path) -> pa.ChunkedArray:
    if feat.type == "numeric" and pa.types.is_boolean(arr.type):
        return pc.cast(arr, pa.float64())
    if feat.type == "numeric" and not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise DataValidationError(
            f"{file}: column '{feat.source}' (feature '{feat.name}') is declared numeric but has type {arr.type}"
        )
    if feat.type == "numeric":
        return pc.cast(arr, pa.float64())
    return arr


def _map_table(name: str, tm: TableMap, base: Path) -> tuple[pa.Table, TableSpec, str]:
    file = (base / tm.path).resolve()
    src = read_source(file)
    cols: dict[str, pa.ChunkedArray | pa.Array] = {}
    for col in canonical_columns(name):
        if col.name in tm.columns:
            cols[col.name] = _column(src, tm.columns[col.name], file, col.name)
        elif col.name in src.column_names:
            cols[col.name] = src.column(col.name)
        elif col.name in tm.defaults:
            cols[col.name] = pa.array(np.full(src.num_rows, tm.defaults[col.name]).tolist())
        elif col.required:
            raise DataValidationError(
                f"{file}: required column '{col.name}' of table '{name}' is neither in the file nor mapped "
                f"(add tables.{name}.columns.{col.name}: <your column> or tables.{name}.defaults.{col.name})"
            )
    unknown = sorted(set(tm.columns) - {c.name for c in canonical_columns(name)})
    if unknown:
        raise DataValidationError(
            f"tables.{name}.columns: {unknown} are not columns of '{name}'; "
            f"valid: {[c.name for c in canonical_columns(name)]}"
        )
    for feat in tm.features:
        cols[feat.name] = _feature_array(_column(src, feat.source, file, feat.name), feat, file)
    spec = TableSpec(
        file=f"{name}.parquet",
        features=[{"name": f.name, "type": f.type, "description": f.description} for f in tm.features],
    )
    return pa.table(cols), spec, str(file)


def _customer_value(
    cv: CustomerValueMap, spec: ImportSpec, base: Path
) -> dict[str, tuple[pa.Table, TableSpec | None, str]]:
    file = (base / cv.path).resolve()
    src = read_source(file)
    n = src.num_rows
    if n == 0:
        raise DataValidationError(f"{file}: the file has no rows")
    ids: pa.ChunkedArray | pa.Array = (
        _column(src, cv.customer_id, file, "customer_id") if cv.customer_id else pa.array(np.arange(n))
    )
    amount_raw = _column(src, cv.amount, file, "amount")
    if not (pa.types.is_integer(amount_raw.type) or pa.types.is_floating(amount_raw.type)):
        raise DataValidationError(f"{file}: column '{cv.amount}' (amount) must be numeric, has {amount_raw.type}")
    amount = pc.cast(amount_raw, pa.float64())
    if cv.converted:
        converted = _column(src, cv.converted, file, "converted")
    else:
        # Nulls stay null here so validation reports them by row instead of treating them as "no purchase".
        converted = pc.cast(pc.greater(amount, 0), pa.int8())
    risk = (
        _column(src, cv.risk_tolerance, file, "risk_tolerance")
        if cv.risk_tolerance
        else pa.array(np.full(n, spec.risk_levels[1], dtype=np.int64))
    )
    time = _column(src, cv.time, file, "time") if cv.time else pa.array(np.zeros(n, dtype=np.int64))
    cust_cols: dict[str, Any] = {"customer_id": ids, "risk_tolerance": risk}
    for feat in cv.features:
        cust_cols[feat.name] = _feature_array(_column(src, feat.source, file, feat.name), feat, file)
    customers = pa.table(cust_cols)
    funds = pa.table({"fund_id": pa.array([cv.item.fund_id]), "risk_level": pa.array([cv.item.risk_level])})
    exposures = pa.table(
        {
            "customer_id": ids,
            "fund_id": pa.array([cv.item.fund_id] * n),
            "time": time,
            "converted": converted,
            "amount": amount,
        }
    )
    cust_spec = TableSpec(
        file="customers.parquet",
        features=[{"name": f.name, "type": f.type, "description": f.description} for f in cv.features],
    )
    where = f"{file}, imported through the customer_value spec"
    return {
        "customers": (customers, cust_spec, where),
        "funds": (funds, None, where),
        "exposures": (exposures, None, where),
    }


def import_dataset(spec_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Dataset:
    """Build (and validate, and if ``out`` is given save) a dataset from the mapping spec at ``spec_path``."""
    spec_path = Path(spec_path)
    ispec = validate_config(ImportSpec, read_yaml(spec_path), str(spec_path))
    base = spec_path.parent
    mapped: dict[str, tuple[pa.Table, TableSpec | None, str]] = {}
    if ispec.customer_value is not None:
        mapped = _customer_value(ispec.customer_value, ispec, base)
    else:
        assert ispec.tables is not None
        for name, tm in ispec.tables.items():
            mapped[name] = _map_table(name, tm, base)
    ds_spec_kwargs: dict[str, Any] = {}
    for name, (_, tspec, _) in mapped.items():
        ds_spec_kwargs[name] = tspec or TableSpec(file=f"{name}.parquet")
    dspec = DatasetSpec(
        name=ispec.name,
        description=ispec.description,
        risk_levels=ispec.risk_levels,
        split=ispec.split,
        sequence_length=ispec.sequence_length,
        propensity="logged" if "propensity" in mapped["exposures"][0].column_names else "unknown",
        notes={"imported_from": str(spec_path.resolve())},
        **ds_spec_kwargs,
    )
    ds = Dataset(
        spec=dspec,
        sources={name: source for name, (_, _, source) in mapped.items()},
        **{name: table for name, (table, _, _) in mapped.items()},
    )
    ds.validate()
    if out is not None:
        ds.save(out)
    return ds
