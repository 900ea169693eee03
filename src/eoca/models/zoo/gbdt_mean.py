"""``gbdt_mean``: LightGBM regression of the expected value itself, the zoo's model for what MSE rewards.

A hurdle model (``gbdt``, the lognormal heads) estimates ``E[amount]`` through ``exp(mu + sigma^2 / 2)``: the mean
of a heavy tail then hangs on a spread estimated from few converters, and a tree's ``mu`` cannot leave the range
of its leaves. MSE, though, is minimised by the conditional mean ``E[amount | x]`` over *every* exposure (zeros
included), and a log-link Tweedie deviance (Poisson by default) has exactly that minimiser while staying robust
to the tail: its gradient is ``exp(f) - y``, linear in the amount, not quadratic like squared error. So:

* ``etv`` = ``exp(f(x))``, one gradient-boosted regressor of the amount over every train exposure (non-buyers
  contribute their 0), early-stopped on the valid split's deviance;
* ``p`` = the conversion model of :class:`eoca.models.zoo.gbdt.Gbdt` (the same boosters and parameters),
  for AUC, logloss and the allocation's conversion view.

The model predicts ETV directly, so the ETV guard (:mod:`eoca.models.guard`) caps it at the largest train
amount and rescales it per fund on the valid split (realised over predicted amount). Sampling weights weight
both boosters, so the mean refers to the population. Inputs are :func:`eoca.models.features.tabular.tabular_rows`,
as for ``gbdt``.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import torch
from torch import Tensor

from eoca.errors import ConfigError
from eoca.evaluation.metrics import tweedie_deviance
from eoca.models.base import Batch, ModelOutput
from eoca.models.features import BoundFeatures
from eoca.models.features.tabular import tabular_rows
from eoca.models.zoo.gbdt import DEFAULTS as GBDT_DEFAULTS
from eoca.models.zoo.gbdt import Gbdt

OBJECTIVES: tuple[str, ...] = ("poisson", "tweedie")

DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in GBDT_DEFAULTS.items() if not k.startswith(("amount_", "spread_"))},
    "value_objective": "poisson",  # log-link deviance; "tweedie" adds a point mass at 0 (variance power below)
    "tweedie_variance_power": 1.5,  # in (1, 2); only read with value_objective: tweedie
    "value_n_estimators": 2000,  # boosting rounds of the value regressor (early stopping usually ends sooner)
    "value_learning_rate": 0.03,
    "value_num_leaves": 15,
    "value_min_child_samples": 50,
}


class GbdtMean(Gbdt):
    """LightGBM regressor of ``E[amount | x]`` plus ``gbdt``'s conversion classifier; see the module docstring.
    ``predict`` returns ``p`` and ``etv``, each ``[B]``."""

    name = "gbdt_mean"
    formula = None
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS

    def __init__(self, space: Any, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        objective = str(params["value_objective"])
        if objective not in OBJECTIVES:
            raise ConfigError(f"gbdt_mean: value_objective must be one of {OBJECTIVES}, got {objective!r}")
        power = float(params["tweedie_variance_power"])
        if not 1.0 < power < 2.0:
            raise ConfigError(f"gbdt_mean: tweedie_variance_power must be in (1, 2), got {power}")
        self.tasks = frozenset({"conversion", "etv"})
        self._value: lgb.Booster | None = None
        self._mean0 = float(space.label_stats["conversion_rate"]) * float(space.label_stats["mean_amount"])

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(value=self._value.model_to_string() if self._value is not None else "", mean0=self._mean0)
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._value = lgb.Booster(model_str=state["value"]) if state["value"] else None
        self._mean0 = float(state["mean0"])

    def _value_params(self, seed: int, num_threads: int) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.params["value_objective"] == "tweedie":
            extra["tweedie_variance_power"] = float(self.params["tweedie_variance_power"])
        params = self._lgb_params(
            seed,
            num_threads,
            objective=str(self.params["value_objective"]),
            num_leaves=int(self.params["value_num_leaves"]),
            min_child_samples=int(self.params["value_min_child_samples"]),
            **extra,
        )
        params["learning_rate"] = float(self.params["value_learning_rate"])
        return params

    def fit_bound(self, bound: BoundFeatures, *, seed: int, num_threads: int, batch_size: int) -> dict[str, float]:
        """Fit the conversion classifier and the value regressor on the train split, each early-stopped on the
        valid split (when it has a conversion)."""
        t0 = time.perf_counter()
        tr = self._matrix(bound, "train", batch_size)
        va = self._matrix(bound, "valid", batch_size)
        x, amt, xv, amt_v = tr["x"], tr["amount"], va["x"], va["amount"]
        self._fit_classifier(bound, tr, va, seed=seed, num_threads=num_threads)
        w, w_v = bound.split_weights("train"), bound.split_weights("valid")
        if amt.sum() > 0:
            train_set = self._dataset(x, amt, weight=w)
            valid_sets: list[lgb.Dataset] = []
            callbacks: list[Any] = []
            if amt_v.size and amt_v.sum() > 0:
                valid_sets = [self._dataset(xv, amt_v, train_set, weight=w_v)]
                callbacks.append(lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False))
            self._value = lgb.train(
                self._value_params(seed, num_threads),
                train_set,
                int(self.params["value_n_estimators"]),
                valid_sets=valid_sets,
                callbacks=callbacks,
            )
        train_seconds = time.perf_counter() - t0
        return {
            "epoch": 1.0,
            "train_loss": self._deviance(amt, self._mean(x), w),
            "valid_loss": self._deviance(amt_v, self._mean(xv), w_v) if amt_v.size else math.nan,
            "rows": float(amt.size),
            "seconds": train_seconds,
            "train_seconds": train_seconds,
            "samples_per_s": amt.size / train_seconds if train_seconds else 0.0,
            "trees": float(self._classifier.num_trees() if self._classifier is not None else 0),
            "value_trees": float(self._value.num_trees() if self._value is not None else 0),
        }

    def _mean(self, x: np.ndarray) -> np.ndarray:
        if self._value is None:
            return np.full(x.shape[0], self._mean0)
        return np.asarray(self._value.predict(x), dtype=np.float64)

    def _deviance(self, y: np.ndarray, mean: np.ndarray, weight: np.ndarray | None = None) -> float:
        """Mean (weighted) deviance of the value objective (:func:`eoca.evaluation.metrics.tweedie_deviance`)."""
        if not y.size:
            return math.nan
        power = 1.0 if self.params["value_objective"] == "poisson" else float(self.params["tweedie_variance_power"])
        return tweedie_deviance(y, mean, weight, power=power)

    def loss(self, batch: Batch) -> Tensor:
        """The value objective's mean deviance on a labelled batch (the validation loss the trainer reports)."""
        assert batch.amount is not None
        x = tabular_rows(self.space, batch)
        return torch.tensor(self._deviance(batch.amount.numpy(), self._mean(x)))

    def predict(self, batch: Batch) -> ModelOutput:
        x = tabular_rows(self.space, batch)
        p = torch.from_numpy(self._p(x).astype(np.float32))
        etv = torch.from_numpy(self._mean(x).astype(np.float32))
        return ModelOutput(p=p, etv=etv)


MODEL = GbdtMean
