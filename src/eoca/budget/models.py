"""Response models for incentive allocation: per customer and arm, the conversion probability p and the expected
value (spend); the expected cost follows from p and the arms' cost rules (:meth:`IncentiveData.cost_matrix`).

All models share one interface: ``fit(train: IncentiveData) -> self`` and ``predict(X) -> Prediction`` with p and
value of shape (n, k), so the same budget solver allocates with any of them.

* :class:`TLearner`: one LightGBM pair per arm (a conversion classifier and a log-amount regressor on
  converters), value = p (exp(mu + s^2 / 2) - 1) with s^2 the arm's residual variance.
* :class:`ConversionTLearner`: the T-learner's per-arm conversion models times one pooled amount (ranks by
  conversion uplift; for data whose amounts are too rare and noisy to model per customer).
* :class:`XLearner`: Kuenzel et al.'s X-learner on LightGBM for conversion and for spend: first-stage T-learner
  outcomes, imputed effects per arm vs control, second-stage regressors, blended with the arm's share g of the
  (arm, control) rows: tau = g tau_0 + (1 - g) tau_1.
* :class:`MultiHeadNet`: one shared MLP body and a head per arm giving the conversion logit and the lognormal
  amount (mu, sigma) of log(amount + 1), trained with the ESJ likelihood of the ETV models
  (:func:`eoca.models.losses.esj_loss`); value = :func:`eoca.models.losses.etv_eoca`. The end-to-end model
  (:mod:`eoca.budget.e2e`) is the same network with the marketing goal added to the loss.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from eoca.budget.data import IncentiveData
from eoca.errors import DataValidationError

__all__ = [
    "MODEL_NAMES",
    "ConversionTLearner",
    "MultiHeadNet",
    "Prediction",
    "TLearner",
    "UpliftModel",
    "XLearner",
    "make_model",
]


@dataclass(frozen=True)
class Prediction:
    """p: conversion probability, value: expected value; float64 (n, k) each."""

    p: np.ndarray
    value: np.ndarray

    @property
    def uplift(self) -> np.ndarray:
        """Value gain of each arm over arm 0, (n, k) (column 0 is zero)."""
        return self.value - self.value[:, :1]


class UpliftModel(Protocol):
    name: str

    def fit(self, data: IncentiveData) -> UpliftModel: ...

    def predict(self, features: np.ndarray) -> Prediction: ...


def _lgbm_params(seed: int, n_estimators: int) -> dict[str, Any]:
    return {
        "n_estimators": n_estimators,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 40,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "random_state": seed,
        "n_jobs": 1,
        "verbose": -1,
        "deterministic": True,
    }


def _fit_lgbm(kind: str, X: np.ndarray, y: np.ndarray, seed: int, max_trees: int) -> Any:
    """A LightGBM classifier or regressor with early stopping on a random fifth of the rows (at most
    ``max_trees`` trees), refitted on all rows with the number of trees found; the per-arm samples are small
    and noisy, so a fixed tree count either underfits large arms or overfits small ones."""
    import lightgbm as lgb

    cls = lgb.LGBMClassifier if kind == "classifier" else lgb.LGBMRegressor
    n = y.size
    if n < 200:
        return cls(**_lgbm_params(seed, max(10, max_trees // 4))).fit(X, y)
    hold = np.random.default_rng(seed).random(n) < 0.2
    if kind == "classifier" and (y[hold].min() == y[hold].max() or y[~hold].min() == y[~hold].max()):
        return cls(**_lgbm_params(seed, max(10, max_trees // 4))).fit(X, y)
    # LightGBM 4.7 renamed eval_set to eval_X / eval_y; either spelling works across the supported versions
    held: dict[str, Any] = (
        {"eval_X": X[hold], "eval_y": y[hold]}
        if "eval_X" in inspect.signature(cls.fit).parameters
        else {"eval_set": [(X[hold], y[hold])]}
    )
    probe = cls(**_lgbm_params(seed, max_trees)).fit(
        X[~hold], y[~hold], callbacks=[lgb.early_stopping(30, verbose=False)], **held
    )
    best = max(10, int(probe.best_iteration_ or max_trees))
    return cls(**_lgbm_params(seed, int(best * 1.25))).fit(X, y)


def _arm_rows(data: IncentiveData, t: int) -> np.ndarray:
    rows = np.flatnonzero(data.arm == t)
    if rows.size < 20:
        raise DataValidationError(
            f"arm {t} ('{data.arms[t].name}') has only {rows.size} logged customers; at least 20 are needed to "
            "learn its response"
        )
    return rows


class _ArmResponse:
    """LightGBM conversion classifier + log-amount regressor for one arm."""

    def __init__(self, seed: int, n_estimators: int) -> None:
        self.seed, self.n_estimators = seed, n_estimators
        self.p_const: float | None = None
        self.clf: Any = None
        self.reg: Any = None
        self.mu_const = 0.0
        self.var = 0.0

    def fit(self, X: np.ndarray, converted: np.ndarray, amount: np.ndarray, fit_amount: bool = True) -> _ArmResponse:

        pos = converted > 0
        if pos.all() or not pos.any():
            self.p_const = float(pos.mean())
        else:
            self.clf = _fit_lgbm("classifier", X, pos.astype(int), self.seed, self.n_estimators)
        y = np.log1p(amount[pos]) if fit_amount else np.empty(0)
        if y.size >= 50:
            self.reg = _fit_lgbm("regressor", X[pos], y, self.seed, self.n_estimators)
            self.var = float(np.var(y - self.reg.predict(X[pos])))
        elif y.size:
            self.mu_const, self.var = float(y.mean()), float(y.var())
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.full(X.shape[0], self.p_const) if self.clf is None else self.clf.predict_proba(X)[:, 1]
        mu = np.full(X.shape[0], self.mu_const) if self.reg is None else self.reg.predict(X)
        amount = np.maximum(np.expm1(mu + 0.5 * self.var), 0.0)
        return p, p * amount


class TLearner:
    """One LightGBM response model per arm (see the module docstring).

    With ``pool_amount`` (default) the amount given conversion is fitted once, on every arm's converters with the
    arm one-hot as extra features: converters are few per arm, and an arm shifts the amount law far less than
    it shifts conversion, so pooling trades a little flexibility for much less variance. Conversion stays one
    model per arm (the T-learner proper).
    """

    name = "t_learner"

    def __init__(self, seed: int = 0, n_estimators: int = 1000, pool_amount: bool = True) -> None:
        self.seed, self.n_estimators, self.pool_amount = seed, n_estimators, pool_amount
        self.arms_: list[_ArmResponse] = []
        self.amount_: Any = None
        self.amount_var_ = 0.0
        self.n_arms_ = 0

    def _with_arm(self, X: np.ndarray, t: int) -> np.ndarray:
        hot = np.zeros((X.shape[0], self.n_arms_), dtype=X.dtype)
        hot[:, t] = 1
        return np.concatenate([X, hot], axis=1)

    def fit(self, data: IncentiveData) -> TLearner:

        self.arms_ = []
        self.n_arms_ = data.n_arms
        pos = np.flatnonzero(data.value > 0)
        pool = self.pool_amount and pos.size >= 50
        for t in range(data.n_arms):
            rows = _arm_rows(data, t)
            self.arms_.append(
                _ArmResponse(self.seed + t, self.n_estimators).fit(
                    data.features[rows], data.converted[rows], data.value[rows], fit_amount=not pool
                )
            )
        self.amount_ = None
        if pool:
            Xa = np.concatenate([self._with_arm(data.features[pos[data.arm[pos] == t]], t) for t in range(data.n_arms)])
            ya = np.concatenate([np.log1p(data.value[pos[data.arm[pos] == t]]) for t in range(data.n_arms)])
            self.amount_ = _fit_lgbm("regressor", Xa, ya, self.seed, self.n_estimators)
            self.amount_var_ = float(np.var(ya - self.amount_.predict(Xa)))
        return self

    def predict(self, features: np.ndarray) -> Prediction:
        outs = [m.predict(features) for m in self.arms_]
        p = np.stack([o[0] for o in outs], axis=1)
        if self.amount_ is None:
            return Prediction(p=p, value=np.stack([o[1] for o in outs], axis=1))
        amount = np.stack([self.amount_.predict(self._with_arm(features, t)) for t in range(self.n_arms_)], axis=1)
        return Prediction(p=p, value=p * np.maximum(np.expm1(amount + 0.5 * self.amount_var_), 0.0))


class ConversionTLearner(TLearner):
    """Conversion uplift x one pooled amount: per-arm LightGBM conversion classifiers (the T-learner's), and
    value = p x the mean amount of every training converter, whatever the arm or customer.

    On data where converters are rare and amounts heavy-tailed (Hillstrom: under 1% convert, spend among
    converters has a standard deviation near its mean), an amount model adds more noise than signal to the
    ranking, while conversion is a far less noisy outcome; the ranking is then by conversion uplift alone.
    """

    name = "t_conversion"

    def __init__(self, seed: int = 0, n_estimators: int = 1000) -> None:
        super().__init__(seed, n_estimators, pool_amount=False)
        self.mean_amount_ = 0.0

    def fit(self, data: IncentiveData) -> ConversionTLearner:
        self.arms_ = []
        self.n_arms_ = data.n_arms
        for t in range(data.n_arms):
            rows = _arm_rows(data, t)
            self.arms_.append(
                _ArmResponse(self.seed + t, self.n_estimators).fit(
                    data.features[rows], data.converted[rows], data.value[rows], fit_amount=False
                )
            )
        pos = data.converted > 0
        self.mean_amount_ = float(data.value[pos].mean()) if pos.any() else 0.0
        return self

    def predict(self, features: np.ndarray) -> Prediction:
        p = np.stack([m.predict(features)[0] for m in self.arms_], axis=1)
        return Prediction(p=p, value=p * self.mean_amount_)


class XLearner:
    """X-learner on LightGBM for conversion and spend (see the module docstring)."""

    name = "x_learner"

    def __init__(self, seed: int = 0, n_estimators: int = 1000) -> None:
        self.seed, self.n_estimators = seed, n_estimators
        self.base = TLearner(seed, n_estimators)
        self.effects_: list[tuple[Any, Any, Any, Any, float]] = []

    def fit(self, data: IncentiveData) -> XLearner:

        self.base.fit(data)
        X = data.features
        first = self.base.predict(X)
        ctrl = _arm_rows(data, 0)
        self.effects_ = []
        for t in range(1, data.n_arms):
            rows = _arm_rows(data, t)
            models = []
            for y, mu in ((data.converted, first.p), (data.value, first.value)):
                d1 = y[rows] - mu[rows, 0]
                d0 = mu[ctrl, t] - y[ctrl]
                models.append(_fit_lgbm("regressor", X[rows], d1, self.seed, self.n_estimators))
                models.append(_fit_lgbm("regressor", X[ctrl], d0, self.seed, self.n_estimators))
            # the arm's share of the (arm, control) rows; propensities are randomized, so a constant share
            g = rows.size / (rows.size + ctrl.size)
            self.effects_.append((models[0], models[1], models[2], models[3], g))
        return self

    def predict(self, features: np.ndarray) -> Prediction:
        first = self.base.predict(features)
        p = first.p.copy()
        value = first.value.copy()
        for t, (p1, p0, v1, v0, g) in enumerate(self.effects_, start=1):
            tau_p = g * p0.predict(features) + (1 - g) * p1.predict(features)
            tau_v = g * v0.predict(features) + (1 - g) * v1.predict(features)
            p[:, t] = np.clip(first.p[:, 0] + tau_p, 0.0, 1.0)
            value[:, t] = np.maximum(first.value[:, 0] + tau_v, 0.0)
        return Prediction(p=p, value=value)


MU_SPAN = 3.0
"""Largest distance of a predicted mu (log amount) from the training converters' mean: a factor e^3 ~ 20."""


class MultiHeadNet:
    """Shared body, one (conversion, mu, sigma) head per arm, trained with the ESJ likelihood.

    ``e2e`` (a :class:`eoca.budget.e2e.E2EConfig`) adds the marketing-goal regulariser of :mod:`eoca.budget.e2e`.
    """

    def __init__(
        self,
        seed: int = 0,
        hidden: int = 64,
        epochs: int = 12,
        batch_size: int = 512,
        lr: float = 3e-3,
        e2e: Any = None,
        name: str | None = None,
    ) -> None:
        self.seed, self.hidden, self.epochs, self.batch_size, self.lr = seed, hidden, epochs, batch_size, lr
        self.e2e = e2e
        self.name = name or ("e2e" if e2e is not None else "multi_head")
        self.net: Any = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.history: list[dict[str, float]] = []

    def _build(self, d: int, k: int, mu0: float) -> Any:
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, hidden: int) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
                self.heads = nn.Linear(hidden, 3 * k)
                with torch.no_grad():
                    self.heads.bias.view(k, 3)[:, 0] = -2.5
                    self.heads.bias.view(k, 3)[:, 1] = 0.0
                    self.heads.bias.view(k, 3)[:, 2] = 0.0

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                out = self.heads(self.body(x)).view(x.shape[0], k, 3)
                # mu stays within MU_SPAN of the training converters' mean log amount: an unbounded head
                # extrapolates to absurd amounts for a few customers, and the goal term would chase them
                mu = mu0 + MU_SPAN * torch.tanh(out[..., 1] / MU_SPAN)
                return out[..., 0], mu, out[..., 2]

        return Net(self.hidden)

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.scale_ is not None
        return ((features - self.mean_) / self.scale_).astype(np.float32)

    def outputs(self, x: Any) -> tuple[Any, Any, Any, Any]:
        """(log p, log(1 - p), mu, sigma), each a tensor (B, k), for standardised features ``x``."""
        from eoca.models.losses import log_probs, positive_sigma

        logit, mu, raw = self.net(x)
        log_p, log_1mp = log_probs(logit)
        return log_p, log_1mp, mu, positive_sigma(raw)

    def fit(self, data: IncentiveData) -> MultiHeadNet:
        import torch

        from eoca.models.losses import esj_loss, etv_eoca

        torch.manual_seed(self.seed)
        X = data.features.astype(np.float64)
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        xs = torch.from_numpy(self._standardise(data.features))
        k = data.n_arms
        pos = data.value > 0
        mu0 = float(np.log1p(data.value[pos]).mean()) if pos.any() else 0.0
        self.net = self._build(X.shape[1], k, mu0)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=1e-5)
        arm = torch.from_numpy(data.arm)
        amount = torch.from_numpy(data.value.astype(np.float32))
        reg = None
        if self.e2e is not None:
            from eoca.budget.e2e import MarketingRegulariser

            reg = MarketingRegulariser.from_data(self.e2e, data)
        gen = torch.Generator().manual_seed(self.seed)
        n = data.n
        self.history = []
        sample = np.random.default_rng(self.seed).permutation(n)[: self.e2e.price_sample] if reg else None
        for epoch in range(self.epochs):
            if reg is not None and sample is not None and epoch >= self.e2e.warmup_epochs:
                pred = self.predict(data.features[sample])
                reg.update_prices(pred.value, pred.p, data.cost_matrix)
            order = torch.randperm(n, generator=gen)
            tot_pred = tot_goal = 0.0
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                log_p, log_1mp, mu, sigma = self.outputs(xs[idx])
                a = arm[idx]
                r = torch.arange(idx.numel())
                loss = esj_loss(log_p[r, a], log_1mp[r, a], mu[r, a], sigma[r, a], amount[idx])
                tot_pred += float(loss.detach()) * idx.numel()
                if reg is not None and epoch >= self.e2e.warmup_epochs:
                    # the goal moves conversion only: the amount given conversion is the likelihood's alone.
                    # Through mu and sigma the goal could inflate a value almost for free in likelihood (few
                    # converters pin them) and it would, since the relaxed policy prefers ever harder decisions
                    p_all = log_p.exp()
                    value = p_all * (etv_eoca(p_all, mu, sigma) / p_all.clamp_min(1e-12)).detach()
                    goal = reg.loss(value, log_p.exp(), idx, gen)
                    loss = loss + self.e2e.weight * goal
                    tot_goal += float(goal.detach()) * idx.numel()
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.history.append({"epoch": epoch, "prediction_loss": tot_pred / n, "goal_loss": tot_goal / n})
        return self

    def predict(self, features: np.ndarray) -> Prediction:
        import torch

        from eoca.models.losses import etv_eoca

        if self.net is None:
            raise DataValidationError("the model is not fitted; call fit() first")
        outs_p, outs_v = [], []
        with torch.no_grad():
            xs = torch.from_numpy(self._standardise(features))
            for start in range(0, xs.shape[0], 65536):
                log_p, _, mu, sigma = self.outputs(xs[start : start + 65536])
                p = log_p.exp()
                outs_p.append(p.double().numpy())
                outs_v.append(etv_eoca(p, mu, sigma).double().numpy())
        return Prediction(p=np.concatenate(outs_p), value=np.concatenate(outs_v))


MODEL_NAMES = ("t_learner", "t_conversion", "x_learner", "multi_head", "e2e")


def make_model(name: str, seed: int = 0, **kwargs: Any) -> UpliftModel:
    """A fresh model by name (see :data:`MODEL_NAMES`; ``e2e_perturbed`` uses the perturbation estimator)."""
    if name == "t_learner":
        return TLearner(seed, **kwargs)
    if name == "t_conversion":
        return ConversionTLearner(seed, **kwargs)
    if name == "x_learner":
        return XLearner(seed, **kwargs)
    if name == "multi_head":
        return MultiHeadNet(seed, **kwargs)
    if name in ("e2e", "e2e_perturbed"):
        from eoca.budget.e2e import E2EConfig

        cfg = E2EConfig(estimator="perturbed") if name == "e2e_perturbed" else E2EConfig()
        return MultiHeadNet(seed, e2e=cfg, name=name, **kwargs)
    if name == "e2e_warm":
        from eoca.budget.e2e import WarmStartE2E

        return WarmStartE2E(seed, **kwargs)
    valid = ", ".join([*MODEL_NAMES, "e2e_perturbed", "e2e_warm"])
    raise DataValidationError(f"unknown budget model '{name}'; valid: {valid}")
