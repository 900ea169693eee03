"""eoca.evaluation.metrics against hand-computed values and scipy references (no sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from eoca.evaluation import metrics as M


def test_auc_hand_example_and_ties() -> None:
    # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 (pos, neg) pairs ordered correctly.
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half.
    assert M.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert M.auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)
    assert math.isnan(M.auc([1, 1], [0.1, 0.2]))


def test_auc_equals_mann_whitney_u() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.2
    s = np.round(rng.random(500) + 0.5 * y, 2)  # rounding creates ties
    u = mannwhitneyu(s[y], s[~y]).statistic
    assert M.auc(y, s) == pytest.approx(u / (y.sum() * (~y).sum()), rel=1e-12)


def test_logloss_by_hand_and_clipping() -> None:
    expected = -(math.log(0.9) + math.log(1 - 0.2)) / 2
    assert M.logloss([1, 0], [0.9, 0.2]) == pytest.approx(expected)
    # A confident wrong answer is clipped to eps, not infinite.
    assert math.isfinite(M.logloss([1], [0.0]))
    assert M.logloss([1], [0.0]) == pytest.approx(-math.log(1e-15))
    with pytest.raises(ValueError, match="prob"):
        M.logloss([1], [1.5])


def test_mse_mae_by_hand() -> None:
    assert M.mse([0, 10, 0], [1, 7, 0]) == pytest.approx((1 + 9) / 3)
    assert M.mae([0, 10, 0], [1, 7, 0]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="differ in length"):
        M.mae([1, 2], [1])
    with pytest.raises(ValueError, match="non-finite"):
        M.mse([1, 2], [1, np.nan])


def test_normalized_gini_by_hand() -> None:
    # Ranking by prediction takes y = 0, 2, 1: cumulative shares 0, 2/3, 1 -> area 5/9 - 2/3 = -1/9.
    # The perfect ranking takes 2, 1, 0: shares 2/3, 1, 1 -> area 8/9 - 2/3 = 2/9. Ratio -0.5.
    assert M.normalized_gini([1, 0, 2], [0.2, 0.9, 0.5]) == pytest.approx(-0.5)
    assert M.normalized_gini([1, 0, 2], [1, 0, 2]) == pytest.approx(1.0)
    assert math.isnan(M.normalized_gini([0, 0, 0], [1, 2, 3]))
    # Order-invariance: shuffling the samples together does not change the value.
    rng = np.random.default_rng(3)
    y = rng.exponential(size=200) * (rng.random(200) < 0.3)
    p = y + rng.normal(size=200)
    perm = rng.permutation(200)
    assert M.normalized_gini(y, p) == pytest.approx(M.normalized_gini(y[perm], p[perm]))


def test_spearman_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    y = np.round(rng.exponential(size=300), 1)
    p = y + rng.normal(size=300)
    assert M.spearman(y, p) == pytest.approx(spearmanr(y, p).statistic, rel=1e-12)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))


def test_argmax_fund_respects_eligibility() -> None:
    scores = np.array([[1.0, 5.0, 3.0], [2.0, 2.0, 1.0], [9.0, 1.0, 1.0]])
    assert M.argmax_fund(scores).tolist() == [1, 0, 0]
    eligible = np.array([[True, False, True], [True, True, True], [False, False, False]])
    assert M.argmax_fund(scores, eligible).tolist() == [2, 0, -1]


def test_hit_totals_follow_eoca_eq_15_16() -> None:
    # THC = sum_j sum_{i in G_j} y_ij, THA = sum_j sum_{i in G_j} PA_ij: only outcomes observed on the fund the
    # customer is assigned count. Customer 0 -> fund 1, customer 1 -> fund 0, customer 2 -> none.
    chosen = np.array([1, 0, -1])
    cust = np.array([0, 0, 1, 1, 2])
    fund = np.array([1, 2, 0, 1, 0])
    conv = np.array([1, 1, 0, 1, 1])
    amt = np.array([100.0, 50.0, 0.0, 7.0, 30.0])
    out = M.hit_totals(chosen, cust, fund, conv, amt)
    assert out == {"thc": 1.0, "tha": 100.0, "hits": 2.0}


def test_true_etv_metrics_by_hand() -> None:
    true = np.array([[1.0, 4.0], [3.0, 2.0]])
    pred = np.array([[2.0, 1.0], [5.0, 0.0]])  # picks fund 0 for both: true value 1 + 3 = 4; oracle 4 + 3 = 7
    out = M.true_etv_metrics(pred, true)
    assert out["true_value_argmax"] == pytest.approx(4.0)
    assert out["oracle_value"] == pytest.approx(7.0)
    assert out["argmax_share_of_oracle"] == pytest.approx(4 / 7)
    assert out["true_mae"] == pytest.approx((1 + 3 + 2 + 2) / 4)
    eligible = np.array([[False, True], [True, True]])  # customer 0 may only get fund 1
    out = M.true_etv_metrics(pred, true, eligible)
    assert out["true_value_argmax"] == pytest.approx(4.0 + 3.0)
    assert out["true_mae"] == pytest.approx((3 + 2 + 2) / 3)  # the eligible pairs' errors only
    unscored = pred.copy()
    unscored[0, 0] = np.nan  # an ineligible pair a run leaves unscored changes nothing
    assert M.true_etv_metrics(unscored, true, eligible) == out
    with pytest.raises(ValueError, match="non-finite"):
        M.true_etv_metrics(unscored, true)
