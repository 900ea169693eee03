"""End-to-end training for the marketing goal under a budget (docs/budget.md, "what is ours").

The two-stage pipeline fits responses, then solves the budget problem. Here the network that predicts p and the
lognormal amount per arm (:class:`eoca.budget.models.MultiHeadNet`) is also trained on the *decision* its
predictions induce. For a budget price lambda, the solver gives customer i the arm maximising
``value_it - lambda cost_it`` (:mod:`eoca.budget.solver`). That argmax is relaxed into a policy
``pi_lambda(t | i)`` and its Lagrangian reward ``E[value - lambda cost]`` is estimated on the randomized
training log by inverse propensity weighting:

    R(lambda) = (1 / B) sum_i pi_lambda(a_i | i) / e_i * (y_i - lambda c_i) / s,

with a_i the logged arm, e_i its propensity, y_i the realised value, c_i the realised cost and s a value scale.
With ``doubly_robust`` (default) the model's own detached reduced values ``q_it = theta_it`` serve as a
baseline: ``R = (1 / B) sum_i [sum_t pi(t | i) q_it + pi(a_i | i) / e_i (r_i - q_i,a_i)]``, the doubly robust
estimate, unbiased like IPS but with much less variance on heavy-tailed spend.
The loss is ``prediction loss (ESJ) - weight * R(lambda)`` with lambda drawn log-uniformly, per customer, over
``[lambda(budget_high), lambda(budget_low)]``: the prices the solver finds with the model's current predictions
on a sample at the lowest and highest budget fractions of interest (recomputed each epoch).

Two gradient estimators of the argmax (``estimator``):

* ``softmax``: ``pi = softmax((value - lambda cost) / (s tau))``, differentiated exactly (DFCL's relaxation);
* ``perturbed``: the perturbed argmax of Berthet et al. (2020): ``pi = E_Z[onehot(argmax(theta + sigma Z))]``
  with Gaussian Z, estimated with ``samples`` draws; its Jacobian-vector product is ``E[Z <g, onehot>] / sigma``,
  which needs no differentiable argmax.

What is taken from where: the per-lambda relaxed policy over r - lambda c with IPS on randomized data is DFCL's
(Meituan, KDD 2024); the "marketing goal as a regulariser beside the prediction loss" is the Kuaishou abstract's
wording (its estimator is not public); the lambda range from the model's own solver prices, the ESJ prediction
loss, the perturbed-argmax estimator in this role and the comparison between the two estimators are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from eoca.budget.data import IncentiveData
from eoca.errors import ConfigError

__all__ = ["E2EConfig", "MarketingRegulariser", "WarmStartE2E", "perturbed_argmax", "relaxed_policy"]


@dataclass(frozen=True)
class E2EConfig:
    """Settings of the marketing-goal regulariser (see the module docstring)."""

    estimator: Literal["softmax", "perturbed"] = "softmax"
    weight: float = 0.1
    temperature: float = 0.05
    noise: float = 0.05
    samples: int = 16
    budget_fractions: tuple[float, float] = (0.05, 0.6)
    warmup_epochs: int = 3
    price_sample: int = 5000
    doubly_robust: bool = False
    reward_clip_quantile: float = 0.995

    def __post_init__(self) -> None:
        if self.estimator not in ("softmax", "perturbed"):
            raise ConfigError(f"e2e estimator must be 'softmax' or 'perturbed', got {self.estimator!r}")
        lo, hi = self.budget_fractions
        if not 0 < lo < hi:
            raise ConfigError(f"e2e budget_fractions must satisfy 0 < low < high, got {self.budget_fractions}")
        if self.temperature <= 0 or self.noise <= 0 or self.samples < 1 or self.weight < 0:
            raise ConfigError("e2e temperature and noise must be > 0, samples >= 1 and weight >= 0")


class _PerturbedArgmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, theta: Tensor, sigma: float, z: Tensor) -> Tensor:
        # z: (M, B, k) standard normal draws; the output is the mean one-hot of the perturbed argmax
        hot = torch.nn.functional.one_hot((theta.unsqueeze(0) + sigma * z).argmax(-1), theta.shape[-1])
        hot = hot.to(theta.dtype)
        ctx.save_for_backward(z, hot)
        ctx.sigma = sigma
        return hot.mean(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        z, hot = ctx.saved_tensors
        # d/dtheta E[<g, onehot(argmax(theta + sigma Z))>] = E[<g, onehot> Z] / sigma (Gaussian integration by parts)
        inner = (hot * grad.unsqueeze(0)).sum(-1, keepdim=True)
        return (inner * z).mean(0) / ctx.sigma, None, None


def perturbed_argmax(theta: Tensor, sigma: float, samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Monte-Carlo perturbed argmax of ``theta`` (B, k): mean one-hot over ``samples`` Gaussian perturbations."""
    z = torch.randn((samples, *theta.shape), generator=generator, dtype=theta.dtype)
    out: Tensor = _PerturbedArgmax.apply(theta, sigma, z)
    return out


def relaxed_policy(theta: Tensor, cfg: E2EConfig, generator: torch.Generator | None = None) -> Tensor:
    """The relaxed argmax policy over arms, (B, k), of scaled reduced values ``theta`` (B, k)."""
    if cfg.estimator == "softmax":
        return torch.softmax(theta / cfg.temperature, dim=-1)
    return perturbed_argmax(theta, cfg.noise, cfg.samples, generator)


class MarketingRegulariser:
    """The IPS estimate of the relaxed policy's Lagrangian reward on a randomized log (see the module docstring).

    Attributes (tensors over the n training customers): arm, propensity, value, cost (realised); unit and on_conv
    over arms; scale: the mean realised value (so rewards are O(1)).
    """

    def __init__(
        self,
        cfg: E2EConfig,
        arm: np.ndarray,
        propensity: np.ndarray,
        value: np.ndarray,
        cost: np.ndarray,
        unit_cost: np.ndarray,
        on_conversion: np.ndarray,
        price_range: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.cfg = cfg
        self.arm = torch.as_tensor(arm, dtype=torch.long)
        self.propensity = torch.as_tensor(propensity, dtype=torch.float32)
        # the few largest spends would dominate every IPS batch; they are capped at a high quantile (a bias
        # traded for variance, stated in docs/budget.md)
        pos = np.asarray(value)[np.asarray(value) > 0]
        cap = float(np.quantile(pos, cfg.reward_clip_quantile)) if pos.size else 0.0
        self.value = torch.as_tensor(np.minimum(value, cap) if pos.size else value, dtype=torch.float32)
        self.cost = torch.as_tensor(cost, dtype=torch.float32)
        self.unit = torch.as_tensor(unit_cost, dtype=torch.float32)
        self.on_conv = torch.as_tensor(on_conversion, dtype=torch.bool)
        self.scale = float(max(np.mean(value), 1e-9))
        self.price_range = price_range

    @classmethod
    def from_data(cls, cfg: E2EConfig, data: IncentiveData) -> MarketingRegulariser:
        return cls(
            cfg,
            data.arm,
            data.propensity,
            data.value,
            data.cost,
            np.array([a.cost for a in data.arms]),
            np.array([a.cost_rule == "on_conversion" for a in data.arms]),
        )

    def update_prices(self, value: np.ndarray, p: np.ndarray, total_cost_of: Any) -> None:
        """Set the price range from the solver on predictions ``value``, ``p`` (m, k) of a sample of customers.

        ``total_cost_of(p)`` gives the (m, k) expected cost matrix.
        """
        from eoca.budget.solver import solve_budget

        cost = total_cost_of(p)
        full = float(cost.max(axis=1).sum())
        base = float(cost.min(axis=1).sum())
        prices = []
        for frac in self.cfg.budget_fractions:
            sol = solve_budget(value, cost, base + frac * (full - base))
            prices.append(sol.certificate.price)
        hi, lo = max(prices), min(prices)
        if hi <= 0:
            hi = 1.0
        lo = max(lo, hi / 100.0)
        self.price_range = (lo, hi)

    def draw_prices(self, size: int, generator: torch.Generator | None = None) -> Tensor:
        lo, hi = self.price_range
        u = torch.rand(size, generator=generator)
        return torch.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))

    def loss(
        self,
        value: Tensor,
        p: Tensor,
        idx: Tensor,
        generator: torch.Generator | None = None,
        prices: Tensor | None = None,
    ) -> Tensor:
        """Minus the IPS Lagrangian reward of the relaxed policy on the customers ``idx``; value, p: (B, k)."""
        lam = self.draw_prices(idx.numel(), generator) if prices is None else prices
        cost = torch.where(self.on_conv.unsqueeze(0), p * self.unit.unsqueeze(0), self.unit.unsqueeze(0))
        theta = (value - lam.unsqueeze(1) * cost) / self.scale
        pi = relaxed_policy(theta, self.cfg, generator)
        a = self.arm[idx]
        rows = torch.arange(idx.numel())
        w = pi[rows, a] / self.propensity[idx]
        reward = (self.value[idx] - lam * self.cost[idx]) / self.scale
        if not self.cfg.doubly_robust:
            return -(w * reward).mean()
        # doubly robust: the model's own (detached) reduced values are the baseline of every arm, and only the
        # logged arm's residual is inverse-weighted; unbiased like IPS, with far less variance on heavy-tailed spend
        base = theta.detach()
        return -((pi * base).sum(-1) + w * (reward - base[rows, a])).mean()


class WarmStartE2E:
    """The end-to-end goal on top of a two-stage model: ``e2e_warm``.

    The two-stage model (``base``, the T-learner by default) gives every customer and arm a conversion
    probability p0 and a value per conversion v0 / p0. A small network learns a correction ``delta`` of the
    conversion logit, p = sigmoid(logit(p0) + delta), with value = p x v0 / p0. Its last layer starts at zero,
    so training starts exactly at the two-stage model's decisions (the warm start), and the loss is the
    conversion log-likelihood plus ``e2e.weight`` x the marketing-goal regulariser of
    :class:`MarketingRegulariser` from the first epoch. The offsets of the training customers are cross-fitted
    (two folds, each from a base model fitted on the other), so the correction learns from predictions made
    the way the test customers' are, not from the base model's fit to its own training rows; at prediction the
    base model fitted on all training customers gives the offsets. ``base_options`` go to the base model.
    """

    def __init__(
        self,
        seed: int = 0,
        base: str = "t_learner",
        hidden: int = 32,
        epochs: int = 6,
        batch_size: int = 512,
        lr: float = 1e-3,
        e2e: E2EConfig | None = None,
        name: str = "e2e_warm",
        base_options: dict[str, Any] | None = None,
    ) -> None:
        self.seed, self.base, self.hidden, self.epochs = seed, base, hidden, epochs
        self.base_options = dict(base_options or {})
        self.batch_size, self.lr = batch_size, lr
        self.e2e = e2e if e2e is not None else E2EConfig(warmup_epochs=0)
        self.name = name
        self.base_: Any = None
        self.net: Any = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def _offsets(self, p: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logit of p0, value per conversion v0 / p0), float32 (n, k) each."""
        pc = np.clip(p, 1e-6, 1.0 - 1e-6)
        per_conv = np.where(p > 1e-12, value / np.maximum(p, 1e-12), 0.0)
        return np.log(pc / (1.0 - pc)).astype(np.float32), per_conv.astype(np.float32)

    def _standardise(self, features: np.ndarray) -> Tensor:
        assert self.mean_ is not None and self.scale_ is not None
        return torch.from_numpy(((features - self.mean_) / self.scale_).astype(np.float32))

    def fit(self, data: IncentiveData) -> WarmStartE2E:
        from eoca.budget.models import make_model

        torch.manual_seed(self.seed)
        fold = np.random.default_rng(self.seed).random(data.n) < 0.5
        p0 = np.empty((data.n, data.n_arms))
        v0 = np.empty((data.n, data.n_arms))
        for held in (fold, ~fold):
            part = make_model(self.base, self.seed, **self.base_options).fit(data.subset(~held))
            pred = part.predict(data.features[held])
            p0[held], v0[held] = pred.p, pred.value
        self.base_ = make_model(self.base, self.seed, **self.base_options).fit(data)
        logit0_np, per_conv_np = self._offsets(p0, v0)
        logit0, per_conv = torch.from_numpy(logit0_np), torch.from_numpy(per_conv_np)
        X = data.features.astype(np.float64)
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        xs = self._standardise(data.features)
        k = data.n_arms
        self.net = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, k)
        )
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        reg = MarketingRegulariser.from_data(self.e2e, data)
        arm = torch.from_numpy(data.arm)
        conv = torch.from_numpy(data.converted.astype(np.float32))
        gen = torch.Generator().manual_seed(self.seed)
        sample = np.random.default_rng(self.seed).permutation(data.n)[: self.e2e.price_sample]
        for _ in range(self.epochs):
            with torch.no_grad():
                logit = logit0[sample] + self.net(xs[sample])
                p_s = torch.sigmoid(logit).double().numpy()
            reg.update_prices(p_s * per_conv_np[sample], p_s, data.cost_matrix)
            order = torch.randperm(data.n, generator=gen)
            for start in range(0, data.n, self.batch_size):
                idx = order[start : start + self.batch_size]
                logit = logit0[idx] + self.net(xs[idx])
                rows = torch.arange(idx.numel())
                nll = torch.nn.functional.binary_cross_entropy_with_logits(logit[rows, arm[idx]], conv[idx])
                p = torch.sigmoid(logit)
                loss = nll + self.e2e.weight * reg.loss(p * per_conv[idx], p, idx, gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def predict(self, features: np.ndarray) -> Any:
        from eoca.budget.models import Prediction

        if self.net is None or self.base_ is None:
            raise ConfigError("the model is not fitted; call fit() first")
        base = self.base_.predict(features)
        logit0, per_conv = self._offsets(base.p, base.value)
        with torch.no_grad():
            p = torch.sigmoid(torch.from_numpy(logit0) + self.net(self._standardise(features))).double().numpy()
        return Prediction(p=p, value=p * per_conv)
