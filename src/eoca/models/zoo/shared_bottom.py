"""Shared-Bottom (EOCA Sec. 5.1): three shared layers, then a conversion tower (BCE) and an amount tower.

As in the paper's plain multi-task setup (Sec. 4.1.3) the two losses are simply added: BCE on conversion over
every exposure plus MSE on ``log1p(amount)`` over every exposure. ETV is ``expm1(v_hat)`` (log-regression
formula) since ``v_hat`` already estimates the entire-space log amount.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch
from eoca.models.features import FeatureSpace
from eoca.models.layers import PairMLP, Tower, run_towers
from eoca.models.zoo.common import COMMON_DEFAULTS, ConversionPlusLogAmount, logit


class SharedBottom(ConversionPlusLogAmount):
    name = "shared_bottom"
    tasks = frozenset({"conversion", "amount", "etv"})
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, "hidden": [128, 64, 64]}

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        dropout = float(params["dropout"])
        self.bottom = PairMLP(
            self.customer_arch.out_dim, self.fund_arch.out_dim, list(params["hidden"]), dropout, pair_dim=self.pair_dim
        )
        stats = space.label_stats
        hidden = int(params["tower_hidden"])
        self.conversion = Tower(self.bottom.out_dim, hidden, 1, dropout, [logit(stats["conversion_rate"])])
        self.amount = Tower(self.bottom.out_dim, hidden, 1, dropout, [stats["mean_log1p_all"]])

    def _heads(self, batch: Batch) -> tuple[Tensor, Tensor]:
        h = self.bottom(self.encode(batch))
        conversion, amount = run_towers([self.conversion, self.amount], [h, h])
        return conversion.squeeze(-1), amount.squeeze(-1)


MODEL = SharedBottom
