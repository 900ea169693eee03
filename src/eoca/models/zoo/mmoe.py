"""MMoE (EOCA Sec. 5.1): shared experts with a gate per task; a conversion tower predicts pCTCVR directly
(no latent pCVR) with BCE, an amount tower regresses ``log1p(amount)`` over every exposure with MSE; ETV is
``expm1(v_hat)`` (log-regression formula), as for Shared-Bottom."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch
from eoca.models.features import FeatureSpace
from eoca.models.layers import Tower, run_towers
from eoca.models.zoo.common import (
    COMMON_DEFAULTS,
    MMOE_DEFAULTS,
    ConversionPlusLogAmount,
    logit,
)


class MMoEModel(ConversionPlusLogAmount):
    name = "mmoe"
    tasks = frozenset({"conversion", "amount", "etv"})
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, **MMOE_DEFAULTS}

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        dropout = float(params["dropout"])
        self.mmoe = self._build_mmoe(2)
        stats = space.label_stats
        hidden = int(params["tower_hidden"])
        self.conversion = Tower(self.mmoe.out_dim, hidden, 1, dropout, [logit(stats["conversion_rate"])])
        self.amount = Tower(self.mmoe.out_dim, hidden, 1, dropout, [stats["mean_log1p_all"]])

    def _heads(self, batch: Batch) -> tuple[Tensor, Tensor]:
        h = self.mmoe(self.encode(batch))  # [B, 2, K]
        conversion, amount = run_towers([self.conversion, self.amount], [h[:, 0], h[:, 1]])
        return conversion.squeeze(-1), amount.squeeze(-1)


MODEL = MMoEModel
