"""``gbdt``: a LightGBM hurdle model, the zoo's strong classical baseline.

Conversion: with click labels, ``p = P(engaged) * P(convert | engaged)``, a gradient-boosted classifier for each
factor, where *engaged* is a click or a conversion (so a conversion without a logged click still counts and the
product is exactly P(convert)); the click is about ten times as frequent as the conversion, so the first factor
learns the customer's taste for each fund from far more positives than conversions alone offer (the ESMM idea
with trees). Without click labels one classifier predicts conversion directly.

Amount: a gradient-boosted regressor predicts ``mu = E[log1p(amount)]`` from the train converters and, when the
data has behaviour events, from the customer's past purchases
(:meth:`~eoca.models.features.BoundFeatures.purchase_history`, each with features cut at its own time): a past
purchase is a draw of the same customer's amount for that fund, and there are far more of them than
conversions (about 160 per train conversion on the default simulated world). A ``source`` column (0 = a
conversion, 1 = a past purchase) lets the trees learn any level difference between the two; predictions use
``source = 0``. Early stopping holds out every tenth customer's past purchases and the valid converters. A single
shared ``sigma`` (the residual spread on those held-out rows, or, with fewer than :data:`MIN_SIGMA_ROWS` of
them, an out-of-fold estimate on the training rows) completes the lognormal, so
``ETV = p * (exp(mu + sigma^2 / 2) - 1)`` (EOCA Eq. 13).

All boosters read :func:`eoca.models.features.tabular.tabular_rows`: the profile, the fund, the candidate-aware
behaviour counts of the pair and the customer's behaviour summary. They are saved as LightGBM's text format
inside the model file's ``state_dict`` (plain strings), so model files stay loadable with
``torch.load(weights_only=True)``.
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
from eoca.threads import prediction_threads

MIN_SIGMA_ROWS = 20
"""Fewest held-out amount rows whose residuals estimate the shared sigma (else an out-of-fold estimate)."""
MIN_AMOUNT_ROWS = 20
"""Fewest amount rows (converters and past purchases) for a regressor; below it ``mu`` is the train
converters' mean ``log1p(amount)``."""
MIN_ENGAGED_FOR_CVR = 20
"""Fewest train conversions for the two-factor (engaged x convert-given-engaged) conversion model."""
MIN_SPREAD_ROWS = 200
"""Fewest held-out amount rows for a per-pair sigma (else the shared sigma)."""
HISTORY_HOLDOUT = 0.1
"""Share of customers whose past purchases validate the amount regressor instead of training it."""

DEFAULTS: dict[str, Any] = {
    # boosting rounds are upper bounds: every booster early-stops on the valid split
    "n_estimators": 2000,
    "learning_rate": 0.03,
    # the first conversion factor (P(engaged) with clicks, P(convert) without): small trees and large leaves,
    # because positives are rare and probabilities overfit
    "num_leaves": 15,
    "min_child_samples": 100,
    "reg_lambda": 10.0,
    "feature_fraction": 0.8,
    "early_stopping_rounds": 100,
    # P(convert | engaged): a tenth of the rows
    "cvr_num_leaves": 7,
    "cvr_min_child_samples": 50,
    "amount_n_estimators": 1000,
    "amount_learning_rate": 0.05,
    "amount_num_leaves": 31,
    "amount_min_child_samples": 100,
    # learn amounts from the behaviour history's purchases too (when the data has them)
    "amount_from_history": True,
    # a per-pair sigma (a booster on squared residuals) instead of one shared sigma, when enough rows are held out
    "amount_spread_model": True,
    "spread_num_leaves": 7,
    "spread_min_child_samples": 200,
}


class Gbdt(DirectFitModel):
    """LightGBM hurdle model; see the module docstring. ``predict`` returns ``p``, ``mu``, ``sigma``,
    ``amount`` and ``etv``, each ``[B]``."""

    name = "gbdt"
    formula: str | None = "eoca"
    scores_pairs_alone = True  # LightGBM walks each row's trees on its own
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.params = params
        self.tasks = frozenset({"conversion", "amount", "etv"})
        self.columns, self.categorical = tabular_columns(space)
        stats = space.label_stats
        self._classifier: lgb.Booster | None = None
        self._cvr: lgb.Booster | None = None
        self._regressor: lgb.Booster | None = None
        self._spread: lgb.Booster | None = None
        self._spread_scale = 1.0
        self._base_rate = float(stats["conversion_rate"])
        self._mu0 = float(stats["log1p_mu"])
        self._sigma = max(float(stats["log1p_sigma"]), SIGMA_FLOOR)

    # -- persistence through state_dict --------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "classifier": self._classifier.model_to_string() if self._classifier is not None else "",
            "cvr": self._cvr.model_to_string() if self._cvr is not None else "",
            "regressor": self._regressor.model_to_string() if self._regressor is not None else "",
            "spread": self._spread.model_to_string() if self._spread is not None else "",
            "spread_scale": self._spread_scale,
            "base_rate": self._base_rate,
            "mu0": self._mu0,
            "sigma": self._sigma,
        }

    def set_extra_state(self, state: Any) -> None:
        def booster(key: str) -> lgb.Booster | None:
            text = state.get(key, "")
            return lgb.Booster(model_str=text) if text else None

        self._classifier = booster("classifier")
        self._cvr = booster("cvr")
        self._regressor = booster("regressor")
        self._spread = booster("spread")
        self._spread_scale = float(state.get("spread_scale", 1.0))
        self._base_rate = float(state["base_rate"])
        self._mu0 = float(state["mu0"])
        self._sigma = float(state["sigma"])

    # -- fitting ---------------------------------------------------------------------------------------------
    def _matrix(self, bound: BoundFeatures, split: str, batch_size: int) -> dict[str, np.ndarray]:
        """The split's rows: ``x`` ``[n, D]``, ``converted``, ``amount``, ``engaged`` (clicked or converted;
        None without click labels) and ``customer`` ``[n]``."""
        xs, conv, amt, clk, cust = [], [], [], [], []
        for batch in bound.exposure_batches(split, batch_size, shuffle=False):
            assert batch.converted is not None and batch.amount is not None
            xs.append(tabular_rows(self.space, batch))
            conv.append(batch.converted.numpy())
            amt.append(batch.amount.numpy())
            cust.append(batch.customer.numpy())
            if batch.clicked is not None:
                clk.append(batch.clicked.numpy())
        empty = np.zeros(0, np.float32)
        out: dict[str, Any] = {
            "x": np.concatenate(xs) if xs else np.zeros((0, len(self.columns)), np.float32),
            "converted": np.concatenate(conv) if conv else empty,
            "amount": np.concatenate(amt) if amt else empty,
            "customer": np.concatenate(cust) if cust else np.zeros(0, np.int64),
            "engaged": None,
        }
        if clk and len(clk) == len(xs):
            out["engaged"] = np.maximum(np.concatenate(clk), out["converted"])
        return out

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
        columns: list[str] | None = None,
    ) -> lgb.Dataset:
        return lgb.Dataset(
            x,
            label=y,
            weight=weight,
            feature_name=columns or self.columns,
            categorical_feature=self.categorical,
            reference=reference,
            free_raw_data=False,
        )

    def _classify(
        self,
        x: np.ndarray,
        y: np.ndarray,
        xv: np.ndarray,
        yv: np.ndarray,
        params: dict[str, Any],
        weight: np.ndarray | None,
        weight_v: np.ndarray | None,
    ) -> lgb.Booster | None:
        """One binary booster, early-stopped on the valid rows when they hold a positive; None without any
        train positive."""
        if y.sum() <= 0:
            return None
        train_set = self._dataset(x, y, weight=weight)
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Any] = []
        if yv.size and yv.sum() > 0:
            valid_sets = [self._dataset(xv, yv, train_set, weight=weight_v)]
            callbacks.append(lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False))
        return lgb.train(
            params, train_set, int(self.params["n_estimators"]), valid_sets=valid_sets, callbacks=callbacks
        )

    def _fit_classifier(
        self, bound: BoundFeatures, tr: dict[str, Any], va: dict[str, Any], *, seed: int, num_threads: int
    ) -> None:
        """The conversion model on the train rows (``tr``/``va`` from :meth:`_matrix`), early-stopped on the
        valid rows: engaged x convert-given-engaged with click labels and enough conversions, else one booster."""
        x, conv, xv, conv_v = tr["x"], tr["converted"], va["x"], va["converted"]
        # Sampling weights (an oversampled design) weight the conversion loss so p refers to the population.
        w, w_v = bound.split_weights("train"), bound.split_weights("valid")
        first = self._lgb_params(
            seed,
            num_threads,
            objective="binary",
            num_leaves=int(self.params["num_leaves"]),
            min_child_samples=int(self.params["min_child_samples"]),
        )
        eng, eng_v = tr["engaged"], va["engaged"]
        two_factor = eng is not None and eng_v is not None and conv.sum() >= MIN_ENGAGED_FOR_CVR
        self._cvr = None
        if two_factor:
            assert eng is not None and eng_v is not None
            self._classifier = self._classify(x, eng, xv, eng_v, first, w, w_v)
            on, on_v = eng > 0, eng_v > 0
            cvr = self._lgb_params(
                seed,
                num_threads,
                objective="binary",
                num_leaves=int(self.params["cvr_num_leaves"]),
                min_child_samples=int(self.params["cvr_min_child_samples"]),
            )
            self._cvr = self._classify(
                x[on],
                conv[on],
                xv[on_v],
                conv_v[on_v],
                cvr,
                None if w is None else w[on],
                None if w_v is None else w_v[on_v],
            )
        else:
            self._classifier = self._classify(x, conv, xv, conv_v, first, w, w_v)

    def fit_bound(self, bound: BoundFeatures, *, seed: int, num_threads: int, batch_size: int) -> dict[str, float]:
        """Fit the boosters on the train split with early stopping on the valid split (when it has labels)."""
        t0 = time.perf_counter()
        tr = self._matrix(bound, "train", batch_size)
        va = self._matrix(bound, "valid", batch_size)
        x, conv, xv, conv_v = tr["x"], tr["converted"], va["x"], va["converted"]
        self._fit_classifier(bound, tr, va, seed=seed, num_threads=num_threads)
        n_history = self._fit_amount(bound, tr, va, seed=seed, num_threads=num_threads, batch_size=batch_size)
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
            "cvr_trees": float(self._cvr.num_trees() if self._cvr is not None else 0),
            "amount_trees": float(self._regressor.num_trees() if self._regressor is not None else 0),
            "amount_history_rows": float(n_history),
            "sigma": self._sigma,
        }

    def _fit_amount(
        self,
        bound: BoundFeatures,
        tr: dict[str, Any],
        va: dict[str, Any],
        *,
        seed: int,
        num_threads: int,
        batch_size: int,
    ) -> int:
        """Fit the amount regressor and the shared sigma; returns the number of past purchases used."""
        pos, pos_v = tr["converted"] > 0, va["converted"] > 0
        xs, ys, xs_v, ys_v = (
            [tr["x"][pos]],
            [np.log1p(tr["amount"][pos])],
            [va["x"][pos_v]],
            [np.log1p(va["amount"][pos_v])],
        )
        n_history = 0
        if bool(self.params["amount_from_history"]):
            held = np.random.default_rng(seed).random(bound.n_customers) < HISTORY_HOLDOUT
            for batch, amount in bound.purchase_history(batch_size):
                rows = tabular_rows(self.space, batch)
                out = held[batch.customer.numpy()]
                xs.append(rows[~out])
                ys.append(np.log1p(amount[~out]))
                xs_v.append(rows[out])
                ys_v.append(np.log1p(amount[out]))
                n_history += int(amount.size)
        # source: 0 for the conversions themselves, 1 for past purchases (prediction uses 0)
        n_conv, n_conv_v = int(pos.sum()), int(pos_v.sum())
        x = np.column_stack([np.concatenate(xs), (np.arange(sum(map(len, ys))) >= n_conv).astype(np.float32)])
        y = np.concatenate(ys)
        xv = np.column_stack([np.concatenate(xs_v), (np.arange(sum(map(len, ys_v))) >= n_conv_v).astype(np.float32)])
        yv = np.concatenate(ys_v)
        self._regressor = None
        if y.size < MIN_AMOUNT_ROWS:
            return n_history
        columns = [*self.columns, "source"]
        params = self._lgb_params(
            seed,
            num_threads,
            objective="regression",
            learning_rate=float(self.params["amount_learning_rate"]),
            num_leaves=int(self.params["amount_num_leaves"]),
            min_child_samples=int(self.params["amount_min_child_samples"]),
        )
        reg_set = self._dataset(x, y, columns=columns)
        valid: list[lgb.Dataset] = []
        callbacks: list[Any] = []
        if yv.size >= MIN_SIGMA_ROWS:
            valid = [self._dataset(xv, yv, reg_set, columns=columns)]
            callbacks.append(lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False))
        self._regressor = lgb.train(
            params, reg_set, int(self.params["amount_n_estimators"]), valid_sets=valid, callbacks=callbacks
        )
        self._sigma = self._residual_sigma(x, y, xv, yv, params, columns)
        self._spread = None
        if bool(self.params["amount_spread_model"]) and yv.size >= MIN_SPREAD_ROWS:
            self._fit_spread(x, y, xv, yv, params, columns)
        return n_history

    def _fit_spread(
        self,
        x: np.ndarray,
        y: np.ndarray,
        xv: np.ndarray,
        yv: np.ndarray,
        params: dict[str, Any],
        columns: list[str],
    ) -> None:
        """A per-pair sigma: a booster on the squared residuals of ``mu`` (their expectation is sigma^2 of the
        row), early-stopped on the held-out rows, then scaled so that its mean over the held-out rows equals
        their mean squared residual (in-sample residuals of the training rows are slightly too small)."""
        assert self._regressor is not None
        r2 = (y - self.booster_predict(self._regressor, x)) ** 2
        r2_v = (yv - self.booster_predict(self._regressor, xv)) ** 2
        spread_params = {
            **params,
            "num_leaves": int(self.params["spread_num_leaves"]),
            "min_child_samples": int(self.params["spread_min_child_samples"]),
        }
        train_set = self._dataset(x, r2, columns=columns)
        self._spread = lgb.train(
            spread_params,
            train_set,
            int(self.params["amount_n_estimators"]),
            valid_sets=[self._dataset(xv, r2_v, train_set, columns=columns)],
            callbacks=[lgb.early_stopping(int(self.params["early_stopping_rounds"]), verbose=False)],
        )
        fitted = np.maximum(self.booster_predict(self._spread, xv), SIGMA_FLOOR**2)
        self._spread_scale = float(r2_v.mean() / fitted.mean())

    def _residual_sigma(
        self,
        x: np.ndarray,
        y: np.ndarray,
        xv: np.ndarray,
        yv: np.ndarray,
        params: dict[str, Any],
        columns: list[str],
    ) -> float:
        """The shared sigma: residual spread on held-out amount rows. In-sample residuals of boosted trees are
        far too small, so with fewer than MIN_SIGMA_ROWS held-out rows the residuals come from a 3-fold
        out-of-fold fit on the training rows (the same rounds as the final regressor)."""
        assert self._regressor is not None
        if yv.size >= MIN_SIGMA_ROWS:
            return max(float(np.std(yv - self.booster_predict(self._regressor, xv))), SIGMA_FLOOR)
        rounds = max(1, self._regressor.num_trees())
        fold = np.arange(y.size) % 3
        resid = np.empty_like(y)
        for k in range(3):
            held = fold == k
            booster = lgb.train(params, self._dataset(x[~held], y[~held], columns=columns), rounds)
            resid[held] = y[held] - self.booster_predict(booster, x[held])
        return max(float(np.std(resid)), SIGMA_FLOOR)

    # -- prediction ------------------------------------------------------------------------------------------
    def booster_predict(self, booster: lgb.Booster, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        """``booster.predict(x)`` as float64 ``[n]``, on the threads of :attr:`predict_threads`. LightGBM gives
        every thread its own block of rows and sums each row's trees in order, so the values do not depend on the
        thread count. Without an explicit count it would use the OpenMP runtime's current default: every CPU,
        or whatever torch last set when the two libraries happen to share one runtime."""
        threads = prediction_threads(self.predict_threads)
        return np.asarray(booster.predict(x, num_threads=threads, **kwargs), dtype=np.float64)

    def _p(self, x: np.ndarray) -> np.ndarray:
        if self._classifier is None:
            return np.full(x.shape[0], self._base_rate)
        p = self.booster_predict(self._classifier, x)
        if self._cvr is not None:
            p = p * self.booster_predict(self._cvr, x)
        return p

    def _amount_x(self, x: np.ndarray) -> np.ndarray:
        """Rows for the amount boosters: the source column appended as 0 (a conversion)."""
        return np.column_stack([x, np.zeros(x.shape[0], dtype=x.dtype)])

    def _mu(self, x: np.ndarray) -> np.ndarray:
        if self._regressor is None:
            return np.full(x.shape[0], self._mu0)
        return self.booster_predict(self._regressor, self._amount_x(x))

    def _sigmas(self, x: np.ndarray) -> np.ndarray:
        if self._spread is None:
            return np.full(x.shape[0], self._sigma)
        var = self._spread_scale * np.maximum(self.booster_predict(self._spread, self._amount_x(x)), SIGMA_FLOOR**2)
        return np.sqrt(var)

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
        sigma = torch.from_numpy(self._sigmas(x).astype(np.float32))
        etv = expected_transaction_value("eoca", p=p, mu=mu, sigma=sigma)
        amount = expected_transaction_value("eoca", p=torch.ones_like(p), mu=mu, sigma=sigma)
        return ModelOutput(p=p, etv=etv, mu=mu, sigma=sigma, amount=amount)


MODEL = Gbdt
