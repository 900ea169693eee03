"""Training and scoring throughput of the ETV zoo.

    python benchmarks/train.py            # 200k customers x 8 funds; 10M x 8 streamed scoring
    python benchmarks/train.py --quick    # 20k customers; 200k x 8 scoring (a smoke run, a few minutes)
    python benchmarks/train.py --large 1000000   # choose the size of the large scoring run

Each measurement runs in its own Python process so its peak resident memory (``ru_maxrss``) is its own:

* training: the second of two epochs of ``esdpm`` and ``esmm`` over (at most ``--train-rows`` of) the simulated
  world's training exposures (samples/s = training rows / wall seconds of the optimisation steps, validation
  excluded), peak RSS of the whole process (data, features and validation included);
* scoring: ``write_scores`` of every customer x fund of the simulated world to Parquet (pairs/s);
* large scoring: the simulated customers' profiles tiled to 10M (ids renamed) x 8 funds, streamed to Parquet. Only
  the first copy keeps behaviour events and consumption edges (replicating the world's 50x would need tens of GB
  before scoring starts); the attention and graph layers still run over the others' padded, empty inputs.

Prints one JSON line per measurement and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _threads() -> int | None:
    # Passed to the worker processes through the environment so the worker command line stays positional.
    raw = os.environ.get("EOCA_BENCH_THREADS", "")
    return int(raw) if raw else None


def _peak_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _world(n_customers: int, out: Path) -> Path:
    from eoca.simulate import load_simulator_config, simulate

    if not (out / "dataset.yaml").exists():
        simulate(load_simulator_config(None, [f"world.n_customers={n_customers}", "world.n_funds=8"])).save(out)
    return out


def worker_train(data: Path, model: str, max_rows: int | None) -> dict[str, Any]:
    from eoca.data import Dataset
    from eoca.training import train

    ds = Dataset.load(data, with_truth=False)
    # Two epochs, the second timed: the first pays one-off costs (TorchScript compilation of the graph layers,
    # allocator warm-up) that a real training run amortises over many epochs.
    cfg = {
        "model": model,
        "max_epochs": 2,
        "patience": 2,
        "batch_size": 1024,
        "max_train_rows": max_rows,
        "num_threads": _threads(),
    }
    t0 = time.perf_counter()
    trained = train(ds, cfg, None, progress=False)
    total = time.perf_counter() - t0
    h = trained.history[-1]
    return {
        "kind": "train",
        "model": model,
        "customers": ds.n_customers,
        "funds": ds.n_funds,
        "rows": int(h["rows"]),
        "epoch_s": round(h["train_seconds"], 2),
        "samples_per_s": round(h["samples_per_s"]),
        "total_s_incl_features_and_validation": round(total, 2),
        "peak_rss_mib": round(_peak_mib()),
    }


def _trained(ds: Any, model: str) -> Any:
    from eoca.training import train

    # A few thousand rows are enough: scoring speed does not depend on how well the weights fit.
    cfg = {"model": model, "max_epochs": 1, "max_train_rows": 20000, "num_threads": _threads()}
    return train(ds, cfg, None, progress=False)


def _tile(ds: Any, n_target: int) -> Any:
    """A dataset whose customers are ``ds``'s repeated to ``n_target`` rows (new ids, same features)."""
    import numpy as np
    import pyarrow as pa

    from eoca.data import Dataset

    reps = -(-n_target // ds.n_customers)
    idx = np.tile(np.arange(ds.n_customers), reps)[:n_target]
    customers = ds.customers.take(pa.array(idx))
    ids = pa.array(np.arange(n_target, dtype=np.int64))
    customers = customers.set_column(
        customers.column_names.index("customer_id"), "customer_id", ids.cast(customers.schema.field("customer_id").type)
    )
    # Simulated ids are 0..N-1, so the first copy keeps its own ids, exposures, events and consumption edges.
    return Dataset(
        spec=ds.spec,
        customers=customers,
        funds=ds.funds,
        exposures=ds.exposures,
        events=ds.events,
        consumption=ds.consumption,
    )


def worker_score(data: Path, model: str, n_customers: int | None, out_dir: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from eoca.data import Dataset
    from eoca.training import write_scores

    ds = Dataset.load(data, with_truth=False)
    trained = _trained(ds, model)
    target = _tile(ds, n_customers) if n_customers else ds
    path = out_dir / f"scores_{model}_{target.n_customers}.parquet"
    t0 = time.perf_counter()
    write_scores(trained, target, path, chunk_customers=65536, progress=False)
    secs = time.perf_counter() - t0
    pairs = target.n_customers * target.n_funds
    rows = pq.read_metadata(path).num_rows
    size = path.stat().st_size
    path.unlink()
    return {
        "kind": "score",
        "model": model,
        "customers": target.n_customers,
        "funds": target.n_funds,
        "pairs": pairs,
        "rows_written": rows,
        "seconds": round(secs, 1),
        "pairs_per_s": round(pairs / secs),
        "parquet_mib": round(size / 2**20),
        "peak_rss_mib": round(_peak_mib()),
    }


def _run_worker(args: list[str]) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{res.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k customers and a 200k-customer scoring run")
    ap.add_argument("--train-rows", type=int, default=None, help="training rows timed per model (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs available)")
    ap.add_argument("--large", type=int, default=None, help="customers of the large scoring run")
    ap.add_argument("--workdir", type=Path, default=None, help="where the simulated world is kept (reused)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "train":
            max_rows = int(rest[2]) if len(rest) > 2 and rest[2] != "all" else None
            result = worker_train(Path(rest[0]), rest[1], max_rows)
        else:
            n = int(rest[2]) if rest[2] != "none" else None
            result = worker_score(Path(rest[0]), rest[1], n, Path(rest[3]))
        print(json.dumps(result))
        return

    if args.threads:
        os.environ["EOCA_BENCH_THREADS"] = str(args.threads)
    n_world = 20_000 if args.quick else 200_000
    n_large = args.large or (200_000 if args.quick else 10_000_000)
    rows = str(args.train_rows) if args.train_rows else "all"
    work = args.workdir or Path(tempfile.gettempdir()) / f"eoca_bench_world_{n_world}"
    t0 = time.perf_counter()
    data = _world(n_world, work)
    print(json.dumps({"kind": "world", "customers": n_world, "seconds": round(time.perf_counter() - t0, 1)}))
    results = [_run_worker(["train", str(data), m, rows]) for m in ("esdpm", "esmm")]
    results.append(_run_worker(["score", str(data), "esdpm", "none", str(work)]))
    results.append(_run_worker(["score", str(data), "esdpm", str(n_large), str(work)]))
    import torch

    from eoca.training.trainer import available_cpus

    print(
        f"\nmachine: {platform.machine()}, {args.threads or available_cpus()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}\n"
    )
    print("| measurement | model | size | throughput | wall s | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|")
    for r in results:
        if r["kind"] == "train":
            print(
                f"| training (2nd epoch) | {r['model']} | {r['rows']:,} exposures ({r['customers']:,} customers x "
                f"{r['funds']} funds) | {r['samples_per_s']:,} samples/s | {r['epoch_s']} | {r['peak_rss_mib']:,} |"
            )
        else:
            print(
                f"| scoring to Parquet | {r['model']} | {r['customers']:,} x {r['funds']} = {r['pairs']:,} pairs | "
                f"{r['pairs_per_s']:,} pairs/s | {r['seconds']} | {r['peak_rss_mib']:,} |"
            )


if __name__ == "__main__":
    main()
