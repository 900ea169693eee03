"""Offline metrics of ETV models: the one place they are computed (EOCA section 5.1).

Every function takes and returns plain numpy (arrays of shape (n,) unless stated) and validates its inputs,
so the same numbers come out whichever engineer's code calls them.

* Conversion: :func:`auc`, :func:`logloss`.
* Amount / ETV against the realised amount over the entire test space: :func:`mse`, :func:`mae`,
  :func:`normalized_gini`, :func:`spearman`; for single-item (customer-value) data also :func:`deciles` and
  :func:`gain_curve`.
* Every prediction metric takes optional sampling ``weight`` s (oversampled data): each sample then counts as
  ``weight`` samples of the population, so the metric refers to the population, not to the sample.
* Allocation-flavoured: :func:`hit_totals` (THC / THA, EOCA Eq. 15-16).
* Simulated data only (a true ETV matrix exists): :func:`true_etv_metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

ORACLE = "oracle"
"""Name of the pseudo-model whose scores are the simulator's true ETV: the ceiling every comparison shows."""


def lift_pct(value: float | None, reference: float) -> float | None:
    """Relative lift of ``value`` over ``reference`` in percent; None when either makes it undefined
    (no value, or a reference of zero: a control without conversions has no relative lift)."""
    if value is None or reference == 0.0:
        return None
    return (value / reference - 1.0) * 100.0


def _vec(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name}: non-finite value {a[bad]} at position {bad}")
    return a


def _pair(y: Any, pred: Any, y_name: str = "y_true", p_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    a, b = _vec(y, y_name), _vec(pred, p_name)
    if a.shape != b.shape:
        raise ValueError(f"{y_name} and {p_name} differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("metrics need at least one sample")
    return a, b


def _weights(weight: Any, n: int) -> np.ndarray | None:
    """Validated sampling weights of shape (n,), or None for the unweighted case."""
    if weight is None:
        return None
    w = _vec(weight, "weight")
    if w.size != n:
        raise ValueError(f"weight has {w.size} values for {n} samples")
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weight: values must be >= 0 with a positive sum")
    return w


def _mean(x: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.mean(x)) if w is None else float(np.sum(w * x) / np.sum(w))


def auc(label: Any, score: Any, weight: Any | None = None) -> float:
    """Area under the ROC curve (the Mann-Whitney probability that a positive outranks a negative; ties count
    one half), each pair counted with the product of its sampling weights. NaN when only one class is present."""
    y, s = _pair(label, score, "label", "score")
    w = _weights(weight, y.size)
    pos = y > 0.5
    if w is None:
        n_pos = int(pos.sum())
        n_neg = y.size - n_pos
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = rankdata(s)  # average ranks handle ties
        u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
        return float(u / (n_pos * n_neg))
    wp, wn = np.where(pos, w, 0.0), np.where(pos, 0.0, w)
    if wp.sum() <= 0 or wn.sum() <= 0:
        return float("nan")
    _, group = np.unique(s, return_inverse=True)
    gp, gn = np.bincount(group, weights=wp), np.bincount(group, weights=wn)
    below = np.cumsum(gn) - gn
    return float(np.sum(gp * (below + 0.5 * gn)) / (wp.sum() * wn.sum()))


def logloss(label: Any, prob: Any, eps: float = 1e-15, weight: Any | None = None) -> float:
    """(Weighted) mean binary cross-entropy of ``prob`` (clipped to [eps, 1 - eps]) against 0/1 labels."""
    y, p = _pair(label, prob, "label", "prob")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("prob: values must lie in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    return -_mean(y * np.log(p) + (1.0 - y) * np.log1p(-p), _weights(weight, y.size))


def mse(y_true: Any, y_pred: Any, weight: Any | None = None) -> float:
    """(Weighted) mean squared error."""
    y, p = _pair(y_true, y_pred)
    return _mean((y - p) ** 2, _weights(weight, y.size))


def tweedie_deviance(y_true: Any, y_pred: Any, weight: Any | None = None, power: float = 1.0) -> float:
    """(Weighted) mean Tweedie unit deviance of predicted means: ``power`` 1 is Poisson,
    ``2 (y log(y / m) - (y - m))``; ``1 < power < 2`` is ``2 (y^(2-q) / ((1-q)(2-q)) - y m^(1-q) / (1-q)
    + m^(2-q) / (2-q))``. Like MSE it is minimised by the conditional mean, but it grows linearly, not
    quadratically, in a large amount, so a few extreme customers decide it far less (a steadier model choice on
    heavy-tailed validation data). Predictions are floored at 1e-12 (the deviance of a zero mean is infinite)."""
    y, p = _pair(y_true, y_pred)
    if not 1.0 <= power < 2.0:
        raise ValueError(f"power must be in [1, 2), got {power}")
    m = np.maximum(p, 1e-12)
    if power == 1.0:
        term = np.where(y > 0, y * np.log(np.maximum(y, 1e-12) / m), 0.0) - (y - m)
    else:
        q = power
        term = y ** (2 - q) / ((1 - q) * (2 - q)) - y * m ** (1 - q) / (1 - q) + m ** (2 - q) / (2 - q)
    return 2.0 * _mean(term, _weights(weight, y.size))


def mae(y_true: Any, y_pred: Any, weight: Any | None = None) -> float:
    """(Weighted) mean absolute error."""
    y, p = _pair(y_true, y_pred)
    return _mean(np.abs(y - p), _weights(weight, y.size))


def _gain_area(y: np.ndarray, order: np.ndarray, w: np.ndarray | None = None) -> float:
    # Area between the cumulative-gain (Lorenz) curve and the diagonal when customers are taken in `order`;
    # with weights, a customer counts as w of them on both axes.
    if w is None:
        cum = np.cumsum(y[order]) / y.sum()
        n = y.size
        return float(cum.sum() / n - (n + 1) / (2.0 * n))
    wo = w[order]
    total = np.sum(w * y)
    cum = np.cumsum(wo * y[order]) / total
    share = np.cumsum(wo) / wo.sum()
    return float(np.sum(wo * (cum - share)) / wo.sum())


def normalized_gini(y_true: Any, y_pred: Any, weight: Any | None = None) -> float:
    """Normalised Gini of a ranking (the ZILN paper's metric): the area between the cumulative-gain curve of
    ``y_true`` sorted by ``y_pred`` (descending) and the diagonal, divided by the same area for the perfect
    ranking (sorted by ``y_true``). 1 = perfect order, 0 = random, negative = worse than random. With weights,
    each customer counts as ``weight`` customers of the population.

    Ties in ``y_pred`` are broken by original position (stable sort), so a constant prediction scores close to
    0 rather than inheriting the data's order. NaN when ``y_true`` sums to 0 (nothing to rank).
    """
    y, p = _pair(y_true, y_pred)
    w = _weights(weight, y.size)
    if np.any(y < 0):
        raise ValueError("y_true: normalised Gini needs non-negative outcomes")
    if (y.sum() if w is None else np.sum(w * y)) <= 0:
        return float("nan")
    model = _gain_area(y, np.argsort(-p, kind="stable"), w)
    perfect = _gain_area(y, np.argsort(-y, kind="stable"), w)
    return model / perfect if perfect > 0 else float("nan")


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Mid-rank in cumulative weight: what average ranks are when every sample counts as w samples.
    _, group = np.unique(x, return_inverse=True)
    gw = np.bincount(group, weights=w)
    before = np.cumsum(gw) - gw
    return np.asarray((before + 0.5 * gw)[group], dtype=np.float64)


def spearman(y_true: Any, y_pred: Any, weight: Any | None = None) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; with weights, weighted mid-ranks and a
    weighted correlation); NaN if either side is constant."""
    y, p = _pair(y_true, y_pred)
    w = _weights(weight, y.size)
    if w is None:
        ry, rp = rankdata(y), rankdata(p)
        w = np.ones_like(y)
    else:
        ry, rp = _weighted_ranks(y, w), _weighted_ranks(p, w)
    my, mp = _mean(ry, w), _mean(rp, w)
    sy, sp = np.sqrt(_mean((ry - my) ** 2, w)), np.sqrt(_mean((rp - mp) ** 2, w))
    if sy == 0 or sp == 0:
        return float("nan")
    return _mean((ry - my) * (rp - mp), w) / float(sy * sp)


def deciles(y_true: Any, y_pred: Any, weight: Any | None = None, groups: int = 10) -> list[dict[str, float]]:
    """The decile table of a value prediction: customers sorted by ``y_pred`` (highest first) and cut into
    ``groups`` groups of equal (weighted) size; per group the mean prediction, the mean realised value, and the
    group's share of the total realised value. A calibrated model has mean predicted close to mean actual in
    every row; a good ranking puts most of the value in the first rows."""
    y, p = _pair(y_true, y_pred)
    w = _weights(weight, y.size)
    w = np.ones_like(y) if w is None else w
    order = np.argsort(-p, kind="stable")
    share = (np.cumsum(w[order]) - 0.5 * w[order]) / w.sum()
    group = np.minimum((share * groups).astype(np.int64), groups - 1)
    total = float(np.sum(w * y))
    rows = []
    for g in range(groups):
        idx = order[group == g]
        if idx.size == 0:
            continue
        wg = w[idx]
        rows.append(
            {
                "decile": float(g + 1),
                "customers": float(wg.sum()),
                "mean_predicted": float(np.sum(wg * p[idx]) / wg.sum()),
                "mean_actual": float(np.sum(wg * y[idx]) / wg.sum()),
                "share_of_value": float(np.sum(wg * y[idx]) / total) if total > 0 else float("nan"),
            }
        )
    return rows


def gain_curve(y_true: Any, y_pred: Any, weight: Any | None = None, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: share of customers targeted (x, best predicted first) against share of the total
    realised value they hold (y); both shape (points,), from (0, 0) to (1, 1)."""
    y, p = _pair(y_true, y_pred)
    w = _weights(weight, y.size)
    w = np.ones_like(y) if w is None else w
    order = np.argsort(-p, kind="stable")
    x = np.concatenate([[0.0], np.cumsum(w[order]) / w.sum()])
    total = float(np.sum(w * y))
    g = np.concatenate([[0.0], np.cumsum(w[order] * y[order]) / total]) if total > 0 else np.zeros_like(x)
    grid = np.linspace(0.0, 1.0, points)
    return grid, np.interp(grid, x, g)


def argmax_fund(scores: Any, eligible: Any | None = None) -> np.ndarray:
    """Index of the highest-scoring fund per customer, shape (n,), from ``scores`` of shape (n, k).

    With an ``eligible`` boolean mask of shape (n, k), ineligible funds are never chosen (a customer with no
    eligible fund gets -1). Ties go to the lowest fund index.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores: expected shape (n_customers, n_funds), got {s.shape}")
    if eligible is None:
        return np.asarray(np.argmax(s, axis=1), dtype=np.int64)
    m = np.asarray(eligible, dtype=bool)
    if m.shape != s.shape:
        raise ValueError(f"eligible: shape {m.shape} differs from scores {s.shape}")
    masked = np.where(m, s, -np.inf)
    out = np.asarray(np.argmax(masked, axis=1), dtype=np.int64)
    out[~m.any(axis=1)] = -1
    return out


def hit_totals(
    chosen_fund: Any,
    exposure_customer: Any,
    exposure_fund: Any,
    converted: Any,
    amount: Any,
) -> dict[str, float]:
    """THC and THA (EOCA Eq. 15-16): give customer ``i`` fund ``chosen_fund[i]`` (its highest predicted ETV);
    THC counts the test exposures of that very fund that converted, THA sums their amounts.

    Args:
        chosen_fund: int, shape (n_customers,), the fund each customer is given (-1 = none).
        exposure_customer, exposure_fund: int, shape (m,): each test exposure's customer and fund position.
        converted, amount: shape (m,): the exposure's outcome.

    Returns:
        ``thc``, ``tha`` and ``hits`` (how many exposures matched the chosen fund, the denominator that makes
        THC comparable across data sets).
    """
    chosen = np.asarray(chosen_fund, dtype=np.int64)
    cust = np.asarray(exposure_customer, dtype=np.int64)
    fund = np.asarray(exposure_fund, dtype=np.int64)
    conv, amt = _vec(converted, "converted"), _vec(amount, "amount")
    if not (cust.shape == fund.shape == conv.shape == amt.shape):
        raise ValueError("exposure_customer, exposure_fund, converted and amount must have the same length")
    if cust.size and (cust.min() < 0 or cust.max() >= chosen.size):
        raise ValueError(f"exposure_customer: positions must lie in [0, {chosen.size})")
    hit = chosen[cust] == fund
    return {"thc": float(conv[hit].sum()), "tha": float(amt[hit].sum()), "hits": float(hit.sum())}


def true_etv_metrics(pred_etv: Any, true_etv: Any, eligible: Any | None = None) -> dict[str, float]:
    """Errors against the simulator's true ETV, both of shape (n_customers, n_funds).

    Returns ``true_mae`` and ``true_spearman`` over all pairs, or over the eligible ones when a mask is given
    (the others are never shown, so their predictions do not matter, and a score matrix may leave them unscored,
    NaN; NaN for both where no pair is eligible), ``true_value_argmax`` (sum over customers of the true ETV of
    the fund with the highest *predicted* ETV, among eligible funds when a mask is given), ``oracle_value`` (the
    same with the true ETV's argmax), and their ratio ``argmax_share_of_oracle``.
    """
    pred = np.asarray(pred_etv, dtype=np.float64)
    true = np.asarray(true_etv, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred_etv {pred.shape} and true_etv {true.shape} must both be (n_customers, n_funds)")
    if eligible is None:
        t, p = true.ravel(), pred.ravel()
    else:
        shown = np.asarray(eligible, dtype=bool)
        if shown.shape != true.shape:
            raise ValueError(f"eligible: shape {shown.shape} differs from the ETV matrices' {true.shape}")
        t, p = true[shown], pred[shown]
    rows = np.arange(true.shape[0])
    chosen = argmax_fund(pred, eligible)
    best = argmax_fund(true, eligible)
    ok = chosen >= 0
    value = float(true[rows[ok], chosen[ok]].sum())
    oracle = float(true[rows[best >= 0], best[best >= 0]].sum())
    return {
        "true_mae": mae(t, p) if t.size else math.nan,
        "true_spearman": spearman(t, p) if t.size else math.nan,
        "true_value_argmax": value,
        "oracle_value": oracle,
        "argmax_share_of_oracle": value / oracle if oracle > 0 else math.nan,
    }
