"""Manual priority allocation, the baseline EOCA section 5.1.2 describes as the platform's former practice.

Funds are taken in a priority order (given, or by descending mean score over eligible customers, a stand-in for
"historical conversion rate"); each fund takes the d_j highest-scoring customers that may hold it and still have
a free slot (and do not hold it already, for K > 1). Later funds may find too few customers left: those
shortfalls and the customers left without K funds are reported, not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eoca.allocation.problem import AllocationProblem
from eoca.errors import ConfigError

__all__ = ["manual_priority", "priority_by_mean"]


def priority_by_mean(problem: AllocationProblem) -> np.ndarray:
    """Fund indices (k,) by descending mean score over eligible customers (ties: lower index first)."""
    k = problem.n_funds
    means = np.zeros(k)
    for j in range(k):
        ok = problem.tolerance >= problem.risk[j]
        col = problem.scores[:, j]
        means[j] = float(col[ok].mean(dtype=np.float64)) if ok.any() else -np.inf
    return np.lexsort((np.arange(k), -means))


def manual_priority(
    problem: AllocationProblem, order: Sequence[Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Allocate fund by fund. ``order`` lists fund ids (all of them); default :func:`priority_by_mean`.

    Returns assign (N, K) int32 (-1 = empty slot) and info with the order used and the shortfalls.
    """
    N, K = problem.n_customers, problem.K
    fids = np.asarray(problem.fund_ids)
    names = fids.tolist()  # plain Python ids for the JSON summary, whatever the array dtype
    if order is None:
        seq = priority_by_mean(problem)
    else:
        pos = {str(f): j for j, f in enumerate(fids.tolist())}
        names = [str(f) for f in order]
        unknown = [f for f in names if f not in pos]
        if unknown or sorted(names) != sorted(pos):
            raise ConfigError(
                f"manual priority order must list every fund exactly once; unknown {unknown[:5]}, "
                f"missing {sorted(set(pos) - set(names))[:5]}"
            )
        seq = np.array([pos[f] for f in names])
    assign = np.full((N, K), -1, dtype=np.int32)
    used = np.zeros(N, dtype=np.int64)
    short: dict[str, int] = {}
    for j in seq.tolist():
        free = (used < K) & (problem.tolerance >= problem.risk[j])
        if K > 1:
            free &= ~(assign == j).any(axis=1)
        cand = np.flatnonzero(free)
        want = int(problem.demand[j])
        if cand.size <= want:
            take = cand
        else:
            s = problem.scores[cand, j]
            take = cand[np.argpartition(-s, want - 1)[:want]] if want > 0 else cand[:0]
        if take.size < want:
            short[str(names[j])] = want - int(take.size)
        assign[take, used[take]] = j
        used[take] += 1
    info = {
        "priority": [names[j] for j in seq.tolist()],
        "funds_short": short,
        "stranded_customers": int((used < K).sum()),
    }
    return assign, info
