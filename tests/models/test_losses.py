"""Every loss and ETV formula against a scipy / numpy reference, and finiteness on adversarial inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit

from eoca.models import losses as L

torch.set_default_dtype(torch.float32)
RNG = np.random.default_rng(7)
N = 64
LOGIT = RNG.normal(0.0, 2.0, N)
MU = RNG.normal(6.0, 2.0, N)
SIGMA = L.SIGMA_FLOOR + RNG.gamma(2.0, 0.5, N)
AMOUNT = np.where(RNG.random(N) < 0.4, RNG.lognormal(6.0, 1.5, N), 0.0)
T = {
    k: torch.tensor(v, dtype=torch.float64)
    for k, v in {"logit": LOGIT, "mu": MU, "sigma": SIGMA, "amount": AMOUNT}.items()
}


def _lp() -> tuple[torch.Tensor, torch.Tensor]:
    return L.log_probs(T["logit"])


def test_bce_matches_numpy() -> None:
    label = (AMOUNT > 0).astype(float)
    p = expit(LOGIT)
    ref = -np.mean(label * np.log(p) + (1 - label) * np.log1p(-p))
    assert L.bce_loss(*_lp(), torch.tensor(label)).item() == pytest.approx(ref, rel=1e-10)


def test_product_log_probs_matches_product() -> None:
    b = RNG.normal(0.0, 2.0, N)
    lp, l1mp = L.product_log_probs(T["logit"], torch.tensor(b))
    p = expit(LOGIT) * expit(b)
    np.testing.assert_allclose(lp.numpy(), np.log(p), rtol=1e-10)
    np.testing.assert_allclose(l1mp.numpy(), np.log1p(-p), rtol=1e-9)


def test_esj_matches_scipy() -> None:
    p = expit(LOGIT)
    pos = AMOUNT > 0
    y_v = AMOUNT + 1.0
    pos_ll = np.log(p) + stats.lognorm.logpdf(y_v, s=SIGMA, scale=np.exp(MU))
    neg_ll = np.log(1 - p + p * stats.norm.pdf(0.0, loc=MU, scale=SIGMA))
    ref = -np.mean(np.where(pos, pos_ll, neg_ll))
    got = L.esj_loss(*_lp(), T["mu"], T["sigma"], T["amount"]).item()
    assert got == pytest.approx(ref, rel=1e-9)


def test_ptofa_matches_scipy() -> None:
    eps = 2.5
    p = expit(LOGIT)
    pos = AMOUNT > 0
    pos_ll = np.log(p) + stats.lognorm.logpdf(np.where(pos, AMOUNT, 1.0), s=SIGMA, scale=np.exp(MU))
    neg_ll = np.log(1 - p + p * stats.lognorm.pdf(eps, s=SIGMA, scale=np.exp(MU)))
    ref = -np.mean(np.where(pos, pos_ll, neg_ll))
    got = L.ptofa_loss(*_lp(), T["mu"], T["sigma"], T["amount"], eps=eps).item()
    assert got == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="eps"):
        L.ptofa_loss(*_lp(), T["mu"], T["sigma"], T["amount"], eps=0.0)


def test_ziln_matches_scipy() -> None:
    p = expit(LOGIT)
    pos = AMOUNT > 0
    bce = -np.mean(np.where(pos, np.log(p), np.log1p(-p)))
    nll = -stats.lognorm.logpdf(np.where(pos, AMOUNT, 1.0), s=SIGMA, scale=np.exp(MU))
    ref = bce + np.sum(np.where(pos, nll, 0.0)) / N
    assert L.ziln_loss(*_lp(), T["mu"], T["sigma"], T["amount"]).item() == pytest.approx(ref, rel=1e-9)


def test_mse_on_log_amount() -> None:
    v_hat = RNG.normal(2.0, 1.0, N)
    ref = np.mean((v_hat - np.log1p(AMOUNT)) ** 2)
    assert L.mse_log_amount_loss(torch.tensor(v_hat), T["amount"]).item() == pytest.approx(ref, rel=1e-12)


def test_etv_formulas() -> None:
    p = expit(LOGIT)
    mean_y = stats.lognorm.mean(s=SIGMA, scale=np.exp(MU))
    pt = torch.tensor(p)
    eoca = L.expected_transaction_value("eoca", p=pt, mu=T["mu"], sigma=T["sigma"]).numpy()
    np.testing.assert_allclose(eoca, p * np.maximum(mean_y - 1.0, 0.0), rtol=1e-9)
    logn = L.expected_transaction_value("lognormal", p=pt, mu=T["mu"], sigma=T["sigma"]).numpy()
    np.testing.assert_allclose(logn, p * mean_y, rtol=1e-9)
    v_hat = torch.tensor(MU / 2)
    np.testing.assert_allclose(
        L.expected_transaction_value("log_regression", v_hat=v_hat).numpy(), np.expm1(MU / 2), rtol=1e-9
    )
    with pytest.raises(ValueError, match="unknown ETV formula"):
        L.expected_transaction_value("median", p=pt, mu=T["mu"], sigma=T["sigma"])
    with pytest.raises(ValueError, match="needs v_hat"):
        L.expected_transaction_value("log_regression")


def test_sigma_floor_bounds_the_negative_term() -> None:
    # At the floor the density at 0 is at most 1, so log(1 - p + p * phi0) <= 0 for any mu.
    assert stats.norm.pdf(0.0, loc=0.0, scale=L.SIGMA_FLOOR) == pytest.approx(1.0)
    assert float(L.positive_sigma(torch.tensor(-1e4))) == pytest.approx(L.SIGMA_FLOOR)


def _adversarial() -> dict[str, torch.Tensor]:
    """Float32 grid of p near 0 and 1, sigma at the floor, mu at +-50 and amounts up to 1e9."""
    logit = torch.tensor([-40.0, -20.0, 0.0, 20.0, 40.0])
    raw_sigma = torch.tensor([-100.0, -5.0, 0.0, 5.0])  # -100: sigma exactly at the floor
    mu = torch.tensor([-50.0, 0.0, 8.0, 50.0])
    amount = torch.tensor([0.0, 1e-3, 1.0, 1e4, 1e9])
    grid = torch.cartesian_prod(logit, raw_sigma, mu, amount)
    return {
        "logit": grid[:, 0].clone().requires_grad_(True),
        "raw_sigma": grid[:, 1].clone().requires_grad_(True),
        "mu": grid[:, 2].clone().requires_grad_(True),
        "amount": grid[:, 3].clone(),
    }


@pytest.mark.parametrize("loss_name", ["esj", "ptofa", "ziln", "bce", "mse"])
@pytest.mark.parametrize("product", [False, True])
def test_losses_and_gradients_finite_on_adversarial_inputs(loss_name: str, product: bool) -> None:
    x = _adversarial()
    logit, mu, amount = x["logit"], x["mu"], x["amount"]
    sigma = L.positive_sigma(x["raw_sigma"])
    lp, l1mp = L.product_log_probs(logit, logit * 0.5) if product else L.log_probs(logit)
    if loss_name == "esj":
        loss = L.esj_loss(lp, l1mp, mu, sigma, amount)
    elif loss_name == "ptofa":
        loss = L.ptofa_loss(lp, l1mp, mu, sigma, amount)
    elif loss_name == "ziln":
        loss = L.ziln_loss(lp, l1mp, mu, sigma, amount)
    elif loss_name == "bce":
        loss = L.bce_loss(lp, l1mp, (amount > 0).float())
    else:
        loss = L.mse_log_amount_loss(mu, amount)
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("logit", "raw_sigma", "mu"):
        grad = x[name].grad
        if grad is not None:
            assert torch.isfinite(grad).all(), f"{loss_name}: non-finite gradient wrt {name}"


def test_esj_and_ptofa_bounded_below_at_the_floor() -> None:
    # Predicting "converts with amount ~0" as sharply as allowed cannot push the per-sample NLL below -0:
    # at sigma = floor the negative-term density is <= 1 (ESJ) and, with eps = 1, so is PTOFA's.
    lp, l1mp = L.log_probs(torch.full((3,), 30.0))
    sigma = torch.full((3,), L.SIGMA_FLOOR)
    zero = torch.zeros(3)
    assert L.esj_loss(lp, l1mp, zero, sigma, zero).item() >= -1e-6
    assert L.ptofa_loss(lp, l1mp, zero, sigma, zero).item() >= -1e-6


@pytest.mark.parametrize("formula", ["eoca", "lognormal"])
def test_etv_finite_with_wild_mu(formula: str) -> None:
    mu = torch.tensor([-50.0, 50.0, 1e4], requires_grad=True)
    sigma = torch.full((3,), 2.0)
    etv = L.expected_transaction_value(formula, p=torch.full((3,), 0.5), mu=mu, sigma=sigma)
    assert torch.isfinite(etv).all() and (etv >= 0).all()
    etv.sum().backward()
    assert mu.grad is not None and torch.isfinite(mu.grad).all()
    assert math.isfinite(float(L.etv_log_regression(torch.tensor(1e4))))


def test_sigma_ceiling_bounds_the_etv_multiplier_and_keeps_gradients() -> None:
    raw = torch.tensor([-50.0, 0.0, 2.0, 50.0, 1e4], requires_grad=True)
    sigma = L.positive_sigma(raw)
    assert float(sigma.min()) >= L.SIGMA_FLOOR
    assert float(sigma.max()) <= L.SIGMA_CEILING
    assert float(sigma[-1]) == pytest.approx(L.SIGMA_CEILING)
    # well inside the range the map is the plain floor + softplus
    assert float(sigma[1]) == pytest.approx(L.SIGMA_FLOOR + math.log(2.0), abs=1e-3)
    sigma.sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all()
    assert float(raw.grad[2]) > 0  # not frozen just below the ceiling
