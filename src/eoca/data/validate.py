"""Validation of dataset tables against the schema: every failure names the table, file, column and rows.

Nothing is repaired or dropped here: a table either passes whole or the user is told exactly what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eoca.data.schema import (
    EVENT_TYPES,
    KIND_HINT,
    Column,
    DatasetSpec,
    TableSpec,
    arrow_type_ok,
    canonical_columns,
)
from eoca.errors import DataValidationError

MAX_ROWS_SHOWN = 5


def _where(table: str, file: str | None) -> str:
    return f"table '{table}'" + (f" ({file})" if file else "")


def _rows_message(rows: np.ndarray, values: Sequence[Any] | None = None) -> str:
    shown = rows[:MAX_ROWS_SHOWN]
    if values is None:
        listed = ", ".join(str(int(r)) for r in shown)
    else:
        plain = [v.item() if isinstance(v, np.generic) else v for v in values[:MAX_ROWS_SHOWN]]
        listed = ", ".join(f"{int(r)} ({v!r})" for r, v in zip(shown, plain, strict=False))
    more = f" and {len(rows) - MAX_ROWS_SHOWN:,} more" if len(rows) > MAX_ROWS_SHOWN else ""
    return f"{len(rows):,} row(s), first at row {listed}{more}"


def _fail(table: str, file: str | None, column: str | None, problem: str) -> DataValidationError:
    col = f", column '{column}'" if column else ""
    return DataValidationError(f"{_where(table, file)}{col}: {problem}")


def _bad_rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


def _as_float(arr: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def check_table(name: str, table: pa.Table, spec: TableSpec, file: str | None = None) -> None:
    """Check one table's columns, types and per-row rules (nulls, NaN, ranges, duplicate keys).

    Raises:
        DataValidationError: naming the table, file, column and first offending rows.
    """
    if table.num_rows == 0:
        raise _fail(name, file, None, "the table is empty; every dataset table needs at least one row")
    cols = canonical_columns(name)
    present = set(table.column_names)
    missing = [c.name for c in cols if c.required and c.name not in present]
    if missing:
        raise _fail(name, file, None, f"missing required column(s) {missing}; found {table.column_names}")
    features = {f.name: f for f in spec.features}
    missing_f = [f for f in features if f not in present]
    if missing_f:
        raise _fail(name, file, None, f"declared feature column(s) {missing_f} are not in the table")
    known = {c.name for c in cols} | set(features)
    extra = [c for c in table.column_names if c not in known]
    if extra:
        raise _fail(
            name,
            file,
            None,
            f"unexpected column(s) {extra}: declare them as features in dataset.yaml "
            f"(tables.{name}.features) or remove them",
        )
    # Every column is checked and all their problems are reported together, so one run shows all there is to fix.
    problems: list[DataValidationError] = []
    for col in cols:
        if col.name in present:
            _collect(problems, _check_column, name, file, table, col.name, col.kind, col)
    for feat in features.values():
        _collect(problems, _check_column, name, file, table, feat.name, feat.type, None)
    raise_all(problems)


def _collect(problems: list[DataValidationError], check: Callable[..., None], *args: Any) -> None:
    try:
        check(*args)
    except DataValidationError as exc:
        problems.append(exc)


def raise_all(problems: Sequence[DataValidationError | str]) -> None:
    """Raise one :class:`DataValidationError` listing every problem (one per line), if there is any."""
    if not problems:
        return
    if len(problems) == 1:
        only = problems[0]
        raise only if isinstance(only, DataValidationError) else DataValidationError(only)
    lines = [f"- {p}" for p in problems]
    raise DataValidationError(f"{len(problems)} problems:\n" + "\n".join(lines))


def _check_column(name: str, file: str | None, table: pa.Table, column: str, kind: Any, col: Column | None) -> None:
    arr = table.column(column)
    if not arrow_type_ok(kind, arr.type):
        raise _fail(name, file, column, f"has type {arr.type}, expected {KIND_HINT[kind]}")
    if arr.null_count:
        rows = _bad_rows(np.asarray(arr.is_null().to_numpy(zero_copy_only=False)))
        raise _fail(name, file, column, f"has missing values: {_rows_message(rows)}")
    if kind in ("float", "nonneg_float", "prob", "numeric"):
        vals = _as_float(arr)
        bad = ~np.isfinite(vals)
        if bad.any():
            rows = _bad_rows(bad)
            raise _fail(name, file, column, f"has NaN or infinite values: {_rows_message(rows, vals[rows])}")
        if kind == "nonneg_float" and (vals < 0).any():
            rows = _bad_rows(vals < 0)
            raise _fail(name, file, column, f"has negative values: {_rows_message(rows, vals[rows])}")
        if kind == "prob" and ((vals < 0) | (vals > 1)).any():
            rows = _bad_rows((vals < 0) | (vals > 1))
            raise _fail(name, file, column, f"has values outside [0, 1]: {_rows_message(rows, vals[rows])}")
    if kind == "binary":
        vals = _as_float(arr)
        bad = (vals != 0) & (vals != 1)
        if bad.any():
            rows = _bad_rows(bad)
            raise _fail(name, file, column, f"must be 0 or 1: {_rows_message(rows, vals[rows])}")


def check_unique(name: str, file: str | None, table: pa.Table, column: str) -> None:
    arr = table.column(column).combine_chunks()
    if pc.count_distinct(arr).as_py() == len(arr):
        return
    # Locate duplicates only on the failure path, where the cost of a full sort no longer matters.
    values = np.asarray(arr.to_numpy(zero_copy_only=False))
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    seen_first = np.zeros(len(values), dtype=bool)
    seen_first[first] = True
    rows = np.flatnonzero(~seen_first)
    dup_values = values[rows]
    raise _fail(
        name,
        file,
        column,
        f"has duplicate ids ({int((counts > 1).sum()):,} distinct values repeated): "
        f"{_rows_message(rows, list(dup_values))}",
    )


def check_references(name: str, file: str | None, table: pa.Table, column: str, keys: pa.Array, target: str) -> None:
    """Every value of ``table[column]`` must be one of ``keys`` (the ids of table ``target``)."""
    arr = table.column(column)
    if arr.type != keys.type:
        try:
            arr = pc.cast(arr, keys.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _fail(
                name, file, column, f"has type {table.column(column).type} but {target} ids are {keys.type}"
            ) from exc
    found = pc.is_in(arr, value_set=keys)
    if pc.all(found).as_py():
        return
    bad = np.asarray(pc.invert(found).to_numpy(zero_copy_only=False))
    rows = _bad_rows(bad)
    vals = table.column(column).take(pa.array(rows[:MAX_ROWS_SHOWN])).to_pylist()
    raise _fail(name, file, column, f"refers to unknown {target}: {_rows_message(rows, vals)}")


def check_range(name: str, file: str | None, table: pa.Table, column: str, lo: int, hi: int, what: str) -> None:
    vals = _as_float(table.column(column))
    bad = (vals < lo) | (vals > hi)
    if bad.any():
        rows = _bad_rows(bad)
        raise _fail(
            name, file, column, f"{what} outside the declared range [{lo}, {hi}]: {_rows_message(rows, vals[rows])}"
        )


def check_dataset(spec: DatasetSpec, tables: dict[str, pa.Table], files: dict[str, str] | None = None) -> None:
    """Cross-table checks: unique keys, references, risk ranges, label consistency.

    ``tables`` maps table name to Arrow table for every table present; each has already passed
    :func:`check_table`.
    """
    files = files or {t: getattr(spec, t).file for t in tables}
    cust, funds = tables["customers"], tables["funds"]
    problems: list[DataValidationError] = []
    _collect(problems, check_unique, "customers", files["customers"], cust, "customer_id")
    _collect(problems, check_unique, "funds", files["funds"], funds, "fund_id")
    lo, hi = spec.risk_levels
    _collect(problems, check_range, "customers", files["customers"], cust, "risk_tolerance", lo, hi, "risk tolerance")
    _collect(problems, check_range, "funds", files["funds"], funds, "risk_level", lo, hi, "risk level")
    cust_ids = cust.column("customer_id").combine_chunks()
    fund_ids = funds.column("fund_id").combine_chunks()
    for t in ("exposures", "events", "truth"):
        if t in tables:
            _collect(problems, check_references, t, files[t], tables[t], "customer_id", cust_ids, "customers")
            _collect(problems, check_references, t, files[t], tables[t], "fund_id", fund_ids, "funds")
    if "consumption" in tables:
        _collect(
            problems,
            check_references,
            "consumption",
            files["consumption"],
            tables["consumption"],
            "customer_id",
            cust_ids,
            "customers",
        )
    _collect(problems, _check_labels, spec, tables, files)
    raise_all(problems)


def _check_labels(spec: DatasetSpec, tables: dict[str, pa.Table], files: dict[str, str]) -> None:
    cust, funds, exp = tables["customers"], tables["funds"], tables["exposures"]
    if "weight" in exp.column_names and not _as_float(exp.column("weight")).sum() > 0:
        raise _fail("exposures", files["exposures"], "weight", "sums to 0; sampling weights must have a positive sum")
    conv = _as_float(exp.column("converted"))
    amt = _as_float(exp.column("amount"))
    bad = (conv == 0) & (amt > 0)
    if bad.any():
        rows = _bad_rows(bad)
        raise _fail(
            "exposures",
            files["exposures"],
            "amount",
            f"is > 0 where converted = 0 (a purchase amount needs a conversion): {_rows_message(rows, amt[rows])}",
        )
    if "clicked" in exp.column_names:
        clk = _as_float(exp.column("clicked"))
        bad = (conv == 1) & (clk == 0)
        if bad.any():
            rows = _bad_rows(bad)
            raise _fail(
                "exposures",
                files["exposures"],
                "converted",
                "is 1 where clicked = 0; the entire-space models assume conversion follows a click: "
                f"{_rows_message(rows)} (drop the clicked column if clicks are not recorded)",
            )
    if "events" in tables:
        ev = tables["events"]
        types = ev.column("event_type")
        ok = pc.is_in(types, value_set=pa.array(list(EVENT_TYPES), type=pa.string()))
        if not pc.all(ok).as_py():
            rows = _bad_rows(np.asarray(pc.invert(ok).to_numpy(zero_copy_only=False)))
            vals = types.take(pa.array(rows[:MAX_ROWS_SHOWN])).to_pylist()
            raise _fail(
                "events",
                files["events"],
                "event_type",
                f"must be one of {list(EVENT_TYPES)}: {_rows_message(rows, vals)}",
            )
    if "truth" in tables:
        tr = tables["truth"]
        expected = cust.num_rows * funds.num_rows
        if tr.num_rows != expected:
            raise _fail(
                "truth",
                files["truth"],
                None,
                f"has {tr.num_rows:,} rows; it must have one per (customer, fund) pair = {expected:,}",
            )
