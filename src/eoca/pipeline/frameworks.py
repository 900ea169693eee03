"""Frameworks = (score source, allocation method): the allocations ``eoca run`` compares.

Every framework allocates the same evaluation customers under the same delivery plan; only the scores (a
trained model's predicted ETV, or the simulator's true ETV for the oracle) and the method differ. Keeping the
plan in one place guarantees that the comparison is between allocators and models, not between plans.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from eoca.allocation import AllocationProblem, AllocationResult, allocate, shares_to_counts
from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.pipeline.config import PlanSection


@dataclass(frozen=True)
class Plan:
    """The delivery plan over the evaluation customers.

    Attributes:
        customer_pos: int64 (n,): rows of the dataset's customers table that are allocated.
        tolerance: int64 (n,): their risk tolerance (the top level when the risk rule is off).
        risk: int64 (k,): fund risk levels.
        demand: int64 (k,): deliveries per fund, summing to n * K.
        K: funds per customer.
        shares_rule: how the demands were obtained, for the report.
    """

    customer_pos: np.ndarray
    tolerance: np.ndarray
    risk: np.ndarray
    demand: np.ndarray
    K: int
    shares_rule: str

    def problem(self, scores: np.ndarray, dataset: Dataset, source: str) -> AllocationProblem:
        """The allocation instance for ``scores`` (float32, (n, k), rows aligned with ``customer_pos``)."""
        return AllocationProblem(
            scores=np.ascontiguousarray(scores, dtype=np.float32),
            tolerance=self.tolerance,
            risk=self.risk,
            demand=self.demand,
            K=self.K,
            customer_ids=np.asarray(dataset.customers.column("customer_id").to_numpy(zero_copy_only=False))[
                self.customer_pos
            ],
            fund_ids=np.asarray(dataset.funds.column("fund_id").to_numpy(zero_copy_only=False)),
            source=source,
        )


def evaluation_customers(dataset: Dataset) -> np.ndarray:
    """Customers the delivery plan covers: everyone in a simulated world (the next period reaches every
    customer); otherwise the customers with exposures in the test split, whose logged outcomes evaluate it."""
    if dataset.truth is not None:
        return np.arange(dataset.n_customers, dtype=np.int64)
    test = dataset.split_mask("test")
    if not test.any():
        raise ConfigError(f"dataset '{dataset.spec.name}' has no test exposures to evaluate a delivery plan on")
    cust = dataset.customer_index(dataset.exposures.column("customer_id"))
    return np.unique(cust[test]).astype(np.int64)


def logged_shares(dataset: Dataset) -> np.ndarray:
    """Each fund's share of the logged exposures in the test split (the evaluation period), shape (k,)."""
    test = dataset.split_mask("test")
    fund = dataset.fund_index(dataset.exposures.column("fund_id"))[test]
    counts = np.bincount(fund, minlength=dataset.n_funds).astype(np.float64)
    return counts / counts.sum()


def build_plan(dataset: Dataset, plan: PlanSection) -> Plan:
    """Demands, K and the risk rule for the evaluation customers, from the run configuration."""
    cust = evaluation_customers(dataset)
    n, k = cust.size, dataset.n_funds
    fund_ids = [str(f) for f in dataset.funds.column("fund_id").to_pylist()]
    risk = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    tolerance = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[cust]
    if not plan.risk_rule:
        tolerance = np.full(n, max(int(risk.max()), int(tolerance.max(initial=0))), dtype=np.int64)
    if k < plan.K:
        raise ConfigError(f"plan.K = {plan.K} but the dataset has only {k} funds")
    total = n * plan.K
    if plan.demands is not None:
        missing = [f for f in fund_ids if f not in plan.demands]
        unknown = sorted(set(plan.demands) - set(fund_ids))
        if missing or unknown:
            raise ConfigError(
                f"plan.demands must list every fund_id exactly: missing {missing[:10]}, unknown {unknown[:10]}"
            )
        demand = np.array([plan.demands[f] for f in fund_ids], dtype=np.int64)
        rule = "demands given as counts"
    else:
        if plan.shares == "logged":
            shares = logged_shares(dataset)
            rule = "each fund's share of the logged test-period exposures"
        elif plan.shares == "uniform":
            shares = np.full(k, 1.0 / k)
            rule = "equal shares"
        else:
            given = plan.shares
            missing = [f for f in fund_ids if f not in given]
            unknown = sorted(set(given) - set(fund_ids))
            if missing or unknown:
                raise ConfigError(
                    f"plan.shares must list every fund_id exactly: missing {missing[:10]}, unknown {unknown[:10]}"
                )
            shares = np.array([given[f] for f in fund_ids], dtype=np.float64)
            if abs(shares.sum() - 1.0) > 1e-6 or (shares < 0).any():
                raise ConfigError(f"plan.shares must be >= 0 and sum to 1, they sum to {shares.sum():.6g}")
            rule = "shares given in the configuration"
        if plan.K > 1:
            # A fund can reach each customer at most once, so no share may exceed 1/K of the slots.
            shares = _cap_shares(shares, 1.0 / plan.K)
        demand = shares_to_counts(shares, total)
        rule += f", rounded to {total:,} slots by largest remainder"
    return Plan(customer_pos=cust, tolerance=tolerance, risk=risk, demand=demand, K=plan.K, shares_rule=rule)


def _cap_shares(shares: np.ndarray, cap: float) -> np.ndarray:
    out = shares.astype(np.float64).copy()
    for _ in range(out.size):
        over = out > cap
        if not over.any():
            break
        excess = float((out[over] - cap).sum())
        out[over] = cap
        room = ~over & (out < cap)
        if not room.any():
            break
        out[room] += excess * out[room] / out[room].sum() if out[room].sum() > 0 else excess / room.sum()
    return out / out.sum()


@dataclass
class FrameworkRun:
    """One framework's allocation and where its scores came from."""

    name: str
    model: str
    method: str
    result: AllocationResult

    def pairs(self, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        """Delivered (customer_pos in the dataset, fund_pos), empty slots dropped; int64 (m,) each."""
        a = self.result.assign
        rows = np.repeat(plan.customer_pos, a.shape[1])
        funds = a.ravel().astype(np.int64)
        keep = funds >= 0
        return rows[keep], funds[keep]


EXACT_ENGINE: ContextVar[Callable[[AllocationProblem], AllocationResult] | None] = ContextVar(
    "EXACT_ENGINE", default=None
)
"""Another engine for the exact method (``eoca run --engine dask`` sets one for the duration of the run)."""


def run_method(problem: AllocationProblem, method: str, cfg_alloc: Any) -> AllocationResult:
    """Allocate with one method; 'ha' becomes PTOFA's Eq. 7 when K > 1 (EOCA Algorithm 1 is one fund each)."""
    name = "ha_ptofa" if method == "ha" and problem.K > 1 else method
    engine = EXACT_ENGINE.get()
    if engine is not None and name == "exact":
        return engine(problem)
    return allocate(
        problem,
        name,
        repair=cfg_alloc.repair,
        time_limit=cfg_alloc.ip_time_limit,
        priority=cfg_alloc.manual_priority,
    )


def allocation_table(frameworks: list[FrameworkRun]) -> pa.Table:
    """All frameworks' allocations in one long table: framework, customer_id, fund_id (null = empty slot)."""
    parts = []
    for fw in frameworks:
        t = fw.result.to_table()
        parts.append(t.add_column(0, "framework", pa.array([fw.name] * t.num_rows, type=pa.string())))
    return pa.concat_tables(parts, promote_options="permissive")
