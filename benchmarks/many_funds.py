"""The exact solver with many funds: CPU seconds, passes over the matrix and where they go, one instance per process.

Each instance (``synthetic_instance(N, k, K, seed)``, binding risk rules) is solved by
``eoca.allocation.solve_exact`` in a fresh process; the row reports CPU seconds of the solve (user + sys of the
process, generation excluded), peak RSS, the objective and certificate gap, the Newton scans per stage (sampled
prices, full data, candidates), the imbalance the full-data stage left, the candidates, the units left to the
flow and its augmentations.

Usage (``PYTHONPATH`` picks the code measured, e.g. a checkout of an older commit for the "before" rows)::

    PYTHONPATH=src python benchmarks/many_funds.py --instances 100000x100x1x0,100000x100x2x0 --json out.json
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


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def solve(N: int, k: int, K: int, seed: int) -> dict[str, Any]:
    import eoca
    from eoca.allocation import solve_exact
    from eoca.allocation.generate import synthetic_instance

    p = synthetic_instance(N, k, K, seed=seed)
    c0 = _cpu()
    out = solve_exact(p.scores, p.tolerance, p.risk, p.demand, K)
    st = out.stats
    return {
        "instance": f"{N}x{k}x{K}x{seed}",
        "code": str(Path(eoca.__file__).parents[1]),
        "cpu_s": _cpu() - c0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "objective": out.primal,
        "certificate_gap": (out.dual - out.primal) / max(abs(out.dual), 1e-300),
        "certified": out.certified,
        "scans": st["scans"],
        "imbalance_after_prices": st["imbalance_after_prices"],
        "candidates": st["candidates"],
        "excess_to_flow": st.get("excess_to_flow"),
        "augmentations": st["augmentations"],
        "rounds": st["rounds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", default="100000x100x1x0", help="comma-separated NxkxKxseed")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.one:
        N, k, K, seed = (int(x) for x in args.one.split("x"))
        print(json.dumps(solve(N, k, K, seed)))
        return
    rows = []
    for inst in args.instances.split(","):
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--one", inst], capture_output=True, text=True)
        if out.returncode != 0:
            row: dict[str, Any] = {"instance": inst, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t0
        row["load_before_after"] = [load0, os.getloadavg()[0]]
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
