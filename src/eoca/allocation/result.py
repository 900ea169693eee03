"""What every allocation method returns, and how it is written to disk."""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eoca.allocation.problem import AllocationProblem
from eoca.allocation.verify import Verification, verify_allocation
from eoca.io import write_json, write_parquet

__all__ = ["AllocationResult", "peak_memory_mb"]


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (the OS high-water mark, so it never decreases)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return float(rss) / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


@dataclass
class AllocationResult:
    """An allocation and its evidence.

    assign: int32 (N, K) fund index per customer slot, -1 where the method left the slot empty.
    objective: total ETV of the assigned pairs (recomputed by :func:`verify_allocation`).
    dual_bound: an upper bound on any feasible allocation's value, when the method has one (exact: g(lambda);
    ip: the MIP bound). gap = dual_bound - objective. optimal: True when optimality is proved (exact with a
    certificate, ip when the MIP solver closed the gap), False when not, None when the method cannot tell.
    verification: the constraint check. wall_time_s: solve time; peak_memory_mb: process high-water mark.
    info: method-specific details (prices, rounds, stranded customers, solver status, ...).
    """

    method: str
    problem: AllocationProblem
    assign: np.ndarray
    objective: float
    dual_bound: float | None
    optimal: bool | None
    verification: Verification
    wall_time_s: float
    peak_memory_mb: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        problem: AllocationProblem,
        assign: np.ndarray,
        *,
        dual_bound: float | None,
        optimal: bool | None,
        wall_time_s: float,
        info: dict[str, Any] | None = None,
    ) -> AllocationResult:
        a = np.asarray(assign, dtype=np.int32)
        if a.ndim == 1:
            a = a[:, None]
        ver = verify_allocation(problem, a)
        return cls(
            method=method,
            problem=problem,
            assign=a,
            objective=ver.objective,
            dual_bound=dual_bound,
            optimal=optimal,
            verification=ver,
            wall_time_s=wall_time_s,
            peak_memory_mb=peak_memory_mb(),
            info=info or {},
        )

    @property
    def gap(self) -> float | None:
        """dual_bound - objective (>= 0 up to rounding), or None without a bound."""
        return None if self.dual_bound is None else self.dual_bound - self.objective

    @property
    def relative_gap(self) -> float | None:
        g = self.gap
        return None if g is None else g / max(1.0, abs(self.objective))

    @property
    def certificate_gap(self) -> float | None:
        """Alias of :attr:`gap`, the name used in summary.json."""
        return self.gap

    @property
    def delivered(self) -> np.ndarray:
        """Customers each fund received (k,) int64, recounted from :attr:`assign`."""
        return self.verification.delivered

    @property
    def violations(self) -> dict[str, Any]:
        """Every broken constraint, as in summary.json (all zeros / empty lists for a feasible allocation)."""
        return self.verification.violations(np.asarray(self.problem.fund_ids))

    @property
    def feasible(self) -> bool:
        return self.verification.ok

    def unassigned_customers(self) -> np.ndarray:
        """Ids of customers holding fewer than K funds (N_short,)."""
        rows = np.flatnonzero((self.assign < 0).any(axis=1))
        return np.asarray(self.problem.customer_ids)[rows]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: method, objective, certificate, deliveries, violations, time and memory."""
        p = self.problem
        fids = np.asarray(p.fund_ids)
        names = fids.tolist()  # plain Python ids, whatever the array dtype (object arrays have no .item())
        short = self.unassigned_customers()
        return {
            "method": self.method,
            "customers": p.n_customers,
            "funds": p.n_funds,
            "K": p.K,
            "objective": self.objective,
            "dual_bound": self.dual_bound,
            "certificate_gap": self.gap,
            "relative_gap": self.relative_gap,
            "optimal": self.optimal,
            "feasible": self.feasible,
            "per_fund": [
                {
                    "fund_id": names[j],
                    "risk_level": int(p.risk[j]),
                    "demanded": int(p.demand[j]),
                    "delivered": int(self.verification.delivered[j]),
                }
                for j in range(p.n_funds)
            ],
            "violations": self.verification.violations(fids),
            "unassigned_customers": {"count": int(short.size), "first_ids": short[:20].tolist()},
            "wall_time_s": self.wall_time_s,
            "peak_memory_mb": self.peak_memory_mb,
            "info": self.info,
        }

    def to_table(self) -> pa.Table:
        """Arrow table (customer_id, fund_id) with K rows per customer; fund_id is null for an empty slot."""
        p = self.problem
        K = self.assign.shape[1]
        flat = self.assign.ravel()
        empty = flat < 0
        cids = np.asarray(p.customer_ids)
        fids = np.asarray(p.fund_ids)
        cust = np.repeat(cids, K) if K > 1 else cids
        fund_vals = fids[np.where(empty, 0, flat)]
        fund = pa.array(fund_vals, mask=empty) if empty.any() else pa.array(fund_vals)
        return pa.table({"customer_id": pa.array(cust), "fund_id": fund})

    def write(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``allocation.parquet`` and ``summary.json`` into ``out_dir`` atomically; returns both paths."""
        out = Path(out_dir)
        alloc = write_parquet(self.to_table(), out / "allocation.parquet")
        summ = write_json(self.summary(), out / "summary.json")
        return alloc, summ
