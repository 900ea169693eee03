"""The allocation problem: scores, risk rules, delivery plan, and how they are read from files.

Notation used throughout the package: N customers, k funds, K funds shown to each customer.

* ``scores``   float32, shape (N, k): expected transaction value E[i, j] of showing fund j to customer i.
* ``tolerance`` int64, shape (N,): customer risk tolerance t_i.
* ``risk``      int64, shape (k,): fund risk level r_j; customer i may get fund j only if t_i >= r_j.
* ``demand``    int64, shape (k,): d_j, the exact number of customers fund j must be shown to.

Delivery plan YAML
------------------
Either absolute counts::

    K: 1                 # optional, funds per customer (the command line's --K wins when given)
    demands:             # fund_id -> number of customers
      F1: 120000
      F2: 80000

or shares of the N*K slots::

    shares:              # fund_id -> share; shares must be >= 0 and sum to 1 (within 1e-6)
      F1: 0.6
      F2: 0.4

Every fund of the funds table must appear (give 0 to leave a fund out); an unknown fund is an error.

Rounding rule for shares (largest remainder, deterministic): each fund first gets floor(share * N * K); the
slots still missing are given one each to the funds with the largest fractional parts, ties broken by the larger
share and then by the fund's position in the funds table. The counts therefore sum exactly to N * K and no
fund's count differs from its exact quota by one or more.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from eoca.errors import ConfigError, DataValidationError

__all__ = [
    "AllocationProblem",
    "DeliveryPlan",
    "load_plan",
    "load_problem",
    "read_scores",
    "shares_to_counts",
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
    _validated: bool = field(default=False, repr=False)

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
        self._validated = True

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
        return self.tolerance[:, None] >= self.risk[None, :]

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


# --- delivery plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryPlan:
    """A parsed plan: exactly one of ``counts`` or ``shares`` is set, keyed by fund id as a string."""

    counts: dict[str, int] | None
    shares: dict[str, float] | None
    K: int | None
    source: str = "plan"

    def demands(self, fund_ids: np.ndarray, n_customers: int, K: int) -> np.ndarray:
        """Demand per fund, aligned with ``fund_ids`` (k,), as int64 (k,)."""
        keys = [str(f) for f in np.asarray(fund_ids).tolist()]
        given = self.counts if self.counts is not None else self.shares
        assert given is not None
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ConfigError(f"{self.source}: fund(s) {unknown[:10]} are not in the funds table")
        missing = [f for f in keys if f not in given]
        if missing:
            raise ConfigError(
                f"{self.source}: no demand for fund(s) {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; list every fund (use 0 to leave one out)"
            )
        if self.counts is not None:
            return np.array([self.counts[f] for f in keys], dtype=np.int64)
        assert self.shares is not None
        return shares_to_counts(np.array([self.shares[f] for f in keys]), n_customers * K)


def shares_to_counts(shares: np.ndarray, total: int) -> np.ndarray:
    """Round shares (k,) summing to 1 into int64 counts (k,) summing exactly to ``total``.

    Largest remainder: floors first, then one more slot to each of the funds with the largest fractional part
    (ties: larger share first, then lower index), until the counts add up to ``total``.
    """
    shares = np.asarray(shares, dtype=np.float64)
    quota = shares * total
    base = np.floor(quota).astype(np.int64)
    missing = int(total - base.sum())
    if missing < 0 or missing > len(shares):
        raise ConfigError(f"shares sum to {shares.sum():.9g}, not 1; cannot round them to {total:,} slots")
    frac = quota - base
    order = np.lexsort((np.arange(len(shares)), -shares, -frac))
    base[order[:missing]] += 1
    return base


def _parse_number_map(raw: Any, key: str, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: '{key}' must be a non-empty mapping fund_id -> number")
    out: dict[str, Any] = {}
    for fund, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key}.{fund} must be a number, got {value!r}")
        out[str(fund)] = value
    return out


def load_plan(path: str | os.PathLike[str]) -> DeliveryPlan:
    """Read a delivery plan YAML (see the module docstring for the format)."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"delivery plan {source} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'demands' or 'shares'")
    extra = sorted(set(raw) - {"K", "demands", "shares"})
    if extra:
        raise ConfigError(f"{source}: unknown key(s) {extra}; allowed: K, demands, shares")
    if ("demands" in raw) == ("shares" in raw):
        raise ConfigError(f"{source}: give exactly one of 'demands' (counts) or 'shares'")
    K = raw.get("K")
    if K is not None and (isinstance(K, bool) or not isinstance(K, int) or K < 1):
        raise ConfigError(f"{source}: K must be an integer >= 1, got {K!r}")
    if "demands" in raw:
        counts = _parse_number_map(raw["demands"], "demands", source)
        for fund, v in counts.items():
            if v < 0 or v != math.floor(v):
                raise ConfigError(f"{source}: demands.{fund} must be a whole number >= 0, got {v!r}")
        return DeliveryPlan({f: int(v) for f, v in counts.items()}, None, K, source)
    shares = _parse_number_map(raw["shares"], "shares", source)
    for fund, v in shares.items():
        if not 0 <= v <= 1:
            raise ConfigError(f"{source}: shares.{fund} must lie in [0, 1], got {v!r}")
    total = math.fsum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{source}: shares sum to {total:.9g}; they must sum to 1")
    return DeliveryPlan(None, {f: float(v) for f, v in shares.items()}, K, source)


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
    K_eff = K if K is not None else (p.K if p.K is not None else 1)
    if K is not None and p.K is not None and K != p.K:
        K_eff = K  # the command line is the more specific instruction
    E = read_scores(scores, cids, fids)
    demand = p.demands(fids, len(cids), K_eff)
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
