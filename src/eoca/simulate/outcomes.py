"""The outcome model of the simulator, in one place: how a (customer, fund) pair's click and conversion
probabilities and its amount distribution follow from the latent traits, the true ETV, and the draw of
outcomes with common random numbers.

Amount convention (EOCA Eq. 7 and 13): given conversion, V = log(A + 1) ~ Normal(mu, sigma), so
A = exp(V) - 1 and E[A | convert] = exp(mu + sigma^2 / 2) - 1, hence ETV = p * (exp(mu + sigma^2 / 2) - 1).
A draw with V < 0 would be a negative amount and is recorded as 0. ``mu >= amount.mu_min`` (default 4.6) and
``sigma <= amount.sigma_max`` (default 2.0) bound that case's probability by Phi(-2.3) ~ 1%, and its effect on
the mean by that probability times less than one currency unit, negligible against amounts in the thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import expit, ndtri

from eoca import etv
from eoca.errors import ConfigError
from eoca.simulate.config import SimulatorConfig

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 whose outputs look independent for nearby inputs."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _unit(x: np.ndarray) -> np.ndarray:
    """Top 53 bits of uint64 as a float strictly inside (0, 1), so ndtri never returns +-inf."""
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def pair_uniforms(customer_pos: np.ndarray, fund_pos: np.ndarray, stream: int, n: int = 2) -> np.ndarray:
    """Counter-based uniforms: ``n`` numbers in (0, 1) per pair, a pure function of (stream, customer, fund).

    Args:
        customer_pos, fund_pos: int arrays, shape (m,).
        stream: non-negative integer naming the random stream.
        n: uniforms per pair.

    Returns:
        float64 array, shape (n, m). Row r of pair (c, f) depends on nothing but (stream, c, f, r), which is
        what makes draws for a pair identical whichever other pairs share the call.
    """
    c = np.asarray(customer_pos).astype(np.uint64, copy=False)
    f = np.asarray(fund_pos).astype(np.uint64, copy=False)
    if c.shape != f.shape or c.ndim != 1:
        raise ValueError(f"customer_pos and fund_pos must be 1-d of equal length, got {c.shape} and {f.shape}")
    if stream < 0:
        raise ValueError(f"stream must be >= 0, got {stream}")
    s = _mix(np.array([stream & _MASK], dtype=np.uint64) + _GOLDEN)
    # Nesting the mix per key component keeps (c, f) and (f, c) apart and every component bijective.
    h = _mix(_mix(s + c) + f * _GOLDEN)
    # Offsets are formed in Python integers (mod 2^64) so numpy never multiplies overflowing scalars.
    offsets = [np.uint64(((r + 1) * 0x9E3779B97F4A7C15) & _MASK) for r in range(n)]
    return np.stack([_unit(_mix(h + off)) for off in offsets])


class Outcomes(NamedTuple):
    """Drawn outcomes of m pairs: ``clicked`` (int8, (m,), or None when no CTR was given), ``converted``
    (int8, (m,)) and ``amount`` (float64, (m,), 0 where not converted)."""

    clicked: np.ndarray | None
    converted: np.ndarray
    amount: np.ndarray


def draw_outcomes(
    p: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    customer_pos: np.ndarray,
    fund_pos: np.ndarray,
    stream: int,
    ctr: np.ndarray | None = None,
) -> Outcomes:
    """Draw click, conversion and amount for m pairs with common random numbers.

    Args:
        p, mu, sigma: float arrays, shape (m,): each pair's true CTCVR and log-amount parameters.
        customer_pos, fund_pos: int arrays, shape (m,): the pairs (row positions in customers and funds).
        stream: random stream; the same (stream, customer, fund) always gets the same uniforms.
        ctr: optional float array, shape (m,), with ``ctr >= p``: true click probabilities. The click uses
            the conversion's own uniform (clicked = u < ctr, converted = u < p), so every conversion is a click
            and P(convert | click) = p / ctr, while ``converted`` does not depend on whether ctr is given.

    Returns:
        :class:`Outcomes`; amount = max(exp(mu + sigma * z) - 1, 0) for converted pairs, 0 otherwise.
    """
    p = np.asarray(p, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    m = np.asarray(customer_pos).shape[0]
    for name, arr in (("p", p), ("mu", mu), ("sigma", sigma)):
        if arr.shape != (m,):
            raise ValueError(f"{name} must have shape ({m},) like customer_pos, got {arr.shape}")
    u = pair_uniforms(customer_pos, fund_pos, stream, n=2)
    conv = u[0] < p
    amount = np.zeros(m, dtype=np.float64)
    z = ndtri(u[1, conv])
    amount[conv] = np.maximum(np.expm1(mu[conv] + sigma[conv] * z), 0.0)
    clicked = None
    if ctr is not None:
        ctr = np.asarray(ctr, dtype=np.float64)
        if ctr.shape != (m,):
            raise ValueError(f"ctr must have shape ({m},), got {ctr.shape}")
        if np.any(ctr < p):
            raise ValueError("ctr must be >= p for every pair (a conversion needs a click)")
        clicked = (u[0] < ctr).astype(np.int8)
    return Outcomes(clicked, conv.astype(np.int8), amount)


def expected_amount(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[A | convert] = exp(mu + sigma^2 / 2) - 1 (same shape as the inputs); :func:`eoca.etv.expected_amount`."""
    return np.asarray(etv.expected_amount(np.asarray(mu), np.asarray(sigma)))


def expected_value(p: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """True ETV = p * (exp(mu + sigma^2 / 2) - 1) (EOCA Eq. 13), elementwise; the formula the models use too."""
    return np.asarray(etv.etv_eoca(np.asarray(p), np.asarray(mu), np.asarray(sigma)))


def sample_amounts(mu: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Amounts of purchases known to happen (behaviour history), from the same law as converted outcomes."""
    z = rng.standard_normal(np.shape(mu))
    return np.maximum(np.expm1(mu + sigma * z), 0.0)


@dataclass(frozen=True)
class PairLatents:
    """Latent inputs of the outcome model, gathered per (customer, fund) pair; arrays of shape (n, K)
    except where noted.

    Attributes:
        preference: the customer's preference for the fund's type.
        history: log(1 + the customer's past purchases of funds of that type).
        risk_gap: max(0, fund risk level - (3 + risk appetite)), how far the fund exceeds the latent appetite.
        engagement, z_capital, ticket_style, dispersion: customer traits, shape (n,), standard normal.
        fund_appeal, fund_amount, fund_risk: fund traits, shape (K,); fund_risk = (risk level - 3) / 2.
        pair_noise: standard normal idiosyncratic log-amount noise, shape (n, K).
    """

    preference: np.ndarray
    history: np.ndarray
    risk_gap: np.ndarray
    engagement: np.ndarray
    z_capital: np.ndarray
    ticket_style: np.ndarray
    dispersion: np.ndarray
    fund_appeal: np.ndarray
    fund_amount: np.ndarray
    fund_risk: np.ndarray
    pair_noise: np.ndarray


def click_and_conversion_logits(lat: PairLatents, cfg: SimulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Click logit and conversion-given-click logit (before the calibrated CVR shift), each shape (n, K)."""
    cc = cfg.conversion
    ctr_logit = (
        cc.ctr_intercept
        + cc.ctr_preference * lat.preference
        + cc.ctr_engagement * lat.engagement[:, None]
        + cc.ctr_history * lat.history
        + lat.fund_appeal[None, :]
    )
    cvr_logit = (
        cc.cvr_preference * lat.preference
        + cc.cvr_engagement * lat.engagement[:, None]
        + cc.cvr_history * lat.history
        - cc.cvr_risk_gap * lat.risk_gap
    )
    return ctr_logit, cvr_logit


def calibrate_cvr_shift(ctr: np.ndarray, cvr_logit: np.ndarray, eligible: np.ndarray, target: float) -> float:
    """The shift s with mean(ctr * sigmoid(cvr_logit + s)) over eligible pairs equal to ``target`` (a
    probability), by bisection; monotone in s, so the root is unique. Inputs shape (n, K)."""
    c, lg = ctr[eligible], cvr_logit[eligible]
    if c.size == 0:
        raise ValueError("no risk-eligible (customer, fund) pair to calibrate conversion on")
    cap = float(c.mean())
    if target >= cap:
        raise ConfigError(
            f"conversion.target_per_mille={1000 * target:g} is not reachable: the mean click rate is only "
            f"{1000 * cap:.3g} per mille; raise conversion.ctr_intercept or lower the target"
        )
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float((c * expit(lg + mid)).mean()) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def amount_parameters(lat: PairLatents, cfg: SimulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """True (mu, sigma) of log(amount + 1) given conversion, each shape (n, K).

    mu grows with capital (elasticity), the customer's own ticket style, type preference and the fund's
    amount effect; sigma varies by customer (dispersion), capital, fund risk and preference, which is the
    heteroscedasticity ESJ is built for.
    """
    ac, cc = cfg.amount, cfg.customers
    mu = (
        np.log(ac.median_ticket)
        + ac.capital_elasticity * cc.capital_log_sd * lat.z_capital[:, None]
        + ac.ticket_style_sd * lat.ticket_style[:, None]
        + ac.preference * lat.preference
        + lat.fund_amount[None, :]
        + ac.pair_sd * lat.pair_noise
    )
    np.maximum(mu, ac.mu_min, out=mu)
    log_sigma = (
        ac.sigma_customer_sd * lat.dispersion[:, None]
        + ac.sigma_capital * lat.z_capital[:, None]
        + ac.sigma_fund_risk * lat.fund_risk[None, :]
        - ac.sigma_preference * lat.preference
    )
    sigma = np.clip(ac.sigma_base * np.exp(log_sigma), ac.sigma_min, ac.sigma_max)
    return mu, sigma
