"""Offline metrics of ETV models: the one place they are computed (EOCA section 5.1).

Every function takes and returns plain numpy (arrays of shape (n,) unless stated) and validates its inputs,
so the same numbers come out whichever engineer's code calls them.

* Conversion: :func:`auc`, :func:`logloss`.
* Amount / ETV against the realised amount over the entire test space: :func:`mse`, :func:`mae`,
  :func:`normalized_gini`, :func:`spearman`.
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


def auc(label: Any, score: Any) -> float:
    """Area under the ROC curve (the Mann-Whitney probability that a positive outranks a negative; ties count
    one half). NaN when only one class is present."""
    y, s = _pair(label, score, "label", "score")
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks handle ties
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(label: Any, prob: Any, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of probabilities ``prob`` (clipped to [eps, 1 - eps]) against 0/1 labels."""
    y, p = _pair(label, prob, "label", "prob")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("prob: values must lie in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean((y - p) ** 2))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y - p)))


def _gain_area(y: np.ndarray, order: np.ndarray) -> float:
    # Area under the cumulative-gain (Lorenz) curve minus the diagonal's, when customers are taken in `order`.
    cum = np.cumsum(y[order]) / y.sum()
    n = y.size
    return float(cum.sum() / n - (n + 1) / (2.0 * n))


def normalized_gini(y_true: Any, y_pred: Any) -> float:
    """Normalised Gini of a ranking (the ZILN paper's metric): the area between the cumulative-gain curve of
    ``y_true`` sorted by ``y_pred`` (descending) and the diagonal, divided by the same area for the perfect
    ranking (sorted by ``y_true``). 1 = perfect order, 0 = random, negative = worse than random.

    Ties in ``y_pred`` are broken by original position (stable sort), so a constant prediction scores close to
    0 rather than inheriting the data's order. NaN when ``y_true`` sums to 0 (nothing to rank).
    """
    y, p = _pair(y_true, y_pred)
    if np.any(y < 0):
        raise ValueError("y_true: normalised Gini needs non-negative outcomes")
    if y.sum() <= 0:
        return float("nan")
    model = _gain_area(y, np.argsort(-p, kind="stable"))
    perfect = _gain_area(y, np.argsort(-y, kind="stable"))
    return model / perfect if perfect > 0 else float("nan")


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN if either side is constant."""
    y, p = _pair(y_true, y_pred)
    ry, rp = rankdata(y), rankdata(p)
    sy, sp = ry.std(), rp.std()
    if sy == 0 or sp == 0:
        return float("nan")
    return float(np.mean((ry - ry.mean()) * (rp - rp.mean())) / (sy * sp))


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

    Returns ``true_mae`` and ``true_spearman`` over all pairs, ``true_value_argmax`` (sum over customers of the
    true ETV of the fund with the highest *predicted* ETV, among eligible funds when a mask is given),
    ``oracle_value`` (the same with the true ETV's argmax), and their ratio ``argmax_share_of_oracle``.
    """
    pred = np.asarray(pred_etv, dtype=np.float64)
    true = np.asarray(true_etv, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred_etv {pred.shape} and true_etv {true.shape} must both be (n_customers, n_funds)")
    rows = np.arange(true.shape[0])
    chosen = argmax_fund(pred, eligible)
    best = argmax_fund(true, eligible)
    ok = chosen >= 0
    value = float(true[rows[ok], chosen[ok]].sum())
    oracle = float(true[rows[best >= 0], best[best >= 0]].sum())
    return {
        "true_mae": mae(true.ravel(), pred.ravel()),
        "true_spearman": spearman(true.ravel(), pred.ravel()),
        "true_value_argmax": value,
        "oracle_value": oracle,
        "argmax_share_of_oracle": value / oracle if oracle > 0 else math.nan,
    }
