"""BG/NBD purchase counts with Gamma-Gamma spend (Fader, Hardie & Lee 2005; Fader & Hardie 2013), the
standard customer-lifetime-value baseline, from the maintained ``lifetimes`` library (optional extra
``pip install 'eoca[peers]'``; the model itself is :class:`eoca.data.customer_base.CustomerBaseModel`, shared with
the import option ``transactions.customer_base_model``).

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

from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.data.customer_base import CUSTOMER_BASE_INPUTS, CustomerBaseModel
from eoca.errors import ConfigError
from eoca.peers import Peer, train_customers

REQUIRED = CUSTOMER_BASE_INPUTS


class BgNbdGammaGamma(Peer):
    name = "bgnbd"
    tasks = frozenset({"conversion", "etv"})

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = float(penalizer)
        self._model = CustomerBaseModel(self.penalizer, "the bgnbd peer")
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
        cols = self._columns(dataset)
        self.target_days = float(dataset.spec.notes["target_days"])
        rows = train_customers(dataset)
        # The imported monetary_repeat_mean of one-time buyers is already filled; x = 0 marks them.
        x, tx, big_t, m = (cols[c][rows] for c in REQUIRED)
        self._model.fit(x, tx, big_t, m)
        return self

    def predict_customers(self, dataset: Dataset, customer_pos: np.ndarray) -> dict[str, np.ndarray]:
        if self._model.bgf is None:
            raise RuntimeError("bgnbd: call fit before predict")
        cols = self._columns(dataset)
        x, tx, big_t, m = (cols[c][customer_pos] for c in REQUIRED)
        q = self._model.quantities(x, tx, big_t, m, self.target_days)
        return {"p": q["cbm_p_purchase"], "etv": q["cbm_expected_spend"]}

    def describe(self) -> dict[str, Any]:
        params: dict[str, Any] = {"method": "BG/NBD + Gamma-Gamma (lifetimes), fitted on the train customers"}
        if self._model.bgf is not None:
            prm = self._model.params
            params["bgnbd"] = {k: prm[k] for k in ("r", "alpha", "a", "b")}
            params["gamma_gamma"] = {k: prm[k] for k in ("p", "q", "v")}
            params["target_days"] = self.target_days
            params["penalizer"] = self.penalizer
        return params
