"""BG/NBD purchase counts with Gamma-Gamma spend (Fader, Hardie & Lee 2005; Fader & Hardie 2013), the
standard customer-lifetime-value baseline, from the maintained ``lifetimes`` library (optional extra
``pip install 'eoca[peers]'``).

It needs a dataset imported from a transaction log (``transactions:`` in the import spec), whose customers
carry BG/NBD's summary ``frequency`` (repeat occasions), ``recency`` and ``T`` (days) and Gamma-Gamma's
``monetary_repeat_mean``, and whose notes give the target window's length (``target_days``). Both models are fitted
on the train split's customers only (Gamma-Gamma on those with a repeat purchase, as it requires). For a test
customer with history (x, t_x, T) and target window length t:

* ``etv`` = E[purchases in (T, T + t] | x, t_x, T] (BG/NBD) x E[spend per purchase | x, m] (Gamma-Gamma);
* ``p`` = P(at least one purchase in the window) = P(alive | x, t_x, T) x (1 - ((alpha + T) / (alpha + T + t))
  ^ (r + x)): an alive customer cannot drop out before their next purchase, and the posterior purchase rate is
  Gamma(r + x, alpha + T).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.errors import ConfigError, DataValidationError
from eoca.peers import Peer, train_customers

REQUIRED = ("frequency", "recency", "T", "monetary_repeat_mean")


def _lifetimes() -> Any:
    try:
        import lifetimes
    except ImportError as exc:
        raise ConfigError(
            "the bgnbd peer needs the optional extra: pip install 'eoca[peers]' (the lifetimes library)"
        ) from exc
    return lifetimes


class BgNbdGammaGamma(Peer):
    name = "bgnbd"
    tasks = frozenset({"conversion", "etv"})

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = float(penalizer)
        self._bgf: Any = None
        self._ggf: Any = None
        self.target_days = 0.0

    def _columns(self, dataset: Dataset) -> dict[str, np.ndarray]:
        cust = dataset.customers
        missing = [c for c in REQUIRED if c not in cust.column_names]
        if missing or "target_days" not in dataset.spec.notes:
            raise ConfigError(
                f"bgnbd: dataset '{dataset.spec.name}' lacks {missing or ['notes.target_days']}; the peer needs a "
                "dataset imported from a transaction log (a transactions: section in the import spec)"
            )
        return {c: np.asarray(cust.column(c).to_numpy(), dtype=np.float64) for c in REQUIRED}

    def fit(self, dataset: Dataset) -> BgNbdGammaGamma:
        lt = _lifetimes()
        cols = self._columns(dataset)
        self.target_days = float(dataset.spec.notes["target_days"])
        rows = train_customers(dataset)
        x, tx, big_t = cols["frequency"][rows], cols["recency"][rows], cols["T"][rows]
        m = cols["monetary_repeat_mean"][rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lifetimes warns about pandas idioms, not about the fit
            self._bgf = lt.BetaGeoFitter(penalizer_coef=self.penalizer).fit(x, tx, big_t)
            rep = (x > 0) & (m > 0)
            if rep.sum() < 3:
                raise DataValidationError(
                    f"bgnbd: only {int(rep.sum())} train customers with a repeat purchase; Gamma-Gamma needs more"
                )
            self._ggf = lt.GammaGammaFitter(penalizer_coef=self.penalizer).fit(x[rep], m[rep])
        return self

    def predict_customers(self, dataset: Dataset, customer_pos: np.ndarray) -> dict[str, np.ndarray]:
        if self._bgf is None:
            raise RuntimeError("bgnbd: call fit before predict")
        cols = self._columns(dataset)
        x, tx, big_t = (cols[c][customer_pos] for c in ("frequency", "recency", "T"))
        m = np.where(x > 0, cols["monetary_repeat_mean"][customer_pos], 0.0)
        t = self.target_days
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = np.asarray(self._bgf.conditional_expected_number_of_purchases_up_to_time(t, x, tx, big_t), float)
            alive = np.asarray(self._bgf.conditional_probability_alive(x, tx, big_t), dtype=np.float64)
            spend = np.asarray(self._ggf.conditional_expected_average_profit(x, m), dtype=np.float64)
        r, alpha = float(self._bgf.params_["r"]), float(self._bgf.params_["alpha"])
        p = alive * (1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x))
        etv = np.nan_to_num(n * spend, nan=0.0, posinf=0.0)
        return {"p": np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0), "etv": np.maximum(etv, 0.0)}

    def describe(self) -> dict[str, Any]:
        params: dict[str, Any] = {"method": "BG/NBD + Gamma-Gamma (lifetimes), fitted on the train customers"}
        if self._bgf is not None:
            params["bgnbd"] = {k: float(v) for k, v in self._bgf.params_.items()}
            params["gamma_gamma"] = {k: float(v) for k, v in self._ggf.params_.items()}
            params["target_days"] = self.target_days
            params["penalizer"] = self.penalizer
        return params
