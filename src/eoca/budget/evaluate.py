"""Evaluation of budget allocation policies (docs/budget.md).

* Budget curves: the incremental value (over giving nobody an incentive) reached at each budget from 0 to the
  reference budget ``B_full`` (:meth:`IncentiveData.treat_all_cost`: every customer on its most expensive arm).
  On simulated data the value and cost are the *true* expected ones of the chosen arms, and the oracle (true
  values and costs + the exact solver) is the ceiling. On randomized data they are self-normalised IPS (SNIPS)
  estimates with bootstrap intervals (:func:`eoca.evaluation.ope.evaluate_policies`).
* AUCC: the area under a budget curve over budget fractions [0, 1], divided by a reference value (the oracle's
  value at ``B_full`` on simulated data, else the largest curve end), so 1 is the ceiling.
* Qini and uplift curves, Qini coefficient and uplift AUC: per arm against the control, exactly as
  scikit-uplift defines them (a test checks the numbers against scikit-uplift).
* Baselines under the same budget: random targeting (each customer treated with the same probability, arm
  uniform among the incentives, so the expected cost is the budget), "top by predicted uplift" (customers in
  decreasing order of their best predicted uplift get that arm until the budget is spent: the solver without
  costs in the ranking), and the single-arm policies (top by one arm's predicted uplift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoca.budget.data import IncentiveData
from eoca.budget.models import Prediction
from eoca.budget.solver import BudgetSolution, solve_budget
from eoca.errors import DataValidationError
from eoca.evaluation.ope import OPEResult, RandomizedLog, evaluate_policies

__all__ = [
    "DEFAULT_FRACTIONS",
    "CurvePoint",
    "allocate",
    "aucc",
    "budget_curve",
    "oracle_curve",
    "qini_auc_score",
    "qini_curve",
    "random_policy",
    "single_arm_policy",
    "snips_policies",
    "top_uplift_policy",
    "true_outcome",
    "uplift_auc_score",
    "uplift_curve",
]

DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class CurvePoint:
    """One budget on a curve: ``value`` and ``cost`` are totals over the evaluated customers (true expected ones
    on simulated data; SNIPS per customer x n on randomized data, with ``value_ci``)."""

    policy: str
    fraction: float
    budget: float
    value: float
    cost: float
    value_ci: tuple[float, float] = (float("nan"), float("nan"))


def allocate(
    pred: Prediction, data: IncentiveData, budget: float, caps: Mapping[int, int] | None = None
) -> BudgetSolution:
    """The exact solver on predicted values and predicted expected costs."""
    return solve_budget(pred.value, data.cost_matrix(pred.p), budget, caps=caps)


def true_outcome(data: IncentiveData, arm: np.ndarray) -> tuple[float, float]:
    """(true incremental value over arm 0, true expected cost) of deterministic choices ``arm`` (n,)."""
    t = _truth(data)
    rows = np.arange(data.n)
    return float((t.value[rows, arm] - t.value[:, 0]).sum()), float(t.expected_cost[rows, arm].sum())


def _truth(data: IncentiveData) -> Any:
    if data.truth is None:
        raise DataValidationError(f"data '{data.name}' has no truth; only simulated data can be scored exactly")
    return data.truth


def budget_curve(
    name: str, pred: Prediction, data: IncentiveData, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> list[CurvePoint]:
    """True-value budget curve of the solver on ``pred`` (simulated data)."""
    full = data.treat_all_cost()
    out = []
    for f in fractions:
        sol = allocate(pred, data, f * full)
        v, c = true_outcome(data, sol.arm)
        out.append(CurvePoint(name, f, f * full, v, c))
    return out


def oracle_curve(data: IncentiveData, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[CurvePoint]:
    """The ceiling: true values and costs with the exact solver."""
    t = _truth(data)
    full = data.treat_all_cost()
    return [
        CurvePoint("oracle", f, f * full, *true_outcome(data, solve_budget(t.value, t.expected_cost, f * full).arm))
        for f in fractions
    ]


def aucc(points: Sequence[CurvePoint], reference: float) -> float:
    """Area under the budget curve over budget fractions, divided by ``reference`` (trapezoids)."""
    if reference <= 0:
        return float("nan")
    x = np.array([p.fraction for p in points])
    y = np.array([p.value for p in points]) / reference
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


# --- baselines under a budget ---------------------------------------------------------------------------------


def random_policy(data: IncentiveData, budget: float, expected_cost: np.ndarray) -> np.ndarray:
    """Random targeting: probabilities (n, k); each customer treated with probability q, arm uniform over 1..k-1,
    q chosen so the expected cost (from ``expected_cost`` (n, k)) equals the budget (capped at 1)."""
    n, k = data.n, data.n_arms
    base = float(expected_cost[:, 0].sum())
    per_treated = float(expected_cost[:, 1:].mean(axis=1).sum())
    extra = per_treated - base
    q = 1.0 if extra <= 0 else float(np.clip((budget - base) / extra, 0.0, 1.0))
    probs = np.empty((n, k))
    probs[:, 0] = 1.0 - q
    probs[:, 1:] = q / (k - 1)
    return probs


def _greedy_by(score: np.ndarray, arm: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """Treat customers in decreasing ``score`` with ``arm`` while the cumulative extra cost fits the budget."""
    n = score.size
    rows = np.arange(n)
    out = np.zeros(n, dtype=np.int64)
    base = float(cost[:, 0].sum())
    order = np.argsort(-score, kind="stable")
    order = order[score[order] > 0]
    extra = cost[order, arm[order]] - cost[order, 0]
    fits = np.cumsum(extra) <= budget - base
    chosen = order[fits]
    out[chosen] = arm[chosen]
    del rows
    return out


def top_uplift_policy(pred: Prediction, data: IncentiveData, budget: float) -> np.ndarray:
    """Customers by decreasing best predicted uplift get that arm until the (predicted) budget is spent."""
    up = pred.uplift
    best = up.argmax(axis=1)
    return _greedy_by(up[np.arange(data.n), best], best, data.cost_matrix(pred.p), budget)


def single_arm_policy(pred: Prediction, data: IncentiveData, budget: float, arm: int) -> np.ndarray:
    """Only arm ``arm``: customers by decreasing predicted uplift of that arm until the budget is spent."""
    return _greedy_by(pred.uplift[:, arm], np.full(data.n, arm), data.cost_matrix(pred.p), budget)


# --- off-policy values -----------------------------------------------------------------------------------------


def snips_policies(
    data: IncentiveData,
    policies: Mapping[str, np.ndarray],
    *,
    reference: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> OPEResult:
    """SNIPS value (spend) of each policy on the randomized log, paired bootstrap lifts over ``reference``."""
    log = RandomizedLog.from_arrays(data.arm, data.propensity, data.converted, data.value, n_arms=data.n_arms)
    return evaluate_policies(log, policies, reference=reference, n_bootstrap=n_bootstrap, seed=seed)


# --- Qini and uplift curves (scikit-uplift's definitions) ------------------------------------------------------


def _cumulative(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    treated = np.asarray(treated).astype(np.float64)
    order = np.argsort(score, kind="mergesort")[::-1]
    y, score, treated = y[order], score[order], treated[order]
    # one point per distinct score (ties move together), as scikit-uplift does
    idx = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    n_t = np.cumsum(treated)[idx]
    y_t = np.cumsum(y * treated)[idx]
    y_c = np.cumsum(y * (1 - treated))[idx]
    n_all = (idx + 1).astype(np.float64)
    return n_all, n_t, n_all - n_t, y_t, y_c


def _start_at_origin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.size == 0 or y[0] != 0 or x[0] != 0:
        return np.r_[0.0, x], np.r_[0.0, y]
    return x, y


def uplift_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve: (customers targeted, (response rate treated - control) x customers targeted)."""
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, score, treated)
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t != 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c != 0)
    return _start_at_origin(n_all, (rate_t - rate_c) * n_all)


def qini_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: (customers targeted, treated responses - control responses x n_treated / n_control)."""
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, score, treated)
    return _start_at_origin(n_all, y_t - y_c * np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0))


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _normalised(x: np.ndarray, y: np.ndarray, xp: np.ndarray, yp: np.ndarray) -> float:
    base = _area(np.array([0.0, xp[-1]]), np.array([0.0, yp[-1]]))
    perfect = _area(xp, yp) - base
    return (_area(x, y) - base) / perfect if perfect != 0 else float("nan")


def uplift_auc_score(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Area between the uplift curve and the random line, over that of the perfect curve (binary y)."""
    y = np.asarray(y)
    treated = np.asarray(treated)
    cr = np.sum((y == 1) & (treated == 0))
    tn = np.sum((y == 0) & (treated == 1))
    perfect = 2 * (y == treated) + (y if cr > tn else treated)
    xp, yp = uplift_curve(y, perfect, treated)
    return _normalised(*uplift_curve(y, score, treated), xp, yp)


def qini_auc_score(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Qini coefficient: area between the Qini curve and the random line over the perfect one's (binary y;
    the perfect curve ranks treated responders first and control responders last, negative effects included)."""
    y = np.asarray(y, dtype=np.float64)
    treated = np.asarray(treated, dtype=np.float64)
    xp, yp = qini_curve(y, y * treated - y * (1 - treated), treated)
    return _normalised(*qini_curve(y, score, treated), xp, yp)
