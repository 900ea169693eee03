"""Decision quality of the model zoo (issue 9): how close each model's argmax-ETV choice comes to the oracle's.

On a simulated world (default: the packaged default world, 100,000 customers x 8 funds, seed 0), every model
trains once per seed with the capped-epoch config of docs/models.md run B (each epoch a fresh random subset of
65,536 training rows) and one torch thread, through :func:`eoca.pipeline.seeds.evaluate_seeds`. Reported per
model, as mean, sd and 95% t-interval over the seeds:

* the true value of the argmax policy as % of the oracle's (every test customer gets its eligible fund with
  the highest predicted ETV; the simulator's true ETV of those choices over the true ETV of the oracle's),
* AUC of conversion on the test exposures,
* amount calibration: per fund, the mean predicted ``E[amount | convert]`` over the test customers divided by
  the mean true one (the simulator's ``etv / p``), both weighted by the true conversion probability; the worst
  fund's ratio is shown (goal: within 0.8..1.2), and per seed how many funds are within 0.8..1.2 (the mean
  over seeds of each fund's ratio can look calibrated while every seed misses in a different direction),
* training throughput (samples/s, mean over epochs).

    python benchmarks/decisions.py --data world --out bench_decisions            # 3 seeds, the issue's models
    python benchmarks/decisions.py --data w20k --seeds 0 --models esmm,gbdt      # a quick look
    python benchmarks/decisions.py ... --results benchmarks/RESULTS.md           # also (re)write the section

The raw rows go to ``OUT/decisions.json`` and the table to ``OUT/decisions.md``; with ``--results`` the section
"## Decisions (issue 9)" of that file is replaced (appended when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SECTION = "## Decisions (issue 9)"
DEFAULT_MODELS = "esmm,esdpm_ncg,esdpm,gbdt"
AMOUNT_BAND = (0.8, 1.2)
"""The issue's calibration goal: a fund's mean predicted / true amount within 20%."""


def amount_ratios(trained: Any, dataset: Any) -> list[float]:
    """Per fund: mean predicted ``E[amount | convert]`` / mean true one over the test customers, both weighted by
    the true conversion probability (the converters the fund would get: the population any amount model sees;
    unweighted, rare-converting pairs with huge true sigma dominate a mean no data can check). NaN if no amount."""
    from eoca.simulate import truth_arrays

    exp = dataset.exposures
    test = dataset.split_mask("test")
    customers = np.unique(dataset.customer_index(exp.column("customer_id"))[test])
    k = dataset.n_funds
    pred = trained.predict_pairs(dataset, np.repeat(customers, k), np.tile(np.arange(k), customers.size))
    if "amount" not in pred:
        return [float("nan")] * k
    amount = np.asarray(pred["amount"], dtype=np.float64).reshape(customers.size, k)
    truth = truth_arrays(dataset)
    true_amount = truth.etv[customers] / np.maximum(truth.p[customers], 1e-300)
    return p_weighted_ratios(amount, true_amount, truth.p[customers])


def p_weighted_ratios(amount: np.ndarray, true_amount: np.ndarray, p_true: np.ndarray) -> list[float]:
    """Per fund (column of the ``[customers, funds]`` grids): sum of ``p_true * amount`` / sum of ``p_true *
    true_amount``, the ratio :func:`amount_ratios` reports (also used by ``benchmarks/amount_calibration.py``)."""
    return [
        float((p_true[:, f] * amount[:, f]).sum() / (p_true[:, f] * true_amount[:, f]).sum())
        for f in range(amount.shape[1])
    ]


def esj_negative_gap(trained: Any, dataset: Any) -> dict[str, float] | None:
    """For a lognormal head: min ``mu`` and max ``p * phi0`` (``phi0 = N(0; mu, sigma)``) over every test customer
    x fund, unguarded: how far ESJ's negative term ``log(1 - p + p phi0)`` can be from ZILN's ``log(1 - p)``."""
    exp = dataset.exposures
    customers = np.unique(dataset.customer_index(exp.column("customer_id"))[dataset.split_mask("test")])
    k = dataset.n_funds
    cust, fund = np.repeat(customers, k), np.tile(np.arange(k), customers.size)
    pred = trained.predict_pairs(dataset, cust, fund, guarded=False)
    if "mu" not in pred or "sigma" not in pred:
        return None
    mu, sigma, p = (np.asarray(pred[x], dtype=np.float64) for x in ("mu", "sigma", "p"))
    phi0 = np.exp(-(mu**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return {"min_mu": float(mu.min()), "max_p_phi0": float((p * phi0).max()), "mean_sigma": float(sigma.mean())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from eoca.data import open_dataset
    from eoca.pipeline.seeds import evaluate_seeds, parse_seeds, summarise
    from eoca.training import TrainedModel

    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dataset = open_dataset(args.data)
    config: dict[str, Any] = {"num_threads": args.threads, "selection": args.selection}
    if args.max_train_rows:
        config["max_train_rows"] = args.max_train_rows
    if args.sets:
        from eoca.config import apply_overrides

        config = apply_overrides(config, args.sets)
    out = Path(args.out)
    t0 = time.perf_counter()
    result = evaluate_seeds(dataset, models, out, seeds=seeds, config=config, ensemble=args.ensemble, progress=False)
    wall = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for row in result.rows:
        name = str(row["model"])
        entry: dict[str, Any] = {
            "model": name,
            "share": row["argmax_share_of_oracle"],
            "auc": row["auc"],
        }
        if name in models:
            ratios, speeds, gaps = [], [], []
            for seed in seeds:
                trained = TrainedModel.load(out / "runs" / name / f"seed={seed}")
                ratios.append(amount_ratios(trained, dataset))
                gaps.append(esj_negative_gap(trained, dataset))
                speeds.append(float(np.mean([h["samples_per_s"] for h in trained.history])))
            worst = [max(r, key=lambda x: abs(np.log(x)) if np.isfinite(x) else -1.0) for r in ratios]
            entry["amount_ratio_per_fund"] = np.mean(np.asarray(ratios), axis=0).tolist()
            entry["amount_ratio_per_seed"] = ratios
            entry["funds_within_20pct"] = [int(sum(AMOUNT_BAND[0] <= x <= AMOUNT_BAND[1] for x in r)) for r in ratios]
            entry["worst_amount_ratio"] = summarise(worst)
            entry["samples_per_s"] = summarise(speeds)
            entry["esj_gap_per_seed"] = gaps
            entry["per_seed_share"] = [m["argmax_share_of_oracle"] for m in result.per_seed[name]]
        rows.append(entry)
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible (shared sandbox), torch threads "
        f"{args.threads}",
        "data": args.data,
        "seeds": seeds,
        "config": config,
        "wall_s": wall,
        "rows": rows,
    }


def _pct(s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "—"
    text = f"{100 * s['mean']:.1f}"
    if s.get("sd") is not None:
        text += f" ± {100 * s['sd']:.1f} [{100 * s['lo']:.1f}, {100 * s['hi']:.1f}]"
    return text


def _num(s: dict[str, Any] | None, digits: int) -> str:
    if not s or s.get("mean") is None:
        return "—"
    text = f"{s['mean']:.{digits}f}"
    if s.get("sd") is not None:
        text += f" ± {s['sd']:.{digits}f}"
    return text


def render(res: dict[str, Any]) -> str:
    lines = [
        SECTION,
        "",
        f"`{res['command']}` — {res['date']}, {res['machine']}; {len(res['seeds'])} seeds "
        f"({', '.join(map(str, res['seeds']))}), config {res['config']}, {res['wall_s']:.0f} s wall.",
        "",
        "| model | % of oracle true value (mean ± sd [95% CI]) | per seed | AUC | worst fund amount ratio "
        "(pred/true) | funds within 20% (per seed) | train samples/s |",
        "|---|---:|---|---:|---:|---|---:|",
    ]
    for r in res["rows"]:
        per = ", ".join(f"{100 * v:.1f}" for v in r.get("per_seed_share", []) if v is not None)
        k = len(r.get("amount_ratio_per_fund", []))
        within = ", ".join(f"{n}/{k}" for n in r.get("funds_within_20pct", [])) or "—"
        lines.append(
            f"| {r['model']} | {_pct(r['share'])} | {per} | {_num(r['auc'], 4)} | "
            f"{_num(r.get('worst_amount_ratio'), 2)} | {within} | {_num(r.get('samples_per_s'), 0)} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if SECTION in old:
        start = old.index(SECTION)
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[nxt + 1 :] if nxt >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a simulated dataset folder (needs the truth table)")
    ap.add_argument("--out", required=True, help="output folder (runs are reused from OUT/runs when present)")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-train-rows", type=int, default=65536, help="rows per epoch (0 = all; run B caps)")
    ap.add_argument("--selection", default="auto", choices=["auto", "loss", "ips"])
    ap.add_argument("--ensemble", action="store_true")
    ap.add_argument("--results", type=Path, help="replace the section of this RESULTS.md")
    from train import add_set_args, check_sets  # benchmarks/train.py, beside this script

    add_set_args(
        ap,
        "e.g. --set sequence_length=4 --set params.amount_from_history=false; use a new --out, since runs "
        "already there are reused",
    )
    args = ap.parse_args()
    check_sets(ap, args.sets)
    res = run(args)
    out = Path(args.out)
    (out / "decisions.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    text = render(res)
    (out / "decisions.md").write_text(text, encoding="utf-8")
    print(text)
    if args.results:
        write_section(args.results, text)


if __name__ == "__main__":
    main()
