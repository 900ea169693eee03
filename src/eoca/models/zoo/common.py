"""What every zoo model shares: parameter handling, the customer / fund encoders and the conversion heads."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from eoca.models.base import Batch, EtvModel, ModelOutput, require_labels
from eoca.models.features import FeatureSpace, notice
from eoca.models.layers import (
    CandidateArch,
    CustomerArch,
    FundEmbedding,
    MMoE,
    PackedEvents,
    PairInput,
    Tower,
    run_towers,
)
from eoca.models.losses import (
    SIGMA_FLOOR,
    bce_loss,
    expected_transaction_value,
    log_probs,
    mse_log_amount_loss,
    product_log_probs,
)

COMMON_DEFAULTS: dict[str, Any] = {
    "embedding_dim": 8,  # per categorical feature / sequence token
    "heads": 2,  # attention heads over the behaviour sequence
    # "pooling" (learnt-query attention pooling) or the paper's "self_attention" (about 5x its training cost)
    "sequence_encoder": "pooling",
    "dropout": 0.1,
    "use_sequences": True,  # the papers give every model the same behaviour sequence
    "tower_hidden": 32,
    "candidate_aware": True,  # pair counts + target attention of the candidate fund; off = the paper's
    # with candidate_aware: also the customer's behaviour summary (cust_x: event counts, past purchases' log
    # amount mean and sd), as gbdt reads it
    "customer_summary": True,
}
"""Parameters of every model; each zoo module adds its own (see its ``DEFAULTS``)."""

MMOE_DEFAULTS: dict[str, Any] = {"n_experts": 4, "expert_dim": 32}
GRAPH_DEFAULTS: dict[str, Any] = {"use_graph": True, "graph_hidden": 16, "graph_heads": 2}


def logit(rate: float) -> float:
    """``log(r / (1 - r))`` with ``r`` clipped away from 0 and 1 (a split with no positives still initialises)."""
    r = min(max(rate, 1e-6), 1.0 - 1e-6)
    return math.log(r / (1.0 - r))


def output_layer(in_dim: int, bias: float) -> torch.nn.Linear:
    """``Linear(in_dim, 1)`` with its bias set to ``bias`` (base-rate logit or mean target)."""
    layer = torch.nn.Linear(in_dim, 1)
    with torch.no_grad():
        layer.bias.fill_(bias)
    return layer


class ZooModel(EtvModel):
    """Base of the zoo: holds the feature space and parameters and encodes a batch into a :class:`PairInput`.

    Subclasses set ``name``, ``DEFAULTS`` and build their bottom / towers in ``__init__`` after calling
    ``super().__init__``.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = COMMON_DEFAULTS
    uses_pair_input: ClassVar[bool] = True
    """Whether the model reads :attr:`PairInput.pair`; without it :meth:`encode` does not compute it."""
    formula: str | None = "eoca"  # of the constant amount and of ESJ; ZILN/PTOFA models override it
    amount_mu: Tensor
    amount_sigma: Tensor

    def _build_mmoe(self, n_tasks: int) -> MMoE:
        """The MMoE bottom over the customer and fund encodings, sized by ``params``; one gate per task."""
        return MMoE(
            self.customer_arch.out_dim,
            self.fund_arch.out_dim,
            n_tasks=n_tasks,
            n_experts=int(self.params["n_experts"]),
            expert_dim=int(self.params["expert_dim"]),
            dropout=float(self.params["dropout"]),
            pair_dim=self.pair_dim,
        )

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.params = params
        use_graph = bool(params.get("use_graph", False))
        if use_graph and not space.has_graph:
            notice(
                f"model-no-graph-{self.name}",
                f"model '{self.name}': no consumption graph in the features; graph branch off",
            )
        if params["use_sequences"] and not space.has_sequences:
            notice(
                f"model-no-seq-{self.name}", f"model '{self.name}': no behaviour sequences in the features; branch off"
            )
        self.customer_arch = CustomerArch(
            space,
            embedding_dim=int(params["embedding_dim"]),
            heads=int(params["heads"]),
            dropout=float(params["dropout"]),
            use_sequences=bool(params["use_sequences"]),
            use_graph=use_graph,
            graph_hidden=int(params.get("graph_hidden", 16)),
            graph_heads=int(params.get("graph_heads", 1)),
            sequence_encoder=str(params["sequence_encoder"]),
        )
        self.fund_arch = FundEmbedding(space, int(params["embedding_dim"]))
        self.candidate_arch: CandidateArch | None = None
        if params.get("candidate_aware", False) and space.has_sequences and params["use_sequences"]:
            self.candidate_arch = CandidateArch(
                space, int(params["embedding_dim"]), use_summary=bool(params.get("customer_summary", False))
            )
        self.pair_dim = self.candidate_arch.out_dim if self.candidate_arch is not None else 0
        self.uses_sequences = (
            self.candidate_arch is not None and self.uses_pair_input
        ) or self.customer_arch.behaviour is not None
        stats = space.label_stats
        # Constant amount model of conversion-only models: the lognormal fit of train converters' log1p amount.
        self.register_buffer("amount_mu", torch.tensor(stats["log1p_mu"]), persistent=False)
        self.register_buffer("amount_sigma", torch.tensor(max(stats["log1p_sigma"], SIGMA_FLOOR)), persistent=False)

    def encode(self, batch: Batch) -> PairInput:
        """Customer units ``[U, Dc]`` and funds ``[F, Df]`` of the batch, with the row indices into both."""
        inputs = batch.inputs
        # Both sequence branches read the same real events: pack them once.
        events = PackedEvents.from_inputs(inputs) if "seq_mask" in inputs and self.uses_sequences else None
        pair = None
        if self.candidate_arch is not None and self.uses_pair_input:
            pair = self.candidate_arch(inputs, inputs["row_unit"], batch.fund, events)
        return PairInput(
            customer=self.customer_arch(inputs, events),
            row_unit=inputs["row_unit"],
            fund=self.fund_arch(inputs["f_num"], inputs["f_cat"]),
            fund_index=batch.fund,
            pair=pair,
        )

    def constant_amount_etv(self, p: Tensor) -> dict[str, Tensor]:
        """ETV of a model without an amount head: ``p`` times the train converters' lognormal mean of
        ``log1p(amount)`` (EOCA Eq. 13 with a constant mu, sigma); returns ``etv``, ``amount``, ``mu`` and
        ``sigma`` (the last two so the ETV guard can recalibrate the amount per fund), each ``[B]``."""
        mu = self.amount_mu.expand_as(p)
        sigma = self.amount_sigma.expand_as(p)
        etv = expected_transaction_value("eoca", p=p, mu=mu, sigma=sigma)
        amount = expected_transaction_value("eoca", p=torch.ones_like(p), mu=mu, sigma=sigma)
        return {"etv": etv, "amount": amount, "mu": mu, "sigma": sigma}


class ConversionHeads(torch.nn.Module):
    """ESMM-style conversion: ``pCTCVR = pCTR * pCVR`` when the data has clicks, else one conversion tower.

    ``forward(ctr_in [B, D], cvr_in [B, D]) -> (logit_ctr or None, logit_cvr)``; see :meth:`log_probs` and
    :meth:`click_loss`.
    """

    def __init__(self, space: FeatureSpace, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        stats = space.label_stats
        self.has_clicks = space.has_clicks
        if self.has_clicks:
            ctr = stats["click_rate"]
            cvr = stats["conversion_rate"] / ctr if ctr > 0 else stats["conversion_rate"]
            self.ctr: Tower | None = Tower(in_dim, hidden, 1, dropout, [logit(ctr)])
            self.cvr = Tower(in_dim, hidden, 1, dropout, [logit(cvr)])
        else:
            self.ctr = None
            self.cvr = Tower(in_dim, hidden, 1, dropout, [logit(stats["conversion_rate"])])

    def forward(self, ctr_in: Tensor, cvr_in: Tensor) -> tuple[Tensor | None, Tensor]:
        logit_ctr, logit_cvr, _ = self.forward_with(ctr_in, cvr_in, [])
        return logit_ctr, logit_cvr

    def forward_with(
        self, ctr_in: Tensor, cvr_in: Tensor, more: list[tuple[Tower, Tensor]]
    ) -> tuple[Tensor | None, Tensor, list[Tensor]]:
        """:meth:`forward` and then the towers of ``more`` on their inputs (``[B, out]`` each), run together by
        :func:`~eoca.models.layers.run_towers` in this order (the order their dropout masks are drawn in)."""
        towers = ([self.ctr] if self.ctr is not None else []) + [self.cvr] + [t for t, _ in more]
        inputs = ([ctr_in] if self.ctr is not None else []) + [cvr_in] + [x for _, x in more]
        outs = run_towers(towers, inputs)
        logit_ctr = outs.pop(0).squeeze(-1) if self.ctr is not None else None
        return logit_ctr, outs[0].squeeze(-1), outs[1:]

    @staticmethod
    def log_probs(logit_ctr: Tensor | None, logit_cvr: Tensor) -> tuple[Tensor, Tensor]:
        """``(log p, log(1-p))`` of the entire-space conversion probability, shapes ``[B]``."""
        if logit_ctr is None:
            return log_probs(logit_cvr)
        return product_log_probs(logit_ctr, logit_cvr)

    @staticmethod
    def click_loss(logit_ctr: Tensor | None, batch: Batch) -> Tensor:
        """BCE of pCTR against the click label (ESMM's CTR task); 0 without clicks in the data or the batch."""
        if logit_ctr is None or batch.clicked is None:
            return torch.zeros((), device=batch.fund.device)
        lp, l1mp = log_probs(logit_ctr)
        return bce_loss(lp, l1mp, batch.clicked)

    @staticmethod
    def probabilities(logit_ctr: Tensor | None, logit_cvr: Tensor) -> dict[str, Tensor | None]:
        """``p`` (pCTCVR), ``pctr`` and ``pcvr`` (None without clicks), shapes ``[B]``."""
        pcvr = torch.sigmoid(logit_cvr)
        if logit_ctr is None:
            return {"p": pcvr, "pctr": None, "pcvr": None}
        pctr = torch.sigmoid(logit_ctr)
        return {"p": pctr * pcvr, "pctr": pctr, "pcvr": pcvr}


def task_set(space: FeatureSpace, *tasks: str) -> frozenset[str]:
    """``tasks`` plus ``ctr`` when the data has click labels (only ESMM-style models pass through here)."""
    return frozenset({*tasks, "ctr"} if space.has_clicks else set(tasks))


def conversion_labels(batch: Batch) -> tuple[Tensor, Tensor]:
    """``(converted, amount)`` of a labelled batch, each float32 ``[B]``."""
    converted, amount = require_labels(batch, "converted", "amount")
    return converted, amount


__all__ = [
    "COMMON_DEFAULTS",
    "GRAPH_DEFAULTS",
    "MMOE_DEFAULTS",
    "ConversionHeads",
    "ConversionPlusLogAmount",
    "ZooModel",
    "conversion_labels",
    "logit",
    "output_layer",
    "task_set",
]


class ConversionPlusLogAmount(ZooModel):
    """The plain multi-task recipe of EOCA Sec. 4.1.3 (Shared-Bottom, MMoE): BCE on conversion plus MSE on
    ``log1p(amount)`` over every exposure, simply added; ETV by the log-regression formula. Subclasses build
    their bottom and implement ``_heads(batch) -> (conversion logit [B], v_hat [B])``."""

    @abstractmethod
    def _heads(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Conversion logit [B] and ``v_hat`` [B] from the subclass's own bottom."""

    def loss(self, batch: Batch) -> Tensor:
        converted, amount = conversion_labels(batch)
        logit_c, v_hat = self._heads(batch)
        return bce_loss(*log_probs(logit_c), converted) + mse_log_amount_loss(v_hat, amount)

    def predict(self, batch: Batch) -> ModelOutput:
        logit_c, v_hat = self._heads(batch)
        return ModelOutput(p=logit_c.sigmoid(), etv=expected_transaction_value("log_regression", v_hat=v_hat))
