"""Step 6 of ``eoca run``: the online evaluation of every framework's allocation.

* Simulated data: EOCA Table 3 as a simulated A/B test. Outcomes of the delivery period (the period after the
  last logged one, a random stream no logged outcome used) are drawn from the true p, mu and sigma with common
  random numbers, so a pair delivered by two frameworks has the same outcome in both.
* Real randomized data (exposures with a logged ``propensity``, e.g. Hillstrom): the value of each framework's
  policy on the held-out customers by self-normalised inverse propensity weighting, next to sending everyone
  the single best arm (chosen on the training split) and to random assignment.
* Anything else: no online evaluation is possible; the result says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.evaluation.metrics import ORACLE
from eoca.pipeline.config import RunConfig
from eoca.pipeline.frameworks import FrameworkRun, Plan
from eoca.pipeline.results import OnlineEvaluation, RunData

BEST_ARM = "best single arm"
RANDOM = "random"


def evaluate_online(cfg: RunConfig, data: RunData, plan: Plan, frameworks: list[FrameworkRun]) -> OnlineEvaluation:
    """The simulated A/B test, the inverse-propensity policy values, or the reason there is neither."""
    dataset = data.dataset
    if data.truth is not None:
        return simulated_ab(cfg, data, plan, frameworks)
    if "propensity" in dataset.exposures.column_names:
        return policy_values(cfg, dataset, plan, frameworks)
    return OnlineEvaluation(
        "none",
        "the dataset has neither the simulator's ground truth nor logged propensities, so the "
        "allocations cannot be evaluated online; only offline metrics and allocation values are reported",
    )


def simulated_ab(cfg: RunConfig, data: RunData, plan: Plan, frameworks: list[FrameworkRun]) -> OnlineEvaluation:
    from eoca.evaluation.online import FrameworkAllocation, simulate_ab_test
    from eoca.simulate import outcome_draw, period_stream

    dataset, truth, seed = data.dataset, data.truth, data.world_seed
    if truth is None or seed is None:
        raise ConfigError(f"dataset '{dataset.spec.name}' is not simulated; the A/B test needs its ground truth")
    period = int(pc.max(dataset.exposures.column("time")).as_py()) + 1
    allocs = {}
    for fw in frameworks:
        c, f = fw.pairs(plan)
        allocs[fw.name] = FrameworkAllocation(customer_pos=c, fund_pos=f, true_etv=truth.etv[c, f])
    oracle = f"{ORACLE}+exact"
    result = simulate_ab_test(
        allocs,
        outcome_draw(truth, period_stream(seed, period)),
        control=cfg.ab_test.control,
        oracle=oracle if oracle in allocs else None,
        n_bootstrap=cfg.ab_test.n_bootstrap,
        confidence=cfg.ab_test.confidence,
        seed=cfg.ab_test.seed,
    )
    return OnlineEvaluation(
        "simulated_ab",
        f"outcomes of delivery period {period} drawn from the simulator's true p, mu and sigma "
        f"(world seed {seed}) with common random numbers; {cfg.ab_test.n_bootstrap} paired bootstrap "
        f"replicates over customers give the {cfg.ab_test.confidence:.0%} intervals",
        ab_test=result,
    )


def policy_values(cfg: RunConfig, dataset: Dataset, plan: Plan, frameworks: list[FrameworkRun]) -> OnlineEvaluation:
    from eoca.evaluation.ope import RandomizedLog, constant_policy, evaluate_policies, uniform_policy

    if plan.K != 1:
        raise ConfigError(
            f"plan.K = {plan.K}: inverse propensity weighting on a log of single deliveries can only evaluate "
            "policies that give each customer one fund; set plan.K=1 for this dataset"
        )
    exp = dataset.exposures
    test = dataset.split_mask("test")
    cust = dataset.customer_index(exp.column("customer_id"))
    fund = dataset.fund_index(exp.column("fund_id"))
    conv = np.asarray(exp.column("converted").to_numpy(zero_copy_only=False), dtype=np.float64)
    amount = np.asarray(exp.column("amount").to_numpy(zero_copy_only=False), dtype=np.float64)
    prop = np.asarray(exp.column("propensity").to_numpy(zero_copy_only=False), dtype=np.float64)
    k = dataset.n_funds
    log = RandomizedLog.from_arrays(fund[test], prop[test], conv[test], amount[test], n_arms=k)

    # Best single arm on the training split only: choosing it on the test log would flatter the baseline.
    train = dataset.split_mask("train")
    w = 1.0 / prop[train]
    spend_by_arm = np.bincount(fund[train], weights=w * amount[train], minlength=k)
    weight_by_arm = np.bincount(fund[train], weights=w, minlength=k)
    best = int(np.argmax(np.where(weight_by_arm > 0, spend_by_arm / np.maximum(weight_by_arm, 1e-300), -np.inf)))

    row_of_customer = np.full(dataset.n_customers, -1, dtype=np.int64)
    row_of_customer[plan.customer_pos] = np.arange(plan.customer_pos.size)
    test_rows = row_of_customer[cust[test]]
    policies: dict[str, Any] = {}
    stranded: dict[str, int] = {}
    for fw in frameworks:
        arm = fw.result.assign[:, 0].astype(np.int64)[test_rows]
        lost = arm < 0
        if lost.any():
            # A customer a heuristic left without a fund would still be contacted by the platform somehow;
            # random assignment is the neutral stand-in, and the count is reported beside the estimate.
            probs = np.zeros((arm.size, k))
            probs[np.flatnonzero(~lost), arm[~lost]] = 1.0
            probs[lost] = 1.0 / k
            policies[fw.name] = probs
            stranded[fw.name] = int(lost.sum())
        else:
            policies[fw.name] = arm
    fund_ids = dataset.funds.column("fund_id").to_pylist()
    best_name = f"{BEST_ARM} ({fund_ids[best]})"
    policies[best_name] = constant_policy(log.n, best)
    policies[RANDOM] = uniform_policy(log.n, k)
    result = evaluate_policies(
        log,
        policies,
        reference=best_name,
        n_bootstrap=cfg.ope.n_bootstrap,
        confidence=cfg.ope.confidence,
        seed=cfg.ope.seed,
    )
    return OnlineEvaluation(
        "ips",
        f"self-normalised inverse propensity estimates on the {log.n:,} held-out (test split) "
        f"customers of the randomized log, {cfg.ope.n_bootstrap} bootstrap replicates over customers; the best "
        f"single arm ({fund_ids[best]}) was chosen on the training split. The frameworks must meet the delivery "
        "plan (a share of customers per arm); the single-arm baseline is not bound by it"
        + (
            "; customers a heuristic left without a fund are scored as randomly assigned: "
            + ", ".join(f"{n}: {c:,}" for n, c in stranded.items())
            if stranded
            else ""
        ),
        policy_values=result,
    )
