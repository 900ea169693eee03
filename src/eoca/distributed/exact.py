"""The exact allocation on a Dask cluster: the in-memory solver's driver over partitions held by workers.

Each partition of customers is loaded once by a worker into a :class:`Block` (its float32 working matrix,
-inf where the risk rule forbids a fund). :class:`DaskStore` implements :class:`eoca.allocation.exact.
CustomerStore`, so :func:`eoca.allocation.exact.solve_store` runs unchanged: the same samples, Newton steps,
candidate window, contracted shortest-path finish and certificate as ``--engine local``. What crosses the
network per operation:

* a scan at prices lambda: lambda (k floats) out; per partition k counts, one partial dual sum per 2^19
  customers and a count of finite margins back. The scan's margins and choices stay on the worker.
* the Newton step's window: the smallest ``want`` margins per partition (an exact order statistic), then the
  k x k counts of customers within the window per pair of funds (the contracted Laplacian).
* the candidates (customers within the final window, about 0.5% of N at k = 8): their k scores to the driver,
  which runs the exact finish; the new choices of those customers go back to their partitions.
* the certificate: per partition, partial float64 sums, a violation count and k delivery counts.

Partial sums are added in customer order, so when partitions hold multiples of 2^19 customers every float the
driver sees equals the in-memory solver's and both engines return the same allocation; otherwise they agree
to rounding (the objective within 1e-9 relative). A worker that dies is replaced: Dask recomputes its
partitions from the files and the tasks' inputs, which are all kept by the driver until no longer needed.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eoca.allocation._kernels import working_matrix
from eoca.allocation.exact import (
    ExactOutcome,
    _Scan,
    _scan,
    block_candidates,
    certify_block,
    combine_certificates,
    max_abs_finite,
    solve_store,
)
from eoca.allocation.feasibility import group_feasibility_issues, raise_if_infeasible, tolerance_groups
from eoca.allocation.plan import DeliveryPlan, load_plan
from eoca.allocation.problem import (
    AllocationProblem,
    _ids,
    _int_col,
    _read_table,
    _require,
    _unique_or_fail,
    read_scores,
)
from eoca.allocation.result import AllocationResult, peak_memory_mb
from eoca.distributed.cluster import DistributedError
from eoca.distributed.parts import atomic_dir, pair_parts, part_rows
from eoca.errors import ConfigError, DataValidationError, EocaError
from eoca.io import write_json, write_parquet

__all__ = [
    "Block",
    "DaskStore",
    "DistributedAllocation",
    "allocate_dask",
    "allocate_problem_dask",
    "load_funds",
]

SINGLE_MACHINE = ("ha", "ha_ptofa", "manual")


# --- worker side ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One partition on a worker: its customers file, working matrix W float32 (k, n), tolerance groups, and
    the smallest and largest customer id. The ids themselves are read again when the allocation is written
    rather than held through the solve (8 bytes per customer, a quarter of W at k = 8)."""

    customers: str
    W: np.ndarray
    tvals: np.ndarray
    tcnt: np.ndarray
    id_range: tuple[Any, Any] | None


def load_block(scores: str, customers: str, fund_ids: np.ndarray, risk: np.ndarray, risk_rule: bool = True) -> Block:
    """Read one partition: customers part (customer_id, risk_tolerance) and its scores part, long or wide,
    validated like the in-memory loader (every customer scored once per fund, finite values). Without the
    risk rule every customer may hold every fund."""
    ct = _read_table(customers, "customers", ["customer_id", "risk_tolerance"])
    _require(ct, ["customer_id", "risk_tolerance"], customers, "customers")
    cids = _ids(ct.column("customer_id"), customers, "customer_id")
    _unique_or_fail(cids, customers, "customer_id")
    tol = _int_col(ct, "risk_tolerance", customers)
    if not risk_rule:
        tol = DeliveryPlan(K=1, demands={"_": 0}, risk_rule=False).tolerances(tol, risk)
    del ct
    E = read_scores(scores, cids, fund_ids)
    k = len(fund_ids)
    # the problem's own validation (shapes, integers, finite scores), with demands irrelevant here
    AllocationProblem(
        scores=E,
        tolerance=tol,
        risk=risk,
        demand=np.zeros(k, np.int64),
        K=1,
        customer_ids=cids,
        fund_ids=fund_ids,
        source=str(scores),
    )
    W = working_matrix(E, tol, risk)
    del E
    tvals, tcnt = tolerance_groups(tol)
    return Block(customers, W, tvals, tcnt, (cids.min(), cids.max()) if len(cids) else None)


def _block_info(b: Block) -> tuple[int, np.ndarray, np.ndarray, Any, Any, float]:
    lo, hi = b.id_range if b.id_range is not None else (None, None)
    return b.W.shape[1], b.tvals, b.tcnt, lo, hi, max_abs_finite(b.W)


def _block_scan(b: Block, lam: np.ndarray, K: int, keep_assign: bool) -> _Scan:
    return _scan(b.W, lam, K, np.zeros(b.W.shape[0]), keep_assign)


def _scan_summary(sc: _Scan) -> tuple[np.ndarray, list[float], int]:
    return sc.counts, sc.sums, sc.n_finite()


def _smallest(sc: _Scan, m: int, finite_only: bool) -> np.ndarray:
    return sc.smallest_gaps(m, finite_only)


def _pairs(sc: _Scan, h: float, k: int) -> np.ndarray:
    return sc.pair_counts(h, k)


def _candidates(sc: _Scan, b: Block, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return block_candidates(sc, b.W, delta)


def _assign_of(sc: _Scan) -> np.ndarray:
    assert sc.assign is not None
    return sc.assign


def _set_rows(assign: np.ndarray, rows: np.ndarray, held: np.ndarray) -> np.ndarray:
    out = assign.copy()  # a task's input may be needed again if a worker dies: never change it in place
    out[rows] = held
    return out


def _columns(b: Block, rows: np.ndarray) -> np.ndarray:
    return b.W[:, rows]


def _certify(b: Block, assign: np.ndarray, lam: np.ndarray, K: int, tol: float) -> Any:
    return certify_block(b.W, lam, assign, K, tol)


def _write_part(b: Block, assign: np.ndarray, fund_ids: np.ndarray, path: str) -> int:
    K = assign.shape[1]
    ct = _read_table(b.customers, "customers", ["customer_id"])
    ids = _ids(ct.column("customer_id"), b.customers, "customer_id")
    if len(ids) != assign.shape[0]:
        raise DataValidationError(f"customers part {b.customers} changed while the allocation was computed")
    cust = np.repeat(ids, K) if K > 1 else ids
    table = pa.table({"customer_id": pa.array(cust), "fund_id": pa.array(np.asarray(fund_ids)[assign.ravel()])})
    write_parquet(table, path)
    return int(table.num_rows)


# --- driver side ----------------------------------------------------------------------------------------------


class _DaskScan:
    """A scan whose margins and choices stay on the workers (one future per partition)."""

    def __init__(self, store: DaskStore, futures: list[Any], lam: np.ndarray, demand: np.ndarray) -> None:
        self.store = store
        self.futures = futures
        client = store.client
        parts = client.gather([client.submit(_scan_summary, f) for f in futures])
        self.counts = np.sum([p[0] for p in parts], axis=0).astype(np.int64)
        best = 0.0
        for p in parts:
            for x in p[1]:
                best += x
        self.g = best + float(lam @ demand)
        self._n_fin = int(sum(p[2] for p in parts))

    def n_finite(self) -> int:
        return self._n_fin

    def kth_gap(self, q: int, finite_only: bool = True) -> float:
        client = self.store.client
        parts = client.gather([client.submit(_smallest, f, q + 1, finite_only) for f in self.futures])
        merged = np.concatenate(parts)
        return float(np.partition(merged, q)[q])

    def pair_counts(self, h: float, k: int) -> np.ndarray:
        client = self.store.client
        parts = client.gather([client.submit(_pairs, f, h, k) for f in self.futures])
        return np.asarray(np.sum(parts, axis=0), dtype=np.int64)


class DaskStore:
    """:class:`eoca.allocation.exact.CustomerStore` over partitions held by Dask workers.

    blocks: one future of a :class:`Block` per partition, in customer order; sizes (P,) customers per
    partition. Assignment handles are lists of futures of (n_p, K) int32 arrays.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, client: Any, blocks: list[Any], sizes: Sequence[int], k: int, scale: float) -> None:
        self.client = client
        self.blocks = blocks
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n = int(self.offsets[-1])
        self.k = k
        self._scale = scale
        self.stats: dict[str, Any] = {"partitions": len(blocks)}

    @classmethod
    def load(
        cls,
        client: Any,
        pairs: list[tuple[Path, Path]],
        fund_ids: np.ndarray,
        risk: np.ndarray,
        risk_rule: bool = True,
    ) -> tuple[DaskStore, np.ndarray, np.ndarray]:
        """Load every partition on the workers; returns the store and the tolerance groups (tvals, tcnt) of
        all customers (for the feasibility diagnosis). Checks that partitions hold disjoint customers."""
        # fund ids and risk levels travel inside the tasks (k values): scattered data could not be recomputed
        # after the loss of a worker, a task's own arguments can
        fids, r = np.asarray(fund_ids), np.asarray(risk)
        # pure=False: a second load of the same files (rewritten in between) must read them again
        blocks = [client.submit(load_block, str(s), str(c), fids, r, risk_rule, pure=False) for s, c in pairs]
        infos = client.gather([client.submit(_block_info, b) for b in blocks])
        sizes = [i[0] for i in infos]
        ranges = [(i[3], i[4], str(pairs[j][1])) for j, i in enumerate(infos) if i[0] > 0]
        _check_disjoint(ranges)
        tv = np.concatenate([i[1] for i in infos])
        tc = np.concatenate([i[2] for i in infos])
        tvals, inv = np.unique(tv, return_inverse=True)
        tcnt = np.bincount(inv, weights=tc, minlength=len(tvals)).astype(np.int64)
        scale = max([i[5] for i in infos] + [0.0])
        return cls(client, blocks, sizes, len(fund_ids), scale), tvals, tcnt

    # CustomerStore ------------------------------------------------------------------------------------------

    def max_abs(self) -> float:
        return self._scale

    def _split(self, rows: np.ndarray) -> list[tuple[int, np.ndarray, slice]]:
        """(partition, local rows, slice of ``rows``) for sorted global ``rows``."""
        cut = np.searchsorted(rows, self.offsets)
        out = []
        for p in range(len(self.blocks)):
            a, b = int(cut[p]), int(cut[p + 1])
            if b > a:
                out.append((p, rows[a:b] - self.offsets[p], slice(a, b)))
        return out

    def columns(self, rows: np.ndarray) -> np.ndarray:
        c = self.client
        split = self._split(np.asarray(rows, dtype=np.int64))
        parts = c.gather([c.submit(_columns, self.blocks[p], loc) for p, loc, _ in split])
        return np.hstack(parts).astype(np.float64) if parts else np.zeros((self.k, 0))

    def scan(self, lam: np.ndarray, K: int, demand: np.ndarray, keep_assign: bool) -> _DaskScan:
        c = self.client
        futs = [c.submit(_block_scan, b, lam, K, keep_assign) for b in self.blocks]
        return _DaskScan(self, futs, lam, demand)

    def candidates(self, sc: _DaskScan, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        c = self.client
        assign = [c.submit(_assign_of, f) for f in sc.futures]
        parts = c.gather([c.submit(_candidates, f, b, delta) for f, b in zip(sc.futures, self.blocks, strict=True)])
        C = np.concatenate([p[0].astype(np.int64) + self.offsets[i] for i, p in enumerate(parts)])
        S = np.hstack([p[1] for p in parts]).astype(np.float64)
        counts_fixed = np.sum([p[2] for p in parts], axis=0).astype(np.int64)
        return C, S, counts_fixed, assign

    def set_rows(self, assignment: list[Any], rows: np.ndarray, held: np.ndarray) -> list[Any]:
        out = list(assignment)
        for p, loc, sl in self._split(np.asarray(rows, dtype=np.int64)):
            out[p] = self.client.submit(_set_rows, assignment[p], loc, held[sl])
        return out

    def certify(
        self, assignment: list[Any], lam: np.ndarray, demand: np.ndarray, K: int, tol: float
    ) -> tuple[float, float, int, np.ndarray]:
        c = self.client
        parts = c.gather([c.submit(_certify, b, a, lam, K, tol) for b, a in zip(self.blocks, assignment, strict=True)])
        return combine_certificates(parts, lam, demand)


def _check_disjoint(ranges: list[tuple[Any, Any, str]]) -> None:
    """Partitions must hold disjoint ranges of customer ids (checked from per-part min / max only)."""
    if len(ranges) < 2:
        return
    try:
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    except TypeError:
        raise DataValidationError("customers parts mix integer and string customer ids") from None
    for a, b in itertools.pairwise(order):
        if not ranges[a][1] < ranges[b][0]:
            raise DataValidationError(
                f"customers parts {ranges[a][2]} and {ranges[b][2]} hold overlapping customer_id ranges "
                f"({ranges[a][0]}..{ranges[a][1]} and {ranges[b][0]}..{ranges[b][1]}); each part must hold its "
                "own range of customers"
            )


def load_funds(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """fund ids (k,) and risk levels int64 (k,) from a funds Parquet file (fund_id, risk_level)."""
    ft = _read_table(path, "funds", None)
    _require(ft, ["fund_id", "risk_level"], path, "funds")
    fids = _ids(ft.column("fund_id"), path, "fund_id")
    _unique_or_fail(fids, path, "fund_id")
    if len(fids) == 0:
        raise DataValidationError(f"funds file {path} has no rows")
    return fids, _int_col(ft, "risk_level", path)


@dataclass
class DistributedAllocation:
    """What :func:`allocate_dask` returns: the certified optimum's evidence (the allocation itself is on disk).

    objective: float64 sum of the scores of the assigned pairs; dual_bound: g(prices); delivered (k,) int64
    recounted by the certificate pass; folder: the partitioned allocation written.
    """

    objective: float
    dual_bound: float
    certified: bool
    demand: np.ndarray
    delivered: np.ndarray
    fund_ids: np.ndarray
    risk: np.ndarray
    K: int
    n_customers: int
    folder: Path | None
    wall_time_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def certificate_gap(self) -> float:
        return self.dual_bound - self.objective

    def summary(self) -> dict[str, Any]:
        """summary.json content, the same keys as the in-memory engine's where they apply."""
        names = np.asarray(self.fund_ids).tolist()
        return {
            "method": "exact",
            "engine": "dask",
            "customers": self.n_customers,
            "funds": len(names),
            "K": self.K,
            "objective": self.objective,
            "dual_bound": self.dual_bound,
            "certificate_gap": self.certificate_gap,
            "relative_gap": self.certificate_gap / max(1.0, abs(self.objective)),
            "optimal": self.certified,
            "feasible": bool(np.array_equal(self.delivered, self.demand)) and np.isfinite(self.objective),
            "per_fund": [
                {
                    "fund_id": names[j],
                    "risk_level": int(self.risk[j]),
                    "demanded": int(self.demand[j]),
                    "delivered": int(self.delivered[j]),
                }
                for j in range(len(names))
            ],
            "allocation": None if self.folder is None else str(self.folder),
            "wall_time_s": self.wall_time_s,
            "peak_memory_mb_driver": peak_memory_mb(),
            "info": self.info,
        }


def solve_dask(
    store: DaskStore,
    tvals: np.ndarray,
    tcnt: np.ndarray,
    risk: np.ndarray,
    fund_ids: np.ndarray,
    plan: DeliveryPlan,
    K: int | None,
    *,
    seed: int = 0,
    max_sample: int | None = 5_000_000,
    source: str = "plan",
) -> tuple[ExactOutcome, np.ndarray, int]:
    """Feasibility diagnosis (a reduction over tolerance groups) and the exact solve on the store.

    Returns the outcome (its ``assign`` a list of per-partition futures), the demand (k,) and K."""
    K_eff = K if K is not None else plan.K  # the command line is the more specific instruction
    demand = plan.demand_vector(fund_ids, store.n, K_eff, source=source)
    raise_if_infeasible(group_feasibility_issues(tvals, tcnt, risk, demand, K_eff, fund_ids))
    out = solve_store(store, demand, K_eff, seed=seed, max_sample=max_sample)
    return out, demand, K_eff


def write_allocation(store: DaskStore, assign: list[Any], fund_ids: np.ndarray, folder: Path, names: list[str]) -> int:
    """Write one allocation part per partition (each by the worker holding it) into ``folder`` atomically:
    parts go to a temporary folder that replaces ``folder`` only when every part is written. Returns rows."""
    c = store.client
    fids = np.asarray(fund_ids)
    with atomic_dir(folder) as tmp:
        futs = [
            c.submit(_write_part, b, a, fids, str(tmp / n), pure=False)
            for b, a, n in zip(store.blocks, assign, names, strict=True)
        ]
        return int(sum(c.gather(futs)))


def allocate_dask(
    client: Any,
    scores: str | os.PathLike[str],
    customers: str | os.PathLike[str],
    funds: str | os.PathLike[str],
    plan: str | os.PathLike[str] | DeliveryPlan,
    out: str | os.PathLike[str] | None,
    *,
    K: int | None = None,
    method: str = "exact",
    seed: int = 0,
    store_cls: type[DaskStore] = DaskStore,
) -> DistributedAllocation:
    """``eoca allocate --engine dask``: exact allocation of partitioned scores / customers on ``client``.

    Writes OUT/allocation/ (one part per input part, visible only once complete) and OUT/summary.json when
    ``out`` is given. Raises InfeasiblePlanError with the in-memory engine's diagnosis for an impossible plan,
    ConfigError for a single-machine method, and DistributedError when the cluster fails (no allocation is
    left visible then). ``store_cls`` lets a caller substitute a :class:`DaskStore` subclass.
    """
    if method in SINGLE_MACHINE:
        raise ConfigError(
            f"method {method!r} is sequential by nature and runs on one machine only; use --engine local for it "
            "(--engine dask runs the exact method)"
        )
    if method != "exact":
        raise ConfigError(f"--engine dask runs the exact method only, not {method!r}; use --engine local")
    t0 = time.perf_counter()
    fund_ids, risk = load_funds(funds)
    p = plan if isinstance(plan, DeliveryPlan) else load_plan(plan)
    pairs = pair_parts(scores, customers)
    for _, c in pairs:
        part_rows(c)  # a clear error for an unreadable part before any task is sent
    try:
        store, tvals, tcnt = store_cls.load(client, pairs, fund_ids, risk, p.risk_rule)
        t_load = time.perf_counter() - t0
        src = "plan" if isinstance(plan, DeliveryPlan) else str(plan)
        outcome, demand, K_eff = solve_dask(store, tvals, tcnt, risk, fund_ids, p, K, seed=seed, source=src)
        if not outcome.certified:
            raise DistributedError("the exact solver did not certify its allocation; nothing was written")
        folder = None
        if out is not None:
            folder = Path(out) / "allocation"
            assign: list[Any] = outcome.assign  # type: ignore[assignment]  # the store's handle
            write_allocation(store, assign, fund_ids, folder, [s.name for s, _ in pairs])
    except EocaError:
        raise
    except Exception as exc:  # a dead worker, a lost connection, a task that failed on a worker
        raise DistributedError(
            f"the Dask computation failed ({type(exc).__name__}: {exc}); no allocation was written"
        ) from exc
    stats = dict(outcome.stats)
    stats.update(store.stats)
    stats["t_load"] = t_load
    stats["prices"] = outcome.prices.tolist()
    result = DistributedAllocation(
        objective=outcome.primal,
        dual_bound=outcome.dual,
        certified=outcome.certified,
        demand=demand,
        delivered=demand.copy(),  # solve_store raises unless the certificate pass recounted exactly these
        fund_ids=fund_ids,
        risk=risk,
        K=K_eff,
        n_customers=store.n,
        folder=folder,
        wall_time_s=time.perf_counter() - t0,
        info=stats,
    )
    if out is not None:
        write_json(result.summary(), Path(out) / "summary.json")
    return result


def allocate_problem_dask(
    client: Any, problem: AllocationProblem, workdir: str | os.PathLike[str], *, part_size: int = 1 << 20
) -> AllocationResult:
    """The exact allocation of an in-memory problem on the cluster (what ``eoca run --engine dask`` does):
    the problem is written as parts under ``workdir`` (shared storage for a remote cluster), solved by
    :func:`allocate_dask` and read back; returns the same verified :class:`AllocationResult` as the local
    engine (its assignment in the problem's customer order)."""
    import pyarrow.parquet as pq

    from eoca.distributed.generate import write_problem

    t0 = time.perf_counter()
    data = write_problem(problem, Path(workdir) / "problem", part_size)
    res = allocate_dask(
        client, data / "scores", data / "customers", data / "funds.parquet", data / "plan.yaml", Path(workdir) / "out"
    )
    table = pq.read_table(Path(workdir) / "out" / "allocation")
    K = problem.K
    # parts come back in customer order, K rows per customer; map fund ids to positions
    fids = np.asarray(problem.fund_ids)
    order = np.argsort(fids, kind="stable")
    got = np.asarray(table.column("fund_id").to_numpy(zero_copy_only=False))
    assign = order[np.searchsorted(fids, got, sorter=order)].astype(np.int32).reshape(-1, K)
    cust = np.asarray(table.column("customer_id").to_numpy(zero_copy_only=False))[::K]
    if not np.array_equal(cust, np.asarray(problem.customer_ids)):
        raise DistributedError("the partitioned allocation came back in another customer order")
    info = dict(res.info)
    info["engine"] = "dask"
    out = AllocationResult.build(
        "exact",
        problem,
        assign,
        dual_bound=res.dual_bound,
        optimal=res.certified,
        wall_time_s=time.perf_counter() - t0,
        info=info,
    )
    out.optimal = bool(res.certified) and out.feasible
    return out
