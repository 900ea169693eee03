"""Off-the-shelf solver baselines: the papers' "IP" (HiGHS MIP) and an OR-Tools min-cost-flow reference.

``ip``: the integer program handed to HiGHS's branch-and-cut through scipy.optimize.milp, one binary per
eligible (customer, fund) pair, with a wall-clock limit. It reports whether optimality was proved, the best
bound, and leaves every slot empty if no feasible solution was found in time.

``mcf``: OR-Tools SimpleMinCostFlow on the bipartite network (source -> customer [K] -> fund [1 each] -> sink
[d_j]). OR-Tools needs integer costs, so scores are rounded to multiples of a power-of-two unit chosen to keep
every path cost far from int64 overflow; the optimum is exact for the rounded scores and within
N * K * unit / 2 of the true optimum (both reported).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from eoca.allocation.problem import AllocationProblem

__all__ = ["solve_ip", "solve_mcf"]


def _pairs(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray]:
    """Eligible (customer, fund) pairs as two int64 arrays of equal length."""
    ii, jj = [], []
    for j in range(problem.n_funds):
        rows = np.flatnonzero(problem.tolerance >= problem.risk[j])
        ii.append(rows)
        jj.append(np.full(rows.size, j, dtype=np.int64))
    return np.concatenate(ii), np.concatenate(jj)


def solve_ip(problem: AllocationProblem, time_limit: float = 60.0) -> tuple[np.ndarray, dict[str, Any]]:
    """HiGHS MIP with ``time_limit`` seconds. Returns assign (N, K) int32 (-1 = empty) and info with
    ``status``, ``optimal`` (proved), ``dual_bound`` and ``mip_gap``."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, vstack

    N, k, K = problem.n_customers, problem.n_funds, problem.K
    ii, jj = _pairs(problem)
    nv = ii.size
    c = -problem.scores[ii, jj].astype(np.float64)
    ones = np.ones(nv)
    A = vstack(
        [csr_matrix((ones, (ii, np.arange(nv))), shape=(N, nv)), csr_matrix((ones, (jj, np.arange(nv))), shape=(k, nv))]
    ).tocsr()
    b = np.concatenate([np.full(N, float(K)), problem.demand.astype(np.float64)])
    res = milp(
        c,
        constraints=LinearConstraint(A, b, b),
        integrality=np.ones(nv),
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": float(time_limit), "disp": False},
    )
    assign = np.full((N, K), -1, dtype=np.int32)
    if res.x is not None:
        chosen = res.x > 0.5
        ci, cj = ii[chosen], jj[chosen]
        order = np.argsort(ci, kind="stable")
        ci, cj = ci[order], cj[order]
        # slot number of each chosen pair within its customer
        starts = np.searchsorted(ci, ci, side="left")
        slot = np.arange(ci.size) - starts
        fits = slot < K
        assign[ci[fits], slot[fits]] = cj[fits]
    bound = getattr(res, "mip_dual_bound", None)
    info = {
        "status": int(res.status),
        "message": str(res.message),
        "optimal": bool(res.status == 0),
        "found_solution": res.x is not None,
        "dual_bound": None if bound is None or not np.isfinite(bound) else -float(bound),
        "mip_gap": None if getattr(res, "mip_gap", None) is None else float(res.mip_gap),
        "time_limit_s": float(time_limit),
        "variables": int(nv),
    }
    return assign, info


def solve_mcf(problem: AllocationProblem) -> tuple[np.ndarray, dict[str, Any]]:
    """OR-Tools min-cost flow on integer-rounded scores. Returns assign (N, K) int32 and info."""
    from ortools.graph.python import min_cost_flow

    N, k, K = problem.n_customers, problem.n_funds, problem.K
    ii, jj = _pairs(problem)
    vals = problem.scores[ii, jj].astype(np.float64)
    top = float(np.abs(vals).max()) if vals.size else 1.0
    # |cost| <= 2^40 keeps sums over N*K units (< 2^23 * 2^40 for 8M slots) inside int64 with room to spare
    unit = 2.0 ** math.ceil(math.log2(max(top, 1e-300))) / 2.0**40
    costs = -np.rint(vals / unit).astype(np.int64)
    src, sink = N + k, N + k + 1
    smcf = min_cost_flow.SimpleMinCostFlow()
    tails = np.concatenate([np.full(N, src), ii, N + np.arange(k)])
    heads = np.concatenate([np.arange(N), N + jj, np.full(k, sink)])
    caps = np.concatenate([np.full(N, K), np.ones(ii.size, dtype=np.int64), problem.demand]).astype(np.int64)
    cost = np.concatenate([np.zeros(N, dtype=np.int64), costs, np.zeros(k, dtype=np.int64)])
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, cost)
    supplies = np.zeros(N + k + 2, dtype=np.int64)
    supplies[src] = N * K
    supplies[sink] = -N * K
    smcf.set_nodes_supplies(np.arange(N + k + 2), supplies)
    status = smcf.solve()
    assign = np.full((N, K), -1, dtype=np.int32)
    ok = status == smcf.OPTIMAL
    if ok:
        flows = smcf.flows(arcs[N : N + ii.size])
        chosen = flows > 0
        ci, cj = ii[chosen], jj[chosen]
        order = np.argsort(ci, kind="stable")
        ci, cj = ci[order], cj[order]
        slot = np.arange(ci.size) - np.searchsorted(ci, ci, side="left")
        assign[ci, slot] = cj
    info = {
        "status": int(status),
        "optimal_for_rounded_scores": bool(ok),
        "score_unit": unit,
        "max_rounding_loss": N * K * unit / 2,
    }
    return assign, info
