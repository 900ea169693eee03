"""Threads of the tree models' predictions: ``gbdt`` scoring every customer x fund on one thread and on every CPU,
on an idle machine and with competing CPU-bound processes.

    python benchmarks/predict_threads.py --customers 100000 --workdir W --rounds 3 --busy 0,1

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), ``gbdt`` is trained once
with the default config on one thread (its trees are what scoring walks: a model fitted on fewer rows would have
other trees and another cost). Then, for each ``--busy`` count of competing processes (a Python loop each, started
before and stopped after that count's rounds), ``--rounds`` alternating passes score all N x 8 pairs with
``iter_score_chunks`` (what ``eoca score`` and ``eoca run`` call) with ``predict_threads`` 1 and every CPU. Each
figure is the median over the rounds of the pass's wall seconds and the process's CPU seconds (every thread).
Every pass's ETV and probabilities are compared with the first one's, bit for bit; the script fails if one differs.
Prints one Markdown table; ``wall 1 / wall all`` above 1 means every CPU was faster.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np


def _pass(trained: Any, ds: Any, threads: int) -> tuple[float, float, dict[str, np.ndarray]]:
    from eoca.training.trainer import iter_score_chunks, set_prediction_threads

    set_prediction_threads(trained.model, threads)
    c0, w0 = time.process_time(), time.perf_counter()
    parts = [preds for _, _, preds in iter_score_chunks(trained, ds)]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return wall, cpu, {k: np.concatenate([p[k] for p in parts]) for k in ("p", "etv")}


def trained_gbdt(ds: Any) -> Any:
    """``gbdt`` trained on ``ds`` with the default config on one thread (its trees are what scoring walks: a model
    fitted on fewer rows would have other trees and another cost); prints the time and the trees per booster."""
    from eoca.training import train

    t0 = time.perf_counter()
    trained = train(ds, {"model": "gbdt", "num_threads": 1}, None, progress=False)
    trees = {
        n: getattr(trained.model, n).num_trees()
        for n in ("_classifier", "_cvr", "_regressor", "_spread")
        if getattr(trained.model, n) is not None
    }
    print(f"gbdt trained in {time.perf_counter() - t0:.0f} s; trees {trees}", flush=True)
    return trained


def main() -> None:
    from train import _burn, add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    ap.add_argument("--rounds", type=int, default=3, help="alternating passes per thread count; the median")
    ap.add_argument("--busy", default="0,1", help="comma-separated counts of competing CPU-bound processes")
    args = ap.parse_args()
    busy = [int(b) for b in args.busy.split(",")]

    from eoca.data import Dataset
    from eoca.threads import available_cpus

    ds = Dataset.load(world_from_args(args))
    trained = trained_gbdt(ds)
    every = available_cpus()
    counts = sorted({1, every})
    reference: dict[str, np.ndarray] | None = None
    rows = []
    for n_busy in busy:
        burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(n_busy)]
        for b in burners:
            b.start()
        try:
            seen: dict[int, list[tuple[float, float]]] = {t: [] for t in counts}
            for _ in range(args.rounds):
                for threads in counts:
                    wall, cpu, preds = _pass(trained, ds, threads)
                    if reference is None:
                        reference = preds
                    for key in ("p", "etv"):
                        if not np.array_equal(preds[key], reference[key]):
                            raise SystemExit(f"{key} differs on {threads} thread(s) with {n_busy} busy")
                    seen[threads].append((wall, cpu))
                    print(f"busy {n_busy} threads {threads}: wall {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
        finally:
            for b in burners:
                b.terminate()
        med = {t: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for t, v in seen.items()}
        rows.append((n_busy, med))
    pairs = ds.n_customers * ds.n_funds
    print(
        f"\nmachine: {os.uname().machine}, {every} CPUs; {pairs:,} pairs; {args.rounds} rounds; values identical "
        "on every pass\n"
    )
    print("| competing processes | threads | wall s | CPU s | pairs per wall s | wall 1 / wall all |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n_busy, med in rows:
        ratio = med[1][0] / med[every][0]
        for t in counts:
            wall, cpu = med[t]
            last = f"{ratio:.2f}" if t == every else ""
            print(f"| {n_busy} | {t} | {wall:.2f} | {cpu:.2f} | {pairs / wall:,.0f} | {last} |")


if __name__ == "__main__":
    main()
