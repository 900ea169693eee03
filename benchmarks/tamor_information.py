"""What a customer's own history could add to TAMOR on the multi-scenario world: the ceiling, measured with the
world's truth (no training), for the information per-tier models do not have.

Per-tier (and pooled) networks see a customer only through the observed features; TAMOR's user bias can also
learn from that customer's logged exposures. In the world, two latent customer terms are not in the features:
the own propensity (one logit shift on click and conversion) and a taste per scenario (click, conversion and
log amount). For each ``--seeds`` world this prints the true expected amount and expected new high-holding
customers of slates ranked (``ETV + w P(upgrade) V``, default rank config) by:

* ``oracle``: the true scores (every latent term known);
* ``no taste`` / ``no propensity``: the true scores of the same world with that term set to zero (what a model
  that knows everything except that term could do at best);
* ``taste from history``: the posterior expectation of the scores given each customer's logged training
  exposures (clicks, conversions and amounts per scenario), every other term known: the best any model that
  learns the taste from the customer's own history can do. The posterior is computed on a grid of
  ``GRID`` taste values per (customer, scenario) under the world's normal prior.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tamor_information.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import expit, logit, ndtr

from eoca.tamor.config import SCENARIO_NAMES, TamorEvalConfig, load_tamor_config
from eoca.tamor.evaluate import build_slates, oracle_scores, simulate_next_period
from eoca.tamor.world import MultiScenarioWorld, generate_multi_scenario_world

GRID = 61
"""Taste values of the posterior grid (spanning +-5 prior sd)."""
CVR_TASTE, AMOUNT_TASTE = 0.5, 0.2
"""Loadings of the scenario taste on the conversion logit and the log amount (click: 1), as in
``eoca.tamor.world.generate_multi_scenario_world``."""


def _expected(world: MultiScenarioWorld, slates: np.ndarray) -> tuple[float, float]:
    """(true expected amount in millions, expected new high-holding customers) of ``slates``."""
    res = simulate_next_period(
        world, {"x": slates}, control="x", oracle=None, cfg=TamorEvalConfig(n_bootstrap=0, replications=8)
    )
    per = res.per_customer["x"]
    return float(per[:, 2].sum()) / 1e6, float(per[:, 4].sum())


def history_scores(
    world: MultiScenarioWorld, flat: MultiScenarioWorld, sd: float, rank_w: float, value: float
) -> np.ndarray:
    """Slate scores float64 ``(N, M)``: the posterior expectation of ``ETV + rank_w P(upgrade) value`` given the
    training log, with ``flat`` the same world without scenario taste (its truth is the taste-free part of every
    logit and log amount) and ``sd`` the prior sd of a taste."""
    n, m = world.n_customers, world.n_items
    grid = np.linspace(-5 * sd, 5 * sd, GRID)
    log_post = np.broadcast_to(-0.5 * (grid / sd) ** 2, (n, len(SCENARIO_NAMES), GRID)).copy()  # (N, S, G)
    zc, zv = logit(flat.p_click.astype(np.float64)), logit(flat.p_cvr.astype(np.float64))
    log = world.train
    c, i = log.customer, log.item
    s = world.scenario[i]
    a_c = zc[c, i][:, None] + grid[None, :]
    ll = np.where(log.click[:, None] > 0, -np.logaddexp(0, -a_c), -np.logaddexp(0, a_c))
    clicked = log.click > 0
    a_v = zv[c, i][:, None] + CVR_TASTE * grid[None, :]
    ll_v = np.where(log.convert[:, None] > 0, -np.logaddexp(0, -a_v), -np.logaddexp(0, a_v))
    ll = ll + np.where(clicked[:, None], ll_v, 0.0)
    bought = log.convert > 0
    mu = flat.mu.astype(np.float64)[c, i][:, None] + AMOUNT_TASTE * grid[None, :]
    la = np.log(np.where(bought, log.amount, 1.0))[:, None]
    ll = ll + np.where(bought[:, None], -0.5 * ((la - mu) / world.sigma) ** 2, 0.0)
    np.add.at(log_post, (c, s), ll)
    post = np.exp(log_post - log_post.max(axis=2, keepdims=True))
    post /= post.sum(axis=2, keepdims=True)
    scores = np.zeros((n, m))
    gap = np.maximum(world.threshold - world.holdings, 1e-9)
    for j in range(m):
        ps = post[:, world.scenario[j], :]  # (N, G)
        p = expit(zc[:, j][:, None] + grid) * expit(zv[:, j][:, None] + CVR_TASTE * grid)
        mu_j = flat.mu[:, j].astype(np.float64)[:, None] + AMOUNT_TASTE * grid
        etv = p * np.exp(mu_j + 0.5 * world.sigma**2)
        r = world.retention[j]
        with np.errstate(divide="ignore"):
            reach = ndtr((mu_j + np.log(r) - np.log(gap)[:, None]) / world.sigma) if r > 0 else 0.0 * mu_j
        up = np.where((world.tier < 2)[:, None], p * reach, 0.0)
        scores[:, j] = (ps * (etv + rank_w * value * up)).sum(axis=1)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="a TAMOR config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    print("| seed | slates ranked by | expected amount, M | expected new high-holding |")
    print("|---|---|---|---|")
    for seed in args.seeds:
        cfg = load_tamor_config(None, [*args.set, f"seed={seed}"])
        world = generate_multi_scenario_world(cfg.world, seed)
        # Zeroing an sd keeps every generator's stream, so all other draws of the world are identical.
        flat = generate_multi_scenario_world(cfg.world.model_copy(update={"preference_sd": 0.0}), seed)
        level = generate_multi_scenario_world(cfg.world.model_copy(update={"user_bias_sd": 0.0}), seed)
        rows = {
            "oracle": oracle_scores(world, cfg.rank),
            "no taste": oracle_scores(flat, cfg.rank),
            "no propensity": oracle_scores(level, cfg.rank),
        }
        rows["taste from history"] = history_scores(
            world, flat, cfg.world.preference_sd, cfg.rank.upgrade_weight, cfg.rank.upgrade_value
        )
        for label, scores in rows.items():
            amount, ups = _expected(world, build_slates(scores, world, cfg.rank))
            print(f"| {seed} | {label} | {amount:.2f} | {ups:.1f} |", flush=True)


if __name__ == "__main__":
    main()
