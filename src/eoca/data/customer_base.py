"""The probabilistic customer-base model of a transaction log: BG/NBD purchase counts (Fader, Hardie & Lee 2005)
with Gamma-Gamma spend per purchase (Fader & Hardie 2013), from the maintained ``lifetimes`` library (optional
extra ``pip install 'eoca[peers]'``).

One implementation serves two uses: the ``bgnbd`` peer (:mod:`eoca.peers.bgnbd`), whose prediction is
``expected_spend``, and the import option ``transactions.customer_base_model: true``, which adds these
quantities to the customer-value table as features ("hybrid" or feature-level stacking: eoca's models learn
how far to trust them). Both read only the calibration window: BG/NBD's summary ``(x, t_x, T)`` =
(``frequency``, ``recency``, ``T``) and Gamma-Gamma's ``m`` = ``monetary_repeat_mean`` (see
:mod:`eoca.data.transactions`), plus the target window's length ``t``; no label enters.

For a customer with history ``(x, t_x, T, m)``, fitted BG/NBD parameters ``(r, alpha, a, b)`` and Gamma-Gamma
parameters ``(p, q, v)`` the quantities are :data:`CUSTOMER_BASE_FORMULAS`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from typing import Any

import numpy as np

from eoca.errors import ConfigError, DataValidationError

CUSTOMER_BASE_FORMULAS: dict[str, str] = {
    "cbm_p_alive": (
        "BG/NBD P(alive | x, t_x, T) = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))"
    ),
    "cbm_expected_purchases": (
        "BG/NBD E[purchases in (T, T + t] | x, t_x, T] = (a + b + x - 1) / (a - 1) [1 - ((alpha + T) / "
        "(alpha + T + t))^(r + x) 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] x P(alive)"
    ),
    "cbm_p_purchase": (
        "P(at least one purchase in (T, T + t]) = P(alive) (1 - ((alpha + T) / (alpha + T + t))^(r + x))"
    ),
    "cbm_spend_per_purchase": (
        "Gamma-Gamma E[spend per purchase | x, m] = (p (v + x m)) / (p x + q - 1); the population mean "
        "p v / (q - 1) when x = 0"
    ),
    "cbm_expected_spend": "cbm_expected_purchases x cbm_spend_per_purchase (the bgnbd peer's prediction)",
    "cbm_log_expected_spend": "log(1 + cbm_expected_spend) (the same on the scale networks standardise well)",
}
"""Each customer-base feature and its formula (t = the target window's length in days)."""

CUSTOMER_BASE_INPUTS = ("frequency", "recency", "T", "monetary_repeat_mean")
"""Calibration-window columns the model reads (built by :func:`eoca.data.transactions.build_customer_value`)."""


def structural_feature(space: Any, feature: str, model: str, param: str) -> tuple[int, float, float]:
    """Where a model built on the customer-base features finds one of them: ``(position among the space's numeric
    customer features, training mean, training standard deviation)``, the latter two to undo the standardisation.
    ``space`` is a fitted :class:`eoca.models.features.FeatureSpace`; a missing feature is a clear error naming the
    model's parameter and the import option that adds it."""
    numeric = [f["name"] for f in space.customer_numeric]
    if feature not in numeric:
        raise ConfigError(
            f"{model}: the dataset has no numeric customer feature '{feature}' (params.{param}); import the "
            "transaction log with transactions.customer_base_model: true (it adds "
            f"{', '.join(CUSTOMER_BASE_FORMULAS)}) or name another feature holding the structural quantity"
        )
    stats = space.customer_numeric[numeric.index(feature)]
    return numeric.index(feature), float(stats["mean"]), float(stats["std"])


def lifetimes_module(what: str) -> Any:
    """The ``lifetimes`` library, or a :class:`ConfigError` telling the user how to install it."""
    try:
        import lifetimes
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the optional extra: pip install 'eoca[peers]' (the lifetimes library)"
        ) from exc
    return lifetimes


class CustomerBaseModel:
    """BG/NBD + Gamma-Gamma fitted on calibration-window summaries.

    Args:
        penalizer: lifetimes' L2 penalty on the parameters (0 = maximum likelihood).
        what: how errors name the caller (``"the bgnbd peer"``, ``"transactions.customer_base_model"``).
    """

    def __init__(self, penalizer: float = 0.0, what: str = "the customer-base model") -> None:
        self.penalizer = float(penalizer)
        self.what = what
        self.bgf: Any = None
        self.ggf: Any = None

    def fit(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, m: np.ndarray) -> CustomerBaseModel:
        """Fit on the customers given (arrays of shape (n,); ``m`` may be NaN where ``x = 0``)."""
        lt = lifetimes_module(self.what)
        x, tx, big_t, m = (np.asarray(a, dtype=np.float64) for a in (x, tx, big_t, m))
        rep = (x > 0) & np.isfinite(m) & (m > 0)
        if rep.sum() < 3:
            raise DataValidationError(
                f"{self.what}: only {int(rep.sum())} training customers with a repeat purchase; Gamma-Gamma needs more"
            )
        # lifetimes warns about pandas idioms and prints the optimiser's state when it fails; the error says it
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                self.bgf = lt.BetaGeoFitter(penalizer_coef=self.penalizer).fit(x, tx, big_t)
                self.ggf = lt.GammaGammaFitter(penalizer_coef=self.penalizer).fit(x[rep], m[rep])
            except lt.utils.ConvergenceError as exc:
                raise DataValidationError(
                    f"{self.what}: BG/NBD / Gamma-Gamma did not converge on {x.size:,} training customers "
                    f"({str(exc).strip()}); a longer calibration window or more customers usually helps"
                ) from exc
        return self

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters: BG/NBD ``r, alpha, a, b`` and Gamma-Gamma ``p, q, v``."""
        if self.bgf is None:
            raise RuntimeError(f"{self.what}: call fit first")
        return {
            **{k: float(self.bgf.params_[k]) for k in ("r", "alpha", "a", "b")},
            **{k: float(self.ggf.params_[k]) for k in ("p", "q", "v")},
        }

    def quantities(
        self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, m: np.ndarray, t: float
    ) -> dict[str, np.ndarray]:
        """The :data:`CUSTOMER_BASE_FORMULAS` quantities for customers ``(x, t_x, T, m)`` (shape (n,) each) over
        a target window of length ``t``; every value finite and >= 0."""
        if self.bgf is None:
            raise RuntimeError(f"{self.what}: call fit first")
        x, tx, big_t = (np.asarray(a, dtype=np.float64) for a in (x, tx, big_t))
        m = np.where(x > 0, np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0), 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = np.asarray(self.bgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t), float)
            alive = np.asarray(self.bgf.conditional_probability_alive(x, tx, big_t), dtype=np.float64)
            spend = np.asarray(self.ggf.conditional_expected_average_profit(x, m), dtype=np.float64)
        prm = self.params
        p = alive * (1.0 - ((prm["alpha"] + big_t) / (prm["alpha"] + big_t + t)) ** (prm["r"] + x))
        n = np.maximum(np.nan_to_num(n, nan=0.0, posinf=0.0), 0.0)
        spend = np.maximum(np.nan_to_num(spend, nan=0.0, posinf=0.0), 0.0)
        etv = n * spend
        return {
            "cbm_p_alive": np.clip(np.nan_to_num(alive, nan=0.0), 0.0, 1.0),
            "cbm_expected_purchases": n,
            "cbm_p_purchase": np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0),
            "cbm_spend_per_purchase": spend,
            "cbm_expected_spend": etv,
            "cbm_log_expected_spend": np.log1p(etv),
        }


def customer_base_features(
    features: dict[str, np.ndarray], train: np.ndarray, target_days: float, penalizer: float = 0.0
) -> tuple[dict[str, np.ndarray], str]:
    """The customer-base features of every customer, the model fitted on the ``train`` customers only.

    Args:
        features: the calibration-window columns :data:`CUSTOMER_BASE_INPUTS`, shape (n,) each
            (``monetary_repeat_mean`` NaN for one-time buyers, before any missing-value filling).
        train: bool mask, shape (n,), of the customers the parameters are fitted on.
        target_days: the target window's length ``t``.

    Returns:
        The features (name -> shape (n,)) and a JSON note with the fitted parameters.
    """
    what = "transactions.customer_base_model"
    x, tx, big_t, m = (np.asarray(features[c], dtype=np.float64) for c in CUSTOMER_BASE_INPUTS)
    model = CustomerBaseModel(penalizer, what).fit(x[train], tx[train], big_t[train], m[train])
    note = json.dumps(
        {
            "fitted_on": f"{int(train.sum())} training customers' calibration window",
            "target_days": target_days,
            "penalizer": penalizer,
            **model.params,
        }
    )
    return model.quantities(x, tx, big_t, m, target_days), note
