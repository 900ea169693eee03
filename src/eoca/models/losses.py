"""Every training loss and every ETV formula of the model zoo, in one place.

Probabilities travel as log-probability pairs ``(log_p, log_1mp)`` computed from logits, never as floats that
are later passed to ``log``: a predicted conversion rate of 1e-9 is common and ``log(1 - p)`` of a rounded ``p``
is exactly where naive implementations produce ``-inf``. :func:`log_probs` and :func:`product_log_probs`
build the pairs for a plain classifier and for an ESMM product ``pCTR * pCVR``.

Amounts. EOCA models ``y_v = PA + 1`` (so ``v = log y_v = log1p(PA)`` is 0 for non-converters) as lognormal;
PTOFA and ZILN model the amount ``R = PA`` itself as lognormal. The two ETV formulas follow from that choice:

* EOCA Eq. 13:  ``ETV = p * (exp(mu + sigma^2 / 2) - 1)``
* PTOFA / ZILN: ``ETV = p * exp(mu + sigma^2 / 2)``
* MSE on ``log1p(PA)`` over the entire space predicts ``E[log1p(PA)]``; its ETV is ``expm1(v_hat)``.

The sigma floor
---------------
ESJ's negative term ``log(1 - p + p * phi0)`` adds a probability to a *density*,
``phi0 = N(0; mu, sigma) = exp(-mu^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)``. As ``sigma -> 0`` with
``mu -> 0`` the density, and with it the per-sample likelihood, grows without bound, so the loss can be driven
to ``-inf`` by predicting "converted with amount exactly 0" for every non-converter. eoca floors sigma at
``SIGMA_FLOOR = 1 / sqrt(2 pi) ~= 0.399``. At that floor ``phi0 <= 1``, so the negative term is the log of a
number in ``(0, 1]`` and the positive term's density factor ``N(v; mu, sigma) <= 1`` as well: every
per-sample log-likelihood is at most ``-log(y_v)`` (a constant of the data), hence the loss is bounded below
whatever the network outputs. The price is that no pair can be predicted with a log-amount spread tighter
than 0.4 (a factor of about 1.5 on the amount), far below the per-pair spread of real purchase amounts
(EOCA Fig. 3 shows standard deviations of the log amount of 1 to 2). The same floor applies to PTOFA's
counterfactual term, whose density is evaluated at ``eps``: its supremum is ``1 / (eps sqrt(2 pi) sigma)``,
at most 1 when ``eps >= 1``, which is why the default counterfactual amount is one currency unit.

ETV's exponent is capped at :data:`LOG_ETV_CAP` so a wild ``mu`` (say +50) gives a huge but finite value
and a finite (zero) gradient instead of ``inf`` in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from eoca import etv
from eoca.etv import LOG_ETV_CAP

SIGMA_FLOOR: float = 1.0 / math.sqrt(2.0 * math.pi)
"""Smallest sigma any model may predict; see the module docstring for why exactly this value."""

SIGMA_CEILING: float = 3.0
"""Largest sigma any model may predict (softly approached). Above it ``exp(sigma^2 / 2)`` multiplies the
expected amount by more than 90, and a pair seen with few converters can extrapolate its sigma there: the
ETV of a handful of pairs then explodes and the allocation chases them. Real per-pair spreads of the log amount
are 1 to 2 (EOCA Fig. 3), so the ceiling never binds on a plausible prediction."""


DEFAULT_PTOFA_EPS: float = 1.0
"""PTOFA's counterfactual amount for non-converters (one currency unit; see the sigma-floor note)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --- probabilities -------------------------------------------------------------------------------------------
def log_probs(logit: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p, log(1 - p))`` of ``p = sigmoid(logit)``; shapes equal ``logit``'s."""
    return F.logsigmoid(logit), F.logsigmoid(-logit)


def product_log_probs(logit_a: Tensor, logit_b: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p, log(1 - p))`` of the product ``p = sigmoid(a) * sigmoid(b)`` (ESMM's pCTCVR).

    ``1 - s(a) s(b) = (1 - s(a)) + s(a) (1 - s(b))``, a sum of two positive terms, so its log is a logaddexp
    and stays accurate when ``p`` is within float precision of 0 or 1.
    """
    la, la_neg = log_probs(logit_a)
    lb, lb_neg = log_probs(logit_b)
    return la + lb, torch.logaddexp(la_neg, la + lb_neg)


def positive_sigma(raw: Tensor, floor: float = SIGMA_FLOOR, ceiling: float = SIGMA_CEILING) -> Tensor:
    """Map an unconstrained tower output to sigma in ``[floor, ceiling]`` (same shape).

    ``w = softplus(raw)`` is then bent smoothly under ``ceiling - floor`` (``span - softplus(span - w)`` with a
    sharp softplus), so sigma ~= ``floor + softplus(raw)`` well inside the range and its gradient never
    vanishes at the top, unlike a hard clamp that would freeze a tower stuck above the ceiling.
    """
    span = ceiling - floor
    w = span - F.softplus(span - F.softplus(raw), beta=4.0)
    return torch.clamp(floor + w, min=floor)


# --- densities -----------------------------------------------------------------------------------------------
def normal_logpdf(x: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Log density of Normal(mu, sigma) at ``x``; all broadcastable, result has the broadcast shape."""
    z = (x - mu) / sigma
    return -0.5 * z * z - torch.log(sigma) - _HALF_LOG_2PI


def lognormal_logpdf(y: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Log density of LogNormal(mu, sigma) at ``y > 0`` (scipy's ``lognorm(s=sigma, scale=exp(mu))``)."""
    log_y = torch.log(y)
    return normal_logpdf(log_y, mu, sigma) - log_y


def _positive_mask(amount: Tensor) -> Tensor:
    return amount > 0


def _safe_positive(amount: Tensor, fill: float = 1.0) -> Tensor:
    # log() of the zero amounts of non-converters is never *used*, but torch.where still differentiates both
    # branches; feeding them a harmless value keeps NaN out of the gradient.
    return torch.where(amount > 0, amount, torch.full_like(amount, fill))


# --- losses (all return the batch mean, a scalar) -------------------------------------------------------------
def bce_loss(log_p: Tensor, log_1mp: Tensor, label: Tensor) -> Tensor:
    """Binary cross-entropy from log-probabilities; ``label`` in {0, 1}; shapes (B,)."""
    return -(label * log_p + (1.0 - label) * log_1mp).mean()


def esj_terms(log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor) -> Tensor:
    """Per-sample ESJ log-likelihood (EOCA Eq. 12), shape (B,).

    Positive (``amount > 0``): ``log p + log LogNormalPdf(y_v; mu, sigma)`` with ``y_v = amount + 1``.
    Negative: ``log(1 - p + p * phi0)``, ``phi0 = N(0; mu, sigma)``, as
    ``logaddexp(log(1 - p), log p + log phi0)``.
    """
    pos = _positive_mask(amount)
    y_v = amount + 1.0
    pos_ll = log_p + lognormal_logpdf(y_v, mu, sigma)
    log_phi0 = normal_logpdf(torch.zeros_like(mu), mu, sigma)
    neg_ll = torch.logaddexp(log_1mp, log_p + log_phi0)
    return torch.where(pos, pos_ll, neg_ll)


def esj_loss(log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor) -> Tensor:
    """ESJ loss: ``-mean(esj_terms(...))``; inputs shape (B,), amount >= 0 in currency units."""
    return -esj_terms(log_p, log_1mp, mu, sigma, amount).mean()


def ptofa_terms(
    log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor, eps: float = DEFAULT_PTOFA_EPS
) -> Tensor:
    """Per-sample PTOFA counterfactual log-likelihood (PTOFA Eq. 6), shape (B,).

    The amount ``R`` itself is lognormal. Positive: ``log p + log LogNormalPdf(R)``; negative (``R = 0``):
    ``log(1 - p + p * LogNormalPdf(eps))``, the counterfactual "had it converted, it would have bought eps".
    """
    if eps <= 0:
        raise ValueError(f"PTOFA's counterfactual amount eps must be > 0, got {eps}")
    pos = _positive_mask(amount)
    pos_ll = log_p + lognormal_logpdf(_safe_positive(amount), mu, sigma)
    eps_t = torch.full_like(mu, eps)
    neg_ll = torch.logaddexp(log_1mp, log_p + lognormal_logpdf(eps_t, mu, sigma))
    return torch.where(pos, pos_ll, neg_ll)


def ptofa_loss(
    log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor, eps: float = DEFAULT_PTOFA_EPS
) -> Tensor:
    """PTOFA loss: ``-mean(ptofa_terms(...))``; inputs shape (B,)."""
    return -ptofa_terms(log_p, log_1mp, mu, sigma, amount, eps).mean()


def ziln_loss(log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor) -> Tensor:
    """ZILN loss (Wang et al. 2019): BCE on every sample plus the lognormal NLL of ``R`` on positives only.

    Both parts are divided by the batch size (not the number of positives), as in the ZILN paper, so a batch
    with few converters is not over-weighted. Inputs shape (B,).
    """
    pos = _positive_mask(amount)
    bce = bce_loss(log_p, log_1mp, pos.to(log_p.dtype))
    nll = -lognormal_logpdf(_safe_positive(amount), mu, sigma)
    return bce + torch.where(pos, nll, torch.zeros_like(nll)).mean()


def mse_log_amount_loss(v_hat: Tensor, amount: Tensor) -> Tensor:
    """Mean squared error between ``v_hat`` and ``log1p(amount)`` over every sample; shapes (B,)."""
    return (v_hat - torch.log1p(amount)).pow(2).mean()


# --- ETV -----------------------------------------------------------------------------------------------------
def _capped_exp(x: Tensor) -> Tensor:
    return torch.exp(torch.clamp(x, max=LOG_ETV_CAP))


def etv_eoca(p: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """EOCA Eq. 13: ``p * (exp(mu + sigma^2/2) - 1)``, the mean of ``PA = y_v - 1`` times p (clipped at 0).

    The same function as the simulator's ground truth, :func:`eoca.etv.etv_eoca`.
    """
    return etv.etv_eoca(p, mu, sigma)


def etv_lognormal(p: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """PTOFA / ZILN: ``p * exp(mu + sigma^2/2)``, p times the lognormal mean of ``R``."""
    return p * _capped_exp(mu + 0.5 * sigma * sigma)


def etv_log_regression(v_hat: Tensor) -> Tensor:
    """ETV of a regressor of ``log1p(PA)`` over the entire space: ``expm1(v_hat)``, clipped at 0.

    This is the retransformation such models use; by Jensen's inequality it estimates something closer to the
    median than the mean of a skewed amount, which is one reason MSE models under-predict ETV.
    """
    return torch.clamp(torch.expm1(torch.clamp(v_hat, max=LOG_ETV_CAP)), min=0.0)


ETV_FORMULAS = ("eoca", "lognormal", "log_regression")


def expected_transaction_value(
    formula: str,
    *,
    p: Tensor | None = None,
    mu: Tensor | None = None,
    sigma: Tensor | None = None,
    v_hat: Tensor | None = None,
) -> Tensor:
    """The one entry point every model uses to turn its outputs into ETV.

    Args:
        formula: ``eoca`` (Eq. 13), ``lognormal`` (PTOFA / ZILN) or ``log_regression`` (MSE on log amount).
        p, mu, sigma: conversion probability and lognormal parameters, shape (B,).
        v_hat: predicted ``log1p(PA)``, shape (B,), for ``log_regression``.
    """
    if formula == "log_regression":
        if v_hat is None:
            raise ValueError("formula 'log_regression' needs v_hat")
        return etv_log_regression(v_hat)
    if p is None or mu is None or sigma is None:
        raise ValueError(f"formula '{formula}' needs p, mu and sigma")
    if formula == "eoca":
        return etv_eoca(p, mu, sigma)
    if formula == "lognormal":
        return etv_lognormal(p, mu, sigma)
    raise ValueError(f"unknown ETV formula '{formula}'; valid: {', '.join(ETV_FORMULAS)}")
