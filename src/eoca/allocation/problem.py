"""The allocation problem: scores, risk rules, delivery plan, and how they are read from files.

Notation used throughout the package: N customers, k funds, K funds shown to each customer.

* ``scores``   float32, shape (N, k): expected transaction value E[i, j] of showing fund j to customer i.
* ``tolerance`` int64, shape (N,): customer risk tolerance t_i.
* ``risk``      int64, shape (k,): fund risk level r_j; customer i may get fund j only if t_i >= r_j.
* ``demand``    int64, shape (k,): d_j, the exact number of customers fund j must be shown to.

The delivery plan (how many customers each fund must reach) is :class:`eoca.allocation.plan.DeliveryPlan`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eoca.allocation.plan import DeliveryPlan, load_plan
from eoca.errors import ConfigError, DataValidationError
from eoca.risk import eligible_mask

__all__ = [
    "AllocationProblem",
    "load_problem",
    "read_scores",
]


def _first(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:n].tolist())
    return shown + (f", ... ({len(values):,} in all)" if len(values) > n else "")


@dataclass
class AllocationProblem:
    """One allocation instance.

    Attributes:
        scores: float32 (N, k) expected transaction values; either memory layout is accepted.
        tolerance: int64 (N,) customer risk tolerance.
        risk: int64 (k,) fund risk level.
        demand: int64 (k,) customers each fund must receive.
        K: funds per customer (>= 1).
        customer_ids: (N,) ids written to the output (default 0..N-1).
        fund_ids: (k,) ids written to the output (default 0..k-1).
        source: where the scores came from, used in error messages.
    """

    scores: np.ndarray
    tolerance: np.ndarray
    risk: np.ndarray
    demand: np.ndarray
    K: int = 1
    customer_ids: np.ndarray | None = None
    fund_ids: np.ndarray | None = None
    source: str = "scores"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_customers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_funds(self) -> int:
        return int(self.scores.shape[1])

    def validate(self) -> None:
        """Check shapes, dtypes and values; converts arrays to the canonical dtypes (no copy of the scores
        when they are already float32). Raises DataValidationError naming the array and the first bad rows."""
        s = self.scores
        if not isinstance(s, np.ndarray) or s.ndim != 2:
            raise DataValidationError(f"{self.source}: scores must be a 2-D array (customers x funds)")
        if s.dtype != np.float32:
            s = s.astype(np.float32)
            self.scores = s
        n, k = s.shape
        if k < 1:
            raise DataValidationError(f"{self.source}: the score matrix has no fund columns")
        self.tolerance = self._int_vector(self.tolerance, n, "tolerance (customers.risk_tolerance)")
        self.risk = self._int_vector(self.risk, k, "risk (funds.risk_level)")
        self.demand = self._int_vector(self.demand, k, "demand (delivery plan)")
        if not isinstance(self.K, int | np.integer) or int(self.K) < 1:
            raise ConfigError(f"K must be an integer >= 1, got {self.K!r}")
        self.K = int(self.K)
        if k < self.K:
            raise ConfigError(f"K={self.K} funds per customer but only {k} funds exist")
        neg = np.flatnonzero(self.demand < 0)
        if neg.size:
            raise ConfigError(f"delivery plan: negative demand for fund(s) {_first(self._fid()[neg])}")
        if self.customer_ids is None:
            self.customer_ids = np.arange(n, dtype=np.int64)
        if self.fund_ids is None:
            self.fund_ids = np.arange(k, dtype=np.int64)
        if len(self.customer_ids) != n or len(self.fund_ids) != k:
            raise DataValidationError(f"{self.source}: id arrays do not match the score matrix shape {s.shape}")
        self._check_finite()

    def _fid(self) -> np.ndarray:
        return np.asarray(self.fund_ids) if self.fund_ids is not None else np.arange(self.scores.shape[1])

    def _int_vector(self, v: Any, size: int, what: str) -> np.ndarray:
        a = np.asarray(v)
        if a.ndim != 1 or a.shape[0] != size:
            raise DataValidationError(f"{what}: expected {size:,} values, got shape {a.shape}")
        if a.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
            if bad.size:
                raise DataValidationError(f"{what}: non-integer values at rows {_first(bad)}")
        elif a.dtype.kind not in "iub":
            raise DataValidationError(f"{what}: must be integers, got dtype {a.dtype}")
        return a.astype(np.int64, copy=False)

    def _check_finite(self) -> None:
        # Chunked so that a 10M x k matrix never needs a full-size boolean temporary.
        s = self.scores
        step = 1 << 20
        for start in range(0, s.shape[0], step):
            block = s[start : start + step]
            ok = np.isfinite(block)
            if not ok.all():
                r, c = np.nonzero(~ok)
                rows = r[:5] + start
                cid = np.asarray(self.customer_ids)[rows] if self.customer_ids is not None else rows
                raise DataValidationError(
                    f"{self.source}: scores must be finite numbers; first bad entries at customer "
                    f"{_first(cid)} (row {_first(rows)}), fund {_first(self._fid()[c[:5]])}"
                )

    def eligible(self) -> np.ndarray:
        """Boolean (N, k) eligibility mask t_i >= r_j. Only for small problems (allocates N*k bytes)."""
        return eligible_mask(self.tolerance, self.risk)

    def subset(self, rows: np.ndarray, demand: np.ndarray) -> AllocationProblem:
        """A problem over some customers with other demands (used by repairs and benchmarks)."""
        return AllocationProblem(
            scores=np.ascontiguousarray(self.scores[rows]),
            tolerance=self.tolerance[rows],
            risk=self.risk,
            demand=np.asarray(demand, dtype=np.int64),
            K=self.K,
            customer_ids=np.asarray(self.customer_ids)[rows],
            fund_ids=self.fund_ids,
            source=self.source,
        )


# --- reading tables -----------------------------------------------------------------------------------------


def _read_table(path: str | os.PathLike[str], what: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DataValidationError(f"{what} file {path} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"{what} file {path}: cannot read as Parquet ({exc})") from None


def _require(table: pa.Table, cols: list[str], path: str | os.PathLike[str], what: str) -> None:
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise DataValidationError(f"{what} file {path}: missing column(s) {missing}; found {table.column_names}")


def _ids(col: pa.ChunkedArray, path: Any, name: str) -> np.ndarray:
    if col.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise DataValidationError(f"{path}: column {name} has empty values at rows {_first(rows)}")
    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.cast(typ.value_type)
        typ = col.type
    if pa.types.is_integer(typ):
        return np.asarray(col.to_numpy(), dtype=np.int64)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    raise DataValidationError(f"{path}: column {name} must hold integer or string ids, found {typ}")


def _int_col(table: pa.Table, name: str, path: Any) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise DataValidationError(f"{path}: column {name} has empty values at rows {_first(rows)}")
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataValidationError(f"{path}: column {name} must be integer, found {col.type}")
    a = col.to_numpy()
    if a.dtype.kind == "f":
        bad = np.flatnonzero(a != np.round(a))
        if bad.size:
            raise DataValidationError(f"{path}: column {name} has non-integer values at rows {_first(bad)}")
    return a.astype(np.int64)


def _unique_or_fail(ids: np.ndarray, path: Any, name: str) -> None:
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        raise DataValidationError(f"{path}: column {name} has duplicate id(s) {_first(np.unique(s[dup + 1]))}")


def _align(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each ``query`` id in ``keys`` (unique), and a mask of found ones."""
    if len(keys) == len(query) and keys.dtype == query.dtype and np.array_equal(keys, query):
        return np.arange(len(keys)), np.ones(len(keys), dtype=bool)
    if keys.dtype.kind != query.dtype.kind:
        # int ids on one side and strings on the other: compare as strings so "7" matches 7.
        keys, query = keys.astype(str), query.astype(str)
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys, query, sorter=order)
    pos = np.minimum(pos, len(keys) - 1)
    idx = order[pos]
    found = keys[idx] == query
    return idx, found


def read_scores(path: str | os.PathLike[str], customer_ids: np.ndarray, fund_ids: np.ndarray) -> np.ndarray:
    """Read a score file into a float32 (N, k) matrix aligned with ``customer_ids`` (N,) and ``fund_ids`` (k,).

    Long form: columns customer_id, fund_id, etv (other columns ignored), one row per (customer, fund).
    Wide form: customer_id plus one float column per fund, named by the fund id. The result is Fortran-ordered
    so each fund's column is contiguous (what the solvers scan).
    """
    schema = _schema(path)
    names = schema.names
    if "customer_id" not in names:
        raise DataValidationError(f"scores file {path}: no customer_id column; found {names}")
    N, k = len(customer_ids), len(fund_ids)
    if {"fund_id", "etv"} <= set(names):
        return _read_long(path, customer_ids, fund_ids)
    fund_cols = [str(f) for f in np.asarray(fund_ids).tolist()]
    missing = [c for c in fund_cols if c not in names]
    if missing:
        raise DataValidationError(
            f"scores file {path}: neither long form (customer_id, fund_id, etv) nor wide form; "
            f"wide form needs one column per fund, missing {missing[:10]}"
        )
    table = _read_table(path, "scores", ["customer_id", *fund_cols])
    ids = _ids(table.column("customer_id"), path, "customer_id")
    _unique_or_fail(ids, path, "customer_id")
    pos, found = _align(ids, customer_ids)
    if not found.all():
        raise DataValidationError(
            f"scores file {path}: no scores for customer(s) {_first(np.asarray(customer_ids)[~found])} "
            "of the customers table"
        )
    if len(ids) != N:
        _, extra_found = _align(np.asarray(customer_ids), ids)
        raise DataValidationError(
            f"scores file {path}: customer(s) {_first(ids[~extra_found])} are not in the customers table"
        )
    identity = bool(np.array_equal(pos, np.arange(N)))
    out = np.empty((N, k), dtype=np.float32, order="F")
    for j, c in enumerate(fund_cols):
        col = table.column(c)
        if not pa.types.is_floating(col.type) and not pa.types.is_integer(col.type):
            raise DataValidationError(f"scores file {path}: column {c} must be numeric, found {col.type}")
        if col.null_count:
            rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
            raise DataValidationError(f"scores file {path}: column {c} has empty values at rows {_first(rows)}")
        v = col.to_numpy()
        out[:, j] = v if identity else v[pos]
        del v
    return out


def _schema(path: str | os.PathLike[str]) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise DataValidationError(f"scores file {path} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"scores file {path}: cannot read as Parquet ({exc})") from None


def _read_long(path: Any, customer_ids: np.ndarray, fund_ids: np.ndarray) -> np.ndarray:
    table = _read_table(path, "scores", ["customer_id", "fund_id", "etv"])
    N, k = len(customer_ids), len(fund_ids)
    etv_col = table.column("etv")
    if etv_col.null_count:
        rows = np.flatnonzero(etv_col.is_null().to_numpy(zero_copy_only=False))
        raise DataValidationError(f"scores file {path}: column etv has empty values at rows {_first(rows)}")
    etv = pc.cast(etv_col, pa.float32()).to_numpy()
    nonfinite = np.flatnonzero(~np.isfinite(etv))
    if nonfinite.size:
        raise DataValidationError(f"scores file {path}: column etv is not finite at rows {_first(nonfinite)}")
    cid = _ids(table.column("customer_id"), path, "customer_id")
    fid = _ids(table.column("fund_id"), path, "fund_id")
    del table
    fpos, ffound = _align(np.asarray(fund_ids), fid)
    if not ffound.all():
        bad = np.flatnonzero(~ffound)
        raise DataValidationError(
            f"scores file {path}: fund_id {_first(fid[bad])} (rows {_first(bad)}) not in the funds table"
        )
    del fid
    cpos, cfound = _align(np.asarray(customer_ids), cid)
    if not cfound.all():
        bad = np.flatnonzero(~cfound)
        raise DataValidationError(
            f"scores file {path}: customer_id {_first(cid[bad])} (rows {_first(bad)}) not in the customers table"
        )
    per_customer = np.bincount(cpos, minlength=N)
    if (per_customer != k).any():
        bad = np.flatnonzero(per_customer != k)
        raise DataValidationError(
            f"scores file {path}: each customer needs exactly one row per fund ({k}); customer(s) "
            f"{_first(np.asarray(customer_ids)[bad])} have {_first(per_customer[bad])} rows"
        )
    out = np.full((N, k), np.nan, dtype=np.float32, order="F")
    out[cpos, fpos] = etv
    # With exactly k rows per customer, a NaN left behind means some (customer, fund) pair came twice.
    holes = np.isnan(out).any(axis=1)
    if holes.any():
        bad = np.flatnonzero(holes)
        raise DataValidationError(
            f"scores file {path}: customer(s) {_first(np.asarray(customer_ids)[bad])} have a fund listed twice "
            "and another missing"
        )
    return out


def load_problem(
    scores: str | os.PathLike[str],
    customers: str | os.PathLike[str],
    funds: str | os.PathLike[str],
    plan: str | os.PathLike[str] | DeliveryPlan,
    K: int | None = None,
) -> AllocationProblem:
    """Build an :class:`AllocationProblem` from Parquet files and a delivery plan.

    ``customers`` needs customer_id and risk_tolerance, ``funds`` needs fund_id and risk_level. The problem's
    customers are those of the customers table, in its order; every one must have scores.
    """
    ct = _read_table(customers, "customers", None)
    _require(ct, ["customer_id", "risk_tolerance"], customers, "customers")
    ft = _read_table(funds, "funds", None)
    _require(ft, ["fund_id", "risk_level"], funds, "funds")
    cids = _ids(ct.column("customer_id"), customers, "customer_id")
    _unique_or_fail(cids, customers, "customer_id")
    tol = _int_col(ct, "risk_tolerance", customers)
    del ct
    fids = _ids(ft.column("fund_id"), funds, "fund_id")
    _unique_or_fail(fids, funds, "fund_id")
    risk = _int_col(ft, "risk_level", funds)
    if len(cids) == 0:
        raise DataValidationError(f"customers file {customers} has no rows")
    if len(fids) == 0:
        raise DataValidationError(f"funds file {funds} has no rows")
    p = plan if isinstance(plan, DeliveryPlan) else load_plan(plan)
    K_eff = K if K is not None else p.K  # the command line is the more specific instruction
    E = read_scores(scores, cids, fids)
    demand = p.demand_vector(fids, len(cids), K_eff, source=str(plan) if not isinstance(plan, DeliveryPlan) else "plan")
    tol = p.tolerances(tol, risk)
    return AllocationProblem(
        scores=E,
        tolerance=tol,
        risk=risk,
        demand=demand,
        K=K_eff,
        customer_ids=cids,
        fund_ids=fids,
        source=str(scores),
    )
