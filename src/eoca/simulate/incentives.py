"""The simulator's incentive campaign: heterogeneous responses to incentive arms, a randomized logging policy
with recorded propensities, and the truth of every customer x arm (docs/budget.md).

Latent traits (drawn on their own random stream, so the rest of the world is untouched):

* *engagement* (the world's own trait) raises the untreated conversion: engaged customers buy anyway
  ("sure things"), and gain little from an incentive in absolute terms once their p is high;
* *price sensitivity*, higher for low income band and holdings: the coupon arms' lift grows with it, so some
  customers buy only with a large coupon ("persuadables");
* *message aversion*, higher for older and less active customers: a message's lift falls with it and turns
  negative, which puts those customers off ("sleeping dogs");
* *dormancy*: a share of the least active, most recent customers never buy whatever they get ("lost causes").

Each of these three is a standardised profile signal mixed with independent noise, the noise carrying the share
``trait_noise`` of its variance (what no model can learn from the profile).

Per customer i and arm t (0 = no incentive): ``logit p_it = logit(base_rate) + base_engagement * engagement
+ [t > 0] (lift_t + lift_price_sensitivity_t * sensitivity + lift_aversion_t * aversion)`` (p = 0 if dormant);
given conversion, ``log(amount + 1) ~ Normal(mu_i + amount_lift_t, sigma)`` with ``mu_i = log(median_ticket)
+ ticket_capital * capital_log_sd * z_capital``. Expected value ``p_it (exp(mu + sigma^2/2) - 1)``; expected cost
``cost_t`` (fixed) or ``p_it cost_t`` (on conversion).

The logging policy gives arm t with probability proportional to ``log_weight_t * exp(log_tilt * z_sessions)``
for treated arms and ``control_log_weight`` for arm 0 (z_sessions: standardised log(1 + sessions_30d), an
observable), so propensities differ by customer and are recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import yaml
from scipy.special import expit, logit, ndtri

from eoca.io import write_parquet, write_text
from eoca.simulate.incentive_config import IncentiveConfig
from eoca.simulate.outcomes import expected_amount, pair_uniforms
from eoca.simulate.world import categorical_rows, step_rng

if TYPE_CHECKING:
    from eoca.simulate.simulator import World

__all__ = ["INCENTIVE_FILES", "IncentiveWorld", "generate_incentives", "write_incentives"]

STEP_INCENTIVES = 41
STEP_INCENTIVE_POLICY = 42
_OUTCOME_STREAM_OFFSET = 7_777_777

INCENTIVE_FILES = {
    "arms": "incentive_arms.yaml",
    "log": "incentive_log.parquet",
    "truth": "incentive_truth.parquet",
}
"""Files ``eoca simulate`` adds to the dataset folder when the config has incentives."""


@dataclass(frozen=True)
class IncentiveWorld:
    """A generated campaign. Arrays over customers in dataset order (n,) or customer x arm (n, T + 1).

    Attributes:
        arm_names, cost_rules, unit_costs: per arm (arm 0 = no incentive, cost rule fixed, cost 0).
        arm, propensity, converted, amount, cost: the randomized log (one arm per customer).
        p, mu, sigma, value, expected_cost: the truth of every customer x arm.
        segment: int8 (n,) latent segment for reporting: 0 dormant, 1 sure thing, 2 persuadable,
            3 sleeping dog, 4 other.
    """

    arm_names: tuple[str, ...]
    cost_rules: tuple[str, ...]
    unit_costs: np.ndarray
    arm: np.ndarray
    propensity: np.ndarray
    converted: np.ndarray
    amount: np.ndarray
    cost: np.ndarray
    p: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    value: np.ndarray
    expected_cost: np.ndarray
    segment: np.ndarray


def generate_incentives(world: World, cfg: IncentiveConfig) -> IncentiveWorld:
    """Draw the campaign for the customers of ``world`` (deterministic for the world's seed)."""
    seed = world.config.seed
    lat = world.customers
    cust = world.dataset.customers
    n = lat.engagement.shape[0]
    rng = step_rng(seed, STEP_INCENTIVES)
    nu = cfg.trait_noise

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / max(float(x.std()), 1e-9)

    def trait(signal: np.ndarray) -> np.ndarray:
        return np.sqrt(1.0 - nu) * z(signal) + np.sqrt(nu) * rng.standard_normal(n)

    def column(name: str) -> np.ndarray:
        return np.asarray(cust.column(name).to_numpy(), dtype=np.float64)

    sessions = z(np.log1p(column("sessions_30d")))
    # the profile shows each trait partly: income and holdings (capital) for price sensitivity, age and app use
    # for message aversion, app use and tenure for dormancy
    sens = trait(-(z(column("income_band")) + 0.5 * z(column("log_holdings"))))
    aversion = trait(z(column("age")) - 0.5 * sessions)
    dormant_score = trait(sessions + 0.5 * z(column("tenure_months")))
    dormant = (
        dormant_score < np.quantile(dormant_score, cfg.dormant_fraction)
        if cfg.dormant_fraction > 0
        else np.zeros(n, dtype=bool)
    )

    arms = cfg.arms
    k = len(arms) + 1
    base = logit(cfg.base_rate) + cfg.base_engagement * lat.engagement
    logits = np.empty((n, k))
    logits[:, 0] = base
    for t, a in enumerate(arms, start=1):
        logits[:, t] = base + a.lift + a.lift_price_sensitivity * sens + a.lift_aversion * aversion
    p = expit(logits)
    p[dormant] = 0.0
    mu_i = np.log(cfg.median_ticket) + cfg.ticket_capital * world.config.customers.capital_log_sd * lat.z_capital
    mu = mu_i[:, None] + np.array([0.0, *(a.amount_lift for a in arms)])[None, :]
    sigma = np.full((n, k), cfg.sigma)
    value = p * expected_amount(mu, sigma)
    unit = np.array([0.0, *(a.cost for a in arms)])
    on_conv = np.array([False, *(a.cost_rule == "on_conversion" for a in arms)])
    expected_cost = np.where(on_conv[None, :], p * unit[None, :], unit[None, :])

    # randomized logging policy with customer-specific, recorded propensities
    z_s = sessions
    w = np.empty((n, k))
    w[:, 0] = cfg.control_log_weight
    for t, a in enumerate(arms, start=1):
        w[:, t] = a.log_weight * np.exp(cfg.log_tilt * z_s)
    probs = w / w.sum(axis=1, keepdims=True)
    u = np.asarray(step_rng(seed, STEP_INCENTIVE_POLICY).random(n), dtype=np.float64)
    arm = categorical_rows(np.cumsum(probs, axis=1), np.arange(n), u)
    rows = np.arange(n)
    prop = probs[rows, arm]
    draws = pair_uniforms(rows, arm, seed * 1_000_003 + _OUTCOME_STREAM_OFFSET, n=2)
    conv = draws[0] < p[rows, arm]
    amount = np.zeros(n)
    z = ndtri(draws[1, conv])
    amount[conv] = np.maximum(np.expm1(mu[rows, arm][conv] + sigma[rows, arm][conv] * z), 0.0)
    paid = np.where(on_conv[arm], conv * unit[arm], unit[arm])

    segment = np.full(n, 4, dtype=np.int8)
    treat_gain = value[:, 1:].max(axis=1) - value[:, 0]
    segment[(aversion > 1.0) & (value[:, 1] < value[:, 0])] = 3
    segment[(sens > 1.0) & (treat_gain > value[:, 0])] = 2
    segment[(lat.engagement > 1.0) & (treat_gain <= 0.5 * value[:, 0])] = 1
    segment[dormant] = 0
    return IncentiveWorld(
        arm_names=(cfg.control_name, *(a.name for a in arms)),
        cost_rules=("fixed", *(a.cost_rule for a in arms)),
        unit_costs=unit,
        arm=arm.astype(np.int64),
        propensity=prop,
        converted=conv.astype(np.int8),
        amount=amount,
        cost=paid.astype(np.float64),
        p=p,
        mu=mu,
        sigma=sigma,
        value=value,
        expected_cost=expected_cost,
        segment=segment,
    )


def write_incentives(inc: IncentiveWorld, customer_ids: np.ndarray, folder: str | os.PathLike[str]) -> None:
    """Write the campaign beside a dataset: arms (YAML), the randomized log and the truth (Parquet)."""
    out = Path(folder)
    n, k = inc.p.shape
    arms = [
        {"arm": t, "name": inc.arm_names[t], "cost_rule": inc.cost_rules[t], "cost": float(inc.unit_costs[t])}
        for t in range(k)
    ]
    meta = {
        "arms": arms,
        "design": "randomized; propensity recorded per customer",
        "value": "amount spent in the campaign window (currency units)",
    }
    write_text(yaml.safe_dump(meta, sort_keys=False), out / INCENTIVE_FILES["arms"])
    ids = np.asarray(customer_ids)
    write_parquet(
        pa.table(
            {
                "customer_id": ids,
                "arm": inc.arm,
                "propensity": inc.propensity,
                "converted": inc.converted,
                "amount": inc.amount,
                "cost": inc.cost,
            }
        ),
        out / INCENTIVE_FILES["log"],
    )
    write_parquet(
        pa.table(
            {
                "customer_id": np.repeat(ids, k),
                "arm": np.tile(np.arange(k, dtype=np.int64), n),
                "p": inc.p.ravel(),
                "mu": inc.mu.ravel(),
                "sigma": inc.sigma.ravel(),
                "value": inc.value.ravel(),
                "expected_cost": inc.expected_cost.ravel(),
                "segment": np.repeat(inc.segment, k),
            }
        ),
        out / INCENTIVE_FILES["truth"],
    )
