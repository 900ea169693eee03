"""ESMM (Ma et al. 2018; EOCA Sec. 5.1) on an MMoE bottom: ``pCTCVR = pCTR * pCVR`` with pCVR a latent task.

Loss: BCE(pCTR, click) + BCE(pCTCVR, conversion), both over every exposure. Without click labels it trains a
single conversion tower directly (``pctr``/``pcvr`` are then not reported). There is no amount tower: ETV is
``p`` times the train converters' constant lognormal amount (EOCA Eq. 13), and ``tasks`` has no amount/ETV.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.losses import bce_loss
from eoca.models.zoo.common import (
    COMMON_DEFAULTS,
    MMOE_DEFAULTS,
    ConversionHeads,
    ZooModel,
    conversion_labels,
    task_set,
)


class Esmm(ZooModel):
    name = "esmm"
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, **MMOE_DEFAULTS}

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        self.tasks = task_set(space, "conversion")
        dropout = float(params["dropout"])
        self.mmoe = self._build_mmoe(2)
        self.heads = ConversionHeads(space, self.mmoe.out_dim, int(params["tower_hidden"]), dropout)

    def _logits(self, batch: Batch) -> tuple[Tensor | None, Tensor]:
        h = self.mmoe(self.encode(batch))
        result: tuple[Tensor | None, Tensor] = self.heads(h[:, 0], h[:, 1])
        return result

    def loss(self, batch: Batch) -> Tensor:
        converted, _ = conversion_labels(batch)
        logit_ctr, logit_cvr = self._logits(batch)
        ctcvr = bce_loss(*ConversionHeads.log_probs(logit_ctr, logit_cvr), converted)
        return ctcvr + ConversionHeads.click_loss(logit_ctr, batch)

    def predict(self, batch: Batch) -> ModelOutput:
        probs = ConversionHeads.probabilities(*self._logits(batch))
        p = probs["p"]
        assert p is not None
        const = self.constant_amount_etv(p)
        return ModelOutput(
            p=p,
            etv=const["etv"],
            pctr=probs["pctr"],
            pcvr=probs["pcvr"],
            amount=const["amount"],
            mu=const["mu"],
            sigma=const["sigma"],
        )


MODEL = Esmm
