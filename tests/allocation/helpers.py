"""Independent reference optima, random instances and small input files for the allocation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, vstack

from eoca.allocation import AllocationProblem

KINDS = ["float", "int", "equal", "zero_cols", "dup", "bind"]


def lp_optimum(p: AllocationProblem) -> float:
    """Optimum by HiGHS on the LP relaxation, which is integral for this totally unimodular problem."""
    N, k = p.scores.shape
    ii, jj = np.nonzero(p.eligible())
    nv = ii.size
    c = -p.scores[ii, jj].astype(np.float64)
    a1 = coo_matrix((np.ones(nv), (ii, np.arange(nv))), shape=(N, nv))
    a2 = coo_matrix((np.ones(nv), (jj, np.arange(nv))), shape=(k, nv))
    res = linprog(
        c,
        A_eq=vstack([a1, a2]),
        b_eq=np.r_[np.full(N, p.K), p.demand].astype(float),
        bounds=(0, 1),
        method="highs",
    )
    assert res.status == 0, res.message
    return float(-res.fun)


def mcf_optimum_int(p: AllocationProblem) -> int:
    """Optimum by OR-Tools min-cost flow; only for integer scores, where it is exact in integer arithmetic."""
    from ortools.graph.python import min_cost_flow

    E = p.scores.astype(np.float64)
    assert np.array_equal(E, np.round(E)), "mcf_optimum_int needs integer scores"
    N, k = E.shape
    ii, jj = np.nonzero(p.eligible())
    src, sink = N + k, N + k + 1
    smcf = min_cost_flow.SimpleMinCostFlow()
    tails = np.concatenate([np.full(N, src), ii, N + np.arange(k)])
    heads = np.concatenate([np.arange(N), N + jj, np.full(k, sink)])
    caps = np.concatenate([np.full(N, p.K), np.ones(ii.size, dtype=np.int64), p.demand]).astype(np.int64)
    cost = np.concatenate([np.zeros(N), -E[ii, jj], np.zeros(k)]).astype(np.int64)
    smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, cost)
    supplies = np.zeros(N + k + 2, dtype=np.int64)
    supplies[src], supplies[sink] = N * p.K, -N * p.K
    smcf.set_nodes_supplies(np.arange(N + k + 2), supplies)
    assert smcf.solve() == smcf.OPTIMAL
    return -int(smcf.optimal_cost())


def dual_bound(p: AllocationProblem, prices: np.ndarray) -> float:
    """g(lambda) = sum_i (K largest eligible E[i, j] - lambda_j) + sum_j lambda_j d_j, computed from scratch."""
    R = p.scores.astype(np.float64) - prices[None, :]
    R[~p.eligible()] = -np.inf
    topk = -np.sort(-R, axis=1)[:, : p.K]
    return float(topk.sum() + prices @ p.demand)


def random_feasible(rng: np.random.Generator, N: int, k: int, K: int, kind: str = "float") -> AllocationProblem:
    """Random instance whose demands come from a random allowed allocation, so it is always feasible.

    kind: float (continuous scores), int (small integers: many ties), equal (all the same), zero_cols (some
    all-zero columns), dup (few distinct rows repeated), bind (every customer's demand slot goes to its riskiest
    allowed funds, so every per-risk-threshold Hall condition is tight and the risk rules bind).
    """
    tol = rng.integers(1, 6, size=N)
    risk = rng.integers(1, 6, size=k)
    risk[:K] = 1  # every customer may hold at least K funds
    if kind in ("float", "bind"):
        E = rng.gamma(1.0, 10.0, size=(N, k))
    elif kind == "int":
        E = rng.integers(0, 4, size=(N, k)).astype(float)
    elif kind == "equal":
        E = np.full((N, k), 3.0)
    elif kind == "zero_cols":
        E = rng.gamma(1.0, 10.0, size=(N, k))
        E[:, rng.random(k) < 0.5] = 0.0
    elif kind == "dup":
        base = rng.integers(0, 5, size=(3, k)).astype(float)
        E = base[rng.integers(0, 3, size=N)]
    else:
        raise ValueError(kind)
    demand = np.zeros(k, dtype=np.int64)
    for i in range(N):
        allowed = np.flatnonzero(risk <= tol[i])
        if kind == "bind":
            # riskiest first, random among equal risk
            allowed = allowed[np.lexsort((rng.random(allowed.size), -risk[allowed]))]
            demand[allowed[:K]] += 1
        else:
            demand[rng.choice(allowed, size=K, replace=False)] += 1
    return AllocationProblem(scores=E.astype(np.float32), tolerance=tol, risk=risk, demand=demand, K=K)


def write_inputs(
    folder: Path,
    scores: np.ndarray,
    tolerance: np.ndarray,
    risk: np.ndarray,
    *,
    form: str = "long",
    customer_ids: list[str] | None = None,
    fund_ids: list[str] | None = None,
) -> tuple[Path, Path, Path]:
    """Write customers.parquet, funds.parquet and scores.parquet (long or wide) into ``folder``.

    Score rows are written in reverse customer order so that reading them must align by id, not position.
    """
    N, k = scores.shape
    cids = customer_ids or [f"c{i:03d}" for i in range(N)]
    fids = fund_ids or [f"F{j}" for j in range(k)]
    folder.mkdir(parents=True, exist_ok=True)
    cust, funds, sc = folder / "customers.parquet", folder / "funds.parquet", folder / "scores.parquet"
    pq.write_table(pa.table({"customer_id": cids, "risk_tolerance": np.asarray(tolerance, dtype=np.int64)}), cust)
    pq.write_table(pa.table({"fund_id": fids, "risk_level": np.asarray(risk, dtype=np.int64)}), funds)
    rev = np.arange(N)[::-1]
    if form == "long":
        rows_c = [cids[i] for i in rev for _ in range(k)]
        rows_f = [fids[j] for _ in rev for j in range(k)]
        etv = scores[rev].reshape(-1).astype(np.float32)
        pq.write_table(pa.table({"customer_id": rows_c, "fund_id": rows_f, "etv": etv}), sc)
    else:
        cols: dict[str, object] = {"customer_id": [cids[i] for i in rev]}
        for j, f in enumerate(fids):
            cols[f] = scores[rev, j].astype(np.float32)
        pq.write_table(pa.table(cols), sc)
    return sc, cust, funds
