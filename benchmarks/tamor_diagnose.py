"""Why a TAMOR framework does or does not win on slate value: the measurements behind docs/tamor.md's diagnosis.

On one multi-scenario world (default config, ``--seed``):

* scale of the two slate terms: mean true ETV against mean ``V x P(upgrade)`` over risk-eligible pairs of
  customers who can still upgrade;
* the upgrade weight: true expected amount (per tier) and expected new high-holding customers of the oracle and
  of every framework's slates for each ``--weights`` value (``ETV + w P(upgrade) V``);
* training variance: each framework trained with each ``--train-seeds`` value on the same world;
* where new high-holding customers come from: the expected count split by tier (new / low) and, for the low
  tier, by quartile of the gap to the threshold; and the scenario mix of the lower tiers' slates;
* the upgrade head: predicted over true sum of P(upgrade) and their Spearman correlation over those pairs;
* the user bias: the learned vectors' size and their correlation with each customer's true own propensity;
* how much the frameworks need the data: with ``--train-fractions``, each framework is also trained on a random
  share of the training log's customers (all their rows, every tier alike; the world and its test are unchanged);
* which part of the score loses new high-holding customers (``--decompose``): each framework's slates rebuilt with
  its own ETV and the *true* P(upgrade), and with the true ETV and its own P(upgrade); P(upgrade) rescaled so
  its sum matches the truth (the most a global calibration step can do); and the reliability of P(upgrade) by
  decile of the prediction (true over predicted mean).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tamor_diagnose.py --seed 0
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tamor_diagnose.py --frameworks tamor per_tier --weights 1 \
        --set train.schedule=constant          # the same without the learning-rate decay
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tamor_diagnose.py --seed 2 --frameworks tamor per_tier \
        --train-seeds 2 --weights 1 --decompose  # where the upgrades are lost: ETV or P(upgrade)
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from eoca.tamor.config import TamorConfig, TamorEvalConfig, load_tamor_config
from eoca.tamor.evaluate import build_slates, oracle_scores, output_scores, simulate_next_period, slate_scores
from eoca.tamor.model import TamorOutput
from eoca.tamor.train import WorldTensors, fit_framework
from eoca.tamor.world import MultiScenarioWorld, generate_multi_scenario_world


def _expected(
    world: MultiScenarioWorld, slates: np.ndarray, replications: int
) -> tuple[list[float], float, np.ndarray]:
    """(true expected amount per tier in millions, expected new high-holding customers, each customer's chance to
    become high-holding ``(N,)``) of ``slates``."""
    res = simulate_next_period(
        world,
        {"x": slates},
        control="x",
        oracle=None,
        cfg=TamorEvalConfig(n_bootstrap=0, replications=replications),
    )
    per = res.per_customer["x"]
    return [float(per[world.tier == t, 2].sum()) / 1e6 for t in range(3)], float(per[:, 4].sum()), per[:, 4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frameworks", nargs="+", default=["tamor", "per_tier", "pooled"])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 4.0])
    parser.add_argument(
        "--train-fractions",
        type=float,
        nargs="+",
        default=[1.0],
        help="shares of the training customers each framework is trained on (default: all)",
    )
    parser.add_argument("--set", action="append", default=[], help="a TAMOR config override KEY=VALUE (repeatable)")
    parser.add_argument(
        "--decompose", action="store_true", help="also swap each score part for the truth (see the module doc)"
    )
    args = parser.parse_args()
    if not all(0 < f <= 1 for f in args.train_fractions):
        parser.error("--train-fractions must lie in (0, 1]")
    cfg = load_tamor_config(None, [*args.set, f"seed={args.seed}"])
    world = generate_multi_scenario_world(cfg.world, cfg.seed)
    tensors = WorldTensors.of(world)
    n, m = world.n_customers, world.n_items
    lower = (world.tier < 2)[:, None] & world.eligible()
    true_up, true_etv = world.true_p_upgrade(), world.true_etv()
    value = cfg.rank.upgrade_value
    print(f"seed {args.seed}: tiers {world.tier_counts().tolist()}")
    print(
        f"lower-tier eligible pairs: mean true ETV {true_etv[lower].mean():,.1f}, "
        f"mean V x P(upgrade) {value * true_up[lower].mean():,.1f} (V = {value:,.0f})"
    )
    gap = world.threshold - world.holdings
    low = world.tier == 1
    edges = np.quantile(gap[low], [0.25, 0.5, 0.75])
    quartile = np.searchsorted(edges, gap)
    lower_rows = world.tier < 2
    print(
        "| framework | train seed | w | expected amount, M (new / low / high) | expected new high-holding "
        "| from new / low | low tier by gap quartile (smallest first) | lower tiers' slates by scenario, % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    reps = cfg.evaluation.replications

    def sweep(name: str, tseed: str, out: TamorOutput | None) -> None:
        for w in args.weights:
            rank = cfg.rank.model_copy(update={"upgrade_weight": w})
            scores = oracle_scores(world, rank) if out is None else output_scores(out, world, rank)
            slates = build_slates(scores, world, rank)
            tiers, up, each = _expected(world, slates, reps)
            by_q = " / ".join(f"{each[low & (quartile == q)].sum():.1f}" for q in range(4))
            mix = np.bincount(world.scenario[slates[lower_rows]].ravel(), minlength=4) / slates[lower_rows].size
            print(
                f"| {name} | {tseed} | {w:g} | {sum(tiers):.2f} ({tiers[0]:.2f} / {tiers[1]:.2f} / {tiers[2]:.2f})"
                f" | {up:.1f} | {each[world.tier == 0].sum():.1f} / {each[low].sum():.1f} | {by_q} | "
                + " / ".join(f"{100 * x:.0f}" for x in mix)
                + " |",
                flush=True,
            )

    sweep("oracle", "-", None)
    notes: list[str] = []
    full_log = world.train
    for name, tseed, frac in itertools.product(args.frameworks, args.train_seeds, args.train_fractions):
        t0 = time.perf_counter()
        keep = np.random.default_rng([args.seed, 1313, 11]).random(n) < frac
        world.train = full_log.subset(keep[full_log.customer])
        model = fit_framework(name, world, cfg.train, tseed, tensors)
        world.train = full_log
        out = model.score_matrix(world, tensors)
        p_up = out.p_upgrade.numpy().reshape(n, m).astype(np.float64)
        label = str(tseed) if frac == 1.0 else f"{tseed}, {frac:g} of the log"
        sweep(name, label, out)
        rho = float(spearmanr(p_up[lower], true_up[lower])[0])
        note = (
            f"{name} (train seed {label}, {time.perf_counter() - t0:.0f} s): P(upgrade) predicted / true sum "
            f"{p_up[lower].sum() / true_up[lower].sum():.3f}, Spearman {rho:.3f}"
        )
        net = next(iter(model.nets.values()))
        if net.user_bias is not None and world.own_propensity is not None:
            with torch.no_grad():
                bias = net.user_bias(tensors.user_key).numpy()
            corr = max(abs(np.corrcoef(bias[:, d], world.own_propensity)[0, 1]) for d in range(bias.shape[1]))
            note += f"; user bias mean |b| {np.abs(bias).mean():.3f}, best |corr| with own propensity {corr:.3f}"
        if args.decompose:
            note += "\n  " + _decompose(world, cfg, out, true_etv, true_up, lower)
        notes.append(note)
    print()
    print("\n".join(notes))


def _decompose(
    world: MultiScenarioWorld,
    cfg: TamorConfig,
    out: TamorOutput,
    true_etv: np.ndarray,
    true_up: np.ndarray,
    lower: np.ndarray,
) -> str:
    """Expected new high-holding customers / expected amount (M) of slates built from each mix of this model's and
    the true score parts (``lower``: risk-eligible pairs of customers who can still upgrade), and the reliability
    of the model's P(upgrade) by decile of the prediction over those pairs."""
    n, m = world.n_customers, world.n_items
    etv = out.etv.numpy().reshape(n, m).astype(np.float64)
    up = out.p_upgrade.numpy().reshape(n, m).astype(np.float64) * (world.tier < 2)[:, None]
    ratio = float(up[lower].sum() / true_up[lower].sum())
    cells = []
    for label, e, u in (
        ("own", etv, up),
        ("own ETV + true P(up)", etv, true_up),
        ("true ETV + own P(up)", true_etv, up),
        ("own, P(up) / sum ratio", etv, up / ratio),
    ):
        slates = build_slates(slate_scores(e, u, cfg.rank), world, cfg.rank)
        tiers, count, _ = _expected(world, slates, cfg.evaluation.replications)
        cells.append(f"{label} {count:.1f} / {sum(tiers):.2f}")
    pred, truth = up[lower], true_up[lower]
    decile = np.minimum((np.argsort(np.argsort(pred)) * 10) // pred.size, 9)
    rel = [truth[decile == d].mean() / max(pred[decile == d].mean(), 1e-12) for d in range(10)]
    return (
        "expected new high-holding / amount (M): "
        + "; ".join(cells)
        + f"; P(upgrade) true / predicted by decile (lowest first): {' '.join(f'{r:.2f}' for r in rel)}"
    )


if __name__ == "__main__":
    main()
