"""``bgnbd_ziln``: ``mtl_ziln``'s network with BG/NBD x Gamma-Gamma's prediction as the base of both heads.

The structural customer-base model (:mod:`eoca.data.customer_base`) extrapolates a heavy buyer's spend from their
purchase rate, which no network or tree fitted on the observed amounts does; networks rank the bulk of the
customers better. ``mtl_ziln`` (ZILN: ``p`` times a lognormal amount, ``ETV = p exp(mu + sigma^2 / 2)``) has one
head per part, and the structural model gives each part: ``p_s`` = P(at least one purchase in the target window)
(``cbm_p_purchase``) and ``E[spend | a purchase] = s / p_s`` with ``s`` the expected spend
(``exp(cbm_log_expected_spend) - 1``). So the network's outputs become corrections of them:

* ``logit p = logit(p_s) + a(x)`` and ``mu = log(1 + s / p_s) + b(x)``, where ``a`` and ``b`` are ``mtl_ziln``'s
  own head outputs, each less its value at the training customers' mean structural inputs (so the heads start
  where ``mtl_ziln``'s do: the base rate and the mean log amount); ``p_s`` is clipped to
  ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]`` so that a customer the structure deems gone keeps a finite logit;
* for a heavy buyer (``p_s`` near 1) ``ETV`` is then about ``(1 + s) exp(b(x) + sigma^2 / 2)``: the structural
  prediction times a learned factor, so its scale, extrapolation included, passes through where the network has
  nothing to add. The ETV guard bounds ``mu`` and ``sigma`` by the training converters' range and the amount by
  the largest training amount, as for every model. (With click labels the margin goes to the
  conversion-given-click logit.)

It needs the import option ``transactions.customer_base_model: true`` (which fits BG/NBD and Gamma-Gamma on the
training customers' calibration window only); ``base_spend`` and ``base_probability`` name the two features.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from eoca.data.customer_base import structural_feature
from eoca.models.base import Batch
from eoca.models.features import FeatureSpace
from eoca.models.zoo.mtl_ziln import MtlZiln

PROBABILITY_FLOOR = 1e-3
"""``p_s`` is clipped to ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]`` before its logit and ``s / p_s``."""


class BgNbdZiln(MtlZiln):
    """``mtl_ziln`` whose conversion logit and lognormal ``mu`` start from the structural model's; see the
    module docstring."""

    name = "bgnbd_ziln"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **MtlZiln.DEFAULTS,
        "base_spend": "cbm_log_expected_spend",  # log(1 + s), s = the structural expected spend
        "base_probability": "cbm_p_purchase",  # p_s, the structural probability of a purchase in the window
    }

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        self._spend, self._prob = (
            structural_feature(space, str(params[key]), self.name, key) for key in ("base_spend", "base_probability")
        )
        logit0, mu0 = self._structural(torch.tensor([self._spend[1]]), torch.tensor([self._prob[1]]))
        self._logit0, self._mu0 = float(logit0), float(mu0)

    @staticmethod
    def _structural(log_spend: Tensor, prob: Tensor) -> tuple[Tensor, Tensor]:
        """``(logit(p_s), log(1 + s / p_s))`` from ``log(1 + s)`` and ``p_s`` (shapes ``[B]``)."""
        p = prob.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        return torch.log(p) - torch.log1p(-p), torch.log1p(torch.expm1(log_spend).clamp_min(0.0) / p)

    def margins(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The structural conversion logit and ``mu`` of each row, less their value at the training mean, ``[B]``
        each (the customer features are standardised in the batch; the margins read them on their own scale)."""
        rows = batch.inputs["c_num"][batch.inputs["row_unit"]]
        (i_s, m_s, sd_s), (i_p, m_p, sd_p) = self._spend, self._prob
        logit, mu = self._structural(rows[:, i_s] * sd_s + m_s, rows[:, i_p] * sd_p + m_p)
        return logit - self._logit0, mu - self._mu0

    def _forward(self, batch: Batch) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        logit_ctr, logit_cvr, mu, sigma = super()._forward(batch)
        d_logit, d_mu = self.margins(batch)
        return logit_ctr, logit_cvr + d_logit, mu + d_mu, sigma


MODEL = BgNbdZiln
