from __future__ import annotations

import numpy as np
import pytest

from eoca.errors import DataValidationError, EocaError
from eoca.evaluation.ope import (
    RandomizedLog,
    compare_policies,
    constant_policy,
    estimate_policy_value,
    evaluate_policies,
    uniform_policy,
)

# A known world: a customer feature x in {0, 1, 2} with P(x) below, 3 arms. Conversion probability and mean
# spend given conversion depend on (arm, x), so every policy's true value is a finite sum.
P_X = np.array([0.5, 0.3, 0.2])
P_CONV = np.array(  # [arm, x]
    [
        [0.02, 0.03, 0.01],
        [0.06, 0.02, 0.03],
        [0.03, 0.08, 0.10],
    ]
)
MEAN_SPEND = np.array(
    [
        [50.0, 80.0, 40.0],
        [120.0, 60.0, 90.0],
        [70.0, 150.0, 200.0],
    ]
)
# The policy under test: arm 1 for x = 0, arm 2 otherwise (the best arm by conversion for each x).
POLICY_BY_X = np.array([1, 2, 2])


def simulate_log(n: int, seed: int) -> tuple[RandomizedLog, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.choice(3, size=n, p=P_X)
    arm = rng.integers(0, 3, size=n)
    converted = rng.random(n) < P_CONV[arm, x]
    spend = np.where(converted, rng.exponential(MEAN_SPEND[arm, x]), 0.0)
    log = RandomizedLog.from_arrays(arm, np.full(n, 1.0 / 3.0), converted.astype(np.int8), spend)
    return log, x


def true_value(policy_by_x: np.ndarray) -> tuple[float, float]:
    xs = np.arange(3)
    conv = float((P_X * P_CONV[policy_by_x, xs]).sum()) * 1000.0
    spend = float((P_X * P_CONV[policy_by_x, xs] * MEAN_SPEND[policy_by_x, xs]).sum()) * 1000.0
    return conv, spend


def test_snips_recovers_known_policy_value_with_reasonable_coverage() -> None:
    true_conv, true_spend = true_value(POLICY_BY_X)
    seeds = range(40)
    covered_conv = covered_spend = 0
    rel_errors = []
    for seed in seeds:
        log, x = simulate_log(6000, seed)
        pv = estimate_policy_value(log, POLICY_BY_X[x], name="best-by-x", n_bootstrap=300, seed=seed)
        lo, hi = pv.conversions_per_mille_ci
        assert lo <= pv.conversions_per_mille <= hi
        covered_conv += lo <= true_conv <= hi
        lo, hi = pv.spend_per_mille_ci
        assert lo <= pv.spend_per_mille <= hi
        covered_spend += lo <= true_spend <= hi
        rel_errors.append(abs(pv.conversions_per_mille / true_conv - 1.0))
        # About a third of the customers got the arm the policy would have chosen.
        assert pv.n_matched == pytest.approx(6000 / 3, rel=0.1)
    # Nominal 95%: over 40 independent logs, at most a few misses (below 32 would be ~4 sd off).
    assert covered_conv >= 32 and covered_spend >= 32
    assert float(np.median(rel_errors)) < 0.15


def test_uniform_random_policy_equals_empirical_mean() -> None:
    log, _ = simulate_log(5000, seed=1)
    pv = estimate_policy_value(log, uniform_policy(log.n, 3), name="random", n_bootstrap=100)
    assert pv.conversions_per_mille == pytest.approx(log.converted.mean() * 1000.0)
    assert pv.spend_per_mille == pytest.approx(log.spend.mean() * 1000.0)
    assert pv.ips_spend_per_mille == pytest.approx(log.spend.mean() * 1000.0)
    # Every customer carries weight 1: a third of each one "matches" in expectation, and none is up-weighted.
    assert pv.n_matched == pytest.approx(log.n / 3.0) and pv.ess == pytest.approx(log.n)


def test_constant_policy_snips_is_that_arms_mean_and_ips_differs() -> None:
    log, _ = simulate_log(3000, seed=2)
    pv = estimate_policy_value(log, constant_policy(log.n, 2), n_bootstrap=50)
    on_arm = log.arm == 2
    assert pv.n_matched == on_arm.sum()
    assert pv.conversions_per_mille == pytest.approx(log.converted[on_arm].mean() * 1000.0)
    # IPS divides by n, not by the realised weight total; with 1/3 propensity they differ by sum(w)/n.
    ratio = on_arm.sum() * 3.0 / log.n
    assert pv.ips_conversions_per_mille == pytest.approx(pv.conversions_per_mille * ratio)


def test_stochastic_policy_matches_deterministic_when_degenerate() -> None:
    log, x = simulate_log(2000, seed=3)
    arms = POLICY_BY_X[x]
    one_hot = np.eye(3)[arms]
    a = estimate_policy_value(log, arms, n_bootstrap=100, seed=5)
    b = estimate_policy_value(log, one_hot, n_bootstrap=100, seed=5)
    assert a.spend_per_mille == pytest.approx(b.spend_per_mille)
    assert a.spend_per_mille_ci == pytest.approx(b.spend_per_mille_ci)


def test_paired_lift_and_evaluate_policies() -> None:
    log, x = simulate_log(20000, seed=4)
    policies = {
        "model": POLICY_BY_X[x],
        "best single arm": constant_policy(log.n, 2),
        "random": uniform_policy(log.n, 3),
    }
    result = evaluate_policies(log, policies, reference="random", n_bootstrap=400, seed=1)
    model = result["model"]
    random_ = result["random"]
    lift = result.lift("model")
    assert lift.conversions_lift_pct == pytest.approx(
        (model.conversions_per_mille / random_.conversions_per_mille - 1.0) * 100.0
    )
    assert lift.conversions_lift_ci[0] <= lift.conversions_lift_pct <= lift.conversions_lift_ci[1]
    # The targeted policy converts about 2x the random one in truth; the interval must exclude zero.
    assert lift.conversions_lift_ci[0] > 0.0
    rows = result.to_rows()
    assert [r["policy"] for r in rows] == ["model", "best single arm", "random"]
    assert rows[2]["role"] == "reference" and rows[2]["spend_lift_pct"] is None
    # compare_policies is the same computation for one pair.
    pair = compare_policies(log, POLICY_BY_X[x], uniform_policy(log.n, 3), n_bootstrap=400, seed=1)
    assert pair.conversions_lift_pct == pytest.approx(lift.conversions_lift_pct)
    with pytest.raises(KeyError):
        result.lift("random")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"propensity": [1 / 3, 0.0, 1 / 3]},
            "propensity must lie in \\(0, 1\\].*1 row\\(s\\), first at row 1",
        ),
        ({"propensity": [1 / 3, None, 1 / 3]}, "propensity is missing \\(NaN\\)"),
        ({"propensity": [1 / 3, np.nan, 1 / 3]}, "propensity is missing"),
        ({"propensity": None}, "propensity is missing"),
        ({"propensity": [0.5, 0.5]}, "propensity has 2 entries but arm has 3"),
        ({"spend": [1.0, 2.0]}, "spend has 2 entries"),
        ({"converted": [0, 1]}, "converted has 2 entries"),
        ({"converted": [0, 2, 1]}, "converted must be 0 or 1"),
        ({"spend": [0.0, -1.0, 0.0]}, "spend must be finite and >= 0"),
        ({"arm": [0.0, 1.0, 2.0]}, "arm must hold integer"),
        ({"arm": [0, 1, 5], "n_arms": 3}, "arm must lie in \\[0, 3\\)"),
        ({"arm": []}, "the log is empty"),
    ],
)
def test_log_validation_names_the_argument(kwargs, message) -> None:
    args = {
        "arm": [0, 1, 2],
        "propensity": [1 / 3] * 3,
        "converted": [0, 1, 0],
        "spend": [0.0, 10.0, 0.0],
    }
    args.update(kwargs)
    n_arms = args.pop("n_arms", None)
    with pytest.raises(DataValidationError, match=message):
        RandomizedLog.from_arrays(**args, n_arms=n_arms)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (np.array([0, 1]), "policy 'p' has 2 entries but the log has 3"),
        (np.array([0.0, 1.0, 2.0]), "integer arm indices"),
        (np.array([0, 1, 3]), "chooses an arm outside"),
        (np.full((3, 2), 0.5), "has shape \\(3, 2\\)"),
        (np.full((3, 3), 0.5), "do not sum to 1"),
        (np.array([[1.5, -0.5, 0.0]] * 3), "negative or non-finite"),
    ],
)
def test_policy_validation_names_the_policy(policy, message) -> None:
    log = RandomizedLog.from_arrays([0, 1, 2], [1 / 3] * 3, [0, 1, 0], [0.0, 10.0, 0.0])
    with pytest.raises(DataValidationError, match=message):
        estimate_policy_value(log, policy, name="p", n_bootstrap=10)


def test_policy_that_never_matches_is_refused() -> None:
    log = RandomizedLog.from_arrays([0, 0, 1], [0.5] * 3, [0, 1, 0], [0.0, 10.0, 0.0], n_arms=3)
    with pytest.raises(EocaError, match="never chooses a customer's logged arm"):
        estimate_policy_value(log, constant_policy(3, 2), name="arm2", n_bootstrap=10)
    with pytest.raises(EocaError, match="reference policy 'nope'"):
        evaluate_policies(log, {"a": constant_policy(3, 0)}, reference="nope")
