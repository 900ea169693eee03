"""Synthetic allocation instances for benchmarks and tests (documented so results can be reproduced).

Generator ``synthetic_instance(N, k, K, seed)``:

* Risk tolerance t_i in 1..5 with probabilities (0.10, 0.20, 0.30, 0.25, 0.15).
* Fund risk levels spread over 1..5 in ascending order: fund j has level 1 + floor(5 * j / k) (k = 8 gives
  1, 1, 2, 2, 3, 4, 4, 5), except that the first K funds have level 1 so every customer has K eligible funds.
* ETV E[i, j] = p[i, j] * A[i, j] with a conversion probability p = sigmoid(-3 + u_i . v_j + b_j + 0.5 z) and
  an amount A = exp(m_i + n_j + 0.8 z'), where u_i, v_j are 4-dimensional standard normal factors scaled by
  0.7, b_j ~ N(0, 0.5), m_i ~ N(5, 1), n_j ~ N(0, 0.3) and z, z' are independent standard normal noise per
  pair. Customers therefore have correlated tastes across funds and amounts spanning several orders of
  magnitude, like real ETV predictions. Stored as float32.
* Demands: shares proportional to 1 / (1 + j) (popular funds first), rounded by the largest-remainder rule
  to N * K slots; then the demand of every fund with risk level >= 4 is raised to 90 % of its eligible
  customers where that is larger, taken from the lowest-risk funds, which makes the risk rules bind (the
  regime where the paper's HA strands customers). The instance is checked feasible.

Scores are produced in blocks of 1M customers so a 10M x 8 instance never holds float64 copies of the matrix.
"""

from __future__ import annotations

import numpy as np

from eoca.allocation.plan import shares_to_counts
from eoca.allocation.problem import AllocationProblem

__all__ = ["TOLERANCE_P", "fund_factors", "fund_risk", "plan_demand", "score_block", "synthetic_instance"]

TOLERANCE_P = (0.10, 0.20, 0.30, 0.25, 0.15)


def fund_risk(k: int, K: int) -> np.ndarray:
    """Fund risk levels int64 (k,): 1 + floor(5 j / k), the first K funds at level 1."""
    risk = (1 + (5 * np.arange(k)) // k).astype(np.int64)
    risk[:K] = 1  # every customer needs K funds it may hold
    return risk


def fund_factors(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fund taste factors v (4, k), conversion offsets b (k,) and amount offsets n_j (k,)."""
    v = rng.normal(0, 0.7, size=(4, k))
    b = rng.normal(0, 0.5, size=k)
    nj = rng.normal(0, 0.3, size=k)
    return v, b, nj


def score_block(rng: np.random.Generator, n: int, factors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """ETV float64 (n, k) of n new customers against funds with the given factors (see the module docstring)."""
    v, b, nj = factors
    k = v.shape[1]
    u = rng.normal(0, 0.7, size=(n, 4))
    logit = -3.0 + u @ v + b + 0.5 * rng.standard_normal((n, k))
    p = 1.0 / (1.0 + np.exp(-logit))
    amount = np.exp(rng.normal(5.0, 1.0, size=(n, 1)) + nj + 0.8 * rng.standard_normal((n, k)))
    return np.asarray(p * amount)


def plan_demand(tolerance_counts: np.ndarray, risk: np.ndarray, K: int, *, bind_risk: bool = True) -> np.ndarray:
    """The generator's demands int64 (k,) from customers per tolerance 1..5 (``tolerance_counts[t]`` for t in
    0..5, index 0 unused): shares 1 / (1 + j), then the risk-binding rule of the module docstring."""
    tc = np.asarray(tolerance_counts, dtype=np.int64)
    N = int(tc.sum())
    k = len(risk)
    shares = 1.0 / (1.0 + np.arange(k))
    shares /= shares.sum()
    demand = shares_to_counts(shares, N * K)
    return _bind(demand, tc, risk, K) if bind_risk else demand


def synthetic_instance(N: int, k: int = 8, K: int = 1, seed: int = 0, *, bind_risk: bool = True) -> AllocationProblem:
    """A feasible :class:`AllocationProblem` with N customers, k funds and K funds per customer."""
    if k < K:
        raise ValueError("K cannot exceed k")
    rng = np.random.default_rng(seed)
    tol = rng.choice(np.arange(1, 6), size=N, p=TOLERANCE_P).astype(np.int64)
    risk = fund_risk(k, K)
    factors = fund_factors(rng, k)
    E = np.empty((N, k), dtype=np.float32, order="F")
    block = 1 << 20
    for s in range(0, N, block):
        e = min(N, s + block)
        E[s:e] = score_block(rng, e - s, factors)
    demand = plan_demand(np.bincount(tol, minlength=6), risk, K, bind_risk=bind_risk)
    return AllocationProblem(scores=E, tolerance=tol, risk=risk, demand=demand, K=K, source=f"synthetic(N={N})")


def _bind(demand: np.ndarray, tol_counts: np.ndarray, risk: np.ndarray, K: int) -> np.ndarray:
    d = demand.copy()
    t_ge = np.cumsum(tol_counts[::-1])[::-1]  # customers with tolerance >= t, t = 0..5
    eligible = np.array([t_ge[min(int(r), 5)] if r <= 5 else 0 for r in risk], dtype=np.int64)
    hi = np.flatnonzero(risk >= 4)
    if hi.size == 0:
        return d
    # slots the high-risk funds can use at most: each tolerant customer takes at most min(K, #such funds)
    n_hi = np.array([(risk[hi] <= t).sum() for t in range(6)])
    capacity = int((np.minimum(K, n_hi) * tol_counts[:6]).sum())
    target = int(0.9 * capacity)
    if d[hi].sum() >= target:
        return d
    w = eligible[hi] / eligible[hi].sum()
    new_hi = np.minimum(shares_to_counts(w, target), eligible[hi])
    extra = int(new_hi.sum() - d[hi].sum())
    d[hi] = new_hi
    # take the added slots back from the lowest-risk funds, which every customer may hold
    for j in np.argsort(risk, kind="stable"):
        if extra <= 0:
            break
        take = min(extra, int(d[j]))
        d[j] -= take
        extra -= take
    return d
