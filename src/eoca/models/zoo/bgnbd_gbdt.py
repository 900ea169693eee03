"""``bgnbd_gbdt``: BG/NBD x Gamma-Gamma's expected spend, corrected multiplicatively by boosted trees.

Trees and bounded networks cannot predict beyond the amounts they were fitted on; the probabilistic customer-base
model (:mod:`eoca.data.customer_base`) can: it extrapolates a heavy buyer's spend from their purchase rate and
spend per purchase. It ranks customers worse than trees do, though (on CDNOW it trails them by about 0.05 Gini).
This model keeps the structural model's scale and lets the trees fix its ranking:

* ``etv = (1 + s(x)) * exp(F(x))`` where ``s`` is BG/NBD x Gamma-Gamma's expected spend over the target window
  (read from the customer feature named by ``base_margin``, which holds ``log(1 + s)``: the import option
  ``transactions.customer_base_model: true`` adds it as ``cbm_log_expected_spend``, fitted on the training
  customers' calibration window only) and ``F`` a gradient-boosted regressor of the amount under a log-link
  Poisson (or Tweedie) deviance whose base margin (LightGBM's ``init_score``) is ``log(1 + s)``. The trees
  learn a multiplicative correction of the structural prediction from every feature (the customer-base
  quantities among them), early-stopped on the valid split's deviance. Where no tree has evidence against the
  structural model, the correction is flat and the structural extrapolation is kept; ``1 + s`` instead of
  ``s`` keeps the margin finite for customers the model deems gone (``s`` near 0) at the cost of one currency
  unit;
* ``p`` = the conversion model of :class:`eoca.models.zoo.gbdt.Gbdt`, for AUC, logloss and the allocation's
  conversion view.

Everything else (sampling weights, the ETV guard's cap and per-fund scale, saving) is
:class:`eoca.models.zoo.gbdt_mean.GbdtMean`'s: this model is ``gbdt_mean`` with the structural prediction as
the starting point of its boosting instead of a constant.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from eoca.data.customer_base import structural_feature
from eoca.models.zoo.gbdt_mean import DEFAULTS as GBDT_MEAN_DEFAULTS
from eoca.models.zoo.gbdt_mean import GbdtMean

DEFAULTS: dict[str, Any] = {
    **GBDT_MEAN_DEFAULTS,
    # customer feature holding log(1 + structural expected spend); transactions.customer_base_model adds it
    "base_margin": "cbm_log_expected_spend",
}


class BgNbdGbdt(GbdtMean):
    """``gbdt_mean`` boosted from the structural prediction ``log(1 + s)``; see the module docstring.
    ``predict`` returns ``p`` and ``etv``, each ``[B]``."""

    name = "bgnbd_gbdt"
    formula = None
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS

    def __init__(self, space: Any, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        feature = str(params["base_margin"])
        _, mean, std = structural_feature(space, feature, self.name, "base_margin")
        # tabular_rows holds the standardised feature; the margin is it back on its own scale
        self._margin_col = self.columns.index(f"c_{feature}")
        self._margin_mean, self._margin_std = mean, std

    def margin(self, x: np.ndarray) -> np.ndarray:
        """The base margin ``log(1 + s)`` of tabular rows ``x`` ``[n, D]``, float64 ``[n]``."""
        return np.asarray(x[:, self._margin_col], dtype=np.float64) * self._margin_std + self._margin_mean

    def _value_dataset(
        self, x: np.ndarray, y: np.ndarray, reference: lgb.Dataset | None = None, weight: np.ndarray | None = None
    ) -> lgb.Dataset:
        data = super()._value_dataset(x, y, reference, weight)
        data.set_init_score(self.margin(x))
        return data

    def _value_mean(self, x: np.ndarray) -> np.ndarray:
        assert self._value is not None
        # LightGBM's predictions leave out the init_score: the margin is added back on the log scale
        return np.exp(self.booster_predict(self._value, x, raw_score=True) + self.margin(x))


MODEL = BgNbdGbdt
