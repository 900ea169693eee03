"""Scoring under the risk rule: ``gbdt`` scoring every customer x fund against only the pairs the rule allows.

    python benchmarks/score_allowed.py --customers 100000 --workdir W --rounds 3

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), ``gbdt`` is trained once
with the default config on one thread. Then ``--rounds`` alternating passes of ``TrainedModel.score_matrix`` on one
prediction thread: every pair (what ``eoca score`` writes), and ``tolerance=`` the customers' risk tolerances (what
``eoca run`` asks for: the trees walk the allowed pairs only). Each figure is the median over the rounds of the
pass's CPU seconds. Every pass's values on the allowed pairs are compared with the first full pass's, bit for bit,
and the forbidden pairs must be NaN; the script fails otherwise. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    from predict_threads import trained_gbdt  # beside this script
    from train import add_world_args, world_from_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    ap.add_argument("--rounds", type=int, default=3, help="alternating passes per kind; the median")
    args = ap.parse_args()

    from eoca.data import Dataset
    from eoca.risk import eligible_mask
    from eoca.training.trainer import set_prediction_threads

    ds = Dataset.load(world_from_args(args))
    trained = trained_gbdt(ds)
    set_prediction_threads(trained.model, 1)
    tolerance = np.array(ds.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)
    allowed = eligible_mask(tolerance, ds.funds.column("risk_level").to_numpy())
    kinds = {"every pair": None, "allowed pairs": tolerance}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    reference: dict[str, np.ndarray] | None = None
    for _ in range(args.rounds):
        for kind, tol in kinds.items():
            c0 = time.process_time()
            mats = trained.score_matrix(ds, tolerance=tol)
            cpu[kind].append(time.process_time() - c0)
            if reference is None:
                reference = mats
            for key, values in mats.items():
                if not np.array_equal(values[allowed], reference[key][allowed]):
                    raise SystemExit(f"{key} differs on the allowed pairs ({kind})")
                if tol is not None and not np.isnan(values[~allowed]).all():
                    raise SystemExit(f"{key}: a forbidden pair was scored")
            print(f"{kind}: CPU {cpu[kind][-1]:.2f} s", flush=True)
    pairs = allowed.size
    print(
        f"\nmachine: {os.uname().machine}; {pairs:,} pairs, {int(allowed.sum()):,} allowed "
        f"({allowed.mean():.1%}); one prediction thread; {args.rounds} rounds; allowed values identical on every pass\n"
    )
    full = statistics.median(cpu["every pair"])
    print("| pairs scored | CPU s | pairs of the grid per CPU s | CPU s / every pair's |")
    print("|---|---:|---:|---:|")
    for kind in kinds:
        med = statistics.median(cpu[kind])
        print(f"| {kind} | {med:.2f} | {pairs / med:,.0f} | {med / full:.2f} |")


if __name__ == "__main__":
    main()
