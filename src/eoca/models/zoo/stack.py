"""``stack``: a convex blend, fitted on the validation split, of BG/NBD x Gamma-Gamma and a flexible network.

The structural customer-base model (:mod:`eoca.data.customer_base`) and a network trained on the labels make
different errors: the structure extrapolates a heavy buyer's spend from their purchase rate (no model fitted on
the observed amounts predicts beyond them) but ranks the bulk of the customers worse; the network ranks the bulk
better and cannot extrapolate. Where two predictors of the same mean rank differently and err on different
customers, a weighted mean of the two can be better than either on both counts. So:

* ``etv = w * s(x) + (1 - w) * f(x)``, in mean space, where ``s`` is the structural expected spend over the
  target window (``exp(cbm_log_expected_spend) - 1``: the import option ``transactions.customer_base_model:
  true`` adds it, fitted on the training customers' calibration window only) and ``f`` the ETV of the flexible
  zoo network (``flexible``, ``mtl_ziln`` by default) after the ETV guard's bounds (``mu``, ``sigma`` within
  the training converters' range, the amount at most the largest training amount: the same bounds every model's
  ETV meets, so that a network's exploded amount cannot enter the blend);
* the network is trained on its own loss; ``w`` in ``[0, 1]`` is chosen on
  the **validation split only** (:meth:`Stack.fit_on_split`, called where the ETV guard is fitted, before its
  recalibration) from ``blend_steps + 1`` evenly spaced values: the one whose *deployed* prediction (the blend
  after the guard's recalibration and cap, fitted on the same split) has the lowest ``blend_metric``, the
  validation Poisson deviance by default (like MSE it is minimised by the expected value, but grows linearly
  rather than quadratically in one large amount, so a few extreme validation customers do not decide ``w``) or
  its ``mse``. Ties go to the smaller ``w``. The guard's per-fund ETV scale multiplies the blend, so the deployed
  model is the non-negative linear stacker ``c (w s + (1 - w) f)``. ``w`` is chosen once, after training: while
  the network trains, ``w`` stays 0, so early stopping on the validation split's deployed ETV (``selection:
  auto`` on data without propensities) scores the network itself. (Choosing ``w`` anew for every epoch let a
  choice made on the same split stand in for the network's progress: on the 2,357-customer CDNOW sample the
  network stopped after 3 epochs instead of its own 4 in 2 of 3 seeds.)

A small validation split makes ``w`` noisy: on that sample (304 validation customers) it came out 0.6-0.85 over 3
seeds, and ``eoca evaluate``'s test Gini was 0.689 against ``mtl_ziln``'s 0.733 (MSE 4,916 against 4,330).

``p`` (and ``pctr``/``pcvr``) are the network's. The blend is a direct ETV (``formula = None``): the ETV guard
caps it at the largest training amount and rescales it per fund on the validation split, as for every model
that predicts ETV directly. The flexible model must be a network (trained by gradient steps); its parameters are
the stack's own where their names match (every ``mtl_ziln`` parameter is one of the stack's), plus
``flexible_params``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from eoca.data.customer_base import structural_feature
from eoca.errors import ConfigError
from eoca.evaluation.metrics import mse, tweedie_deviance
from eoca.models.base import Batch, DirectFitModel, EtvModel, ModelOutput
from eoca.models.features import FeatureSpace
from eoca.models.guard import EtvGuard
from eoca.models.zoo.mtl_ziln import MtlZiln

if TYPE_CHECKING:
    from eoca.models.features import BoundFeatures

BLEND_METRICS: tuple[str, ...] = ("deviance", "mse")

DEFAULTS: dict[str, Any] = {
    **MtlZiln.DEFAULTS,  # the default flexible model's parameters, passed through to it
    "flexible": "mtl_ziln",  # the zoo network blended with the structure
    "flexible_params": {},  # further parameters of the flexible model (those the stack does not have)
    "base_spend": "cbm_log_expected_spend",  # log(1 + s), s = the structural expected spend
    "blend_metric": "deviance",  # validation metric choosing w: "deviance" (Poisson) or "mse"
    "blend_steps": 20,  # w is chosen among 0, 1/steps, ..., 1
}


class Stack(EtvModel):
    """``w * s + (1 - w) * f`` with ``w`` chosen on the validation split; see the module docstring.
    ``predict`` returns ``p`` and ``etv`` (each ``[B]``), and the network's ``pctr``/``pcvr`` where it has them.
    """

    name = "stack"
    formula = None
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    blend_weight: Tensor

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__()
        from eoca.models.zoo import build_model, model_class, model_defaults

        self.space, self.params = space, params
        flexible = str(params["flexible"])
        if flexible == self.name:
            raise ConfigError("stack: params.flexible cannot be 'stack' itself; name a zoo network, e.g. mtl_ziln")
        cls = model_class(flexible)  # an unknown name is a ConfigError listing the zoo
        if issubclass(cls, DirectFitModel):
            raise ConfigError(
                f"stack: params.flexible must be a network trained by gradient steps, got {flexible!r} (a model "
                "fitted in one call); e.g. mtl_ziln, bgnbd_ziln, esdpm"
            )
        extra = params["flexible_params"]
        if not isinstance(extra, dict):
            raise ConfigError(f"stack: params.flexible_params must be a mapping, got {extra!r}")
        metric = params["blend_metric"]
        if metric not in BLEND_METRICS:
            raise ConfigError(f"stack: params.blend_metric must be one of {', '.join(BLEND_METRICS)}, got {metric!r}")
        steps = params["blend_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"stack: params.blend_steps must be a positive integer, got {steps!r}")
        own = model_defaults(flexible)
        inner = {k: params[k] for k in own if k in params} | dict(extra)
        self.flexible = build_model(flexible, space, inner)
        self.tasks = self.flexible.tasks
        self._spend = structural_feature(space, str(params["base_spend"]), self.name, "base_spend")
        self._bounds = EtvGuard.from_label_stats(space.label_stats)
        # the structure's weight: 0 (the network alone) while training, then chosen on the validation split
        self.register_buffer("blend_weight", torch.tensor(0.0, dtype=torch.float64))

    # --- training: the network's ------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Tensor:
        return self.flexible.loss(batch)

    @property
    def learns_amount_from_history(self) -> bool:
        return self.flexible.learns_amount_from_history

    def amount_history_loss(self, batch: Batch, amount: Tensor) -> Tensor:
        return self.flexible.amount_history_loss(batch, amount)

    def loss_with_history(self, batch: Batch, past: Batch, amount: Tensor) -> Tensor:
        return self.flexible.loss_with_history(batch, past, amount)

    # --- prediction -------------------------------------------------------------------------------------------
    def parts(self, batch: Batch) -> tuple[ModelOutput, np.ndarray, np.ndarray]:
        """The network's output, its bounded ETV ``f`` and the structural spend ``s`` (float64 ``[B]`` each)."""
        out = self.flexible.predict(batch)
        raw = {
            k: getattr(out, k).detach().double().numpy()
            for k in ("p", "etv", "mu", "sigma", "amount")
            if getattr(out, k) is not None
        }
        f = self._bounds.bound(raw, self.flexible.formula)["etv"].astype(np.float64)
        col, mean, std = self._spend
        log_spend = batch.inputs["c_num"][batch.inputs["row_unit"]][:, col].double().numpy() * std + mean
        return out, f, np.maximum(np.expm1(log_spend), 0.0)

    def predict(self, batch: Batch) -> ModelOutput:
        out, f, s = self.parts(batch)
        w = float(self.blend_weight)
        etv = torch.from_numpy((w * s + (1.0 - w) * f).astype(np.float32))
        return ModelOutput(p=out.p, etv=etv, pctr=out.pctr, pcvr=out.pcvr)

    # --- the blend weight, on the validation split ------------------------------------------------------------
    def fit_on_split(self, bound: BoundFeatures, split: str, batch_size: int, fund_ids: list[str]) -> None:
        """Choose ``w`` on ``split``'s labelled rows (see the module docstring); a split without converters
        keeps the network alone (``w = 0``)."""
        labels = bound.exposure_labels(split)
        if not labels["converted"].size or not (labels["amount"] > 0).any():
            self.blend_weight.fill_(0.0)
            return
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for batch in bound.exposure_batches(split, batch_size, shuffle=False):
                out, f, s = self.parts(batch)
                parts.append((out.p.double().numpy(), f, s))
        self.train(was_training)
        p, f, s = (np.concatenate(x) for x in zip(*parts, strict=True))
        y = labels["amount"].astype(np.float64)
        weight = bound.split_weights(split)
        w = choose_weight(
            p,
            f,
            s,
            y,
            labels["fund_pos"],
            labels["converted"],
            weight,
            fund_ids,
            self.space.label_stats,
            str(self.params["blend_metric"]),
            int(self.params["blend_steps"]),
            split,
        )
        self.blend_weight.fill_(w)


def choose_weight(
    p: np.ndarray,
    f: np.ndarray,
    s: np.ndarray,
    y: np.ndarray,
    fund_pos: np.ndarray,
    converted: np.ndarray,
    weight: np.ndarray | None,
    fund_ids: list[str],
    label_stats: dict[str, float],
    metric: str,
    steps: int,
    split: str = "valid",
) -> float:
    """The structure's weight among ``0, 1/steps, ..., 1`` whose deployed blend (after the ETV guard's per-fund
    recalibration, fitted on these rows, and its cap; the guard's bounds come from ``label_stats``) has the lowest
    ``metric`` on them; the smallest on ties. ``p``, ``f``, ``s``, ``y``, ``fund_pos``, ``converted``,
    ``weight``: ``[n]`` (``weight`` may be None)."""
    best_w, best = 0.0, math.inf
    for k in range(steps + 1):
        w = k / steps
        blend = {"p": p, "etv": w * s + (1.0 - w) * f}
        guard = EtvGuard.from_label_stats(label_stats).fit_recalibration(
            blend, fund_pos, converted, y, fund_ids, None, split, weight
        )
        etv = guard.apply(blend, fund_pos, fund_ids, None)["etv"].astype(np.float64)
        score = tweedie_deviance(y, etv, weight) if metric == "deviance" else mse(y, etv, weight)
        if score < best:
            best_w, best = w, score
    return best_w


MODEL = Stack
