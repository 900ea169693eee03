"""``gbdt``: a LightGBM hurdle model, the zoo's strong classical baseline.

A gradient-boosted classifier predicts conversion over the entire exposure space; a gradient-boosted regressor
predicts ``mu = E[log1p(amount)]`` from the train converters only, and a single shared ``sigma`` (the residual
spread on the validation converters, or the train converters when the validation split has fewer than
:data:`MIN_SIGMA_ROWS`) completes the lognormal, so ``ETV = p * (exp(mu + sigma^2 / 2) - 1)`` (EOCA Eq. 13).
Both read :func:`eoca.models.features.tabular.tabular_rows`: the profile, the fund, and the candidate-aware
behaviour counts of the pair. The boosters are saved as LightGBM's text format inside the model file's
``state_dict`` (plain strings), so model files stay loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import torch
from torch import Tensor

from eoca.models.base import Batch, DirectFitModel, ModelOutput
from eoca.models.features import BoundFeatures, FeatureSpace
from eoca.models.features.tabular import tabular_columns, tabular_rows
from eoca.models.losses import SIGMA_FLOOR, expected_transaction_value

MIN_SIGMA_ROWS = 20
"""Fewest validation converters whose residuals estimate the shared sigma (else the train converters')."""
MIN_AMOUNT_ROWS = 20
"""Fewest train converters for an amount regressor; below it ``mu`` is their mean ``log1p(amount)``."""

DEFAULTS: dict[str, Any] = {
    "n_estimators": 400,  # boosting rounds of the conversion classifier (early stopping usually ends sooner)
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 100,  # conversions are rare: large leaves keep probabilities from overfitting
    "reg_lambda": 10.0,
    "feature_fraction": 0.8,
    "early_stopping_rounds": 50,
    "amount_n_estimators": 300,
    "amount_num_leaves": 7,
    "amount_min_child_samples": 20,
}


class Gbdt(DirectFitModel):
    """LightGBM hurdle model; see the module docstring. ``predict`` returns ``p``, ``mu``, ``sigma``,
    ``amount`` and ``etv``, each ``[B]``."""

    name = "gbdt"
    formula: str | None = "eoca"
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.params = params
        self.tasks = frozenset({"conversion", "amount", "etv"})
        self.columns, self.categorical = tabular_columns(space)
        stats = space.label_stats
        self._classifier: lgb.Booster | None = None
        self._regressor: lgb.Booster | None = None
        self._base_rate = float(stats["conversion_rate"])
        self._mu0 = float(stats["log1p_mu"])
        self._sigma = max(float(stats["log1p_sigma"]), SIGMA_FLOOR)

    # -- persistence through state_dict --------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "classifier": self._classifier.model_to_string() if self._classifier is not None else "",
            "regressor": self._regressor.model_to_string() if self._regressor is not None else "",
            "base_rate": self._base_rate,
            "mu0": self._mu0,
            "sigma": self._sigma,
        }

    def set_extra_state(self, state: Any) -> None:
        self._classifier = lgb.Booster(model_str=state["classifier"]) if state["classifier"] else None
        self._regressor = lgb.Booster(model_str=state["regressor"]) if state["regressor"] else None
        self._base_rate = float(state["base_rate"])
        self._mu0 = float(state["mu0"])
        self._sigma = float(state["sigma"])

    # -- fitting ---------------------------------------------------------------------------------------------
    def _matrix(self, bound: BoundFeatures, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, conv, amt = [], [], []
        for batch in bound.exposure_batches(split, batch_size, shuffle=False):
            assert batch.converted is not None and batch.amount is not None
            xs.append(tabular_rows(self.space, batch))
            conv.append(batch.converted.numpy())
            amt.append(batch.amount.numpy())
        if not xs:
            return np.zeros((0, len(self.columns)), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(xs), np.concatenate(conv), np.concatenate(amt)

    def _lgb_params(self, seed: int, num_threads: int, **extra: Any) -> dict[str, Any]:
        return {
            "verbose": -1,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": num_threads,
            "learning_rate": float(self.params["learning_rate"]),
            "lambda_l2": float(self.params["reg_lambda"]),
            "feature_fraction": float(self.params["feature_fraction"]),
            **extra,
        }

    def _dataset(
        self,
        x: np.ndarray,
        y: np.ndarray,
        reference: lgb.Dataset | None = None,
        weight: np.ndarray | None = None,
    ) -> lgb.Dataset:
        return lgb.Dataset(
            x,
            label=y,
            weight=weight,
            feature_name=self.columns,
            categorical_feature=self.categorical,
            reference=reference,
            free_raw_data=False,
        )

    def fit_bound(self, bound: BoundFeatures, *, seed: int, num_threads: int, batch_size: int) -> dict[str, float]:
        """Fit both boosters on the train split with early stopping on the valid split (when it has labels)."""
        t0 = time.perf_counter()
        x, conv, amt = self._matrix(bound, "train", batch_size)
        xv, conv_v, amt_v = self._matrix(bound, "valid", batch_size)
        self._fit_classifier(bound, x, conv, xv, conv_v, seed=seed, num_threads=num_threads)
        pos, pos_v = conv > 0, conv_v > 0
        if pos.sum() >= MIN_AMOUNT_ROWS:
            y, y_v = np.log1p(amt[pos]), np.log1p(amt_v[pos_v])
            reg_params = self._lgb_params(
                seed,
                num_threads,
                objective="regression",
                num_leaves=int(self.params["amount_num_leaves"]),
                min_child_samples=int(self.params["amount_min_child_samples"]),
            )
            reg_set = self._dataset(x[pos], y)
            reg_valid: list[lgb.Dataset] = []
            reg_callbacks: list[Any] = []
            if pos_v.sum() >= MIN_SIGMA_ROWS:
                reg_valid = [self._dataset(xv[pos_v], y_v, reg_set)]
                reg_callbacks.append(lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False))
            self._regressor = lgb.train(
                reg_params,
                reg_set,
                int(self.params["amount_n_estimators"]),
                valid_sets=reg_valid,
                callbacks=reg_callbacks,
            )
            self._sigma = self._residual_sigma(x[pos], y, xv[pos_v], y_v, reg_params)
        train_seconds = time.perf_counter() - t0
        return {
            "epoch": 1.0,
            "train_loss": self._logloss(x, conv),
            "valid_loss": self._logloss(xv, conv_v) if conv_v.size else math.nan,
            "rows": float(conv.size),
            "seconds": train_seconds,
            "train_seconds": train_seconds,
            "samples_per_s": conv.size / train_seconds if train_seconds else 0.0,
            "trees": float(self._classifier.num_trees() if self._classifier is not None else 0),
            "amount_trees": float(self._regressor.num_trees() if self._regressor is not None else 0),
            "sigma": self._sigma,
        }

    def _fit_classifier(
        self,
        bound: BoundFeatures,
        x: np.ndarray,
        conv: np.ndarray,
        xv: np.ndarray,
        conv_v: np.ndarray,
        *,
        seed: int,
        num_threads: int,
    ) -> None:
        """The conversion booster on the train rows, early-stopped on the valid rows when they have a conversion."""
        params = self._lgb_params(
            seed,
            num_threads,
            objective="binary",
            num_leaves=int(self.params["num_leaves"]),
            min_child_samples=int(self.params["min_child_samples"]),
        )
        # Sampling weights (an oversampled design) weight the conversion loss so p refers to the population.
        train_set = self._dataset(x, conv, weight=bound.split_weights("train"))
        callbacks: list[Any] = []
        valid_sets: list[lgb.Dataset] = []
        if conv_v.size and conv_v.sum() > 0:
            valid_sets = [self._dataset(xv, conv_v, train_set, weight=bound.split_weights("valid"))]
            callbacks.append(lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False))
        if conv.sum() > 0:
            self._classifier = lgb.train(
                params, train_set, int(self.params["n_estimators"]), valid_sets=valid_sets, callbacks=callbacks
            )

    def _residual_sigma(
        self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, params: dict[str, Any]
    ) -> float:
        """The shared sigma: residual spread on held-out converters. In-sample residuals of boosted trees are
        far too small, so with fewer than MIN_SIGMA_ROWS validation converters the residuals come from a
        3-fold out-of-fold fit on the train converters (the same rounds as the final regressor)."""
        assert self._regressor is not None
        if yv.size >= MIN_SIGMA_ROWS:
            return max(float(np.std(yv - self._regressor.predict(xv))), SIGMA_FLOOR)
        rounds = max(1, self._regressor.num_trees())
        fold = np.arange(y.size) % 3
        resid = np.empty_like(y)
        for k in range(3):
            held = fold == k
            booster = lgb.train(params, self._dataset(x[~held], y[~held]), rounds)
            resid[held] = y[held] - booster.predict(x[held])
        return max(float(np.std(resid)), SIGMA_FLOOR)

    # -- prediction ------------------------------------------------------------------------------------------
    def _p(self, x: np.ndarray) -> np.ndarray:
        if self._classifier is None:
            return np.full(x.shape[0], self._base_rate)
        return np.asarray(self._classifier.predict(x), dtype=np.float64)

    def _mu(self, x: np.ndarray) -> np.ndarray:
        if self._regressor is None:
            return np.full(x.shape[0], self._mu0)
        return np.asarray(self._regressor.predict(x), dtype=np.float64)

    def _logloss(self, x: np.ndarray, y: np.ndarray) -> float:
        p = np.clip(self._p(x), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if y.size else math.nan

    def loss(self, batch: Batch) -> Tensor:
        """Conversion log loss of the fitted classifier (the validation loss the trainer reports)."""
        assert batch.converted is not None
        return torch.tensor(self._logloss(tabular_rows(self.space, batch), batch.converted.numpy()))

    def predict(self, batch: Batch) -> ModelOutput:
        x = tabular_rows(self.space, batch)
        p = torch.from_numpy(self._p(x).astype(np.float32))
        mu = torch.from_numpy(self._mu(x).astype(np.float32))
        sigma = torch.full_like(mu, self._sigma)
        etv = expected_transaction_value("eoca", p=p, mu=mu, sigma=sigma)
        amount = expected_transaction_value("eoca", p=torch.ones_like(p), mu=mu, sigma=sigma)
        return ModelOutput(p=p, etv=etv, mu=mu, sigma=sigma, amount=amount)


MODEL = Gbdt
