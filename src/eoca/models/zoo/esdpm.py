"""ESDPM (EOCA Sec. 4.1): MMoE + ESMM (pCTCVR = pCTR x pCVR) + behaviour attention + consumption GAT,
with mu / sigma towers for the lognormal purchase amount, trained with the ESJ loss (EOCA Eq. 12).

:class:`EsdpmFamily` is shared with the models that keep this structure and change only the amount loss
(``mtl_ziln``, ``ptofa``) or drop the graph (``esdpm_ncg``). The click BCE of ESMM's CTR task is added to the
amount-aware loss when the data has click labels: the paper learns pCVR "as a hidden variable as ESMM", which
needs the CTR task's supervision to tell pCTR from pCVR.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import Tensor

from eoca.models.base import Batch, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.features.batching import concat_batches
from eoca.models.layers import Tower
from eoca.models.losses import (
    SIGMA_FLOOR,
    esj_loss,
    expected_transaction_value,
    lognormal_logpdf,
    positive_sigma,
    ptofa_loss,
    ziln_loss,
)
from eoca.models.zoo.common import (
    COMMON_DEFAULTS,
    GRAPH_DEFAULTS,
    MMOE_DEFAULTS,
    ConversionHeads,
    ZooModel,
    conversion_labels,
    task_set,
)

AMOUNT_LOSSES = ("esj", "ziln", "ptofa")

AMOUNT_HEAD_DEFAULTS: dict[str, Any] = {"amount_from_history": True}
"""Parameters of every lognormal amount head: ``amount_from_history`` (the head also learns from the behaviour
history's past purchases, see :meth:`EsdpmFamily.amount_history_loss`)."""


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y)) if y < 20 else y


class EsdpmFamily(ZooModel):
    """MMoE with three gated tasks (CTR, CVR, amount); the amount tower outputs ``(mu, raw sigma)``.

    ``amount_loss`` picks ESJ (``y_v = amount + 1`` lognormal, ETV by EOCA Eq. 13), ZILN or PTOFA (amount
    itself lognormal, ETV ``p * exp(mu + sigma^2 / 2)``).
    """

    amount_loss: ClassVar[str] = "esj"
    formula: str = "eoca"  # set per amount loss in __init__
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        **MMOE_DEFAULTS,
        **GRAPH_DEFAULTS,
        **AMOUNT_HEAD_DEFAULTS,
    }

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__(space, params)
        if self.amount_loss not in AMOUNT_LOSSES:
            raise ValueError(f"unknown amount loss {self.amount_loss!r}; valid: {AMOUNT_LOSSES}")
        self.tasks = task_set(space, "conversion", "amount", "etv")
        dropout = float(params["dropout"])
        self.mmoe = self._build_mmoe(3)
        hidden = int(params["tower_hidden"])
        self.heads = ConversionHeads(space, self.mmoe.out_dim, hidden, dropout)
        stats = space.label_stats
        sigma0 = max(stats["log1p_sigma"], SIGMA_FLOOR + 0.1)
        self.lognormal = Tower(
            self.mmoe.out_dim, hidden, 2, dropout, [stats["log1p_mu"], _softplus_inverse(sigma0 - SIGMA_FLOOR)]
        )
        self.formula = "eoca" if self.amount_loss == "esj" else "lognormal"

    def _forward(self, batch: Batch) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """``(logit_ctr or None, logit_cvr, mu, sigma)``, each ``[B]``."""
        h = self.mmoe(self.encode(batch))  # [B, 3, K]
        logit_ctr, logit_cvr, (out,) = self.heads.forward_with(h[:, 0], h[:, 1], [(self.lognormal, h[:, 2])])
        return logit_ctr, logit_cvr, out[:, 0], positive_sigma(out[:, 1])

    def _amount_loss(self, log_p: Tensor, log_1mp: Tensor, mu: Tensor, sigma: Tensor, amount: Tensor) -> Tensor:
        if self.amount_loss == "esj":
            return esj_loss(log_p, log_1mp, mu, sigma, amount)
        if self.amount_loss == "ziln":
            return ziln_loss(log_p, log_1mp, mu, sigma, amount)
        return ptofa_loss(log_p, log_1mp, mu, sigma, amount, float(self.params["eps"]))

    @property
    def learns_amount_from_history(self) -> bool:
        return bool(self.params.get("amount_from_history", False))

    def amount_history_loss(self, batch: Batch, amount: Tensor) -> Tensor:
        """The converter term of the amount loss, ``-log LogNormalPdf(y; mu, sigma)`` (``y = amount + 1`` for
        ESJ, the amount itself for ZILN / PTOFA), summed over past purchases: a past purchase is a draw of the
        customer's amount for that fund, as a conversion's is, and the trainer weighs it like one converter of
        an exposure batch."""
        _, _, mu, sigma = self._forward(batch)
        return self._history_nll(mu, sigma, amount)

    def _history_nll(self, mu: Tensor, sigma: Tensor, amount: Tensor) -> Tensor:
        """:meth:`amount_history_loss` on the past purchases' ``mu``, ``sigma`` and ``amount`` (each ``[H]``)."""
        y = amount + 1.0 if self.formula == "eoca" else amount
        return -lognormal_logpdf(y, mu, sigma).sum()

    def loss_with_history(self, batch: Batch, past: Batch, amount: Tensor) -> Tensor:
        """``loss(batch) + amount_history_loss(past, amount) / len(batch)`` in one forward pass over the rows of
        both batches (:func:`~eoca.models.features.batching.concat_batches`): the same terms of the same
        network, where two passes paid every kernel's fixed cost twice (benchmarks/RESULTS.md, issue 10).
        Dropout masks are drawn over both batches' rows at once and sums run over both, so the values differ
        from two passes' at the level of random draws and float rounding."""
        n = len(batch)
        logit_ctr, logit_cvr, mu, sigma = self._forward(concat_batches(batch, past))
        exposure = self._exposure_loss(
            batch, logit_ctr[:n] if logit_ctr is not None else None, logit_cvr[:n], mu[:n], sigma[:n]
        )
        return exposure + self._history_nll(mu[n:], sigma[n:], amount) / n

    def _exposure_loss(
        self, batch: Batch, logit_ctr: Tensor | None, logit_cvr: Tensor, mu: Tensor, sigma: Tensor
    ) -> Tensor:
        """The mean training loss of the exposure rows of ``batch`` from their outputs (each ``[B]``)."""
        _, amount = conversion_labels(batch)
        log_p, log_1mp = ConversionHeads.log_probs(logit_ctr, logit_cvr)
        return self._amount_loss(log_p, log_1mp, mu, sigma, amount) + ConversionHeads.click_loss(logit_ctr, batch)

    def loss(self, batch: Batch) -> Tensor:
        return self._exposure_loss(batch, *self._forward(batch))

    def predict(self, batch: Batch) -> ModelOutput:
        logit_ctr, logit_cvr, mu, sigma = self._forward(batch)
        probs = ConversionHeads.probabilities(logit_ctr, logit_cvr)
        p = probs["p"]
        assert p is not None
        etv = expected_transaction_value(self.formula, p=p, mu=mu, sigma=sigma)
        amount = expected_transaction_value(self.formula, p=p.new_ones(()).expand_as(p), mu=mu, sigma=sigma)
        return ModelOutput(p=p, etv=etv, pctr=probs["pctr"], pcvr=probs["pcvr"], mu=mu, sigma=sigma, amount=amount)


class Esdpm(EsdpmFamily):
    name = "esdpm"
    amount_loss = "esj"


MODEL = Esdpm
