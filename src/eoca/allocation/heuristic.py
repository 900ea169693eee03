"""The papers' heuristic allocation (HA), reproduced as written, plus an exact repair of what it breaks.

EOCA Algorithm 1 (``ha``, K = 1):
  1. E[i, j] <- 0 where r_j > t_i.
  2. alpha_j = sum over remaining customers of E[i, j] / d_j, with d_j the demand still open.
  3. For each remaining customer, its three highest E: a, b, c; h_i = (alpha_a + alpha_b) / 2 * (2 E_a - E_b - E_c).
  4. Visit customers by descending h; each gets its highest-E fund a; d_a -= 1; when d_a reaches 0, column a is
     zeroed for the remaining customers and steps 2-4 restart on them.

PTOFA Algorithm 1 / Eq. 7 (``ha_ptofa``, any K):
  E = -inf where ineligible; alpha as above over the finite entries; with the customer's open funds sorted by E,
  h_u = sum_{j >= 2} alpha_{f_{j-1}} (E_{f_{j-1}} - E_{f_j}); each visited customer takes its K best open funds;
  a fund that fills is removed (E = -inf) and alpha, h are recomputed.

Where the papers leave a case open, this module decides as follows (and the docs say so):
  * a visited customer only takes funds that are still open and that it may hold. With E zeroed (EOCA), a full
    or forbidden fund has E = 0 like a genuine zero, and the paper's "highest-scored fund" would then be a tie;
    it is resolved towards an open, allowed fund, because taking a full or forbidden one would break the very
    constraints the paper says HA keeps;
  * a customer with no open allowed fund (fewer than K for PTOFA) is *stranded*: it gets nothing and is
    reported, as are the funds left short. This happens when risk rules bind;
  * with fewer than three funds (EOCA), missing b / c count as E = 0;
  * ties in h are visited in customer order (stable sort).

Between two fills the visiting order and every customer's choice are fixed, so each stretch of visits is done
in one vectorised step: the next fund to fill is the one whose remaining demand is reached first along the order.
Recomputation happens once per filled fund (at most k times), which keeps HA fast enough for 10M customers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from eoca.allocation._kernels import top_levels
from eoca.allocation.problem import AllocationProblem

__all__ = ["ha_eoca", "ha_ptofa", "repair_allocation"]


def _chosen_funds(Ez: np.ndarray, usable: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's K best usable funds.

    Ez (k, n) scores, usable bool (k, n). Returns funds (K, n) int32 (-1 where fewer than K usable) and a
    mask (n,) of customers with K usable funds. Ties go to the lower fund index.
    """
    masked = np.where(usable, Ez, -np.inf)
    vals, idx = top_levels(masked, K)
    ok = np.isfinite(vals[K - 1]) if masked.shape[0] >= K else np.zeros(masked.shape[1], dtype=bool)
    return idx, ok


def _fill_stretch(order: np.ndarray, chosen: np.ndarray, ok: np.ndarray, rem: np.ndarray) -> int:
    """How many customers of ``order`` are visited before (and including) the visit that fills a fund.

    chosen (K, n) funds per customer, ok (n,) whether the customer can be served; rem (k,) open demand.
    Returns len(order) when no fund fills during this pass.
    """
    k = rem.shape[0]
    stop = order.shape[0]
    ch = chosen[:, order]
    served = ok[order]
    for j in range(k):
        if rem[j] <= 0:
            continue
        pos = np.flatnonzero(((ch == j).any(axis=0)) & served)
        if pos.shape[0] >= rem[j]:
            stop = min(stop, int(pos[rem[j] - 1]) + 1)
    return stop


def _run(problem: AllocationProblem, variant: str) -> tuple[np.ndarray, dict[str, Any]]:
    N, k, K = problem.n_customers, problem.n_funds, problem.K
    elig_t = problem.tolerance
    risk = problem.risk
    rem = problem.demand.astype(np.int64).copy()
    assign = np.full((N, K), -1, dtype=np.int32)
    alive = np.arange(N)
    # (k, n) working copy over the customers still waiting; shrinks as customers are served
    Ez = np.ascontiguousarray(problem.scores.T)
    allowed = elig_t[None, :] >= risk[:, None]
    stranded_at_fill: list[int] = []
    recomputations = 0
    while alive.size and (rem > 0).any():
        open_f = rem > 0
        usable = allowed & open_f[:, None]
        if variant == "eoca":
            Ework = np.where(usable, Ez, np.float32(0.0))  # steps 1 and 16: forbidden / full funds count as 0
        else:
            Ework = np.where(usable, Ez, np.float32(-np.inf))
        with np.errstate(divide="ignore", invalid="ignore"):
            colsum = np.where(usable, Ez, 0.0).sum(axis=1, dtype=np.float64)
            alpha = np.where(open_f, colsum / np.maximum(rem, 1), 0.0)
        h = _eoca_h(Ework, alpha) if variant == "eoca" else _ptofa_h(Ework, alpha)
        recomputations += 1
        order = np.argsort(-h, kind="stable")
        chosen, ok = _chosen_funds(Ez, usable, K)
        stop = _fill_stretch(order, chosen, ok, rem)
        visited = order[:stop]
        served = visited[ok[visited]]
        stranded_now = visited[~ok[visited]]
        if served.size:
            picks = chosen[:, served]
            assign[alive[served]] = picks.T
            rem -= np.bincount(picks.ravel(), minlength=k)
        stranded_at_fill.append(int(stranded_now.size))
        keep = np.ones(alive.size, dtype=bool)
        keep[visited] = False
        alive = alive[keep]
        Ez = Ez[:, keep]
        allowed = allowed[:, keep]
    names = np.asarray(problem.fund_ids).tolist()  # plain Python ids, whatever the array dtype
    info: dict[str, Any] = {
        "recomputations": recomputations,
        "stranded_customers": int((assign < 0).any(axis=1).sum()),
        "funds_short": {str(names[j]): int(rem[j]) for j in np.flatnonzero(rem > 0).tolist()},
    }
    return assign, info


def _eoca_h(Ework: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """h_i = (alpha_a + alpha_b) / 2 * (2 E_a - E_b - E_c) over the top three of Ework (k, n); (n,) float64."""
    vals, idx = top_levels(Ework, 3)
    vals = np.where(idx >= 0, vals, 0.0).astype(np.float64)
    al = np.where(idx >= 0, alpha[np.maximum(idx, 0)], 0.0)
    return np.asarray(0.5 * (al[0] + al[1]) * (2.0 * vals[0] - vals[1] - vals[2]))


def _ptofa_h(Ework: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Eq. 7: sum over consecutive pairs of the customer's finite scores sorted descending; (n,) float64."""
    rows = np.ascontiguousarray(Ework.T)  # (n, k): sorting along the last axis is numpy's fast path
    order = np.argsort(-rows, axis=1, kind="stable")
    srt = np.take_along_axis(rows, order, axis=1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = srt[:, :-1] - srt[:, 1:]
    valid = np.isfinite(diff)
    contrib = np.where(valid, alpha[order[:, :-1]] * np.where(valid, diff, 0.0), 0.0)
    return np.asarray(contrib.sum(axis=1))


def ha_eoca(problem: AllocationProblem) -> tuple[np.ndarray, dict[str, Any]]:
    """EOCA Algorithm 1 (K must be 1). Returns assign (N, 1) int32 with -1 for stranded customers, and info."""
    if problem.K != 1:
        raise ValueError("EOCA's HA gives each customer one fund; use method 'ha_ptofa' for K > 1")
    return _run(problem, "eoca")


def ha_ptofa(problem: AllocationProblem) -> tuple[np.ndarray, dict[str, Any]]:
    """PTOFA Algorithm 1 with the Eq. 7 score, any K. Returns assign (N, K) int32 (-1 = empty) and info."""
    return _run(problem, "ptofa")


def repair_allocation(problem: AllocationProblem, assign: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Make a partial allocation feasible, re-solving exactly only the customers the breach involves.

    Released customers: those lacking funds, plus every customer placed in a fund that one of them may hold
    (risk level <= the highest tolerance among them). Everyone else keeps their funds; the released ones are
    re-allocated optimally (exact solver) against the demand still open. If that sub-problem is infeasible, all
    customers are released, i.e. the whole problem is solved exactly. Returns the new assign (N, K) and info.
    """
    from eoca.allocation.exact import solve_exact
    from eoca.allocation.feasibility import feasibility_issues

    t0 = time.perf_counter()
    a = np.asarray(assign, dtype=np.int32).copy()
    lacking = (a < 0).any(axis=1)
    if not lacking.any():
        return a, {"released": 0, "repair_s": 0.0}
    t_max = int(problem.tolerance[lacking].max())
    touched_funds = np.flatnonzero(problem.risk <= t_max)
    release = lacking | np.isin(a, touched_funds).any(axis=1)
    for attempt in range(2):
        rows = np.flatnonzero(release)
        kept = a[~release]
        filled = np.bincount(kept[kept >= 0].ravel(), minlength=problem.n_funds)
        residual = problem.demand - filled
        if (residual >= 0).all():
            sub = problem.subset(rows, residual)
            if not feasibility_issues(sub):
                out = solve_exact(sub.scores, sub.tolerance, sub.risk, sub.demand, sub.K)
                a[rows] = out.assign
                return a, {
                    "released": int(rows.size),
                    "whole_problem_resolved": attempt == 1,
                    "repair_s": time.perf_counter() - t0,
                }
        release = np.ones(problem.n_customers, dtype=bool)
    raise RuntimeError("repair failed although the whole problem passed the feasibility check")
