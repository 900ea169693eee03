"""Allocation engine: decide which K funds each customer is shown, maximising total ETV exactly.

From files (what ``eoca allocate`` does)::

    from eoca.allocation import allocate, load_problem
    problem = load_problem("scores.parquet", "customers.parquet", "funds.parquet", "plan.yaml")
    result = allocate(problem, method="exact")        # or "ha", "ha_ptofa", "manual", "ip", "mcf"
    result.write("out/")                               # allocation.parquet + summary.json

From arrays (what a pipeline holding predictions in memory does)::

    from eoca.allocation import AllocationProblem, allocate
    problem = AllocationProblem(
        scores=etv,              # float32 (N, k); other float dtypes are converted once, float32 is not copied
        tolerance=t,             # int (N,) customer risk tolerance
        risk=r,                  # int (k,) fund risk level; customer i may hold fund j only if t[i] >= r[j]
        demand=d,                # int (k,) customers per fund, summing to N * K (see shares_to_counts for shares)
        K=1,                     # funds per customer
        customer_ids=cids,       # (N,) ids written to the output; default 0..N-1
        fund_ids=fids,           # (k,) ids written to the output; default 0..k-1
    )
    result = allocate(problem)   # raises InfeasiblePlanError (with numbers) if no allocation meets the plan

The constructor validates shapes, dtypes and finiteness and raises DataValidationError / ConfigError naming the
array and the first bad rows. The result (:class:`AllocationResult`) carries ``assign`` (int32 (N, K) fund
positions into ``fund_ids``, -1 for a slot a baseline left empty), ``objective``, ``dual_bound`` and
``certificate_gap`` (exact: the dual bound g(lambda) minus the objective, zero up to rounding), ``optimal``,
``delivered`` (k,) against ``problem.demand``, ``violations``, ``wall_time_s``, ``peak_memory_mb``, ``info`` and
``write(dir)``.

Every method first runs the feasibility diagnosis (an impossible plan raises InfeasiblePlanError with numbers),
and every result carries an independent constraint check (:func:`verify_allocation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from eoca.allocation.exact import ExactOutcome, solve_exact
from eoca.allocation.feasibility import check_feasibility, feasibility_issues
from eoca.allocation.heuristic import ha_eoca, ha_ptofa, repair_allocation
from eoca.allocation.ip import solve_ip, solve_mcf
from eoca.allocation.manual import manual_priority
from eoca.allocation.plan import DeliveryPlan, cap_shares, load_plan, shares_to_counts
from eoca.allocation.problem import AllocationProblem, load_problem, read_scores
from eoca.allocation.result import AllocationResult, peak_memory_mb
from eoca.allocation.verify import Verification, verify_allocation
from eoca.errors import ConfigError

__all__ = [
    "METHODS",
    "AllocationProblem",
    "AllocationResult",
    "DeliveryPlan",
    "ExactOutcome",
    "Verification",
    "allocate",
    "cap_shares",
    "check_feasibility",
    "feasibility_issues",
    "load_plan",
    "load_problem",
    "method_problem",
    "peak_memory_mb",
    "read_scores",
    "shares_to_counts",
    "solve_exact",
    "verify_allocation",
]


def _exact(problem: AllocationProblem, seed: int = 0, **_: Any) -> tuple[np.ndarray, float | None, bool, dict]:
    out = solve_exact(problem.scores, problem.tolerance, problem.risk, problem.demand, problem.K, seed=seed)
    info = {"prices": out.prices.tolist(), "certified": out.certified, **out.stats}
    return out.assign, out.dual, out.certified, info


def _heuristic(
    run: Callable[[AllocationProblem], tuple[np.ndarray, dict[str, Any]]],
) -> Callable[..., tuple[np.ndarray, float | None, bool | None, dict]]:
    def go(problem: AllocationProblem, repair: bool = False, **_: Any) -> tuple[np.ndarray, None, None, dict]:
        assign, info = run(problem)
        if repair and (assign < 0).any():
            assign, info["repair"] = repair_allocation(problem, assign)
        return assign, None, None, info

    return go


def _manual(
    problem: AllocationProblem, priority: Sequence[Any] | None = None, repair: bool = False, **_: Any
) -> tuple[np.ndarray, None, None, dict]:
    assign, info = manual_priority(problem, priority)
    if repair and (assign < 0).any():
        assign, info["repair"] = repair_allocation(problem, assign)
    return assign, None, None, info


def _ip(problem: AllocationProblem, time_limit: float = 60.0, **_: Any) -> tuple[np.ndarray, Any, bool, dict]:
    assign, info = solve_ip(problem, time_limit)
    return assign, info["dual_bound"], info["optimal"], info


def _mcf(problem: AllocationProblem, **_: Any) -> tuple[np.ndarray, None, None, dict]:
    assign, info = solve_mcf(problem)
    return assign, None, None, info


METHODS: dict[str, Callable[..., tuple[np.ndarray, float | None, bool | None, dict]]] = {
    "exact": _exact,
    "ha": _heuristic(ha_eoca),
    "ha_ptofa": _heuristic(ha_ptofa),
    "manual": _manual,
    "ip": _ip,
    "mcf": _mcf,
}
"""Method name -> solver. exact: certified optimum (default). ha: EOCA Algorithm 1 (K = 1). ha_ptofa: PTOFA
Eq. 7 (any K). manual: priority allocation. ip: HiGHS MIP with a time limit. mcf: OR-Tools min-cost flow on
integer-rounded scores (a reference)."""


def method_problem(method: str, K: int) -> str | None:
    """Why ``method`` cannot allocate K funds per customer, or None when it can.

    The one rule for every command: EOCA's HA (Algorithm 1) gives each customer one fund, so ``ha`` with K > 1
    is an error (never silently swapped for another algorithm); ``ha_ptofa`` (PTOFA Eq. 7) is the greedy
    heuristic for any K.
    """
    if method not in METHODS:
        return f"unknown allocation method {method!r}; choose from {sorted(METHODS)}"
    if method == "ha" and K != 1:
        return "method 'ha' (EOCA Algorithm 1) gives one fund per customer; use 'ha_ptofa' for K > 1"
    return None


def allocate(
    problem: AllocationProblem,
    method: str = "exact",
    *,
    repair: bool = False,
    time_limit: float = 60.0,
    priority: Sequence[Any] | None = None,
    seed: int = 0,
    check: bool = True,
) -> AllocationResult:
    """Allocate with ``method`` (see :data:`METHODS`) and return a verified :class:`AllocationResult`.

    repair: for ha / ha_ptofa / manual, re-solve exactly the customers they strand (see
    :func:`eoca.allocation.heuristic.repair_allocation`). time_limit: seconds for ``ip``. priority: fund ids in
    order for ``manual``. check: run the feasibility diagnosis first (raises InfeasiblePlanError).
    """
    why = method_problem(method, problem.K)
    if why is not None:
        raise ConfigError(why)
    t_check = 0.0
    if check:
        t0 = time.perf_counter()
        check_feasibility(problem)
        t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    assign, bound, optimal, info = METHODS[method](
        problem, repair=repair, time_limit=time_limit, priority=priority, seed=seed
    )
    wall = time.perf_counter() - t0
    info["feasibility_check_s"] = t_check
    result = AllocationResult.build(
        method, problem, assign, dual_bound=bound, optimal=optimal, wall_time_s=wall, info=info
    )
    if method == "exact" and not result.feasible:
        raise RuntimeError(f"exact solver returned an infeasible allocation: {result.verification.describe()}")
    if method == "exact":
        result.optimal = bool(optimal) and result.feasible
    elif method in ("ha", "ha_ptofa", "manual", "mcf"):
        result.optimal = None
    return result
