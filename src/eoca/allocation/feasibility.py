"""Feasibility diagnosis, run before any solver so an impossible plan fails fast with numbers.

Eligibility is nested (customer i may get fund j iff t_i >= r_j), so customers with the same tolerance are
interchangeable as far as feasibility goes. The exact test is a max-flow on a graph with one node per distinct
tolerance value (capacity K * group size, and at most group size towards each eligible fund) and one node per
fund (capacity d_j): a flow of N*K splits back into individual customers by dealing each group's fund units
round-robin, which never gives one customer the same fund twice. Before that, the simple conditions that
explain most failures are checked one by one so the message says what to change.
"""

from __future__ import annotations

import numpy as np

from eoca.allocation.problem import AllocationProblem
from eoca.errors import InfeasiblePlanError

__all__ = [
    "check_feasibility",
    "feasibility_issues",
    "group_feasibility_issues",
    "raise_if_infeasible",
    "tolerance_groups",
]


def tolerance_groups(tolerance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct tolerance values (g,) ascending and how many customers hold each (g,)."""
    t = np.asarray(tolerance)
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(t.min()), int(t.max())
    if hi - lo <= 1_000_000:
        counts = np.bincount(t - lo, minlength=hi - lo + 1)
        vals = np.flatnonzero(counts) + lo
        return vals.astype(np.int64), counts[counts > 0].astype(np.int64)
    vals, counts = np.unique(t, return_counts=True)
    return vals.astype(np.int64), counts.astype(np.int64)


def _names(fund_ids: np.ndarray, idx: np.ndarray, n: int = 8) -> str:
    shown = ", ".join(str(f) for f in np.asarray(fund_ids)[idx[:n]].tolist())
    return shown + (f" and {len(idx) - n} more" if len(idx) > n else "")


def feasibility_issues(problem: AllocationProblem) -> list[str]:
    """Every reason the plan cannot be met, most basic first; empty when a feasible allocation exists."""
    tvals, tcnt = tolerance_groups(problem.tolerance)
    return group_feasibility_issues(tvals, tcnt, problem.risk, problem.demand, problem.K, np.asarray(problem.fund_ids))


def group_feasibility_issues(
    tvals: np.ndarray, tcnt: np.ndarray, risk: np.ndarray, demand: np.ndarray, K: int, fund_ids: np.ndarray
) -> list[str]:
    """:func:`feasibility_issues` from the customers per distinct tolerance alone: tvals (g,) ascending, tcnt
    (g,) counts, risk and demand (k,). Customers enter only through these counts, so a partitioned engine
    reduces per-partition :func:`tolerance_groups` and gets the same diagnosis."""
    N = int(np.asarray(tcnt).sum())
    d, r = np.asarray(demand, dtype=np.int64), np.asarray(risk, dtype=np.int64)
    fids = np.asarray(fund_ids)
    issues: list[str] = []
    total = int(d.sum())
    if total != N * K:
        issues.append(
            f"demands sum to {total:,} but {N:,} customers x K={K} need exactly {N * K:,} fund slots "
            f"({'too many' if total > N * K else 'too few'} by {abs(total - N * K):,})"
        )
    # eligible customers per fund: customers with t >= r_j
    ge_cum = np.concatenate([np.cumsum(tcnt[::-1])[::-1], [0]])  # customers with tolerance >= tvals[g]
    first_g = np.searchsorted(tvals, r, side="left")
    eligible_customers = ge_cum[first_g]
    short = np.flatnonzero(d > eligible_customers)
    for j in short[:10]:
        issues.append(
            f"fund {fids[j]} (risk level {r[j]}) needs {d[j]:,} customers; only {eligible_customers[j]:,} "
            f"have risk tolerance >= {r[j]}"
        )
    if len(short) > 10:
        issues.append(f"... and {len(short) - 10} more funds with more demand than eligible customers")
    # funds each tolerance group may take
    r_sorted = np.sort(r)
    n_elig_funds = np.searchsorted(r_sorted, tvals, side="right")
    few = np.flatnonzero(n_elig_funds < K)
    for g in few:
        issues.append(
            f"{tcnt[g]:,} customer(s) with risk tolerance {tvals[g]} are eligible for only "
            f"{n_elig_funds[g]} fund(s) (risk level <= {tvals[g]}) but must each get K={K}"
        )
    # Hall condition per risk threshold: funds at or above rho can only use customers tolerating rho.
    for rho in np.unique(r)[::-1]:
        upper = r >= rho
        need = int(d[upper].sum())
        sel = tvals >= rho
        # a customer with tolerance t can take at most min(K, #funds with rho <= r_j <= t) of these funds
        per = np.minimum(K, np.searchsorted(r_sorted, tvals[sel], side="right") - np.searchsorted(r_sorted, rho))
        supply = int((per * tcnt[sel]).sum())
        if need > supply and upper.sum() > 0 and not (upper.sum() == 1 and int(np.flatnonzero(upper)[0]) in short):
            who = int(tcnt[sel].sum())
            if K == 1:
                issues.append(
                    f"funds with risk level >= {rho} need {need:,} customers; only {who:,} have risk tolerance >= {rho}"
                )
            else:
                issues.append(
                    f"funds with risk level >= {rho} need {need:,} fund slots; the {who:,} customers with risk "
                    f"tolerance >= {rho} can fill at most {supply:,} of them (K={K}, one slot per fund)"
                )
    if not issues:
        issues.extend(_maxflow_issues(tvals, tcnt, r, d, K, fids))
    return issues


def _maxflow_issues(
    tvals: np.ndarray, tcnt: np.ndarray, r: np.ndarray, d: np.ndarray, K: int, fids: np.ndarray
) -> list[str]:
    from ortools.graph.python import max_flow

    k = len(r)
    g = len(tvals)
    src, sink = g + k, g + k + 1
    smf = max_flow.SimpleMaxFlow()
    tails: list[int] = []
    heads: list[int] = []
    caps: list[int] = []
    for gi in range(g):
        tails.append(src)
        heads.append(gi)
        caps.append(int(tcnt[gi]) * K)
        for jj in np.flatnonzero(r <= tvals[gi]).tolist():
            tails.append(gi)
            heads.append(g + jj)
            caps.append(int(tcnt[gi]))
    fund_arc0 = len(tails)
    for j in range(k):
        tails.append(g + j)
        heads.append(sink)
        caps.append(int(d[j]))
    smf.add_arcs_with_capacity(np.array(tails), np.array(heads), np.array(caps))
    status = smf.solve(src, sink)
    if status != smf.OPTIMAL:
        return [f"max-flow feasibility check failed to run (status {status})"]
    total = int(tcnt.sum()) * K
    flow = int(smf.optimal_flow())
    if flow >= total:
        return []
    filled = np.array([int(smf.flow(fund_arc0 + j)) for j in range(k)], dtype=np.int64)
    gap = d - filled
    bad = np.flatnonzero(gap > 0)
    detail = ", ".join(f"fund {fids[j]} short by {gap[j]:,}" for j in bad[:8])
    return [
        f"no allocation meets the plan: at most {flow:,} of the {total:,} fund slots can be filled under the "
        f"risk rules and K={K} distinct funds per customer ({detail})"
    ]


def check_feasibility(problem: AllocationProblem) -> None:
    """Raise :class:`InfeasiblePlanError` listing every failed condition, with numbers."""
    raise_if_infeasible(feasibility_issues(problem))


def raise_if_infeasible(issues: list[str]) -> None:
    """Raise :class:`InfeasiblePlanError` listing ``issues`` (one message format for every engine)."""
    if issues:
        raise InfeasiblePlanError("the delivery plan is infeasible:\n  - " + "\n  - ".join(issues))
