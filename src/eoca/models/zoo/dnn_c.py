"""DNN-C (EOCA Sec. 5.1): a plain DNN predicting the entire-space conversion probability, trained with BCE.

It has no amount head, so ``tasks`` is only conversion. Its ETV (reported so allocation can still use the
model) is ``p`` times a constant amount: the lognormal fit of the train converters' ``log1p(amount)``, through
EOCA Eq. 13.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.layers import PairMLP
from eoca.models.losses import bce_loss, log_probs
from eoca.models.zoo.common import COMMON_DEFAULTS, ZooModel, conversion_labels, logit, output_layer


class DnnC(ZooModel):
    name = "dnn_c"
    tasks = frozenset({"conversion"})
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, "hidden": [128, 64]}

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        self.net = PairMLP(
            self.customer_arch.out_dim,
            self.fund_arch.out_dim,
            list(params["hidden"]),
            params["dropout"],
            pair_dim=self.pair_dim,
        )
        self.out = output_layer(self.net.out_dim, logit(space.label_stats["conversion_rate"]))

    def _logit(self, batch: Batch) -> Tensor:
        return self.out(self.net(self.encode(batch))).squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        converted, _ = conversion_labels(batch)
        return bce_loss(*log_probs(self._logit(batch)), converted)

    def predict(self, batch: Batch) -> ModelOutput:
        p = self._logit(batch).sigmoid()
        const = self.constant_amount_etv(p)
        return ModelOutput(p=p, etv=const["etv"], amount=const["amount"], mu=const["mu"], sigma=const["sigma"])


MODEL = DnnC
