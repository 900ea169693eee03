"""Paired off-policy comparisons: SNIPS and doubly robust values, exact zero for equal policies, the DR
estimator's lower variance with a good outcome model, and the power analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eoca.budget.offpolicy import dr_terms, paired_differences, policy_matrix, power_analysis
from eoca.errors import DataValidationError, EocaError

MEANS = np.array([[10.0, 12.0, 20.0], [10.0, 30.0, 5.0]])  # true mean outcome per (group, arm)
PROBS = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])  # logging policy per group


def _log(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A randomized log: two groups, three arms, group-dependent propensities, noisy outcomes around MEANS."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    probs = PROBS[group]
    arm = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    y = MEANS[group, arm] + rng.normal(0.0, 4.0, n)
    return group, arm, probs[np.arange(n), arm], y


def test_dr_recovers_a_known_value_with_less_variance_than_snips() -> None:
    n = 4000
    snips, dr = [], []
    for seed in range(60):
        group, arm, e, y = _log(n, seed)
        policy = np.where(group == 0, 2, 1)
        truth = float(MEANS[group, policy].mean())
        # an outcome model fitted on another log (cross-fitting's role): the per-(group, arm) means there
        g2, a2, _, y2 = _log(n, 1000 + seed)
        fitted = np.array([[y2[(g2 == g) & (a2 == t)].mean() for t in range(3)] for g in range(2)])
        rows = paired_differences(
            arm,
            e,
            y,
            {"policy": policy, "control": np.zeros(n, dtype=np.int64)},
            n_arms=3,
            reference="control",
            mu=fitted[group],
            n_bootstrap=1,
            seed=seed,
        )
        by = {r.estimator: r for r in rows}
        snips.append(by["snips"].value - truth)
        dr.append(by["dr"].value - truth)
    snips_err, dr_err = np.array(snips), np.array(dr)
    # unbiased: the mean error over 60 logs is within 3 standard errors of zero
    assert abs(dr_err.mean()) < 3 * dr_err.std(ddof=1) / math.sqrt(dr_err.size)
    # the outcome model explains the group x arm means, so DR keeps only the noise around them
    assert dr_err.var() < 0.7 * snips_err.var()


def test_dr_is_unbiased_even_with_a_wrong_outcome_model() -> None:
    group, arm, e, y = _log(400_000, 7)
    policy = np.where(group == 0, 2, 1)
    truth = float(MEANS[group, policy].mean())
    wrong = np.full((group.size, 3), 55.0)
    value = float(dr_terms(arm, e, y, policy_matrix(policy, group.size, 3), wrong).mean())
    assert value == pytest.approx(truth, rel=0.02)


def test_paired_difference_is_exactly_zero_for_equal_policies() -> None:
    group, arm, e, y = _log(5000, 3)
    policy = np.where(group == 0, 2, 1)
    probs = policy_matrix(policy, group.size, 3)
    mu = MEANS[group] + 1.0
    rows = paired_differences(
        arm, e, y, {"a": policy, "b": probs}, n_arms=3, reference="b", mu=mu, n_bootstrap=200, seed=0
    )
    assert [r.estimator for r in rows] == ["snips", "dr"]
    for r in rows:
        assert r.difference == 0.0
        assert r.difference_ci == (0.0, 0.0)
        assert r.difference_se == 0.0
        assert r.value == r.reference_value


def test_paired_dr_interval_is_narrower_than_the_unpaired_one() -> None:
    group, arm, e, y = _log(20_000, 4)
    a = np.where(group == 0, 2, 1)
    b = np.where((group == 1) & (np.arange(group.size) % 10 == 0), 0, a)  # differs on a tenth of group 1
    mu = MEANS[group]  # the true means: fixed in advance, so DR stays unbiased
    kw = {"n_arms": 3, "mu": mu, "n_bootstrap": 300, "seed": 1}
    row = paired_differences(arm, e, y, {"a": a, "b": b}, reference="b", **kw)[1]  # type: ignore[arg-type]
    flip = paired_differences(arm, e, y, {"a": a, "b": b}, reference="a", **kw)[1]  # type: ignore[arg-type]
    assert row.estimator == flip.estimator == "dr"
    width_paired = row.difference_ci[1] - row.difference_ci[0]
    width_a = row.value_ci[1] - row.value_ci[0]
    width_b = flip.value_ci[1] - flip.value_ci[0]
    # the DR terms of the customers on whom the policies agree are equal and cancel; independent
    # estimates would add the variances
    assert width_paired < 0.5 * math.hypot(width_a, width_b)
    true_diff = float((MEANS[group, a] - MEANS[group, b]).mean())
    assert row.difference_ci[0] <= true_diff <= row.difference_ci[1]


def test_bad_inputs_are_clear_errors() -> None:
    _, arm, e, y = _log(100, 0)
    pol = {"p": np.zeros(100, dtype=np.int64)}
    with pytest.raises(EocaError, match="reference"):
        paired_differences(arm, e, y, pol, n_arms=3, reference="q")
    with pytest.raises(DataValidationError, match="mu has shape"):
        paired_differences(arm, e, y, pol, n_arms=3, reference="p", mu=np.zeros((100, 2)))
    with pytest.raises(DataValidationError, match="propensity"):
        paired_differences(arm, np.zeros(100), y, pol, n_arms=3, reference="p")
    with pytest.raises(DataValidationError, match="not a probability vector"):
        policy_matrix(np.full((100, 3), 0.5), 100, 3, "half")
    with pytest.raises(DataValidationError, match="chooses arm 3"):
        policy_matrix(np.full(100, 3), 100, 3)


def test_power_analysis_numbers() -> None:
    pa = power_analysis(0.075, 64_000, 0.85)
    assert pa.detectable == pytest.approx(1.959964 * 0.075, rel=1e-6)
    assert pa.detectable_at_power == pytest.approx((1.959964 + 0.841621) * 0.075, rel=1e-6)
    assert pa.detectable_pct == pytest.approx(100 * 1.959964 * 0.075 / 0.85, rel=1e-6)
    # a difference half the detectable one needs four times the customers
    assert pa.customers_needed(pa.detectable_at_power / 2) == pytest.approx(4 * 64_000)
    assert pa.customers_needed(0.0) == math.inf
    with pytest.raises(EocaError, match="positive"):
        power_analysis(0.0, 10, 1.0)
