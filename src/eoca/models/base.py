"""The model zoo's interface: the batch a model consumes, the output it produces and the base class.

Training and evaluation code only ever sees :class:`Batch`, :class:`ModelOutput` and :class:`EtvModel`;
what a model actually reads lives in ``Batch.inputs`` and is produced by
:class:`eoca.models.features.BoundFeatures`, so the two sides can change independently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from eoca.models.features import BoundFeatures

TASKS: frozenset[str] = frozenset({"ctr", "conversion", "amount", "etv"})
"""Every task a model may declare; evaluation computes a task's metrics only for models that declare it."""


@dataclass
class Batch:
    """A batch of (customer, fund) rows.

    Attributes:
        customer: int64 ``[B]``, position of the row's customer in the bound customers table.
        fund: int64 ``[B]``, position of the row's fund in the bound funds table.
        inputs: model inputs keyed by name (opaque to training code); every tensor has leading dim ``B`` or
            is indexed by ``customer``/``fund`` (see :class:`eoca.models.features.BoundFeatures`).
        converted: float32 ``[B]`` in {0, 1}; ``None`` for unlabelled (scoring) batches.
        amount: float32 ``[B]``, purchase amount, 0 where not converted.
        clicked: float32 ``[B]`` in {0, 1}, only when the dataset has click labels.
    """

    customer: Tensor
    fund: Tensor
    inputs: dict[str, Tensor] = field(default_factory=dict)
    converted: Tensor | None = None
    amount: Tensor | None = None
    clicked: Tensor | None = None

    def __len__(self) -> int:
        return int(self.customer.shape[0])


@dataclass
class ModelOutput:
    """A model's predictions; every tensor is float32 ``[B]``.

    Attributes:
        p: P(convert | exposure) over the entire exposure space (ESMM's pCTCVR where the model has one).
        etv: expected transaction value, always from :func:`eoca.models.losses.expected_transaction_value`.
        pctr, pcvr: click and post-click conversion probabilities (ESMM-style models only).
        mu, sigma: lognormal parameters of the amount (models with a lognormal amount head).
        amount: ``E[amount | convert]`` where the model has it.
    """

    p: Tensor
    etv: Tensor
    pctr: Tensor | None = None
    pcvr: Tensor | None = None
    mu: Tensor | None = None
    sigma: Tensor | None = None
    amount: Tensor | None = None


class EtvModel(torch.nn.Module, ABC):
    """Base class of every zoo model.

    Subclasses set :attr:`name` and :attr:`tasks` and implement :meth:`loss` and :meth:`predict`.
    """

    name: str = "etv_model"
    tasks: frozenset[str] = frozenset()
    formula: str | None = None
    """ETV formula of a lognormal amount head (``eoca`` or ``lognormal``; see :mod:`eoca.models.losses`), which
    the ETV guard (:mod:`eoca.models.guard`) uses to recompute a bounded amount; None for other models."""
    scores_pairs_alone: bool = False
    """Whether a pair's predictions read that pair's row alone, bit for bit whatever else the batch holds, at a
    cost per pair that no layout shares (the trees). Scoring then skips the pairs no decision reads
    (:meth:`~eoca.training.TrainedModel.score_matrix`'s ``tolerance``). The networks leave it False: they score
    a customer x fund grid, whose layout shares each customer's work across the funds and sets the last bit of a
    few scores, so they score every pair of the grid."""

    @abstractmethod
    def loss(self, batch: Batch) -> Tensor:
        """Scalar mean training loss of this model on a labelled batch."""

    @abstractmethod
    def predict(self, batch: Batch) -> ModelOutput:
        """Predictions for every row of ``batch``; the caller handles ``no_grad`` and ``eval()``."""

    @property
    def learns_amount_from_history(self) -> bool:
        """Whether the trainer feeds past purchases to :meth:`amount_history_loss` (False by default)."""
        return False

    def amount_history_loss(self, batch: Batch, amount: Tensor) -> Tensor:
        """Summed (not mean) negative log-likelihood of the amount head on past purchases: ``batch`` holds the
        (customer, fund) rows of :meth:`~eoca.models.features.BoundFeatures.purchase_history`, ``amount``
        float32 ``[B]`` their amounts (> 0). Only called where :attr:`learns_amount_from_history`."""
        raise TypeError(f"model '{self.name}' does not learn amounts from past purchases")

    def fit_on_split(self, bound: BoundFeatures, split: str, batch_size: int, fund_ids: list[str]) -> None:
        """Fit what a model chooses on a held-out labelled split after training (``stack``'s blend weight);
        called where the ETV guard is fitted, on the same split and before the guard's recalibration, so the
        guard sees the final prediction. ``fund_ids``: the bound dataset's fund ids. Nothing by default."""

    def loss_with_history(self, batch: Batch, past: Batch, amount: Tensor) -> Tensor:
        """The training loss of a step that also learns from past purchases: :meth:`loss` on ``batch`` plus
        :meth:`amount_history_loss` on ``past`` divided by ``len(batch)``, so each past purchase weighs as much
        as one converter of the batch (whose amount term the mean loss also divides by it). Models may compute
        both in one pass."""
        return self.loss(batch) + self.amount_history_loss(past, amount) / len(batch)


def require_labels(batch: Batch, *names: str) -> list[Tensor]:
    """Return the named label tensors of ``batch``, raising a clear error when one is missing."""
    out: list[Tensor] = []
    for name in names:
        value = getattr(batch, name)
        if value is None:
            raise ValueError(f"training needs batch.{name}, but this batch has no '{name}' labels")
        out.append(value)
    return out


class DirectFitModel(EtvModel):
    """A zoo model fitted in one call instead of by gradient steps (e.g. the LightGBM hurdle model ``gbdt``).

    The trainer calls :meth:`fit_bound` once in place of its epoch loop; everything else (saving through
    ``state_dict`` extra state, scoring through :meth:`predict`, the ETV guard) is shared with the networks.
    """

    predict_threads: int | None = None
    """The config's ``predict_threads``, which the trainer sets when it builds or loads the model: the threads of
    the model's own predictions, in fitting and in :meth:`predict`, resolved at each prediction by
    :func:`eoca.threads.prediction_threads` (so a model sent to another process follows that process's policy).
    Predictions must not depend on it."""

    @abstractmethod
    def fit_bound(self, bound: BoundFeatures, *, seed: int, num_threads: int, batch_size: int) -> dict[str, float]:
        """Fit on ``bound``'s train split, early-stopping on its valid split; returns an epoch-like record
        (``train_loss``, ``valid_loss``, ``rows``, ``seconds``, ``samples_per_s``, ...)."""
