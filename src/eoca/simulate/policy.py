"""The logged delivery policy that produced the simulated exposures.

An operations team shows each customer one fund per period, choosing on observables only (never on the
latent traits): the fund type the customer used most in the behaviour history (or the questionnaire's stated
favourite when there is no history), the fund's past event volume and how close its risk level is to the
customer's tolerance. The score becomes a softmax over the customer's *eligible* funds (risk level <= risk
tolerance, a regulatory rule the log never breaks), mixed with uniform exploration:

    pi(j | i) = epsilon / |E_i| + (1 - epsilon) * softmax_{j in E_i}(score_ij / temperature),   j in E_i
    score_ij  = type_weight * [type_j == favourite type_i] + popularity_weight * popularity_z_j
                + risk_match_weight * (1 - |risk_j - tolerance_i| / 4)

so every eligible fund has probability >= epsilon / K for every customer, which is what off-policy estimators
need; pi(j | i) of the delivered fund is logged in ``exposures.propensity``.
"""

from __future__ import annotations

import numpy as np

from eoca.risk import eligible_mask
from eoca.simulate.config import PolicyConfig
from eoca.simulate.world import categorical_rows


def policy_probabilities(
    cfg: PolicyConfig,
    favourite_type: np.ndarray,
    fund_type: np.ndarray,
    popularity_z: np.ndarray,
    fund_risk: np.ndarray,
    tolerance: np.ndarray,
) -> np.ndarray:
    """The logging policy's probabilities.

    Args:
        favourite_type: int, shape (N,): observed favourite fund type of each customer.
        fund_type, fund_risk: int, shape (K,); popularity_z: float, shape (K,).
        tolerance: int, shape (N,): risk tolerance.

    Returns:
        float64, shape (N, K): rows sum to 1; 0 exactly where fund_risk > tolerance.
    """
    eligible = eligible_mask(tolerance, fund_risk)
    if not eligible.any(axis=1).all():
        raise ValueError("some customer has no fund at or below their risk tolerance; the log would break the rule")
    score = (
        cfg.type_weight * (fund_type[None, :] == favourite_type[:, None])
        + cfg.popularity_weight * popularity_z[None, :]
        + cfg.risk_match_weight * (1.0 - np.abs(fund_risk[None, :] - tolerance[:, None]) / 4.0)
    ) / cfg.temperature
    score = np.where(eligible, score, -np.inf)
    w = np.exp(score - score.max(axis=1, keepdims=True))
    soft = w / w.sum(axis=1, keepdims=True)
    n_elig = eligible.sum(axis=1, keepdims=True)
    return np.where(eligible, cfg.epsilon / n_elig + (1.0 - cfg.epsilon) * soft, 0.0)


def draw_deliveries(probs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One fund per customer from ``probs`` (shape (N, K)).

    Returns:
        (fund, propensity): int64 and float64 arrays of shape (N,).
    """
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    rows = np.arange(probs.shape[0])
    fund = categorical_rows(cdf, rows, rng.random(rows.size))
    # Guard against landing on a zero-probability column through rounding at a CDF plateau.
    bad = probs[rows, fund] <= 0
    if bad.any():
        fund[bad] = np.argmax(probs[bad], axis=1)
    return fund, probs[rows, fund]
