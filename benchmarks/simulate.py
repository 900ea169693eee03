"""Benchmark of ``eoca simulate``: wall time and peak memory of generating and writing a world.

The requirement: 1M customers x 8 funds in at most 2 minutes and 4 GB on a 2-core machine.

    .venv/bin/python benchmarks/simulate.py --customers 1000000 --funds 8

runs the same path as the CLI (generate, validate, write Parquet) in a fresh child process, so the peak
resident set size is the generation's own, not inflated by an earlier run, and prints one JSON line.
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

LIMIT_SECONDS = 120.0
LIMIT_GB = 4.0


def _child(customers: int, funds: int, seed: int, out: Path) -> None:
    from eoca.io import write_text
    from eoca.simulate import SimulatorConfig, config_yaml, simulate

    cfg = SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": customers, "n_funds": funds}})
    t0 = time.perf_counter()
    ds = simulate(cfg)
    t1 = time.perf_counter()
    ds.save(out)
    write_text(config_yaml(cfg), out / "simulator.yaml")
    t2 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss is in KiB on Linux.
    peak_gb = usage.ru_maxrss / 2**20
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(
        json.dumps(
            {
                "customers": customers,
                "funds": funds,
                "generate_s": round(t1 - t0, 2),
                "write_s": round(t2 - t1, 2),
                "wall_s": round(t2 - t0, 2),
                "peak_rss_gb": round(peak_gb, 3),
                # CPU seconds next to wall seconds show how much of the run was spent waiting for a core.
                "cpu_user_s": round(usage.ru_utime, 2),
                "cpu_sys_s": round(usage.ru_stime, 2),
                "rows": {name: t.num_rows for name, t in ds.tables().items()},
                "output_mb": round(size_mb, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--funds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_out is not None:
        _child(args.customers, args.funds, args.seed, args.child_out)
        return
    with tempfile.TemporaryDirectory(prefix="eoca-bench-sim-") as tmp:
        cmd = [
            sys.executable,
            __file__,
            "--customers",
            str(args.customers),
            "--funds",
            str(args.funds),
            "--seed",
            str(args.seed),
            "--child-out",
            str(Path(tmp) / "world"),
        ]
        # Other work may share the cores: the load average before and after is part of the result.
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        total = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(proc.returncode)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(total, 2)
    result["load_avg_1m_before"] = round(load_before, 2)
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    result["cpus"] = os.cpu_count()
    result["python"] = platform.python_version()
    result["within_limits"] = bool(result["process_wall_s"] <= LIMIT_SECONDS and result["peak_rss_gb"] <= LIMIT_GB)
    print(json.dumps(result))
    if not result["within_limits"]:
        raise SystemExit(f"over the limits: {LIMIT_SECONDS:.0f} s and {LIMIT_GB:.0f} GB")


if __name__ == "__main__":
    main()
