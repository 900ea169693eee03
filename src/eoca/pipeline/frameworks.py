"""Frameworks = (score source, allocation method): the allocations ``eoca run`` compares.

Every framework allocates the same evaluation customers under the same delivery plan; only the scores (a
trained model's predicted ETV, or the simulator's true ETV for the oracle) and the method differ. Keeping the
plan in one place guarantees that the comparison is between allocators and models, not between plans.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from eoca.allocation import AllocationProblem, AllocationResult, DeliveryPlan, allocate
from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.pipeline.config import AllocationSection
from eoca.risk import eligible_mask


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

    def eligible(self) -> np.ndarray:
        """Boolean (n, k): the pairs the plan's risk rule allows, rows aligned with ``customer_pos``."""
        return eligible_mask(self.tolerance, self.risk)

    def problem(self, scores: np.ndarray, dataset: Dataset, source: str) -> AllocationProblem:
        """The allocation instance for ``scores`` (float32, (n, k), rows aligned with ``customer_pos``). A pair
        the risk rule forbids may be NaN (unscored, :meth:`eoca.training.TrainedModel.score_matrix`): no method
        reads it, and the instance holds 0 there. A NaN anywhere else is the instance's error."""
        s = np.ascontiguousarray(scores, dtype=np.float32)
        unscored = np.isnan(s)
        if unscored.any():
            s = np.where(unscored & ~self.eligible(), np.float32(0.0), s)
        return AllocationProblem(
            scores=s,
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


def build_plan(dataset: Dataset, plan: DeliveryPlan) -> Plan:
    """Demands, K and the risk rule for the evaluation customers, from the run configuration's plan."""
    cust = evaluation_customers(dataset)
    risk = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    tolerance = plan.tolerances(
        np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[cust], risk
    )
    demand = plan.demand_vector(
        dataset.funds.column("fund_id").to_pylist(),
        cust.size,
        logged_shares=logged_shares(dataset) if plan.needs_log else None,
        source="plan",
    )
    rule = plan.shares_rule
    if plan.demands is None:
        rule += f", rounded to {cust.size * plan.K:,} slots by largest remainder"
    return Plan(customer_pos=cust, tolerance=tolerance, risk=risk, demand=demand, K=plan.K, shares_rule=rule)


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


def run_method(problem: AllocationProblem, method: str, cfg_alloc: AllocationSection) -> AllocationResult:
    """Allocate with one method under the run's allocation options (``ha`` with K > 1 is refused when the
    configuration is loaded, as in ``eoca allocate``)."""
    engine = EXACT_ENGINE.get()
    if engine is not None and method == "exact":
        return engine(problem)
    return allocate(
        problem,
        method,
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
