"""Budget allocation benchmarks (issue 12): solver speed and memory, simulator goals, Hillstrom goal.

    python benchmarks/budget.py solver                 # 10M customers x 5 arms (control + 4), fresh process
    python benchmarks/budget.py simulator --seeds 0 1 2 --customers 200000
    python benchmarks/budget.py hillstrom
    python benchmarks/budget.py all --json out.json    # everything; raw rows as JSON

``solver``: random instance (arm 0 free with value 0; arms 1-4 exponential value and cost), budget 30% of the
treat-everyone cost; wall time of ``solve_budget`` and the process's peak RSS (instance included), in a fresh
process per repetition, pinned to 2 threads.

``simulator``: per seed, a world with the default incentive campaign; the models train on half the customers
and allocate the other half at 10/30/50% of the treat-everyone cost; reported: the true incremental value as a
share of the oracle's (true effects + exact solver), and the end-to-end model minus the best two-stage model
(by mean share) with a 95% t-interval over the seeds.

``hillstrom``: e-mail cost 1 (an assumption), budget = one third of the held-out customers e-mailed; SNIPS
spend per customer of each policy with 95% bootstrap intervals, lift over random targeting (paired bootstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _solver_worker(n: int, k: int, seed: int) -> dict[str, Any]:
    import resource

    import numpy as np

    from eoca.budget import solve_budget

    rng = np.random.default_rng(seed)
    value = np.empty((n, k))
    cost = np.empty((n, k))
    value[:, 0] = 0.0
    cost[:, 0] = 0.0
    value[:, 1:] = rng.exponential(1.0, size=(n, k - 1))
    cost[:, 1:] = rng.exponential(1.0, size=(n, k - 1))
    budget = 0.3 * float(cost.max(axis=1).sum())
    rss_instance = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sol = solve_budget(value, cost, budget)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c = sol.certificate
    return {
        "n": n,
        "arms": k,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_instance_mb": rss_instance,
        "gap": c.gap,
        "gap_bound": c.gap_bound,
        "relative_gap": c.gap / c.dual_bound,
        "cost_over_budget": sol.cost / budget,
    }


def bench_solver(n: int, k: int, reps: int) -> list[dict[str, Any]]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for rep in range(reps):
        load = os.getloadavg()[0]
        here = str(Path(__file__).parent)
        code = (
            f"import json,sys; sys.path.insert(0, {here!r}); from budget import _solver_worker; "
            f"print(json.dumps(_solver_worker({n}, {k}, {rep})))"
        )
        out = subprocess.run(
            ["taskset", "-c", "0,1", sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(rep=rep, load_before=load, load_after=os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_simulator(seeds: list[int], customers: int, models: list[str]) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    from eoca.budget.data import from_world
    from eoca.budget.run import run_budget
    from eoca.simulate import SimulatorConfig
    from eoca.simulate.simulator import generate_world

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        cfg = SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": customers}, "incentives": {}})
        t0 = time.perf_counter()
        res = run_budget(from_world(generate_world(cfg)), models=models, seed=seed, n_bootstrap=200, plots=False)
        for r in res.goal_rows:
            rows.append({**r, "seed": seed})
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s, fit {res.fit_seconds}", flush=True)
    share: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        share.setdefault((r["policy"], r["fraction"]), []).append(r["share_of_oracle"])
    table = [
        {"policy": p, "fraction": f, "mean_share": float(np.mean(v)), "min_share": float(np.min(v)), "seeds": len(v)}
        for (p, f), v in share.items()
    ]
    two_stage = [m for m in models if not m.startswith("e2e") and not m.startswith("peer_")]
    diffs = []
    for f in sorted({r["fraction"] for r in rows}):
        best = max(two_stage, key=lambda m: float(np.mean(share[(m, f)])))
        # against the best two-stage model, and against the same network trained without the goal
        pairs = [(e2e, ref) for e2e in models if e2e.startswith("e2e") for ref in dict.fromkeys([best, "multi_head"])]
        for e2e, ref in pairs:
            if (ref, f) not in share:
                continue
            d = np.array(share[(e2e, f)]) - np.array(share[(ref, f)])
            half = (
                float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            )
            diffs.append(
                {
                    "fraction": f,
                    "e2e": e2e,
                    "reference": ref,
                    "diff_share": float(d.mean()),
                    "ci_low": float(d.mean()) - half,
                    "ci_high": float(d.mean()) + half,
                    "per_seed": d.tolist(),
                }
            )
    return {"rows": rows, "table": table, "e2e_vs_two_stage": diffs}


def bench_hillstrom(models: list[str], seed: int) -> dict[str, Any]:
    from eoca.budget.data import load_hillstrom_incentives
    from eoca.budget.run import run_budget

    data = load_hillstrom_incentives()
    # every arm but the control costs one e-mail, so the treat-everyone cost is the number of held-out customers
    # and a third of it e-mails one customer in three
    res = run_budget(
        data, models=models, budget=f"{100.0 / 3.0!r}%", seed=seed, n_bootstrap=1000, plots=False, crossfit=True
    )
    return {
        "budget": res.budget,
        "n_test": res.n_test,
        "best_model": res.best_model,
        "ope": res.ope_rows,
        "uplift": res.uplift_rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["solver", "simulator", "hillstrom", "all"])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--arms", type=int, default=5, help="columns including the free control arm")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--models", default="t_learner,x_learner,multi_head,e2e,e2e_perturbed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.what in ("solver", "all"):
        out["solver"] = bench_solver(args.n, args.arms, args.reps)
    if args.what in ("simulator", "all"):
        out["simulator"] = bench_simulator(args.seeds, args.customers, models)
        for r in out["simulator"]["table"]:
            print(json.dumps(r))
        for r in out["simulator"]["e2e_vs_two_stage"]:
            print(json.dumps(r))
    if args.what in ("hillstrom", "all"):
        out["hillstrom"] = bench_hillstrom(models, args.seeds[0])
        for r in out["hillstrom"]["ope"]:
            print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
