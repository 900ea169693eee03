"""Weighted metrics (oversampled data) and the single-item (customer-value) evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from eoca.evaluation import metrics as M


def _data(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = (rng.random(n) < 0.3).astype(float)
    amount = conv * rng.lognormal(3.0, 1.0, n)
    pred = np.round(amount * rng.uniform(0.2, 1.5, n) + rng.uniform(0, 10, n), 1)  # rounding makes ties
    w = rng.integers(1, 4, n).astype(float)
    return conv, amount, pred, w


@pytest.mark.parametrize("seed", [0, 1])
def test_integer_weights_equal_repeated_rows(seed: int) -> None:
    conv, amount, pred, w = _data(seed)
    reps = w.astype(int)
    rc, ra, rp = np.repeat(conv, reps), np.repeat(amount, reps), np.repeat(pred, reps)
    prob = np.clip(pred / (pred.max() + 1), 0, 1)
    assert M.auc(conv, pred, w) == pytest.approx(M.auc(rc, rp))
    assert M.logloss(conv, prob, weight=w) == pytest.approx(M.logloss(rc, np.repeat(prob, reps)))
    assert M.mse(amount, pred, w) == pytest.approx(M.mse(ra, rp))
    assert M.mae(amount, pred, w) == pytest.approx(M.mae(ra, rp))
    assert M.spearman(amount, pred, w) == pytest.approx(M.spearman(ra, rp))
    # Gini: repeated rows sit next to each other in the stable sort only when weights are the sole difference,
    # so compare with the repeated data sorted the same way (ties between distinct rows make a small gap).
    assert M.normalized_gini(amount, pred, w) == pytest.approx(M.normalized_gini(ra, rp), abs=0.02)


def test_unit_weights_change_nothing() -> None:
    conv, amount, pred, _ = _data(2)
    one = np.ones_like(amount)
    assert M.normalized_gini(amount, pred, one) == pytest.approx(M.normalized_gini(amount, pred))
    assert M.auc(conv, pred, one) == pytest.approx(M.auc(conv, pred))


def test_deciles_and_gain_curve() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 10, 90], dtype=float)
    perfect = M.deciles(y, y)
    assert [d["mean_actual"] for d in perfect][:2] == [90.0, 10.0]
    assert perfect[0]["share_of_value"] == pytest.approx(0.9)
    assert sum(d["customers"] for d in perfect) == 10
    weighted = M.deciles(y, y, np.r_[np.ones(8), 2.0, 2.0])
    assert sum(d["customers"] for d in weighted) == pytest.approx(12.0)
    x, g = M.gain_curve(y, y, points=11)
    assert x[1] == pytest.approx(0.1)
    assert g[0] == 0.0 and g[-1] == pytest.approx(1.0) and g[1] == pytest.approx(0.9)
    _, g_rev = M.gain_curve(y, -y, points=11)
    assert g_rev[8] == pytest.approx(0.0)  # worst order: the value comes last
