"""The end-to-end regulariser: finite gradients that agree in sign with finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoca.budget.e2e import E2EConfig, MarketingRegulariser, perturbed_argmax


def _tiny(estimator: str) -> MarketingRegulariser:
    # four logged customers, two arms; arm 1 paid off for customers 0 and 1, not for 2 and 3
    cfg = E2EConfig(estimator=estimator, temperature=0.5, noise=0.5, samples=20_000)  # type: ignore[arg-type]
    return MarketingRegulariser(
        cfg,
        arm=np.array([1, 1, 0, 1]),
        propensity=np.full(4, 0.5),
        value=np.array([30.0, 20.0, 10.0, 0.0]),
        cost=np.array([1.0, 1.0, 0.0, 1.0]),
        unit_cost=np.array([0.0, 1.0]),
        on_conversion=np.array([False, False]),
    )


def _loss(reg: MarketingRegulariser, shift: torch.Tensor, seed: int) -> torch.Tensor:
    # predicted values: arm 1 is shifted by the parameter for every customer
    base = torch.tensor([[10.0, 12.0], [10.0, 11.0], [10.0, 9.0], [10.0, 8.0]])
    value = torch.stack([base[:, 0], base[:, 1] + shift], dim=1)
    p = torch.full((4, 2), 0.1)
    g = torch.Generator().manual_seed(seed)
    return reg.loss(value, p, torch.arange(4), g, prices=torch.full((4,), 2.0))


@pytest.mark.parametrize("estimator", ["softmax", "perturbed"])
@pytest.mark.parametrize("at", [-4.0, 0.0, 3.0])
def test_gradient_is_finite_and_agrees_with_finite_difference(estimator: str, at: float) -> None:
    reg = _tiny(estimator)
    shift = torch.tensor(at, requires_grad=True)
    loss = _loss(reg, shift, seed=1)
    loss.backward()
    assert shift.grad is not None
    grad = float(shift.grad)
    assert np.isfinite(grad)
    h = 0.5
    with torch.no_grad():
        # common random numbers: both sides of the difference use the same perturbations
        fd = (float(_loss(reg, torch.tensor(at + h), 2)) - float(_loss(reg, torch.tensor(at - h), 2))) / (2 * h)
    assert abs(fd) > 1e-4
    assert np.sign(grad) == np.sign(fd)
    if estimator == "softmax":
        assert grad == pytest.approx(fd, rel=0.1)


def test_perturbed_argmax_is_a_distribution() -> None:
    theta = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    pi = perturbed_argmax(theta, 0.5, 1000, torch.Generator().manual_seed(0))
    assert float(pi.sum()) == pytest.approx(1.0)
    pi[0, 1].backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()
    assert float(theta.grad[0, 1]) > 0  # raising an arm's score raises its probability


def test_warm_start_begins_at_the_two_stage_model_and_moves_with_the_goal() -> None:
    from eoca.budget.data import from_world
    from eoca.budget.e2e import WarmStartE2E
    from eoca.budget.models import TLearner
    from eoca.simulate import SimulatorConfig
    from eoca.simulate.simulator import generate_world

    cfg = SimulatorConfig.model_validate(
        {"seed": 3, "world": {"n_customers": 4000, "n_merchants": 30}, "incentives": {}}
    )
    train, test = from_world(generate_world(cfg)).split(0.5, 0)
    opts = {"n_estimators": 60}
    untrained = WarmStartE2E(0, epochs=0, base_options=opts).fit(train)
    base = TLearner(0, n_estimators=60).fit(train).predict(test.features)
    start = untrained.predict(test.features)
    # the correction's last layer starts at zero: the two-stage model's predictions, up to the logit round trip
    np.testing.assert_allclose(start.p, base.p, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(start.value, base.value, rtol=1e-3, atol=1e-6)
    trained = WarmStartE2E(0, epochs=2, base_options=opts).fit(train).predict(test.features)
    assert trained.p.shape == (test.n, test.n_arms)
    assert np.isfinite(trained.value).all() and (trained.p > 0).all() and (trained.p < 1).all()
    assert not np.allclose(trained.p, start.p)
