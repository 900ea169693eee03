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
amount and rescales it per fund on the valid split (realised over predicted amount). Inputs are
:func:`eoca.models.features.tabular.tabular_rows`, as for ``gbdt``.

Sampling weights. The conversion classifier is weighted, so ``p`` refers to the population. The value regressor
depends on the design (``value_weighting``):

* ``auto`` (default): when the weights depend on the conversion label alone, a response-based design such as
  ``sampling.converted_rate`` (converters weigh ``w1``, the others ``w0``), the regressor fits the *sample's*
  mean ``m_s(x)`` unweighted and is mapped to the population's exactly: sampling on the label leaves the amount
  given conversion unchanged, so ``m_pop(x) = m_s(x) p(x) / p_s(x) = m_s(x) (p(x) + k (1 - p(x)))`` with
  ``k = w1 / w0`` (the sample's conversion odds are the population's divided by ``k``) and ``p`` the weighted
  classifier's. Weighting the regressor instead gives leaves of a few dozen rows that stand for one or two
  population rows (a converter weighs about 0.1, a non-converter about 1.9 at a 5% rate oversampled to 50%) and
  predict far above the truth: on the synthetic donations (5-seed ensembles, 3 splits) the weighted fit's
  expected MSE above the Bayes predictor was 2.0-8.7 times the design-aware fit's (benchmarks/RESULTS.md, "Bring
  your own data"). Other weights
  (e.g. a ``weight`` column that varies within a class) fall back to the weighted fit.
* ``weighted``: always weight the regressor by the sampling weights.
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
WEIGHTINGS: tuple[str, ...] = ("auto", "weighted")

DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in GBDT_DEFAULTS.items() if not k.startswith(("amount_", "spread_"))},
    "value_objective": "poisson",  # log-link deviance; "tweedie" adds a point mass at 0 (variance power below)
    "tweedie_variance_power": 1.5,  # in (1, 2); only read with value_objective: tweedie
    "value_n_estimators": 2000,  # boosting rounds of the value regressor (early stopping usually ends sooner)
    "value_learning_rate": 0.03,
    "value_num_leaves": 15,
    "value_min_child_samples": 50,
    "value_weighting": "auto",  # auto: unweighted fit + exact population mapping under a response-based design
}


def response_odds_ratio(weight: np.ndarray | None, converted: np.ndarray) -> float | None:
    """``k = w1 / w0`` when the sampling weights depend on the conversion label alone (every converter weighs
    ``w1``, every other row ``w0``, both classes present), else None. Under such a design the sample's odds of
    conversion are the population's divided by ``k``. ``weight``, ``converted``: ``[n]``."""
    if weight is None or converted.size == 0:
        return None
    pos = converted > 0
    if pos.all() or not pos.any():
        return None
    w1, w0 = weight[pos], weight[~pos]
    if not (np.allclose(w1, w1[0], rtol=1e-6, atol=0.0) and np.allclose(w0, w0[0], rtol=1e-6, atol=0.0)):
        return None
    return float(w1[0] / w0[0])


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
        if params["value_weighting"] not in WEIGHTINGS:
            raise ConfigError(
                f"gbdt_mean: value_weighting must be one of {WEIGHTINGS}, got {params['value_weighting']!r}"
            )
        self.tasks = frozenset({"conversion", "etv"})
        self._value: lgb.Booster | None = None
        self._mean0 = float(space.label_stats["conversion_rate"]) * float(space.label_stats["mean_amount"])
        self._odds_ratio: float | None = None  # k of a response-based design whose regressor fits the sample

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(
            value=self._value.model_to_string() if self._value is not None else "",
            mean0=self._mean0,
            odds_ratio=self._odds_ratio,
        )
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._value = lgb.Booster(model_str=state["value"]) if state["value"] else None
        self._mean0 = float(state["mean0"])
        ratio = state.get("odds_ratio")  # absent in models saved before the design-aware fit
        self._odds_ratio = None if ratio is None else float(ratio)

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
        k = response_odds_ratio(w, tr["converted"]) if self.params["value_weighting"] == "auto" else None
        self._odds_ratio = None if k is None or k == 1.0 else k
        # Under a response-based design the regressor fits the sample's mean, mapped to the population in _mean.
        fit_w, fit_w_v = (None, None) if self._odds_ratio is not None else (w, w_v)
        if amt.sum() > 0:
            train_set = self._value_dataset(x, amt, weight=fit_w)
            valid_sets: list[lgb.Dataset] = []
            callbacks: list[Any] = []
            if amt_v.size and amt_v.sum() > 0:
                valid_sets = [self._value_dataset(xv, amt_v, train_set, weight=fit_w_v)]
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

    def _value_dataset(
        self, x: np.ndarray, y: np.ndarray, reference: lgb.Dataset | None = None, weight: np.ndarray | None = None
    ) -> lgb.Dataset:
        """The value regressor's training or validation set (a subclass may add a base margin)."""
        return self._dataset(x, y, reference, weight=weight)

    def _value_mean(self, x: np.ndarray) -> np.ndarray:
        """The fitted value regressor's mean for rows ``x`` ``[n, D]``, float64 ``[n]``."""
        assert self._value is not None
        return self.booster_predict(self._value, x)

    def _mean(self, x: np.ndarray) -> np.ndarray:
        """The population's ``E[amount | x]``, ``[n]``."""
        if self._value is None:
            return np.full(x.shape[0], self._mean0)
        mean = self._value_mean(x)
        if self._odds_ratio is not None:
            p = self._p(x)
            mean = mean * (p + self._odds_ratio * (1.0 - p))
        return mean

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
