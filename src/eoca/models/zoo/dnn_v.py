"""DNN-V (EOCA Sec. 5.1): a plain DNN regressing ``log1p(amount)`` over every exposure with MSE.

Its prediction ``v_hat`` estimates ``E[log1p(PA)]`` over the entire space, and ETV is ``expm1(v_hat)`` (the
log-regression ETV formula). The model has no conversion task (``tasks`` excludes it); ``p`` is reported as
``ETV / mean converter amount`` clipped to [0, 1], a monotone transform of its ETV, so rankings by ``p`` and by
ETV agree and ``p`` lies in the probability range the output type promises.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.layers import PairMLP
from eoca.models.losses import expected_transaction_value, mse_log_amount_loss
from eoca.models.zoo.common import COMMON_DEFAULTS, ZooModel, conversion_labels, output_layer


class DnnV(ZooModel):
    name = "dnn_v"
    tasks = frozenset({"amount", "etv"})
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
        self.out = output_layer(self.net.out_dim, space.label_stats["mean_log1p_all"])
        self.mean_amount = max(space.label_stats["mean_amount"], 1.0)

    def _v_hat(self, batch: Batch) -> Tensor:
        return self.out(self.net(self.encode(batch))).squeeze(-1)

    def loss(self, batch: Batch) -> Tensor:
        _, amount = conversion_labels(batch)
        return mse_log_amount_loss(self._v_hat(batch), amount)

    def predict(self, batch: Batch) -> ModelOutput:
        etv = expected_transaction_value("log_regression", v_hat=self._v_hat(batch))
        return ModelOutput(p=(etv / self.mean_amount).clamp(0.0, 1.0), etv=etv)


MODEL = DnnV
