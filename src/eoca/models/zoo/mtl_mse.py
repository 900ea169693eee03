"""MTL-MSE (EOCA Sec. 5.1): ESDPM-NCG's structure without the sigma tower; pCTCVR = pCTR x pCVR trained with
BCE, and the amount tower regresses ``log1p(amount)`` over every exposure with MSE, the losses simply added
(Sec. 4.1.3). ``v_hat`` estimates the entire-space log amount, so ETV is ``expm1(v_hat)``."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.layers import Tower
from eoca.models.losses import bce_loss, expected_transaction_value, mse_log_amount_loss
from eoca.models.zoo.common import (
    COMMON_DEFAULTS,
    MMOE_DEFAULTS,
    ConversionHeads,
    ZooModel,
    conversion_labels,
    task_set,
)


class MtlMse(ZooModel):
    name = "mtl_mse"
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, **MMOE_DEFAULTS}

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        self.tasks = task_set(space, "conversion", "amount", "etv")
        dropout = float(params["dropout"])
        self.mmoe = self._build_mmoe(3)
        hidden = int(params["tower_hidden"])
        self.heads = ConversionHeads(space, self.mmoe.out_dim, hidden, dropout)
        self.value = Tower(self.mmoe.out_dim, hidden, 1, dropout, [space.label_stats["mean_log1p_all"]])

    def _forward(self, batch: Batch) -> tuple[Tensor | None, Tensor, Tensor]:
        h = self.mmoe(self.encode(batch))
        logit_ctr, logit_cvr = self.heads(h[:, 0], h[:, 1])
        return logit_ctr, logit_cvr, self.value(h[:, 2]).squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        converted, amount = conversion_labels(batch)
        logit_ctr, logit_cvr, v_hat = self._forward(batch)
        ctcvr = bce_loss(*ConversionHeads.log_probs(logit_ctr, logit_cvr), converted)
        return ctcvr + ConversionHeads.click_loss(logit_ctr, batch) + mse_log_amount_loss(v_hat, amount)

    def predict(self, batch: Batch) -> ModelOutput:
        logit_ctr, logit_cvr, v_hat = self._forward(batch)
        probs = ConversionHeads.probabilities(logit_ctr, logit_cvr)
        p = probs["p"]
        assert p is not None
        etv = expected_transaction_value("log_regression", v_hat=v_hat)
        return ModelOutput(p=p, etv=etv, pctr=probs["pctr"], pcvr=probs["pcvr"])


MODEL = MtlMse
