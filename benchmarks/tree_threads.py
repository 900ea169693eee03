"""Growing ``gbdt``'s trees on one thread and on every CPU: time, and whether the model is the same.

    python benchmarks/tree_threads.py --customers 100000 --workdir W --rounds 2

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), ``--rounds`` alternating
passes train ``gbdt`` with the default config and ``num_threads`` 1 and every CPU (``predict_threads`` 1 in both, so
only the growing differs), each reporting the wall and CPU seconds of the whole fit (boosters, guard, validation).
Each fit then scores every customer x fund; the table says whether those scores, and each booster's tree count,
equal the first one-thread fit's, bit for bit. ``num_threads`` stays 1 by default because equal models on one
world do not assure equal models on another (see benchmarks/RESULTS.md, issue 10, eleventh pass).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

BOOSTERS = ("_classifier", "_cvr", "_regressor", "_spread")


def _fit(ds: Any, threads: int) -> tuple[float, float, dict[str, int], dict[str, np.ndarray]]:
    from eoca.training import train

    c0, w0 = time.process_time(), time.perf_counter()
    trained = train(ds, {"model": "gbdt", "num_threads": threads, "predict_threads": 1}, None, progress=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    trees = {n: getattr(trained.model, n).num_trees() for n in BOOSTERS if getattr(trained.model, n) is not None}
    scores = trained.score_matrix(ds, progress=False)
    return wall, cpu, trees, {k: np.asarray(scores[k]) for k in ("p", "etv")}


def main() -> None:
    from train import add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    ap.add_argument("--rounds", type=int, default=2, help="alternating fits per thread count; the median")
    args = ap.parse_args()

    from eoca.data import Dataset
    from eoca.threads import available_cpus

    ds = Dataset.load(world_from_args(args))
    counts = sorted({1, available_cpus()})
    reference: tuple[dict[str, int], dict[str, np.ndarray]] | None = None
    seen: dict[int, list[tuple[float, float, bool]]] = {t: [] for t in counts}
    for _ in range(args.rounds):
        for threads in counts:
            wall, cpu, trees, scores = _fit(ds, threads)
            if reference is None:
                reference = (trees, scores)
            same = trees == reference[0] and all(np.array_equal(scores[k], reference[1][k]) for k in scores)
            seen[threads].append((wall, cpu, same))
            print(f"threads {threads}: wall {wall:.1f} s, CPU {cpu:.1f} s, trees {trees}, same model {same}")
    print("\n| threads | fit wall s | fit CPU s | scores and trees equal the one-thread fit's |")
    print("|---:|---:|---:|---|")
    for t, v in seen.items():
        wall, cpu = statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)
        print(f"| {t} | {wall:.1f} | {cpu:.1f} | {'yes' if all(x[2] for x in v) else 'no'} ({len(v)} fits) |")


if __name__ == "__main__":
    main()
