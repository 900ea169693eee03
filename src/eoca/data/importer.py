"""Import a user's CSV or Parquet files into an eoca dataset through a YAML mapping spec.

Three shapes of input are supported:

* **tables**: separate customers / funds / exposures (and optional events / consumption) files, each with a
  ``columns`` mapping from eoca's canonical names to the user's column names and a list of features;
* **customer_value**: a single customer-value table (one row per customer with features and a spend label, the
  shape of most CLV data). It becomes a dataset with one item, one exposure per customer;
* **transactions**: a transaction log (customer, time, amount[, item, quantity]) from which eoca builds the
  customer-value table itself (:mod:`eoca.data.transactions`) for a calibration / target window.

Ids are kept exactly as written (text) unless ``id_type: integer``. Missing feature values follow each
feature's declared policy (default: the training split's mean plus a missing-indicator feature). An
oversampled design is declared with ``sampling: {converted_rate: r}`` or a ``weight`` column; the dataset then
carries per-exposure weights that make training and every metric refer to the population.

Nothing is dropped silently: every source row becomes a row of the dataset or the import fails naming the
rows, and the problems of a file are reported together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from eoca.config import read_yaml, validate_config
from eoca.data.dataset import Dataset, no_training_message, split_rows
from eoca.data.schema import (
    OPTIONAL_TABLES,
    DatasetSpec,
    FeatureSpec,
    FeatureType,
    SplitSpec,
    TableSpec,
    canonical_columns,
)
from eoca.data.sources import SourceFormat, date_to_days, read_source, to_days, to_float, to_id, to_int
from eoca.data.validate import raise_all
from eoca.errors import DataValidationError

MissingPolicy = Literal["mean_and_indicator", "fill_mean", "indicator", "error"]
MISSING_SUFFIX = "_missing"
MISSING_CATEGORY = "(missing)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureMap(_Strict):
    """A feature column and what to do with its missing values.

    ``missing`` (numeric features): ``mean_and_indicator`` (default) fills with the training split's mean and
    adds a 0/1 feature ``<name>_missing``; ``fill_mean`` fills with that mean only; ``indicator`` fills with 0
    and adds the indicator; ``error`` rejects missing values. ``fill_value: X`` fills with the constant X.
    Categorical features give missing values their own category ``(missing)`` (or ``fill_value``).
    """

    name: str
    column: str | None = Field(default=None, description="source column; defaults to name")
    type: FeatureType
    description: str = ""
    missing: MissingPolicy | None = None
    fill_value: float | str | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> FeatureMap:
        if self.fill_value is not None and self.missing is not None:
            raise ValueError("give missing or fill_value, not both")
        return self

    @property
    def source(self) -> str:
        return self.column or self.name


class _FileMap(_Strict):
    path: str = Field(description="CSV (optionally .gz) or Parquet file, relative to the spec file")
    delimiter: str = Field(default=",", description='one character, or "whitespace" (runs of blanks)')
    header: bool = Field(default=True, description="whether the first line names the columns")


class TableMap(_FileMap):
    columns: dict[str, str] = Field(default_factory=dict, description="canonical column -> source column")
    column_names: list[str] | None = Field(default=None, description="the file's columns when header is false")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="constant values for canonical columns absent from the source"
    )
    features: list[FeatureMap] = Field(default_factory=list)

    def fmt(self) -> SourceFormat:
        return SourceFormat(delimiter=self.delimiter, header=self.header, column_names=self.column_names)


class ItemSpec(_Strict):
    fund_id: str = "all"
    risk_level: int = 1


class CustomerValueMap(_FileMap):
    columns: list[str] | None = Field(default=None, description="the file's columns when header is false")
    customer_id: str | None = Field(default=None, description="id column; omitted -> row number")
    amount: str = Field(description="spend / value column (>= 0)")
    converted: str | None = Field(default=None, description="0/1 column; omitted -> amount > 0")
    risk_tolerance: str | None = Field(default=None, description="column; omitted -> highest risk level")
    time: str | None = Field(default=None, description="column; omitted -> 0 for every row")
    weight: str | None = Field(default=None, description="sampling-weight column (population rows per row)")
    features: list[FeatureMap] = Field(default_factory=list)
    item: ItemSpec = ItemSpec()

    def fmt(self) -> SourceFormat:
        return SourceFormat(delimiter=self.delimiter, header=self.header, column_names=self.columns)


class WindowSpec(_Strict):
    calibration_end: Any = Field(description="last time of the calibration (feature) period, inclusive")
    target_end: Any = Field(description="last time of the target (label) period, inclusive")


class TransactionsMap(_FileMap):
    columns: list[str] | None = Field(default=None, description="the file's columns when header is false")
    customer_id: str
    time: str
    time_format: str | None = Field(default=None, description="strptime format of dates, e.g. %Y%m%d")
    amount: str
    quantity: str | None = None
    item: str | None = None
    window: WindowSpec
    max_item_categories: int = Field(default=20, ge=1)
    recent_windows: list[PositiveFloat] = Field(
        default_factory=lambda: [30.0, 90.0, 180.0],
        description="trailing windows (days, or the time unit) before calibration_end for the trend features",
    )
    missing: MissingPolicy = Field(
        default="mean_and_indicator", description="policy for statistics a customer lacks (see FeatureMap)"
    )
    customer_base_model: bool = Field(
        default=False,
        description="add BG/NBD + Gamma-Gamma quantities (P(alive), expected purchases and spend) as features, "
        "fitted on the training customers' calibration window (needs pip install 'eoca[peers]')",
    )

    def fmt(self) -> SourceFormat:
        return SourceFormat(delimiter=self.delimiter, header=self.header, column_names=self.columns)


class SamplingSpec(_Strict):
    converted_rate: float = Field(gt=0.0, lt=1.0, description="the population's conversion rate")


class ImportSpec(_Strict):
    name: str
    description: str = ""
    risk_levels: tuple[int, int] = (1, 5)
    split: SplitSpec = SplitSpec()
    sequence_length: int = 32
    id_type: Literal["string", "integer"] = Field(
        default="string", description="ids are kept as written (string) unless declared integer"
    )
    sampling: SamplingSpec | None = None
    tables: dict[str, TableMap] | None = None
    customer_value: CustomerValueMap | None = None
    transactions: TransactionsMap | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> ImportSpec:
        given = [s for s in ("tables", "customer_value", "transactions") if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'tables' (several files), 'customer_value' (one table) or 'transactions' "
                f"(a transaction log); got {given or 'none'}"
            )
        if self.tables is not None:
            allowed = {"customers", "funds", "exposures", *OPTIONAL_TABLES} - {"truth"}
            unknown = sorted(set(self.tables) - allowed)
            if unknown:
                raise ValueError(f"unknown table(s) {unknown}; allowed: {sorted(allowed)}")
            missing = [t for t in ("customers", "funds", "exposures") if t not in self.tables]
            if missing:
                raise ValueError(f"tables: missing {missing} (use customer_value for a single table)")
        return self


# --- column mapping --------------------------------------------------------------------------------------------
class _Source:
    """A read file plus the problems found while mapping its columns (reported together)."""

    def __init__(self, path: Path, fmt: SourceFormat, id_type: Literal["string", "integer"]) -> None:
        self.path = path
        self.table = read_source(path, fmt)
        self.id_type = id_type
        self.problems: list[str] = []

    @property
    def n(self) -> int:
        return int(self.table.num_rows)

    def raw(self, column: str, role: str) -> pa.ChunkedArray | None:
        if column not in self.table.column_names:
            self.problems.append(
                f"{self.path}: column '{column}' (mapped to '{role}') not found; the file has {self.table.column_names}"
            )
            return None
        return self.table.column(column)

    def _nulls(self, n_type: pa.DataType) -> pa.ChunkedArray:
        return pa.chunked_array([pa.nulls(self.n, n_type)])

    def kind(self, column: str, role: str, kind: str) -> pa.ChunkedArray:
        """Column ``column`` converted for a canonical column of ``kind`` (see :mod:`eoca.data.schema`)."""
        arr = self.raw(column, role)
        if kind == "id":
            typ = pa.int64() if self.id_type == "integer" else pa.string()
            return self._nulls(typ) if arr is None else to_id(arr, self.id_type, self.path, column, self.problems)
        if kind in ("int", "binary"):
            return self._nulls(pa.int64()) if arr is None else to_int(arr, self.path, column, role, self.problems)
        if kind in ("float", "nonneg_float", "prob"):
            return self._nulls(pa.float64()) if arr is None else to_float(arr, self.path, column, role, self.problems)
        return self._nulls(pa.string()) if arr is None else pc.cast(arr, pa.string())

    def feature(self, feat: FeatureMap) -> pa.ChunkedArray:
        arr = self.raw(feat.source, feat.name)
        if feat.type == "numeric":
            if arr is None:
                return self._nulls(pa.float64())
            return to_float(arr, self.path, feat.source, feat.name, self.problems)
        if arr is None:
            return self._nulls(pa.string())
        return arr


def _feature_specs(features: list[FeatureMap]) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": f.type, "description": f.description} for f in features]


def _map_table(
    name: str, tm: TableMap, base: Path, id_type: Literal["string", "integer"]
) -> tuple[pa.Table, TableSpec, str, _Source]:
    src = _Source((base / tm.path).resolve(), tm.fmt(), id_type)
    file = src.path
    cols: dict[str, pa.ChunkedArray | pa.Array] = {}
    valid = {c.name for c in canonical_columns(name)}
    unknown = sorted(set(tm.columns) - valid)
    if unknown:
        src.problems.append(
            f"tables.{name}.columns: {unknown} are not columns of '{name}'; "
            f"valid: {[c.name for c in canonical_columns(name)]}"
        )
    for col in canonical_columns(name):
        if col.name in tm.columns:
            cols[col.name] = src.kind(tm.columns[col.name], col.name, col.kind)
        elif col.name in src.table.column_names:
            cols[col.name] = src.kind(col.name, col.name, col.kind)
        elif col.name in tm.defaults:
            cols[col.name] = pa.array(np.full(src.n, tm.defaults[col.name]).tolist())
        elif col.required:
            src.problems.append(
                f"{file}: required column '{col.name}' of table '{name}' is neither in the file nor mapped "
                f"(add tables.{name}.columns.{col.name}: <your column> or tables.{name}.defaults.{col.name})"
            )
    for feat in tm.features:
        cols[feat.name] = src.feature(feat)
    spec = TableSpec(file=f"{name}.parquet", features=_feature_specs(tm.features))
    return pa.table(cols), spec, str(file), src


def _amount_and_converted(
    src: _Source, amount_col: str, converted_col: str | None
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """The label columns: a blank amount is 0 where ``converted`` = 0 and an error where it is 1."""
    amount = src.kind(amount_col, "amount", "nonneg_float")
    if converted_col is None:
        # Nulls stay null here so validation reports them by row instead of treating them as "no purchase".
        return amount, pc.cast(pc.greater(amount, 0), pa.int64())
    converted = src.kind(converted_col, "converted", "binary")
    blank = np.asarray(pc.is_null(amount).to_numpy(zero_copy_only=False), dtype=bool)
    conv = np.asarray(pc.fill_null(converted, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    bad = np.flatnonzero(blank & (conv != 0))
    if bad.size:
        src.problems.append(
            f"{src.path}, column '{amount_col}' (amount): blank where '{converted_col}' is 1 (or blank); a "
            f"converter needs a label: {bad.size:,} row(s), first at row " + ", ".join(str(int(r)) for r in bad[:5])
        )
    filled = pc.if_else(pc.and_(pc.is_null(amount), pc.equal(converted, 0)), 0.0, amount)
    return pa.chunked_array([filled]) if isinstance(filled, pa.Array) else filled, converted


def _customer_value(cv: CustomerValueMap, spec: ImportSpec, base: Path) -> _Mapped:
    src = _Source((base / cv.path).resolve(), cv.fmt(), spec.id_type)
    n = src.n
    if cv.customer_id:
        ids: pa.ChunkedArray | pa.Array = src.kind(cv.customer_id, "customer_id", "id")
    elif spec.id_type == "integer":
        ids = pa.array(np.arange(n))
    else:
        ids = pa.array([str(i) for i in range(n)])
    amount, converted = _amount_and_converted(src, cv.amount, cv.converted)
    risk = (
        src.kind(cv.risk_tolerance, "risk_tolerance", "int")
        if cv.risk_tolerance
        else pa.array(np.full(n, spec.risk_levels[1], dtype=np.int64))
    )
    time = src.kind(cv.time, "time", "int") if cv.time else pa.array(np.zeros(n, dtype=np.int64))
    cust_cols: dict[str, Any] = {"customer_id": ids, "risk_tolerance": risk}
    for feat in cv.features:
        cust_cols[feat.name] = src.feature(feat)
    exp_cols: dict[str, Any] = {
        "customer_id": ids,
        "fund_id": pa.array([cv.item.fund_id] * n),
        "time": time,
        "converted": converted,
        "amount": amount,
    }
    if cv.weight:
        exp_cols["weight"] = src.kind(cv.weight, "weight", "nonneg_float")
    where = f"{src.path}, imported through the customer_value spec"
    mapped = _Mapped(
        tables={
            "customers": pa.table(cust_cols),
            "funds": pa.table({"fund_id": [cv.item.fund_id], "risk_level": [cv.item.risk_level]}),
            "exposures": pa.table(exp_cols),
        },
        specs={"customers": TableSpec(file="customers.parquet", features=_feature_specs(cv.features))},
        sources=dict.fromkeys(("customers", "funds", "exposures"), where),
        problems=src.problems,
        policies={"customers": {f.name: f for f in cv.features}},
    )
    return mapped


def _transactions(tx: TransactionsMap, spec: ImportSpec, base: Path) -> _Mapped:
    from eoca.data.transactions import build_customer_value

    src = _Source((base / tx.path).resolve(), tx.fmt(), spec.id_type)
    ids = src.kind(tx.customer_id, "customer_id", "id")
    raw_time = src.raw(tx.time, "time")
    days = (
        to_days(raw_time, tx.time_format, src.path, tx.time, src.problems)
        if raw_time is not None
        else pa.chunked_array([pa.nulls(src.n, pa.float64())])
    )
    amount = src.kind(tx.amount, "amount", "nonneg_float")
    quantity = src.kind(tx.quantity, "quantity", "float") if tx.quantity else None
    item = src.raw(tx.item, "item") if tx.item else None
    for col, arr in (
        (tx.customer_id, ids),
        (tx.amount, amount),
        *(((tx.quantity, quantity),) if tx.quantity and quantity is not None else ()),
    ):
        _report_blank(src, col, arr)
    if raw_time is not None:
        _report_blank(src, tx.time, raw_time)
    amt = np.asarray(pc.fill_null(amount, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    neg = np.flatnonzero(amt < 0)
    if neg.size:
        src.problems.append(
            f"{src.path}, column '{tx.amount}' (amount): negative amounts (returns are not supported; net them "
            f"into the purchase rows): {neg.size:,} row(s), first at row " + ", ".join(str(int(r)) for r in neg[:5])
        )
    cal_end = date_to_days(tx.window.calibration_end, tx.time_format, "transactions.window.calibration_end")
    tgt_end = date_to_days(tx.window.target_end, tx.time_format, "transactions.window.target_end")
    if tgt_end <= cal_end:
        src.problems.append("transactions.window: target_end must be after calibration_end")
    raise_all(src.problems)
    cv = build_customer_value(
        ids.combine_chunks(),
        np.asarray(days.to_numpy(), dtype=np.float64),
        amt,
        cal_end,
        tgt_end,
        quantity=np.asarray(quantity.to_numpy(), dtype=np.float64) if quantity is not None else None,
        item=pc.cast(item, pa.string()).combine_chunks() if item is not None else None,
        max_item_categories=tx.max_item_categories,
        recent_windows=tuple(tx.recent_windows),
    )
    n = len(cv.label)
    if n == 0:
        raise DataValidationError(
            f"{src.path}: no transaction at or before calibration_end ({tx.window.calibration_end}); move the window"
        )
    feats = [
        FeatureMap(name=name, type="numeric", description=cv.descriptions[name], missing=tx.missing)
        for name in cv.features
    ]
    cust_cols: dict[str, Any] = {
        "customer_id": cv.customer_id,
        "risk_tolerance": pa.array(np.full(n, spec.risk_levels[1], dtype=np.int64)),
    }
    for name, values in cv.features.items():
        cust_cols[name] = pa.array(values, mask=~np.isfinite(values))
    where = f"{src.path}, imported through the transactions spec"
    notes = {
        "transactions": (
            f"{src.n:,} log rows; calibration_end={tx.window.calibration_end}, target_end={tx.window.target_end}; "
            f"{n:,} customers with a purchase at or before calibration_end; label = spend in "
            "(calibration_end, target_end]"
        ),
        "target_days": f"{tgt_end - cal_end:g}",
        "transactions_not_used": (
            f"{cv.n_customers_after:,} customers whose first purchase falls in the target window are not in the "
            f"population (no history to predict from); {cv.n_rows_after_target:,} rows after target_end ignored"
        ),
    }
    return _Mapped(
        tables={
            "customers": pa.table(cust_cols),
            "funds": pa.table({"fund_id": ["all"], "risk_level": [1]}),
            "exposures": pa.table(
                {
                    "customer_id": cv.customer_id,
                    "fund_id": pa.array(["all"] * n),
                    "time": pa.array(np.zeros(n, dtype=np.int64)),
                    "converted": pa.array((cv.label > 0).astype(np.int64)),
                    "amount": pa.array(cv.label),
                }
            ),
        },
        specs={"customers": TableSpec(file="customers.parquet", features=_feature_specs(feats))},
        sources=dict.fromkeys(("customers", "funds", "exposures"), where),
        problems=[],
        policies={"customers": {f.name: f for f in feats}},
        notes=notes,
    )


def _add_customer_base(mapped: _Mapped, tx: TransactionsMap, train_rows: np.ndarray) -> None:
    """Append the customer-base model's quantities (:mod:`eoca.data.customer_base`) to the customers table, fitted
    on the training customers; it reads the calibration-window summaries before any missing value is filled."""
    from eoca.data.customer_base import CUSTOMER_BASE_FORMULAS, CUSTOMER_BASE_INPUTS, customer_base_features

    tab = mapped.tables["customers"]
    cols = {
        c: np.asarray(pc.cast(tab.column(c), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        for c in CUSTOMER_BASE_INPUTS
    }
    feats, note = customer_base_features(cols, train_rows, float(mapped.notes["target_days"]))
    spec = mapped.specs["customers"]
    added = []
    for name, values in feats.items():
        if name in tab.column_names:
            mapped.problems.append(f"transactions.customer_base_model: feature '{name}' already exists")
            continue
        tab = tab.append_column(name, pa.array(values))
        added.append(FeatureSpec(name=name, type="numeric", description=CUSTOMER_BASE_FORMULAS[name]))
    mapped.tables["customers"] = tab
    mapped.specs["customers"] = TableSpec(file=spec.file, features=[*spec.features, *added])
    mapped.notes["customer_base_model"] = note


def _report_blank(src: _Source, column: str, arr: pa.ChunkedArray | pa.Array) -> None:
    if arr.null_count:
        rows = np.flatnonzero(np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool))
        src.problems.append(
            f"{src.path}, column '{column}': blank or unreadable in {rows.size:,} row(s), first at row "
            + ", ".join(str(int(r)) for r in rows[:5])
        )


class _Mapped:
    """Tables mapped from the user's files, before missing values, weights and validation."""

    def __init__(
        self,
        tables: dict[str, pa.Table],
        specs: dict[str, TableSpec],
        sources: dict[str, str],
        problems: list[str],
        policies: dict[str, dict[str, FeatureMap]],
        notes: dict[str, str] | None = None,
    ) -> None:
        self.tables = tables
        self.specs = specs
        self.sources = sources
        self.problems = problems
        self.policies = policies
        self.notes = dict(notes or {})


# --- missing values and weights ----------------------------------------------------------------------------------
def _train_customer_mask(mapped: _Mapped, split: SplitSpec, name: str) -> np.ndarray:
    """Which customers have a training exposure (their rows define the training means)."""
    cust = mapped.tables["customers"]
    exp = mapped.tables["exposures"]
    if "customer_id" not in cust.column_names or "customer_id" not in exp.column_names:
        return np.ones(cust.num_rows, dtype=bool)
    keys = cust.column("customer_id").combine_chunks()
    pos = pc.index_in(exp.column("customer_id"), value_set=keys)
    if pos.null_count or keys.null_count:
        return np.ones(cust.num_rows, dtype=bool)  # validation reports the bad ids; use every row meanwhile
    cust_pos = np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)
    times = None
    if not split.by_customer:
        if "time" not in exp.column_names:
            return np.ones(cust.num_rows, dtype=bool)
        t = exp.column("time")
        if t.null_count:
            return np.ones(cust.num_rows, dtype=bool)
        times = np.asarray(pc.cast(t, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    labels = split_rows(split, cust_pos, times)
    if not (labels == 0).any():
        raise DataValidationError(no_training_message(name, split))
    mask = np.zeros(cust.num_rows, dtype=bool)
    mask[cust_pos[labels == 0]] = True
    return mask


def _fill_missing(mapped: _Mapped, table: str, train_rows: np.ndarray) -> None:
    """Apply each feature's missing-value policy to ``table`` in place, recording what was done in notes."""
    policies = mapped.policies.get(table, {})
    if not policies:
        return
    tab = mapped.tables[table]
    spec = mapped.specs[table]
    features = list(spec.features)
    problems = mapped.problems
    where = mapped.sources.get(table, table)
    for feat in policies.values():
        arr = tab.column(feat.name)
        if feat.type == "numeric":
            vals = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            missing = ~np.isfinite(vals)
        else:
            missing = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
        if not missing.any():
            continue
        rows = np.flatnonzero(missing)
        first = ", ".join(str(int(r)) for r in rows[:5])
        policy = feat.missing or ("fill_value" if feat.fill_value is not None else "mean_and_indicator")
        if policy == "error":
            problems.append(
                f"{where}, column '{feat.source}' (feature '{feat.name}'): {rows.size:,} missing value(s), first at "
                f"row {first}; declare missing: mean_and_indicator | fill_mean | indicator or fill_value: X to "
                "impute them"
            )
            continue
        if feat.type != "numeric":
            fill = str(feat.fill_value) if feat.fill_value is not None else MISSING_CATEGORY
            if feat.type == "sequence":
                tab = tab.set_column(
                    tab.column_names.index(feat.name), feat.name, pc.fill_null(arr, pa.scalar([], type=arr.type))
                )
                fill = "an empty list"
            else:
                tab = tab.set_column(
                    tab.column_names.index(feat.name), feat.name, pc.fill_null(pc.cast(arr, pa.string()), fill)
                )
            mapped.notes[f"missing.{feat.name}"] = f"{rows.size:,} missing value(s) filled with {fill!r}"
            continue
        if policy == "fill_value":
            if isinstance(feat.fill_value, str):
                problems.append(f"feature '{feat.name}': fill_value must be a number for a numeric feature")
                continue
            value, how = float(feat.fill_value or 0.0), "the declared value"
        elif policy == "indicator":
            value, how = 0.0, "0"
        else:
            ok = ~missing & train_rows
            if not ok.any():
                ok = ~missing
            value = float(vals[ok].mean()) if ok.any() else 0.0
            how = "the training mean"
        filled = np.where(missing, value, vals)
        tab = tab.set_column(tab.column_names.index(feat.name), feat.name, pa.array(filled))
        note = f"{rows.size:,} missing value(s) filled with {how} {value:.6g}"
        if policy in ("mean_and_indicator", "indicator"):
            ind = feat.name + MISSING_SUFFIX
            if ind in tab.column_names:
                problems.append(f"feature '{feat.name}': its indicator column '{ind}' already exists; rename one")
                continue
            tab = tab.append_column(ind, pa.array(missing.astype(np.float64)))
            features.append(FeatureSpec(name=ind, type="numeric", description=f"1 where {feat.name} was missing"))
            note += f"; indicator {ind}"
        mapped.notes[f"missing.{feat.name}"] = note
    mapped.tables[table] = tab
    mapped.specs[table] = TableSpec(file=spec.file, features=features)


def _apply_sampling(mapped: _Mapped, sampling: SamplingSpec | None) -> None:
    exp = mapped.tables["exposures"]
    if sampling is None:
        if "weight" in exp.column_names:
            mapped.notes["sampling"] = "per-row weights from the data's weight column"
        return
    if "weight" in exp.column_names:
        mapped.problems.append("give sampling.converted_rate or a weight column, not both")
        return
    conv = np.asarray(pc.fill_null(pc.cast(exp.column("converted"), pa.float64()), 0.0).to_numpy(), dtype=np.float64)
    s = float(conv.mean())
    if not 0.0 < s < 1.0:
        mapped.problems.append(
            f"sampling.converted_rate: the data's conversion rate is {s:.4g}; reweighting needs both converters "
            "and non-converters"
        )
        return
    r = sampling.converted_rate
    w1, w0 = r / s, (1.0 - r) / (1.0 - s)
    mapped.tables["exposures"] = exp.append_column("weight", pa.array(np.where(conv > 0, w1, w0)))
    mapped.notes["sampling"] = (
        f"oversampled design: sample conversion rate {s:.4f}, population rate {r:.4f}; converters weigh "
        f"{w1:.4g}, non-converters {w0:.4g} (weighted training losses and metrics)"
    )


# --- entry point -------------------------------------------------------------------------------------------------
def _map_tables(ispec: ImportSpec, base: Path) -> _Mapped:
    assert ispec.tables is not None
    tables: dict[str, pa.Table] = {}
    specs: dict[str, TableSpec] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    policies: dict[str, dict[str, FeatureMap]] = {}
    for name, tm in ispec.tables.items():
        table, tspec, file, src = _map_table(name, tm, base, ispec.id_type)
        tables[name], specs[name], sources[name] = table, tspec, file
        problems += src.problems
        policies[name] = {f.name: f for f in tm.features}
    return _Mapped(tables, specs, sources, problems, policies)


def import_dataset(spec_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Dataset:
    """Build (and validate, and if ``out`` is given save) a dataset from the mapping spec at ``spec_path``.

    Raises:
        ConfigError: the spec is malformed (the message names the key).
        DataValidationError: the files do not fit the spec; every problem found is listed.
    """
    spec_path = Path(spec_path)
    ispec = validate_config(ImportSpec, read_yaml(spec_path), str(spec_path))
    base = spec_path.parent
    if ispec.customer_value is not None:
        mapped = _customer_value(ispec.customer_value, ispec, base)
    elif ispec.transactions is not None:
        mapped = _transactions(ispec.transactions, ispec, base)
    else:
        mapped = _map_tables(ispec, base)
    # Mapping problems are not raised yet: the missing-value checks below add theirs, so one run lists all.
    train_customers = _train_customer_mask(mapped, ispec.split, ispec.name)
    if ispec.transactions is not None and ispec.transactions.customer_base_model:
        _add_customer_base(mapped, ispec.transactions, train_customers)
    _fill_missing(mapped, "customers", train_customers)
    if "funds" in mapped.specs:
        _fill_missing(mapped, "funds", np.ones(mapped.tables["funds"].num_rows, dtype=bool))
    _apply_sampling(mapped, ispec.sampling)
    raise_all(mapped.problems)
    ds_tables: dict[str, Any] = {}
    for name in mapped.tables:
        ds_tables[name] = mapped.specs.get(name) or TableSpec(file=f"{name}.parquet")
    dspec = DatasetSpec(
        name=ispec.name,
        description=ispec.description,
        risk_levels=ispec.risk_levels,
        split=ispec.split,
        sequence_length=ispec.sequence_length,
        propensity="logged" if "propensity" in mapped.tables["exposures"].column_names else "unknown",
        notes={"imported_from": str(spec_path.resolve()), **mapped.notes},
        **ds_tables,
    )
    ds = Dataset(spec=dspec, sources=mapped.sources, **mapped.tables)
    ds.validate()
    ds.split_labels()  # a split leaving no training exposures fails here, at import, not later
    if out is not None:
        ds.save(out)
    return ds
