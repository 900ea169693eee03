"""Partitioned allocation instances written part by part, so no process ever holds the whole score matrix.

:func:`write_instance` writes the generator of :mod:`eoca.allocation.generate` (same formulas, fund factors
drawn from ``seed``) with each part's customers drawn from their own stream ``(seed, part)``: part i is the
same whatever the number of parts, so the first P parts of a large instance are a smaller instance of the same
world (the benchmarks' "prefix"). The delivery plan is computed from the customers per tolerance, a reduction
over parts, and :func:`prefix_plan` recomputes it for any prefix from ``manifest.json``.

Folder layout: customers/ and scores/ (parts of the same names, scores wide: customer_id plus one float32
column per fund id), funds.parquet, plan.yaml, manifest.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eoca.allocation.generate import TOLERANCE_P, fund_factors, fund_risk, plan_demand, score_block
from eoca.allocation.problem import AllocationProblem
from eoca.distributed.parts import atomic_dir, part_name
from eoca.io import write_json, write_parquet, write_yaml

__all__ = ["instance_part", "prefix_plan", "write_instance", "write_plan", "write_problem"]


def instance_part(
    i: int, part_size: int, N: int, k: int, K: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers of part i: ids int64 (n,), tolerance int64 (n,), scores float32 (n, k)."""
    start = i * part_size
    n = max(0, min(N, start + part_size) - start)
    rng = np.random.default_rng([seed, i])
    tol = rng.choice(np.arange(1, 6), size=n, p=TOLERANCE_P).astype(np.int64)
    E = score_block(rng, n, fund_factors(np.random.default_rng(seed), k)).astype(np.float32)
    return np.arange(start, start + n, dtype=np.int64), tol, E


def _write_part(folder: str, i: int, part_size: int, N: int, k: int, K: int, seed: int) -> list[int]:
    ids, tol, E = instance_part(i, part_size, N, k, K, seed)
    name = part_name(i)
    write_parquet(
        pa.table({"customer_id": ids, "risk_tolerance": tol.astype(np.int8)}), Path(folder, "customers", name)
    )
    cols: dict[str, Any] = {"customer_id": ids}
    for j in range(k):
        cols[str(j)] = E[:, j]
    # scores of random floats barely compress; a fast codec keeps the writers CPU-light
    write_parquet(pa.table(cols), Path(folder, "scores", name), compression="lz4")
    return np.bincount(tol, minlength=6).tolist()


def write_plan(folder: str | os.PathLike[str], demand: np.ndarray, K: int) -> Path:
    """plan.yaml with the demand of every fund (ids 0..k-1)."""
    return write_yaml(
        {"K": int(K), "demands": {str(j): int(d) for j, d in enumerate(demand)}}, Path(folder) / "plan.yaml"
    )


def write_instance(
    folder: str | os.PathLike[str],
    N: int,
    k: int = 8,
    K: int = 1,
    seed: int = 0,
    *,
    part_size: int = 1 << 20,
    client: Any = None,
) -> dict[str, Any]:
    """Write an N x k instance in parts of ``part_size`` customers (on ``client``'s workers when given, else
    one part at a time here); memory is bounded by one part. The folder appears whole when complete. Returns
    the manifest (parts, per-part tolerance counts, demand)."""
    if k < K:
        raise ValueError("K cannot exceed k")
    final = Path(folder)
    n_parts = -(-N // part_size)
    with atomic_dir(final) as tmp:
        (tmp / "customers").mkdir()
        (tmp / "scores").mkdir()
        args = [(str(tmp), i, part_size, N, k, K, seed) for i in range(n_parts)]
        if client is not None:
            counts = client.gather([client.submit(_write_part, *a, pure=False) for a in args])
        else:
            counts = [_write_part(*a) for a in args]
        risk = fund_risk(k, K)
        write_parquet(pa.table({"fund_id": np.arange(k, dtype=np.int64), "risk_level": risk}), tmp / "funds.parquet")
        demand = plan_demand(np.sum(counts, axis=0), risk, K)
        write_plan(tmp, demand, K)
        manifest = {
            "N": N,
            "k": k,
            "K": K,
            "seed": seed,
            "part_size": part_size,
            "parts": [{"name": part_name(i), "tolerance_counts": c} for i, c in enumerate(counts)],
            "demand": demand.tolist(),
        }
        write_json(manifest, tmp / "manifest.json")
    return manifest


def prefix_plan(manifest: dict[str, Any], n_parts: int) -> tuple[int, np.ndarray]:
    """(customers, demand (k,)) of the instance made of the first ``n_parts`` parts."""
    counts = np.sum([p["tolerance_counts"] for p in manifest["parts"][:n_parts]], axis=0)
    risk = fund_risk(int(manifest["k"]), int(manifest["K"]))
    return int(counts.sum()), plan_demand(counts, risk, int(manifest["K"]))


def write_problem(
    problem: AllocationProblem, folder: str | os.PathLike[str], part_size: int, *, long: bool = False
) -> Path:
    """Write an in-memory problem as a partitioned dataset (customers/, scores/ wide or long, funds.parquet,
    plan.yaml with its demands); used by tests and benchmarks to run one instance under both engines."""
    out = Path(folder)
    cids = np.asarray(problem.customer_ids)
    fids = np.asarray(problem.fund_ids)
    N, k = problem.n_customers, problem.n_funds
    with atomic_dir(out) as tmp:
        for i, s in enumerate(range(0, max(N, 1), part_size)):
            e = min(N, s + part_size)
            ids = cids[s:e]
            write_parquet(
                pa.table({"customer_id": ids, "risk_tolerance": problem.tolerance[s:e]}),
                tmp / "customers" / part_name(i),
            )
            E = problem.scores[s:e]
            if long:
                t = pa.table(
                    {
                        "customer_id": np.repeat(ids, k),
                        "fund_id": np.tile(fids, e - s),
                        "etv": np.ascontiguousarray(E).ravel(),
                    }
                )
            else:
                t = pa.table({"customer_id": ids, **{str(f): E[:, j] for j, f in enumerate(fids.tolist())}})
            write_parquet(t, tmp / "scores" / part_name(i))
        pq.write_table(pa.table({"fund_id": fids, "risk_level": problem.risk}), tmp / "funds.parquet")
        write_yaml(
            {"K": problem.K, "demands": {str(f): int(d) for f, d in zip(fids.tolist(), problem.demand, strict=True)}},
            tmp / "plan.yaml",
        )
    return out
