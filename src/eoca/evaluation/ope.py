"""Off-policy evaluation of allocation policies on randomized logs (Hillstrom-style experiments).

On real data outcomes cannot be simulated for pairs that were never delivered. When the log comes from a
randomized experiment (each customer got one arm with a known propensity, e.g. 1/3 in Hillstrom), the value of
any other policy can still be estimated without bias by inverse propensity weighting: a customer whose logged
arm is the one the policy would have chosen stands in for ``1 / propensity`` customers like them.

For a policy pi and customer i with logged arm a_i, propensity p_i and outcome y_i, the weight is
``w_i = pi(a_i | i) / p_i`` (for a deterministic policy, 1 if it picks a_i, else 0) and

* IPS   = sum_i w_i y_i / n                 (unbiased; its variance grows with the spread of the weights),
* SNIPS = sum_i w_i y_i / sum_i w_i         (self-normalised: a weighted mean of the matching customers'
  outcomes; slightly biased for small samples, but far more stable, and exactly the sample mean for the
  logging policy itself).

Values are reported per mille (per 1,000 customers treated by the policy) for conversions and spend.

Intervals come from a nonparametric bootstrap over customers, the unit that was randomized. Lifts between two
policies use the *same* resamples for both (paired), which keeps the correlation from customers on whom the
policies agree, so the interval reflects only the part of the data where they differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoca.errors import DataValidationError, EocaError
from eoca.evaluation.metrics import lift_pct
from eoca.evaluation.online import bootstrap_counts, percentile_interval

_ROWSUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RandomizedLog:
    """A validated randomized log; build it with :meth:`from_arrays`.

    Attributes:
        arm: int64, shape (n,): the arm each customer was logged with, in [0, n_arms).
        propensity: float64, shape (n,): probability the logging policy gave that arm, in (0, 1].
        converted: float64, shape (n,): 1.0 if the customer converted, else 0.0.
        spend: float64, shape (n,): amount spent (>= 0).
        n_arms: number of arms.
    """

    arm: np.ndarray
    propensity: np.ndarray
    converted: np.ndarray
    spend: np.ndarray
    n_arms: int

    @property
    def n(self) -> int:
        return int(self.arm.size)

    @classmethod
    def from_arrays(
        cls,
        arm: Any,
        propensity: Any,
        converted: Any,
        spend: Any,
        *,
        n_arms: int | None = None,
    ) -> RandomizedLog:
        """Validate and store a log; every error names the offending argument and the first bad rows.

        Args:
            arm: integer array, shape (n,).
            propensity: float array, shape (n,), each in (0, 1].
            converted: array of 0/1 (or bool), shape (n,).
            spend: float array, shape (n,), finite and >= 0.
            n_arms: number of arms; defaults to ``max(arm) + 1``.
        """
        arm_a = _vector(arm, "arm")
        n = arm_a.size
        if n == 0:
            raise DataValidationError("arm: the log is empty; off-policy evaluation needs logged customers")
        prop = _vector(propensity, "propensity", n)
        conv = _vector(converted, "converted", n)
        spend_a = _vector(spend, "spend", n)

        if not np.issubdtype(arm_a.dtype, np.integer):
            raise DataValidationError(f"arm must hold integer arm indices, got dtype {arm_a.dtype}")
        arm_a = arm_a.astype(np.int64)
        k = int(arm_a.max()) + 1 if n_arms is None else int(n_arms)
        _no_rows((arm_a < 0) | (arm_a >= k), "arm", f"must lie in [0, {k}) ({k} arms)", arm_a)

        prop = _as_float(prop, "propensity")
        _no_rows(np.isnan(prop), "propensity", "is missing (NaN)", prop)
        _no_rows(
            ~((prop > 0.0) & (prop <= 1.0)),
            "propensity",
            "must lie in (0, 1]; a zero propensity means the logged arm could not have been chosen, "
            "so inverse weighting is undefined",
            prop,
        )

        conv_f = _as_float(conv, "converted")
        _no_rows(~np.isin(conv_f, (0.0, 1.0)), "converted", "must be 0 or 1", conv_f)
        spend_f = _as_float(spend_a, "spend")
        _no_rows(~np.isfinite(spend_f) | (spend_f < 0), "spend", "must be finite and >= 0", spend_f)
        return cls(arm=arm_a, propensity=prop, converted=conv_f, spend=spend_f, n_arms=k)


@dataclass(frozen=True)
class PolicyValue:
    """Estimated value of one policy. Per-mille values are per 1,000 customers treated by the policy.

    ``n_matched`` is the expected number of logged customers whose arm the policy would also have chosen
    (for a deterministic policy: the exact count), i.e. the customers the estimate rests on. ``ess`` is
    Kish's effective sample size of the weights, (sum w)^2 / sum w^2.
    """

    name: str
    n_customers: int
    n_matched: float
    ess: float
    conversions_per_mille: float
    conversions_per_mille_ci: tuple[float, float]
    spend_per_mille: float
    spend_per_mille_ci: tuple[float, float]
    ips_conversions_per_mille: float
    ips_conversions_per_mille_ci: tuple[float, float]
    ips_spend_per_mille: float
    ips_spend_per_mille_ci: tuple[float, float]


@dataclass(frozen=True)
class PolicyLift:
    """% lift of ``policy`` over ``reference`` (SNIPS values), with paired bootstrap intervals."""

    policy: str
    reference: str
    conversions_lift_pct: float | None
    conversions_lift_ci: tuple[float, float]
    spend_lift_pct: float | None
    spend_lift_ci: tuple[float, float]


@dataclass(frozen=True)
class OPEResult:
    """Values of several policies estimated on one log, and their lifts over a reference policy."""

    policies: tuple[PolicyValue, ...]
    lifts: tuple[PolicyLift, ...]
    reference: str | None
    n_bootstrap: int
    confidence: float
    seed: int

    def __getitem__(self, name: str) -> PolicyValue:
        for pv in self.policies:
            if pv.name == name:
                return pv
        raise KeyError(name)

    def lift(self, name: str) -> PolicyLift:
        for lift in self.lifts:
            if lift.policy == name:
                return lift
        raise KeyError(name)

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per policy (intervals as ``*_ci_low``/``*_ci_high``; ``None`` if not applicable)."""
        lifts = {lift.policy: lift for lift in self.lifts}
        rows: list[dict[str, Any]] = []
        for pv in self.policies:
            lift = lifts.get(pv.name)
            rows.append(
                {
                    "policy": pv.name,
                    "role": "reference" if pv.name == self.reference else "",
                    "customers": pv.n_customers,
                    "matched": pv.n_matched,
                    "ess": pv.ess,
                    "conversions_per_mille": pv.conversions_per_mille,
                    "conversions_per_mille_ci_low": pv.conversions_per_mille_ci[0],
                    "conversions_per_mille_ci_high": pv.conversions_per_mille_ci[1],
                    "spend_per_mille": pv.spend_per_mille,
                    "spend_per_mille_ci_low": pv.spend_per_mille_ci[0],
                    "spend_per_mille_ci_high": pv.spend_per_mille_ci[1],
                    "ips_conversions_per_mille": pv.ips_conversions_per_mille,
                    "ips_spend_per_mille": pv.ips_spend_per_mille,
                    "conversions_lift_pct": None if lift is None else lift.conversions_lift_pct,
                    "conversions_lift_ci_low": None if lift is None else lift.conversions_lift_ci[0],
                    "conversions_lift_ci_high": None if lift is None else lift.conversions_lift_ci[1],
                    "spend_lift_pct": None if lift is None else lift.spend_lift_pct,
                    "spend_lift_ci_low": None if lift is None else lift.spend_lift_ci[0],
                    "spend_lift_ci_high": None if lift is None else lift.spend_lift_ci[1],
                }
            )
        return rows


def uniform_policy(n: int, n_arms: int) -> np.ndarray:
    """The uniformly random policy as per-customer arm probabilities, shape (n, n_arms)."""
    if n_arms < 1:
        raise EocaError(f"n_arms must be >= 1, got {n_arms}")
    return np.full((n, n_arms), 1.0 / n_arms)


def constant_policy(n: int, arm: int) -> np.ndarray:
    """The policy sending every customer the same arm, as chosen arms, int64 shape (n,)."""
    return np.full(n, arm, dtype=np.int64)


def estimate_policy_value(
    log: RandomizedLog,
    policy: Any,
    *,
    name: str = "policy",
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PolicyValue:
    """SNIPS and IPS value of one policy on ``log``, with bootstrap intervals over customers.

    Args:
        log: the randomized log.
        policy: either chosen arms, integer array of shape (n,) (a deterministic policy), or per-customer arm
            probabilities, float array of shape (n, n_arms) with rows summing to 1 (a stochastic policy).
        name: label used in the result and in error messages.
    """
    return evaluate_policies(log, {name: policy}, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed).policies[0]


def compare_policies(
    log: RandomizedLog,
    policy: Any,
    reference: Any,
    *,
    names: tuple[str, str] = ("policy", "reference"),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PolicyLift:
    """% lift of ``policy`` over ``reference`` (SNIPS), with a paired bootstrap interval over customers."""
    if names[0] == names[1]:
        raise EocaError(f"compare_policies needs two different names, got {names[0]!r} twice")
    result = evaluate_policies(
        log,
        {names[0]: policy, names[1]: reference},
        reference=names[1],
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
    return result.lift(names[0])


def evaluate_policies(
    log: RandomizedLog,
    policies: Mapping[str, Any],
    *,
    reference: str | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> OPEResult:
    """Estimate several policies on the same bootstrap resamples; lifts are against ``reference`` if given.

    Args:
        log: the randomized log (n customers).
        policies: name -> policy, each as in :func:`estimate_policy_value`.
        reference: name of the policy lifts are measured against (e.g. "best single arm" or "random").
        n_bootstrap: replicates; 0 disables intervals (they become NaN).
        confidence: interval coverage, e.g. 0.95.
        seed: seeds the bootstrap.

    Raises:
        EocaError: a policy that never agrees with a logged arm (its value cannot be estimated from this log),
            an unknown reference, or bad bootstrap settings.
        DataValidationError: a malformed policy array (the message names the policy).
    """
    if not policies:
        raise EocaError("evaluate_policies needs at least one policy")
    if reference is not None and reference not in policies:
        raise EocaError(f"reference policy '{reference}' is not among the policies: {sorted(policies)}")
    if not 0.0 < confidence < 1.0:
        raise EocaError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_bootstrap < 0:
        raise EocaError(f"n_bootstrap must be >= 0, got {n_bootstrap}")

    names = list(policies)
    n = log.n
    # Columns per policy: [w, w * converted, w * spend]; every estimate is a ratio of (weighted) sums of them.
    cols = np.empty((n, 3 * len(names)), dtype=np.float64)
    matched: list[float] = []
    for p, name in enumerate(names):
        prob_logged = _prob_of_logged_arm(log, policies[name], name)
        if not prob_logged.any():
            raise EocaError(
                f"policy '{name}' never chooses a customer's logged arm, so this log says nothing about its "
                "value (no customer matches it)"
            )
        w = prob_logged / log.propensity
        cols[:, 3 * p] = w
        cols[:, 3 * p + 1] = w * log.converted
        cols[:, 3 * p + 2] = w * log.spend
        matched.append(float(prob_logged.sum()))

    sums = cols.sum(axis=0)
    boot = np.empty((n_bootstrap, cols.shape[1]), dtype=np.float64)
    row = 0
    for counts in bootstrap_counts(n, n_bootstrap, np.random.default_rng(seed)):
        boot[row : row + counts.shape[0]] = counts @ cols
        row += counts.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        # A resample can miss every matching customer of a rare policy; its ratio is NaN and is skipped.
        boot_snips_conv = boot[:, 1::3] / boot[:, 0::3] * 1000.0
        boot_snips_spend = boot[:, 2::3] / boot[:, 0::3] * 1000.0
    boot_ips_conv = boot[:, 1::3] / n * 1000.0
    boot_ips_spend = boot[:, 2::3] / n * 1000.0

    values = []
    for p, name in enumerate(names):
        w = cols[:, 3 * p]
        values.append(
            PolicyValue(
                name=name,
                n_customers=n,
                n_matched=matched[p],
                ess=float(w.sum() ** 2 / np.square(w).sum()),
                conversions_per_mille=float(sums[3 * p + 1] / sums[3 * p] * 1000.0),
                conversions_per_mille_ci=percentile_interval(boot_snips_conv[:, p], confidence),
                spend_per_mille=float(sums[3 * p + 2] / sums[3 * p] * 1000.0),
                spend_per_mille_ci=percentile_interval(boot_snips_spend[:, p], confidence),
                ips_conversions_per_mille=float(sums[3 * p + 1] / n * 1000.0),
                ips_conversions_per_mille_ci=percentile_interval(boot_ips_conv[:, p], confidence),
                ips_spend_per_mille=float(sums[3 * p + 2] / n * 1000.0),
                ips_spend_per_mille_ci=percentile_interval(boot_ips_spend[:, p], confidence),
            )
        )

    lifts = []
    if reference is not None:
        r = names.index(reference)
        for p, name in enumerate(names):
            if p == r:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                conv_ci = percentile_interval((boot_snips_conv[:, p] / boot_snips_conv[:, r] - 1.0) * 100.0, confidence)
                spend_ci = percentile_interval(
                    (boot_snips_spend[:, p] / boot_snips_spend[:, r] - 1.0) * 100.0, confidence
                )
            lifts.append(
                PolicyLift(
                    policy=name,
                    reference=reference,
                    conversions_lift_pct=lift_pct(values[p].conversions_per_mille, values[r].conversions_per_mille),
                    conversions_lift_ci=conv_ci,
                    spend_lift_pct=lift_pct(values[p].spend_per_mille, values[r].spend_per_mille),
                    spend_lift_ci=spend_ci,
                )
            )
    return OPEResult(
        policies=tuple(values),
        lifts=tuple(lifts),
        reference=reference,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )


def _prob_of_logged_arm(log: RandomizedLog, policy: Any, name: str) -> np.ndarray:
    """pi(a_i | i) for every logged customer, shape (n,), from a deterministic or stochastic policy."""
    arr = np.asarray(policy)
    n, k = log.n, log.n_arms
    where = f"policy '{name}'"
    if arr.ndim == 1:
        if arr.size != n:
            raise DataValidationError(f"{where} has {arr.size:,} entries but the log has {n:,} customers")
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataValidationError(
                f"{where}: a 1-D policy must hold integer arm indices, got dtype {arr.dtype} "
                f"(give a stochastic policy as an (n, n_arms) probability matrix)"
            )
        _no_rows((arr < 0) | (arr >= k), where, f"chooses an arm outside [0, {k})", arr)
        return (arr == log.arm).astype(np.float64)
    if arr.ndim == 2:
        if arr.shape != (n, k):
            raise DataValidationError(f"{where} has shape {arr.shape}; expected ({n}, {k}) = (customers, arms)")
        probs = arr.astype(np.float64)
        bad = np.asarray(~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1))
        _no_rows(bad, where, "has negative or non-finite probabilities", np.arange(n))
        _no_rows(
            np.abs(probs.sum(axis=1) - 1.0) > _ROWSUM_TOLERANCE,
            where,
            "has rows of probabilities that do not sum to 1",
            probs.sum(axis=1),
        )
        return probs[np.arange(n), log.arm]
    raise DataValidationError(f"{where} must be 1-D (arms) or 2-D (probabilities), got shape {arr.shape}")


def _vector(values: Any, argument: str, expected: int | None = None) -> np.ndarray:
    if values is None:
        raise DataValidationError(f"{argument} is missing")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataValidationError(f"{argument} must be a 1-D array, got shape {arr.shape}")
    if expected is not None and arr.size != expected:
        raise DataValidationError(
            f"{argument} has {arr.size:,} entries but arm has {expected:,}; all log arrays need one entry per customer"
        )
    return arr


def _as_float(arr: np.ndarray, argument: str) -> np.ndarray:
    if arr.dtype == object:
        # Lists with None (e.g. from a table with nulls) arrive as object arrays; None becomes NaN so the
        # caller's missing-value check reports the rows instead of a bare conversion error.
        try:
            return np.array([np.nan if v is None else float(v) for v in arr], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{argument} must be numeric: {exc}") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataValidationError(f"{argument} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _no_rows(mask: np.ndarray, argument: str, problem: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(mask)
    if bad.size:
        first = ", ".join(f"row {int(i)} ({values[int(i)].tolist()!r})" for i in bad[:3])
        raise DataValidationError(f"{argument} {problem}: {bad.size:,} row(s), first at {first}")
