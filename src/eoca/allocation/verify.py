"""The one check of an allocation against the constraints, used by the tests and by ``eoca allocate --verify``.

It trusts nothing the solver reports: it recomputes the objective, per-fund deliveries, how many customers lack
funds, repeated funds and risk-rule breaches from the raw assignment and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eoca.allocation._kernels import CHUNK
from eoca.allocation.problem import AllocationProblem

__all__ = ["Verification", "verify_allocation"]


@dataclass
class Verification:
    """Outcome of :func:`verify_allocation`.

    objective: sum of E over assigned (customer, fund) pairs (float64); delivered: int64 (k,) customers per
    fund; short_customers: customers holding fewer than K funds; repeated: customers given one fund twice;
    risk_breaches: assigned pairs with t_i < r_j; bad_index: slots holding something other than -1 or 0..k-1.
    """

    objective: float
    delivered: np.ndarray
    demanded: np.ndarray
    short_customers: int
    repeated: int
    risk_breaches: int
    bad_index: int
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def fund_mismatch(self) -> np.ndarray:
        """delivered - demanded per fund (k,)."""
        return self.delivered - self.demanded

    @property
    def ok(self) -> bool:
        return (
            self.short_customers == 0
            and self.repeated == 0
            and self.risk_breaches == 0
            and self.bad_index == 0
            and not self.fund_mismatch.any()
        )

    def violations(self, fund_ids: np.ndarray | None = None) -> dict[str, Any]:
        """JSON-friendly summary of everything that breaks a constraint (empty lists / zeros when ok)."""
        mism = self.fund_mismatch
        names = (np.arange(len(mism)) if fund_ids is None else np.asarray(fund_ids)).tolist()
        return {
            "customers_without_all_funds": int(self.short_customers),
            "customers_with_repeated_fund": int(self.repeated),
            "risk_rule_breaches": int(self.risk_breaches),
            "invalid_fund_index": int(self.bad_index),
            "funds_off_demand": [
                {"fund_id": names[j], "delivered": int(self.delivered[j]), "demanded": int(self.demanded[j])}
                for j in np.flatnonzero(mism)
            ],
            "examples": self.examples,
        }

    def describe(self) -> str:
        if self.ok:
            return "allocation verified: every constraint holds"
        parts = []
        if self.short_customers:
            parts.append(f"{self.short_customers:,} customers lack funds")
        if self.repeated:
            parts.append(f"{self.repeated:,} customers hold a fund twice")
        if self.risk_breaches:
            parts.append(f"{self.risk_breaches:,} risk-rule breaches")
        if self.bad_index:
            parts.append(f"{self.bad_index:,} invalid fund indices")
        off = int(np.count_nonzero(self.fund_mismatch))
        if off:
            parts.append(f"{off} funds off their demand")
        return "allocation violates constraints: " + "; ".join(parts)


def verify_allocation(problem: AllocationProblem, assign: np.ndarray) -> Verification:
    """Check ``assign`` (N, K) int (fund index per slot, -1 = empty) against ``problem``; chunked over rows."""
    N, k, K = problem.n_customers, problem.n_funds, problem.K
    a = np.asarray(assign)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape != (N, K):
        raise ValueError(f"assignment has shape {a.shape}, expected ({N}, {K})")
    delivered = np.zeros(k, dtype=np.int64)
    objective = 0.0
    short = repeated = breaches = bad = 0
    examples: dict[str, list[Any]] = {}
    cids = np.asarray(problem.customer_ids)

    def note(kind: str, rows: np.ndarray) -> None:
        if rows.size and kind not in examples:
            examples[kind] = cids[rows[:5]].tolist()

    for s in range(0, N, CHUNK):
        e = min(N, s + CHUNK)
        blk = a[s:e].astype(np.int64)
        invalid = (blk < -1) | (blk >= k)
        bad += int(invalid.sum())
        note("invalid_fund_index", np.flatnonzero(invalid.any(axis=1)) + s)
        blk = np.where(invalid, -1, blk)
        empty = blk < 0
        lacking = empty.any(axis=1)
        short += int(lacking.sum())
        note("customers_without_all_funds", np.flatnonzero(lacking) + s)
        if K > 1:
            srt = np.sort(blk, axis=1)
            dup = ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(axis=1)
            repeated += int(dup.sum())
            note("customers_with_repeated_fund", np.flatnonzero(dup) + s)
        filled = blk[~empty]
        delivered += np.bincount(filled, minlength=k)
        rows = np.nonzero(~empty)[0]
        tol = problem.tolerance[s:e][rows]
        br = tol < problem.risk[filled]
        breaches += int(br.sum())
        note("risk_rule_breaches", np.unique(rows[br]) + s)
        objective += float(problem.scores[s:e][rows, filled].astype(np.float64).sum())
    return Verification(
        objective=objective,
        delivered=delivered,
        demanded=problem.demand.copy(),
        short_customers=short,
        repeated=repeated,
        risk_breaches=breaches,
        bad_index=bad,
        examples=examples,
    )
