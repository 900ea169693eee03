"""Simulated online A/B test of allocation frameworks (EOCA section 5.2, Table 3).

A *framework* is a model plus an allocation method; its allocation is a set of delivered (customer, fund)
pairs. Each framework's pairs get outcomes from the simulator's ground truth, and the test reports, per
framework:

* deliveries, conversions and total amount;
* CPMD = conversions / deliveries * 1000 and TAPMD = total amount / deliveries * 1000 (EOCA Eq. 17-18);
* % lifts of CPMD and TAPMD against a control framework, with bootstrap intervals;
* optionally the expected (true-ETV) value of the allocation, which carries no outcome-draw noise, and each
  framework's share of an oracle framework (true ETV + exact allocation), the ceiling of what any model could
  reach under the same delivery plan.

Common random numbers. Outcomes are drawn once for the union of all frameworks' pairs and shared, so a pair
delivered by two frameworks has the same outcome in both by construction, whatever the outcome source does.
Differences between frameworks therefore come only from the pairs on which they disagree; identical
allocations give identical metrics and a lift of exactly zero.

Bootstrap unit: the customer. Every framework allocates the same customer population, so the statistic of
interest (a ratio of per-mille rates between frameworks) is a function of one sample of customers. Resampling
customers with replacement and recomputing every framework on the *same* resample (a paired bootstrap) keeps
the strong positive correlation between frameworks that common random numbers create, so lift intervals are
not inflated by noise that cancels in the comparison. Resampling pairs instead would treat a customer's
several deliveries (K > 1) and the same customer across frameworks as independent, which they are not. The
interval is conditional on the allocations: it describes how much the comparison would move with another
population of customers of the same kind and another outcome draw for them, not how the allocations
themselves would change, because the allocations are held fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoca.errors import EocaError
from eoca.evaluation.metrics import lift_pct

OutcomeDraw = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``draw(customer_pos, fund_pos) -> (converted, amount)``; inputs int64 of shape (m,), outputs shape (m,)."""

# Bootstrap replicates are formed as (replicates x customers) count matrices; this caps one chunk at about
# 64 MB of float64 so a million-customer run does not need gigabytes for the resampling.
_MAX_BOOTSTRAP_CELLS = 8_000_000


@dataclass(frozen=True)
class FrameworkAllocation:
    """The delivered pairs of one framework.

    Attributes:
        customer_pos: int array, shape (n_deliveries,): customer row positions in the score matrix.
        fund_pos: int array, shape (n_deliveries,): fund column positions.
        true_etv: optional float array, shape (n_deliveries,): the simulator's true ETV of each delivered
            pair; when given, the expected (noise-free) value of the allocation is reported too.
    """

    customer_pos: np.ndarray
    fund_pos: np.ndarray
    true_etv: np.ndarray | None = None


@dataclass(frozen=True)
class FrameworkABResult:
    """One framework's row of the simulated A/B test. Lifts are in %, ``None`` where not applicable."""

    name: str
    role: str  # "control", "oracle" or "" (a role makes the row read correctly in a table)
    customers: int
    deliveries: int
    conversions: int
    amount: float
    cpmd: float
    cpmd_ci: tuple[float, float]
    tapmd: float
    tapmd_ci: tuple[float, float]
    cpmd_lift_pct: float | None
    cpmd_lift_ci: tuple[float, float] | None
    tapmd_lift_pct: float | None
    tapmd_lift_ci: tuple[float, float] | None
    expected_value: float | None
    expected_tapmd: float | None
    expected_tapmd_lift_pct: float | None
    pct_of_oracle_realised: float | None
    pct_of_oracle_expected: float | None


@dataclass(frozen=True)
class ABTestResult:
    """All frameworks of one simulated A/B test, in the order they were given."""

    frameworks: tuple[FrameworkABResult, ...]
    control: str
    oracle: str | None
    n_customers: int
    n_bootstrap: int
    confidence: float
    seed: int

    def __getitem__(self, name: str) -> FrameworkABResult:
        for fw in self.frameworks:
            if fw.name == name:
                return fw
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [fw.name for fw in self.frameworks]

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per framework (intervals as ``*_ci_low``/``*_ci_high``) for CSV, JSON, Markdown.

        Missing values are ``None`` so JSON gets ``null`` and CSV an empty cell rather than a fake number.
        """
        rows: list[dict[str, Any]] = []
        for fw in self.frameworks:
            rows.append(
                {
                    "framework": fw.name,
                    "role": fw.role,
                    "customers": fw.customers,
                    "deliveries": fw.deliveries,
                    "conversions": fw.conversions,
                    "amount": fw.amount,
                    "cpmd": fw.cpmd,
                    "cpmd_ci_low": fw.cpmd_ci[0],
                    "cpmd_ci_high": fw.cpmd_ci[1],
                    "tapmd": fw.tapmd,
                    "tapmd_ci_low": fw.tapmd_ci[0],
                    "tapmd_ci_high": fw.tapmd_ci[1],
                    "cpmd_lift_pct": fw.cpmd_lift_pct,
                    "cpmd_lift_ci_low": _lo(fw.cpmd_lift_ci),
                    "cpmd_lift_ci_high": _hi(fw.cpmd_lift_ci),
                    "tapmd_lift_pct": fw.tapmd_lift_pct,
                    "tapmd_lift_ci_low": _lo(fw.tapmd_lift_ci),
                    "tapmd_lift_ci_high": _hi(fw.tapmd_lift_ci),
                    "expected_value": fw.expected_value,
                    "expected_tapmd": fw.expected_tapmd,
                    "expected_tapmd_lift_pct": fw.expected_tapmd_lift_pct,
                    "pct_of_oracle_realised": fw.pct_of_oracle_realised,
                    "pct_of_oracle_expected": fw.pct_of_oracle_expected,
                }
            )
        return rows


def _lo(ci: tuple[float, float] | None) -> float | None:
    return None if ci is None else ci[0]


def _hi(ci: tuple[float, float] | None) -> float | None:
    return None if ci is None else ci[1]


def bootstrap_counts(
    n_units: int, n_replicates: int, rng: np.random.Generator, *, max_cells: int = _MAX_BOOTSTRAP_CELLS
) -> Iterator[np.ndarray]:
    """Yield nonparametric-bootstrap resampling counts in chunks.

    Each yielded array has shape (chunk, n_units), float64: row r holds how many times each unit was drawn in
    replicate r (rows sum to ``n_units``). Weighting per-unit sums by these counts equals recomputing the
    statistic on the resampled units, without materialising the resampled data.
    """
    chunk = max(1, min(n_replicates, max_cells // max(n_units, 1)))
    done = 0
    while done < n_replicates:
        b = min(chunk, n_replicates - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        # Offsetting each replicate's draws by r * n_units lets one bincount count all replicates at once.
        draws += (np.arange(b, dtype=np.int64) * n_units)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        done += b


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, shape (n_replicates,); NaN replicates are skipped."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return (float(low), float(high))


def _as_positions(values: Any, argument: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EocaError(f"{argument} must be a 1-D array of positions, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise EocaError(f"{argument} must hold integer positions, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise EocaError(f"{argument} holds a negative position ({int(arr.min())})")
    return arr


def _check_allocation(name: str, alloc: FrameworkAllocation | tuple[Any, ...]) -> FrameworkAllocation:
    if isinstance(alloc, tuple):
        if len(alloc) not in (2, 3):
            raise EocaError(
                f"framework '{name}': expected (customer_pos, fund_pos[, true_etv]), got a tuple of {len(alloc)}"
            )
        alloc = FrameworkAllocation(*alloc)
    cust = _as_positions(alloc.customer_pos, f"framework '{name}' customer_pos")
    fund = _as_positions(alloc.fund_pos, f"framework '{name}' fund_pos")
    if cust.shape != fund.shape:
        raise EocaError(f"framework '{name}': customer_pos has {cust.size:,} entries but fund_pos has {fund.size:,}")
    if cust.size == 0:
        raise EocaError(f"framework '{name}' delivers nothing: its allocation is empty")
    etv = None
    if alloc.true_etv is not None:
        etv = np.asarray(alloc.true_etv, dtype=np.float64)
        if etv.shape != cust.shape:
            raise EocaError(
                f"framework '{name}': true_etv has shape {etv.shape}, expected ({cust.size},) like customer_pos"
            )
        if not np.all(np.isfinite(etv)) or etv.min() < 0:
            raise EocaError(f"framework '{name}': true_etv must be finite and non-negative")
    return FrameworkAllocation(cust, fund, etv)


def simulate_ab_test(
    frameworks: Mapping[str, FrameworkAllocation | tuple[Any, ...]],
    draw: OutcomeDraw,
    *,
    control: str,
    oracle: str | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ABTestResult:
    """Run the simulated A/B test of EOCA Table 3 over several frameworks.

    Args:
        frameworks: name -> allocation, either a :class:`FrameworkAllocation` or a tuple
            ``(customer_pos, fund_pos[, true_etv])`` of arrays of shape (n_deliveries,). A framework may
            deliver several funds to one customer (K > 1) but never the same pair twice.
        draw: outcome source, called once with the union of all frameworks' distinct pairs
            (``customer_pos``, ``fund_pos``: int64, shape (m,)) and returning ``(converted, amount)`` of shape
            (m,): ``converted`` in {0, 1} and ``amount`` >= 0 with amount 0 wherever not converted.
        control: the framework lifts are measured against (EOCA: ESMM + manual).
        oracle: optional ceiling framework (true ETV + exact allocation); every framework gets its % of it.
            The share is of totals, not of per-mille rates: the oracle maximises the total value of a plan
            that fills every contract, so a framework that delivers less (e.g. HA stranding customers) is
            measured on what it actually brought in.
        n_bootstrap: paired bootstrap replicates over customers (0 disables intervals: they become NaN).
        confidence: interval coverage, e.g. 0.95.
        seed: seeds the bootstrap only; outcome randomness belongs to ``draw``.

    Raises:
        EocaError: unknown control/oracle, malformed allocations, or an outcome source returning wrong shapes
            or impossible outcomes.
    """
    if not frameworks:
        raise EocaError("simulate_ab_test needs at least one framework")
    if control not in frameworks:
        raise EocaError(f"control framework '{control}' is not among the frameworks: {sorted(frameworks)}")
    if oracle is not None and oracle not in frameworks:
        raise EocaError(f"oracle framework '{oracle}' is not among the frameworks: {sorted(frameworks)}")
    if not 0.0 < confidence < 1.0:
        raise EocaError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_bootstrap < 0:
        raise EocaError(f"n_bootstrap must be >= 0, got {n_bootstrap}")

    names = list(frameworks)
    allocs = [_check_allocation(name, frameworks[name]) for name in names]

    # Encode pairs as single integers to find the union of distinct pairs and each framework's index into it.
    n_funds = int(max(int(a.fund_pos.max()) for a in allocs)) + 1
    keys = [a.customer_pos * n_funds + a.fund_pos for a in allocs]
    for name, k in zip(names, keys, strict=True):
        if np.unique(k).size != k.size:
            raise EocaError(f"framework '{name}' delivers the same (customer, fund) pair more than once")
    union, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    converted, amount = _draw_union(draw, union // n_funds, union % n_funds)

    # Customers are re-indexed densely over everyone any framework reached, the bootstrap's population.
    all_cust = np.concatenate([a.customer_pos for a in allocs])
    customers, cust_idx = np.unique(all_cust, return_inverse=True)
    n_cust = customers.size

    # Per-customer sums per framework, columns [deliveries, conversions, amount] x framework: every statistic
    # (rates, lifts) is a ratio of these sums, so a resample only needs weighted column sums.
    per_cust = np.zeros((n_cust, 3 * len(allocs)), dtype=np.float64)
    start = 0
    totals = []
    for f, a in enumerate(allocs):
        n_del = a.customer_pos.size
        idx_pairs = inverse[start : start + n_del]
        idx_cust = cust_idx[start : start + n_del]
        start += n_del
        conv_f = converted[idx_pairs]
        amt_f = amount[idx_pairs]
        per_cust[:, 3 * f] = np.bincount(idx_cust, minlength=n_cust)
        per_cust[:, 3 * f + 1] = np.bincount(idx_cust, weights=conv_f, minlength=n_cust)
        per_cust[:, 3 * f + 2] = np.bincount(idx_cust, weights=amt_f, minlength=n_cust)
        totals.append(
            (
                int(np.unique(a.customer_pos).size),
                n_del,
                int(conv_f.sum()),
                float(amt_f.sum()),
                None if a.true_etv is None else float(a.true_etv.sum()),
            )
        )

    boot = _bootstrap_sums(per_cust, n_bootstrap, np.random.default_rng(seed))
    n_f = len(allocs)
    boot_del = boot[:, 0::3]
    with np.errstate(divide="ignore", invalid="ignore"):
        boot_cpmd = boot[:, 1::3] / boot_del * 1000.0
        boot_tapmd = boot[:, 2::3] / boot_del * 1000.0

    c = names.index(control)
    o = None if oracle is None else names.index(oracle)
    results = []
    for f in range(n_f):
        n_customers_f, n_del, n_conv, amt, etv_sum = totals[f]
        cpmd = n_conv / n_del * 1000.0
        tapmd = amt / n_del * 1000.0
        ctrl_del, ctrl_conv, ctrl_amt, ctrl_etv = totals[c][1], totals[c][2], totals[c][3], totals[c][4]
        is_control = f == c
        cpmd_lift = tapmd_lift = None
        cpmd_lift_ci = tapmd_lift_ci = None
        if not is_control:
            cpmd_lift = lift_pct(cpmd, ctrl_conv / ctrl_del * 1000.0)
            tapmd_lift = lift_pct(tapmd, ctrl_amt / ctrl_del * 1000.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                cpmd_lift_ci = percentile_interval((boot_cpmd[:, f] / boot_cpmd[:, c] - 1.0) * 100.0, confidence)
                tapmd_lift_ci = percentile_interval((boot_tapmd[:, f] / boot_tapmd[:, c] - 1.0) * 100.0, confidence)
        expected_tapmd = None if etv_sum is None else etv_sum / n_del * 1000.0
        expected_lift = None
        if etv_sum is not None and ctrl_etv is not None and not is_control:
            expected_lift = lift_pct(expected_tapmd, ctrl_etv / ctrl_del * 1000.0)
        pct_real = pct_exp = None
        if o is not None:
            pct_real = _share_pct(amt, totals[o][3])
            oracle_etv = totals[o][4]
            if etv_sum is not None and oracle_etv is not None:
                pct_exp = _share_pct(etv_sum, oracle_etv)
        role = "control" if is_control else ("oracle" if f == o else "")
        results.append(
            FrameworkABResult(
                name=names[f],
                role=role,
                customers=n_customers_f,
                deliveries=n_del,
                conversions=n_conv,
                amount=amt,
                cpmd=cpmd,
                cpmd_ci=percentile_interval(boot_cpmd[:, f], confidence),
                tapmd=tapmd,
                tapmd_ci=percentile_interval(boot_tapmd[:, f], confidence),
                cpmd_lift_pct=cpmd_lift,
                cpmd_lift_ci=cpmd_lift_ci,
                tapmd_lift_pct=tapmd_lift,
                tapmd_lift_ci=tapmd_lift_ci,
                expected_value=etv_sum,
                expected_tapmd=expected_tapmd,
                expected_tapmd_lift_pct=expected_lift,
                pct_of_oracle_realised=pct_real,
                pct_of_oracle_expected=pct_exp,
            )
        )
    return ABTestResult(
        frameworks=tuple(results),
        control=control,
        oracle=oracle,
        n_customers=int(n_cust),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )


def _share_pct(value: float, reference: float) -> float | None:
    return None if reference == 0.0 else value / reference * 100.0


def _draw_union(draw: OutcomeDraw, cust: np.ndarray, fund: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = draw(cust, fund)
    if not isinstance(out, tuple) or len(out) != 2:
        raise EocaError("the outcome source must return a tuple (converted, amount)")
    converted = np.asarray(out[0])
    amount = np.asarray(out[1], dtype=np.float64)
    m = cust.size
    if converted.shape != (m,) or amount.shape != (m,):
        raise EocaError(
            f"the outcome source returned converted {converted.shape} and amount {amount.shape} "
            f"for {m:,} pairs; both must have shape ({m},)"
        )
    if not np.isin(converted, (0, 1)).all():
        raise EocaError("the outcome source returned 'converted' values other than 0 and 1")
    if not np.all(np.isfinite(amount)) or amount.min(initial=0.0) < 0:
        raise EocaError("the outcome source returned a negative or non-finite 'amount'")
    if np.any((converted == 0) & (amount != 0)):
        raise EocaError("the outcome source returned a non-zero 'amount' for a pair that did not convert")
    return converted.astype(np.float64), amount


def _bootstrap_sums(per_unit: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled column sums, shape (n_bootstrap, n_columns), of ``per_unit`` (n_units, n_columns)."""
    out = np.empty((n_bootstrap, per_unit.shape[1]), dtype=np.float64)
    row = 0
    for counts in bootstrap_counts(per_unit.shape[0], n_bootstrap, rng):
        out[row : row + counts.shape[0]] = counts @ per_unit
        row += counts.shape[0]
    return out
