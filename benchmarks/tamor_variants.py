"""Screen TAMOR variants on chosen worlds: expected new high-holding customers per tier and expected amount per tier.

For each world ``--seeds`` (default multi-scenario world, one per seed) every framework spec is trained once and its
slates are delivered in the simulated next period (8 replications, common random numbers, no bootstrap), beside
the oracle. A spec is a framework name (:data:`eoca.tamor.model.VARIANTS`), optionally with training overrides after
``@`` (``;``-separated ``key=value`` of the ``tamor.train`` section, e.g. ``per_tier@ema_decay=0.99``) and a
training-seed offset after ``#`` (``tamor#100`` trains with seed ``world seed + 100``; without it the training seed
is the world seed, as in ``benchmarks/tamor.py``). Per lower tier (new, low) it also measures the estimates the
slates are built from, over the risk-eligible pairs: the correlation of log predicted and log true purchase
probability; the same within each customer (log probabilities centred on the customer's mean over their eligible
items: how well one customer's items are ordered, which is what a slate uses); their sum ratio; the RMSE of the
predicted log-amount location ``mu`` against the true one; and the share of the oracle's slate items the
framework's slate holds. Prints one JSON line per (world, spec) and a table at the end.
It measures one training per spec and world: cheap enough to look at worlds one by one, not a confirmation.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tamor_variants.py --seeds 23 29 31 \\
        --specs per_tier tamor tamor_pooled_init tamor_balanced "tamor_pooled_init@ema_decay=0.99"
"""

from __future__ import annotations

import argparse
import json
import time
from typing import cast

import numpy as np

from eoca.tamor.config import TIER_NAMES, TamorEvalConfig, load_tamor_config
from eoca.tamor.evaluate import build_slates, oracle_scores, output_scores, simulate_next_period
from eoca.tamor.train import WorldTensors, fit_framework
from eoca.tamor.world import generate_multi_scenario_world


def parse_spec(spec: str) -> tuple[str, list[str], int]:
    """``name@k=v;k=v#offset`` -> (framework name, ``train.k=v`` overrides, training-seed offset)."""
    body, _, offset = spec.partition("#")
    name, _, overrides = body.partition("@")
    return name, [f"train.{o}" for o in overrides.split(";") if o], int(offset or 0)


def _centred(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """``values (N, M)`` less each row's mean over its eligible entries ``eligible (N, M)``."""
    count = np.maximum(eligible.sum(axis=1, keepdims=True), 1)
    return values - np.where(eligible, values, 0.0).sum(axis=1, keepdims=True) / count


def screen(seed: int, specs: list[str], base: list[str]) -> list[dict[str, object]]:
    """One world: every spec trained and simulated; rows of expected new high-holding customers (total and for the
    new and low tiers) and expected amount per tier in millions."""
    cfg = load_tamor_config(None, base)
    world = generate_multi_scenario_world(cfg.world, seed)
    tensors = WorldTensors.of(world)
    slates = {}
    accuracy: dict[str, dict[str, list[float]]] = {}
    eligible = world.eligible()
    true_p = world.true_p_convert()
    for spec in specs:
        name, overrides, offset = parse_spec(spec)
        train = load_tamor_config(None, [*base, *overrides]).train
        t0 = time.perf_counter()
        model = fit_framework(name, world, train, seed + offset, tensors)
        out = model.score_matrix(world, tensors)
        slates[spec] = build_slates(output_scores(out, world, cfg.rank), world, cfg.rank)
        p_hat = out.p.numpy().reshape(true_p.shape)
        mu_hat = out.mu.numpy().reshape(true_p.shape)
        acc: dict[str, list[float]] = {"p_corr": [], "p_corr_within": [], "p_ratio": [], "mu_rmse": []}
        within_hat, within_true = _centred(np.log(p_hat), eligible), _centred(np.log(true_p), eligible)
        for t in range(2):
            pairs = eligible & (world.tier == t)[:, None]
            log_hat, log_true = np.log(p_hat[pairs]), np.log(true_p[pairs])
            acc["p_corr"].append(float(np.corrcoef(log_hat, log_true)[0, 1]))
            acc["p_corr_within"].append(float(np.corrcoef(within_hat[pairs], within_true[pairs])[0, 1]))
            acc["p_ratio"].append(float(p_hat[pairs].sum() / true_p[pairs].sum()))
            acc["mu_rmse"].append(float(np.sqrt(np.mean((mu_hat[pairs] - world.mu[pairs]) ** 2))))
        accuracy[spec] = acc
        print(f"# world {seed}: {spec} trained and scored in {time.perf_counter() - t0:.0f} s", flush=True)
    slates["oracle"] = build_slates(oracle_scores(world, cfg.rank), world, cfg.rank)
    period = simulate_next_period(
        world,
        slates,
        control=specs[0],
        oracle=None,
        cfg=TamorEvalConfig(n_bootstrap=0, replications=cfg.evaluation.replications),
        seed=seed,
    )
    oracle = np.sort(slates["oracle"], axis=1)
    rows: list[dict[str, object]] = []
    for spec, per in period.per_customer.items():
        up = [float(per[world.tier == t, 4].sum()) for t in range(2)]
        amount = [float(per[world.tier == t, 2].sum()) / 1e6 for t in range(len(TIER_NAMES))]
        rows.append(
            {
                "seed": seed,
                "spec": spec,
                "new_high_holding": round(sum(up), 1),
                "from_new": round(up[0], 1),
                "from_low": round(up[1], 1),
                "amount_m": [round(a, 2) for a in amount],
            }
        )
        if spec in accuracy:
            own = np.sort(slates[spec], axis=1)
            shared = (own[:, :, None] == oracle[:, None, :]).any(axis=2).mean(axis=1)
            acc = accuracy[spec]
            acc["slate_overlap"] = [float(shared[world.tier == t].mean()) for t in range(2)]
            rows[-1].update({k: [round(v, 3) for v in vals] for k, vals in acc.items()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="worlds to screen on")
    parser.add_argument("--specs", nargs="+", required=True, help="framework specs (see the module doc)")
    parser.add_argument("--set", action="append", default=[], help="a TAMOR config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    rows = [r for seed in args.seeds for r in screen(seed, args.specs, args.set)]
    print(
        "\n| world | spec | new high-holding (from new / low) | expected amount, M (new / low / high) "
        "| corr log p (new / low) | within customers | p sum ratio | mu RMSE | oracle slate items held |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        amounts = " / ".join(f"{a:.2f}" for a in cast(list[float], r["amount_m"]))
        upgrades = f"{r['new_high_holding']} ({r['from_new']} / {r['from_low']})"
        acc = " | ".join(
            " / ".join(f"{v:.3f}" for v in cast(list[float], r[k])) if k in r else ""
            for k in ("p_corr", "p_corr_within", "p_ratio", "mu_rmse", "slate_overlap")
        )
        print(f"| {r['seed']} | {r['spec']} | {upgrades} | {amounts} | {acc} |")


if __name__ == "__main__":
    main()
