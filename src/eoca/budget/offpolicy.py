"""Paired off-policy comparisons on a randomized log: SNIPS and the doubly robust estimator side by side, and
the power of such a comparison.

For a policy pi (probabilities pi(t | i), shape (n, k)), customer i logged with arm a_i at propensity e_i and
outcome y_i, and an outcome model mu(i, t) (the predicted value of every arm, fitted on other customers):

* **SNIPS**: sum_i w_i y_i / sum_i w_i with w_i = pi(a_i | i) / e_i.
* **DR** (doubly robust, Dudik et al. 2011; the IPS estimator with the outcome model as control variate):
  the mean over customers of Gamma_i(pi) = sum_t pi(t | i) mu(i, t) + w_i (y_i - mu(i, a_i)). On a randomized
  log (known e) it is unbiased for *any* mu that does not use customer i's own outcome, so mu must be
  cross-fitted; the better mu predicts y, the smaller its variance.

A comparison of two policies uses the same bootstrap resamples of customers for both (paired), so the noise
they share cancels: when the policies are equal the difference is exactly 0 in every resample. For DR the
difference is itself a mean of per-customer terms Gamma_i(pi) - Gamma_i(ref), whose standard error is the
basis of :func:`power_analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from eoca.errors import DataValidationError, EocaError
from eoca.evaluation.online import bootstrap_counts, percentile_interval

__all__ = [
    "ESTIMATORS",
    "PairedDifference",
    "PowerAnalysis",
    "dr_terms",
    "paired_differences",
    "policy_matrix",
    "power_analysis",
]

ESTIMATORS = ("snips", "dr")
_ROWSUM_TOLERANCE = 1e-6


def policy_matrix(policy: Any, n: int, k: int, name: str = "policy") -> np.ndarray:
    """A policy as probabilities, float64 (n, k): from chosen arms (int, (n,)) or probabilities ((n, k), rows
    summing to 1)."""
    arr = np.asarray(policy)
    where = f"policy '{name}'"
    if arr.ndim == 1:
        if arr.size != n:
            raise DataValidationError(f"{where} has {arr.size:,} entries but the log has {n:,} customers")
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataValidationError(f"{where}: a 1-D policy must hold integer arm indices, got dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= k))
        if bad.size:
            raise DataValidationError(
                f"{where} chooses arm {int(arr[bad[0]])} at row {int(bad[0])}; arms are 0..{k - 1}"
            )
        out = np.zeros((n, k))
        out[np.arange(n), arr] = 1.0
        return out
    if arr.shape != (n, k):
        raise DataValidationError(f"{where} has shape {arr.shape}; expected ({n}, {k}) = (customers, arms)")
    probs = arr.astype(np.float64)
    off_simplex = np.abs(probs.sum(axis=1) - 1.0) > _ROWSUM_TOLERANCE
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | off_simplex)
    if bad.size:
        raise DataValidationError(
            f"{where}: row {int(bad[0])} is not a probability vector ({probs[bad[0]].tolist()}); {bad.size:,} such rows"
        )
    return probs


def _check_log(arm: np.ndarray, propensity: np.ndarray, y: np.ndarray, k: int) -> None:
    n = arm.size
    if n == 0:
        raise DataValidationError("the log is empty; off-policy evaluation needs logged customers")
    for name, v in (("propensity", propensity), ("outcome", y)):
        if v.shape != (n,):
            raise DataValidationError(f"{name} has shape {v.shape}; expected ({n},), one entry per logged customer")
    bad = np.flatnonzero((arm < 0) | (arm >= k))
    if bad.size:
        raise DataValidationError(f"logged arm {int(arm[bad[0]])} at row {int(bad[0])} is outside 0..{k - 1}")
    bad = np.flatnonzero(~((propensity > 0) & (propensity <= 1)))
    if bad.size:
        raise DataValidationError(
            f"propensity must lie in (0, 1]; row {int(bad[0])} has {propensity[bad[0]]!r} ({bad.size:,} such rows)"
        )
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataValidationError(f"outcome is not finite at row {int(bad[0])} ({bad.size:,} such rows)")


def dr_terms(arm: np.ndarray, propensity: np.ndarray, y: np.ndarray, probs: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Per-customer doubly robust terms Gamma_i, shape (n,); their mean is the DR value of the policy ``probs``
    (n, k) given the outcome model ``mu`` (n, k)."""
    rows = np.arange(arm.size)
    w = probs[rows, arm] / propensity
    return np.asarray((probs * mu).sum(axis=1) + w * (y - mu[rows, arm]))


@dataclass(frozen=True)
class PairedDifference:
    """Value of ``policy`` and its difference to ``reference`` by one estimator; intervals from the same
    bootstrap resamples for both policies. ``difference_se`` is the bootstrap standard deviation of the
    difference."""

    estimator: str
    policy: str
    reference: str
    value: float
    value_ci: tuple[float, float]
    reference_value: float
    difference: float
    difference_ci: tuple[float, float]
    difference_se: float
    lift_pct: float
    lift_ci: tuple[float, float]

    def to_row(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "policy": self.policy,
            "reference": self.reference,
            "value": self.value,
            "value_ci_low": self.value_ci[0],
            "value_ci_high": self.value_ci[1],
            "reference_value": self.reference_value,
            "difference": self.difference,
            "difference_ci_low": self.difference_ci[0],
            "difference_ci_high": self.difference_ci[1],
            "difference_se": self.difference_se,
            "lift_pct": self.lift_pct,
            "lift_ci_low": self.lift_ci[0],
            "lift_ci_high": self.lift_ci[1],
        }


def paired_differences(
    arm: Any,
    propensity: Any,
    y: Any,
    policies: Mapping[str, Any],
    *,
    n_arms: int,
    reference: str,
    mu: Any | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[PairedDifference]:
    """SNIPS (and DR when ``mu`` is given) value of every policy and its difference to ``reference``.

    Args:
        arm: int (n,) logged arms in 0..n_arms-1; propensity: (n,) in (0, 1]; y: (n,) outcomes.
        policies: name -> chosen arms (n,) or probabilities (n, k); must contain ``reference``.
        mu: predicted outcome of every customer x arm, (n, k), fitted without the customer's own outcome
            (cross-fitted); without it only SNIPS is reported.
        n_bootstrap: paired bootstrap replicates over customers (>= 1).

    Returns one :class:`PairedDifference` per policy other than the reference and estimator, SNIPS first.
    """
    arm_a = np.asarray(arm)
    if arm_a.ndim != 1 or not np.issubdtype(arm_a.dtype, np.integer):
        raise DataValidationError(f"arm must be a 1-D integer array, got shape {arm_a.shape} and dtype {arm_a.dtype}")
    e = np.asarray(propensity, dtype=np.float64)
    y_a = np.asarray(y, dtype=np.float64)
    if reference not in policies:
        raise EocaError(f"reference policy '{reference}' is not among the policies: {sorted(policies)}")
    if n_bootstrap < 1:
        raise EocaError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise EocaError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = arm_a.size
    mu_a = None if mu is None else np.asarray(mu, dtype=np.float64)
    k = int(n_arms)
    if mu_a is not None and mu_a.shape != (n, k):
        raise DataValidationError(f"outcome model mu has shape {mu_a.shape}; expected ({n}, {k}) = (customers, arms)")
    if mu_a is not None and not np.isfinite(mu_a).all():
        raise DataValidationError("outcome model mu has non-finite predictions")
    _check_log(arm_a, e, y_a, k)

    names = list(policies)
    estimators = ["snips"] + (["dr"] if mu_a is not None else [])
    rows = np.arange(n)
    # per policy: [w, w y] (SNIPS is their ratio) and Gamma (DR is its mean); resampling counts times these
    # columns give every estimate of one replicate
    width = 3 if mu_a is not None else 2
    cols = np.empty((n, width * len(names)))
    for j, name in enumerate(names):
        probs = policy_matrix(policies[name], n, k, name)
        w = probs[rows, arm_a] / e
        if not w.any():
            raise EocaError(f"policy '{name}' never chooses a customer's logged arm; this log says nothing about it")
        cols[:, width * j] = w
        cols[:, width * j + 1] = w * y_a
        if mu_a is not None:
            cols[:, width * j + 2] = dr_terms(arm_a, e, y_a, probs, mu_a)
    sums = cols.sum(axis=0)
    boot = np.empty((n_bootstrap, cols.shape[1]))
    r0 = 0
    for counts in bootstrap_counts(n, n_bootstrap, np.random.default_rng(seed)):
        boot[r0 : r0 + counts.shape[0]] = counts @ cols
        r0 += counts.shape[0]

    def values(x: np.ndarray, est: str) -> np.ndarray:
        if est == "snips":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.asarray(x[..., 1::width] / x[..., 0::width])
        return np.asarray(x[..., 2::width] / n)

    out: list[PairedDifference] = []
    r = names.index(reference)
    for est in estimators:
        point = values(sums, est)
        reps = values(boot, est)
        for j, name in enumerate(names):
            if j == r:
                continue
            diff = reps[:, j] - reps[:, r]
            with np.errstate(divide="ignore", invalid="ignore"):
                lift = (reps[:, j] / reps[:, r] - 1.0) * 100.0
            finite = diff[np.isfinite(diff)]
            out.append(
                PairedDifference(
                    estimator=est,
                    policy=name,
                    reference=reference,
                    value=float(point[j]),
                    value_ci=percentile_interval(reps[:, j], confidence),
                    reference_value=float(point[r]),
                    difference=float(point[j] - point[r]),
                    difference_ci=percentile_interval(diff, confidence),
                    difference_se=float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                    lift_pct=float((point[j] / point[r] - 1.0) * 100.0) if point[r] != 0 else math.nan,
                    lift_ci=percentile_interval(lift, confidence),
                )
            )
    return out


@dataclass(frozen=True)
class PowerAnalysis:
    """How small a policy-vs-reference difference a comparison with standard error ``se`` can detect.

    ``detectable``: the true difference at which the two-sided ``confidence`` interval clears zero half the time
    (z_{1-alpha/2} x se); ``detectable_at_power``: the one at which it clears zero with probability ``power``
    ((z_{1-alpha/2} + z_power) x se). Percentages are of ``reference_value``.
    """

    n: int
    se: float
    reference_value: float
    confidence: float
    power: float
    detectable: float
    detectable_at_power: float

    @property
    def detectable_pct(self) -> float:
        return 100.0 * self.detectable / self.reference_value

    @property
    def detectable_at_power_pct(self) -> float:
        return 100.0 * self.detectable_at_power / self.reference_value

    def customers_needed(self, difference: float) -> float:
        """Customers needed for ``difference`` to be detected with ``power`` (se shrinks as 1/sqrt(n));
        infinite for a difference <= 0."""
        if difference <= 0:
            return math.inf
        return self.n * (self.detectable_at_power / difference) ** 2

    def to_row(self) -> dict[str, Any]:
        return {
            "customers": self.n,
            "difference_se": self.se,
            "reference_value": self.reference_value,
            "detectable_50pct": self.detectable,
            "detectable_50pct_pct": self.detectable_pct,
            f"detectable_{round(100 * self.power)}pct": self.detectable_at_power,
            f"detectable_{round(100 * self.power)}pct_pct": self.detectable_at_power_pct,
        }


def power_analysis(
    se: float, n: int, reference_value: float, *, confidence: float = 0.95, power: float = 0.8
) -> PowerAnalysis:
    """The smallest detectable difference of a comparison whose estimate has standard error ``se`` on ``n``
    customers (normal approximation)."""
    if not (math.isfinite(se) and se > 0):
        raise EocaError(f"standard error must be a positive number, got {se!r}")
    if not (0.0 < confidence < 1.0 and 0.0 < power < 1.0):
        raise EocaError(f"confidence and power must lie in (0, 1), got {confidence} and {power}")
    z_a = float(stats.norm.ppf(0.5 + confidence / 2.0))
    z_b = float(stats.norm.ppf(power))
    return PowerAnalysis(
        n=int(n),
        se=float(se),
        reference_value=float(reference_value),
        confidence=confidence,
        power=power,
        detectable=z_a * se,
        detectable_at_power=(z_a + z_b) * se,
    )
