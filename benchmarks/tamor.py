"""Issue 13 goals: TAMOR against the pooled, per-tier and STAR baselines and its own ablations, over seeds.

For each seed the default multi-scenario world (``eoca.tamor.config.TamorConfig`` defaults, or ``--config``)
is generated, every framework is trained with one torch thread and the same budget, slates of K items are built
by ``ETV + w P(upgrade) V`` and delivered in a simulated next period with common random numbers. Printed (and,
with ``--json``, saved): per framework totals and % of the oracle, TAMOR's lift over every other framework with a
paired-bootstrap 95% interval per seed and pooled over the seeds (customers resampled within each seed), AUCs on
the smallest tier, training throughput, and the goal verdicts on the true expected metrics.

A seed sets the world *and* the trainings, so the spread of the per-seed lifts holds the training variance that a
bootstrap over customers does not see. The "over seeds" interval is the Student-t interval of the mean of the
per-seed lifts (``eoca.pipeline.seeds.summarise``); the goals are judged on it.

    OMP_NUM_THREADS=1 python benchmarks/tamor.py --seeds 0 1 2 3 4 5 6 7 --jobs 2   # the documented tables
    OMP_NUM_THREADS=1 python benchmarks/tamor.py --seeds 0 --customers 10000   # a quick look
    OMP_NUM_THREADS=1 python benchmarks/tamor.py --set rank.contracts=proportional   # slates under contracts
    python benchmarks/tamor.py --combine a.json b.json   # verdicts over the seeds of runs made in chunks
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from eoca.pipeline.seeds import summarise
from eoca.tamor.config import TIER_NAMES, load_tamor_config
from eoca.tamor.evaluate import METRICS, PeriodResult, paired_lift
from eoca.tamor.experiment import run_comparison
from eoca.tamor.model import VARIANTS

FRAMEWORKS = [
    "tamor",
    "pooled",
    "per_tier",
    "star",
    "tamor_no_tier",
    "tamor_no_scenario",
    "tamor_no_bias",
    "tamor_no_link",
    "tamor_shared_towers",
    "tamor_previous",
    "tamor_pooled_init",
    "tamor_balanced",
]
LIFT_METRICS = ("expected_new_high_holding", "expected_amount", "new_high_holding", "amount", "conversions")
GOAL_METRICS = ("expected_new_high_holding", "expected_amount")
GOAL_REFERENCES = ("pooled", "per_tier")


def _fmt(x: float, digits: int = 1) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def one_seed(
    seed: int, config: str | None, overrides: list[str], frameworks: list[str]
) -> tuple[dict[str, Any], PeriodResult]:
    """Everything one seed measures, and its simulated period (for the lifts pooled over seeds)."""
    cfg = load_tamor_config(config, [*overrides, f"seed={seed}", f"frameworks={frameworks}", "control=pooled"])
    t0 = time.perf_counter()
    res = run_comparison(cfg)
    period = res.period
    assert period is not None
    smallest = min(range(len(TIER_NAMES)), key=lambda t: res.tier_counts[t])
    row = {
        "seconds": time.perf_counter() - t0,
        "tier_counts": res.tier_counts,
        "totals": period.totals,
        "oracle_share": {n: period.oracle_share(n) for n in period.per_customer},
        "tamor_lift": {ref: period.lift("tamor", ref) for ref in frameworks if ref != "tamor"},
        "smallest_tier": TIER_NAMES[smallest],
        "smallest_tier_auc": {
            n: {k: v for k, v in rows[1 + smallest].items() if k.startswith("auc")} for n, rows in res.offline.items()
        },
        "offline": res.offline,
        "throughput": res.throughput,
        "throughput_cpu": res.throughput_cpu,
    }
    return row, period


def run(
    seeds: list[int], config: str | None, overrides: list[str], frameworks: list[str] = FRAMEWORKS, jobs: int = 1
) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": {}, "frameworks": frameworks, "jobs": jobs}
    periods: list[PeriodResult] = []
    if jobs > 1:
        # spawn: a forked child would inherit torch's thread pools; each worker trains with one thread
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(one_seed, seed, config, overrides, frameworks) for seed in seeds]
            results = [f.result() for f in futures]
    else:
        results = [one_seed(seed, config, overrides, frameworks) for seed in seeds]
    for seed, (row, period) in zip(seeds, results, strict=True):
        out["seeds"][seed] = row
        periods.append(period)
        print(f"seed {seed}: {row['seconds']:.0f} s", flush=True)
    out["pooled_lift"] = {ref: paired_lift(periods, "tamor", ref) for ref in frameworks if ref != "tamor"}
    out["over_seeds"] = {
        ref: {
            metric: summarise([out["seeds"][s]["tamor_lift"][ref][metric][0] for s in seeds]) for metric in LIFT_METRICS
        }
        for ref in frameworks
        if ref != "tamor"
    }
    return out


def _over(summary: dict[str, float | None]) -> str:
    mean, lo, hi = summary["mean"], summary["lo"], summary["hi"]
    if mean is None:
        return "nan"
    return f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else _fmt(mean)


def report(out: dict[str, Any]) -> str:
    lines: list[str] = []
    frameworks: list[str] = out["frameworks"]
    seeds = list(out["seeds"])
    first = out["seeds"][seeds[0]]
    lines.append(f"Tier sizes (customers new/low/high), seed {seeds[0]}: {first['tier_counts']}\n")
    lines.append(
        "### TAMOR's lift over each framework in the simulated next period (%, 95% paired-bootstrap interval)\n"
    )
    lines.append(
        "| reference | metric | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | pooled over seeds (customers resampled) | mean over seeds (t interval) |"
    )
    lines.append("|---|---|" + "---|" * (len(seeds) + 2))
    for ref in frameworks[1:]:
        for metric in LIFT_METRICS:
            lifts = [out["seeds"][s]["tamor_lift"][ref][metric] for s in seeds] + [out["pooled_lift"][ref][metric]]
            cells = [f"{_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}]" for p, lo, hi in lifts]
            cells.append(_over(out["over_seeds"][ref][metric]))
            lines.append(f"| {ref} | {metric} | " + " | ".join(cells) + " |")
    lines.append("\n### Per seed: true expected amount (M) / expected new high-holding customers\n")
    lines.append("| framework | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    lines.append("|---|" + "---|" * len(seeds))
    for name in [*frameworks, "oracle"]:
        cells = [
            f"{out['seeds'][s]['totals'][name]['expected_amount'] / 1e6:.2f} / "
            f"{out['seeds'][s]['totals'][name]['expected_new_high_holding']:.1f}"
            for s in seeds
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("\n### Totals of the simulated period (mean over seeds) and % of the oracle\n")
    lines.append(
        "| framework | " + " | ".join(METRICS) + " | expected amount % oracle | expected new high-holding % oracle |"
    )
    lines.append("|---|" + "---|" * (len(METRICS) + 2))
    for name in [*frameworks, "oracle"]:
        tot = [sum(out["seeds"][s]["totals"][name][m] for s in seeds) / len(seeds) for m in METRICS]
        share = [
            sum(out["seeds"][s]["oracle_share"][name][m] for s in seeds) / len(seeds)
            for m in ("expected_amount", "expected_new_high_holding")
        ]
        lines.append(
            f"| {name} | " + " | ".join(_fmt(v, 0) for v in tot) + " | " + " | ".join(_fmt(v) for v in share) + " |"
        )
    tier = first["smallest_tier"]
    lines.append(f"\n### AUC on the smallest tier ({tier}), logged test period\n")
    lines.append("| framework | " + " | ".join(f"click s{s} | purchase s{s}" for s in seeds) + " |")
    lines.append("|---|" + "---|---|" * len(seeds))
    for name in frameworks:
        cells = []
        for s in seeds:
            a = out["seeds"][s]["smallest_tier_auc"][name]
            cells += [_fmt(a["auc_click"], 4), _fmt(a["auc_purchase"], 4)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\n### Offline AUCs per tier and scenario (seed {seeds[0]}; click / purchase / upgrade)\n")
    groups = [f"{r['group']}={r['value']}" for r in first["offline"]["tamor"]]
    lines.append("| framework | " + " | ".join(groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for name in frameworks:
        cells = [
            f"{_fmt(r['auc_click'], 3)} / {_fmt(r['auc_purchase'], 3)} / {_fmt(r['auc_upgrade'], 3)}"
            for r in first["offline"][name]
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("\n### Training throughput, samples/s, one torch thread (mean over seeds)\n")
    lines.append("| " + " | ".join(frameworks) + " |")
    lines.append("|" + "---|" * len(frameworks))
    for key in ("throughput", "throughput_cpu"):
        lines.append(
            "| "
            + " | ".join(_fmt(sum(out["seeds"][s][key][n] for s in seeds) / len(seeds), 0) for n in frameworks)
            + " |"
        )
    lines.append("(first row per wall-clock second, second row per CPU-second of the training process)")
    lines.append(
        "\n### Goals: TAMOR's lift with its 95% interval above zero (true expected metrics; the verdict is the "
        "interval over seeds, which holds the training variance)\n"
    )
    lines.append(
        "| reference | metric | seeds with interval above zero | pooled over seeds (customers resampled) "
        "| mean over seeds (t interval) | verdict |"
    )
    lines.append("|---|---|---|---|---|---|")
    for ref in (r for r in GOAL_REFERENCES if r in frameworks):
        for metric in GOAL_METRICS:
            above = sum(out["seeds"][s]["tamor_lift"][ref][metric][1] > 0 for s in seeds)
            p, lo, hi = out["pooled_lift"][ref][metric]
            over = out["over_seeds"][ref][metric]
            verdict = "above zero" if over["lo"] is not None and over["lo"] > 0 else "not above zero"
            lines.append(
                f"| {ref} | {metric} | {above} of {len(seeds)} | {_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}] "
                f"| {_over(over)} | {verdict} |"
            )
    return "\n".join(lines)


def combine(paths: list[Path]) -> str:
    """Goal verdicts over the seeds of several ``--json`` files (runs split into chunks of seeds): per-seed lifts
    with their customer-bootstrap intervals, totals and the mean over all seeds with its Student-t interval. The
    interval pooled over seeds needs every seed's customers and is not recomputed here."""
    seeds: dict[str, dict[str, Any]] = {}
    frameworks: list[str] = []
    for path in paths:
        part = json.loads(path.read_text(encoding="utf-8"))
        if frameworks and part["frameworks"] != frameworks:
            raise SystemExit(f"{path}: frameworks {part['frameworks']} differ from {frameworks}")
        frameworks = part["frameworks"]
        for seed, row in part["seeds"].items():
            if seed in seeds:
                raise SystemExit(f"{path}: seed {seed} appears in two files")
            seeds[seed] = row
    order = sorted(seeds, key=int)
    refs = [r for r in frameworks if r != "tamor"]
    lines = [f"Seeds {', '.join(order)} ({len(order)}), frameworks {frameworks}\n"]
    heads = " | ".join(f"seed {s}" for s in order)
    lines.append(f"| reference | metric | {heads} | mean over seeds (t interval) |")
    lines.append("|---|---|" + "---|" * (len(order) + 1))
    verdicts = []
    for ref in refs:
        for metric in LIFT_METRICS:
            lifts = [seeds[s]["tamor_lift"][ref][metric] for s in order]
            over = summarise([p for p, _, _ in lifts])
            cells = [f"{_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}]" for p, lo, hi in lifts]
            lines.append(f"| {ref} | {metric} | " + " | ".join(cells) + f" | {_over(over)} |")
            if ref in GOAL_REFERENCES and metric in GOAL_METRICS:
                above = sum(lo > 0 for _, lo, _ in lifts)
                verdict = "above zero" if over["lo"] is not None and over["lo"] > 0 else "not above zero"
                verdicts.append(f"| {ref} | {metric} | {above} of {len(order)} | {_over(over)} | {verdict} |")
    lines.append(f"\n| framework | {heads} | mean % of oracle (amount / upgrades) |")
    lines.append("|---|" + "---|" * (len(order) + 1))
    for name in [*frameworks, "oracle"]:
        cells = [
            f"{seeds[s]['totals'][name]['expected_amount'] / 1e6:.2f} / "
            f"{seeds[s]['totals'][name]['expected_new_high_holding']:.1f}"
            for s in order
        ]
        share = [
            sum(seeds[s]["oracle_share"][name][m] for s in order) / len(order)
            for m in ("expected_amount", "expected_new_high_holding")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(share[0])} / {_fmt(share[1])} |")
    lines.append("\n| reference | metric | seeds with interval above zero | mean over seeds (t interval) | verdict |")
    lines.append("|---|---|---|---|---|")
    lines += verdicts
    if "per_tier" in frameworks:
        lines.append("\nSmallest tier, TAMOR's AUC minus the per-tier models' (mean over seeds, t interval):")
        for key in ("auc_click", "auc_purchase"):
            diffs = [
                seeds[s]["smallest_tier_auc"]["tamor"][key] - seeds[s]["smallest_tier_auc"]["per_tier"][key]
                for s in order
            ]
            over = summarise(diffs)
            lines.append(
                f"{key}: {_over({k: None if v is None else 1000 * v for k, v in over.items()})} (x 1000), "
                f"{sum(d >= 0 for d in diffs)} of {len(order)} seeds not below"
            )
    for key, label in (("throughput", "samples/s"), ("throughput_cpu", "samples per CPU-second")):
        if not all(key in seeds[s] for s in order):
            continue
        rates = {n: [seeds[s][key][n] for s in order] for n in frameworks}
        lines.append(
            f"\nTraining throughput, {label} (mean over seeds; min-max): "
            + "; ".join(
                f"{n} {_fmt(sum(v) / len(v), 0)} ({_fmt(min(v), 0)}-{_fmt(max(v), 0)})" for n, v in rates.items()
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default=None, help="a TAMOR config YAML (default: built-in defaults)")
    parser.add_argument("--customers", type=int, default=None, help="override world.n_customers")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--set", action="append", default=[], help="a TAMOR config override KEY=VALUE (repeatable)")
    parser.add_argument("--frameworks", nargs="+", default=FRAMEWORKS, help="tamor first; default: all")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (one torch thread each)")
    parser.add_argument(
        "--combine", type=Path, nargs="+", default=None, help="only combine these --json files (chunks of seeds)"
    )
    args = parser.parse_args()
    if args.combine:
        print(combine(args.combine))
        return
    if args.frameworks[0] != "tamor" or not set(args.frameworks) <= set(VARIANTS):
        parser.error(f"--frameworks must start with tamor and name frameworks of {list(VARIANTS)}")
    overrides = [f"world.n_customers={args.customers}"] if args.customers else []
    overrides += args.set
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    out = run(args.seeds, args.config, overrides, args.frameworks, args.jobs)
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
