"""Scale-out benchmark: the exact allocation from partitioned Parquet, in memory and on a Dask LocalCluster.

Steps (each measurement in a fresh process; CPU = user + sys seconds, peak RSS = ``ru_maxrss`` per process):

1. ``gen``: :func:`eoca.distributed.generate.write_instance` writes N customers x k funds in parts of
   ``--part-size`` customers, one part at a time per worker of a 2-worker LocalCluster (bounded memory).
2. ``local``: reads the first P parts into one in-memory problem (``read`` seconds) and solves it with
   ``allocate(problem, "exact")``.
3. ``dask``: ``allocate_dask`` on a LocalCluster (``--workers`` processes, ``--memory-limit`` each) over the
   same P parts, writing the partitioned allocation. CPU and peak RSS are reported for the driver and for
   every worker (asked from each worker before the cluster closes).

Usage::

    python benchmarks/scale.py --N 10485760 --k 8 --parts 10 --dir /tmp/scale10m --json out.json
    python benchmarks/scale.py --N 1048576 --k 100 --part-size 262144 --dir /tmp/scale_k100 --json out.json

``--parts`` P < all parts compares a prefix; ``--skip-local`` skips the in-memory run (an instance beyond one
process's memory). The plan of a prefix is recomputed from its own customers (``prefix_plan``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "peak_rss_mb": r.ru_maxrss / 1024}


def _prefix(folder: Path, n_parts: int) -> Path:
    """A folder with the first n_parts parts (symlinks) and the prefix's own plan."""
    from eoca.distributed.generate import prefix_plan, write_plan

    manifest = json.loads((folder / "manifest.json").read_text())
    if n_parts >= len(manifest["parts"]):
        return folder
    out = folder.parent / f"{folder.name}_prefix{n_parts}"
    for sub in ("customers", "scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for p in manifest["parts"][:n_parts]:
            link = out / sub / p["name"]
            if not link.exists():
                link.symlink_to(folder / sub / p["name"])
    if not (out / "funds.parquet").exists():
        (out / "funds.parquet").symlink_to(folder / "funds.parquet")
    _, demand = prefix_plan(manifest, n_parts)
    write_plan(out, demand, int(manifest["K"]))
    return out


def gen(args: argparse.Namespace) -> dict[str, Any]:
    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.generate import write_instance

    t0 = time.perf_counter()
    with open_client(ClusterSpec(workers=args.workers, memory_limit=args.memory_limit)) as client:
        write_instance(args.dir, args.N, args.k, args.K, args.seed, part_size=args.part_size, client=client)
        workers = client.run(_usage)
    return {"step": "gen", "wall_s": time.perf_counter() - t0, "driver": _usage(), "workers": workers}


def local(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from eoca.allocation import AllocationProblem, allocate, load_plan

    folder = _prefix(Path(args.dir), args.parts)
    t0 = time.perf_counter()
    c0 = _usage()["cpu_s"]
    funds = pq.read_table(folder / "funds.parquet")
    fids = funds.column("fund_id").to_numpy()
    risk = funds.column("risk_level").to_numpy()
    parts = sorted((folder / "scores").iterdir())
    k = len(fids)
    n = sum(pq.read_metadata(p).num_rows for p in parts)
    E = np.empty((n, k), dtype=np.float32, order="F")
    tol = np.empty(n, dtype=np.int64)
    s = 0
    for p in parts:
        t = pq.read_table(p)
        m = t.num_rows
        for j in range(k):
            E[s : s + m, j] = t.column(str(j)).to_numpy()
        tol[s : s + m] = pq.read_table(folder / "customers" / p.name, columns=["risk_tolerance"]).column(0).to_numpy()
        s += m
        del t
    plan = load_plan(folder / "plan.yaml")
    problem = AllocationProblem(
        scores=E, tolerance=tol, risk=risk, demand=plan.demand_vector(fids, n), K=plan.K, fund_ids=fids
    )
    read_s = time.perf_counter() - t0
    read_cpu = _usage()["cpu_s"] - c0
    res = allocate(problem, "exact")
    info = res.info
    return {
        "step": "local",
        "N": n,
        "k": k,
        "objective": res.objective,
        "certificate_gap": res.gap,
        "optimal": res.optimal,
        "read_s": read_s,
        "read_cpu_s": read_cpu,
        "solve_s": res.wall_time_s,
        "scans": info.get("scans"),
        "candidates": info.get("candidates"),
        "wall_s": time.perf_counter() - t0,
        "driver": _usage(),
    }


def dask(args: argparse.Namespace) -> dict[str, Any]:
    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.exact import allocate_dask

    folder = _prefix(Path(args.dir), args.parts)
    out = Path(args.dir).parent / f"{Path(args.dir).name}_alloc{args.parts}"
    t0 = time.perf_counter()
    with open_client(ClusterSpec(workers=args.workers, memory_limit=args.memory_limit)) as client:
        t1 = time.perf_counter()
        base = client.run(_usage)
        res = allocate_dask(
            client, folder / "scores", folder / "customers", folder / "funds.parquet", folder / "plan.yaml", out
        )
        workers = client.run(_usage)
    return {
        "step": "dask",
        "N": res.n_customers,
        "k": len(res.fund_ids),
        "objective": res.objective,
        "certificate_gap": res.certificate_gap,
        "optimal": res.certified,
        "load_s": res.info.get("t_load"),
        "solve_s": res.wall_time_s,
        "cluster_start_s": t1 - t0,
        "scans": res.info.get("scans"),
        "candidates": res.info.get("candidates"),
        "partitions": res.info.get("partitions"),
        "wall_s": time.perf_counter() - t0,
        "driver": _usage(),
        "workers_at_start": base,
        "workers": workers,
    }


def unit(args: argparse.Namespace) -> dict[str, Any]:
    """CPU seconds of each per-partition operation on one part, in this process (no Dask): the numbers the
    extrapolation in docs/scale.md multiplies by partitions and passes."""
    import tempfile

    import numpy as np

    from eoca.allocation.exact import _scan, certify_block
    from eoca.distributed.exact import _write_part, load_block, load_funds

    folder = Path(args.dir)
    name = sorted((folder / "scores").iterdir())[0].name
    fids, risk = load_funds(folder / "funds.parquet")
    out: dict[str, Any] = {"step": "unit", "part": name}
    reps = 3

    def cpu(fn: Any) -> float:
        best = float("inf")
        for _ in range(reps):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return best

    blk = load_block(str(folder / "scores" / name), str(folder / "customers" / name), fids, risk)
    n = blk.W.shape[1]
    lam = np.zeros(len(fids))
    out["customers"] = n
    out["load_cpu_s"] = cpu(
        lambda: load_block(str(folder / "scores" / name), str(folder / "customers" / name), fids, risk)
    )
    out["scan_cpu_s"] = cpu(lambda: _scan(blk.W, lam, args.K, np.zeros(len(fids)), True))
    assign = _scan(blk.W, lam, args.K, np.zeros(len(fids)), True).assign
    assert assign is not None
    out["certify_cpu_s"] = cpu(lambda: certify_block(blk.W, lam, assign, args.K, 1e-9))
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        out["write_cpu_s"] = cpu(lambda: _write_part(blk, assign, fids, str(Path(tmp) / name)))
    out["driver"] = _usage()
    return out


def _child(args: argparse.Namespace, step: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--step", step] + [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("step", "json", "skip_local") and v is not None and not isinstance(v, bool)
    ]
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"step": step, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t0
    row["load_before_after"] = [load0, os.getloadavg()]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=["gen", "local", "dask", "unit"], default=None)
    ap.add_argument("--N", type=int, default=1 << 20)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--K", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part-size", type=int, default=1 << 20)
    ap.add_argument("--parts", type=int, default=10**9, help="use the first P parts (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--steps", default="gen,local,dask")
    args = ap.parse_args()
    if args.step:
        fn = {"gen": gen, "local": local, "dask": dask, "unit": unit}[args.step]
        print(json.dumps(fn(args), default=str))
        return
    rows = []
    for step in args.steps.split(","):
        if step == "gen" and (Path(args.dir) / "manifest.json").exists():
            continue
        if step == "local" and args.skip_local:
            continue
        rows.append(_child(args, step))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
