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

Two optional parts make the weight depend on the customer (``stack_tail`` sets both; off in ``stack``):

* ``trees``: a LightGBM zoo model (e.g. ``gbdt``, with ``trees_params``) fitted after the network, on the
  training split with early stopping on the validation split, in the same hook; its bounded ETV ``g`` enters as
  ``f <- (1 - trees_weight) f + trees_weight g`` (a fixed weight, nothing chosen on validation): a network and
  a tree ensemble fitted to the same labels err differently, so their mean ranks the bulk of the customers
  better than either.
* ``tail_quantile`` ``q``: customers whose structural spend ``s`` is at or above the ``q``-quantile of the
  training customers' ``s`` get ``s`` itself, ``f <- s`` there (``w(x) = 1`` on the tail). The heaviest buyers'
  squared errors decide a test MSE; the structure extrapolates their spend from their purchase rate, which no
  model fitted on the observed amounts does.

``blend_steps: 0`` keeps ``w = 0`` (no choice on validation), so with these two parts the model is
``etv = s`` on the tail and ``(1 - trees_weight) f + trees_weight g`` elsewhere, times the guard's ETV scale.

A small validation split makes ``w`` noisy: on that sample (304 validation customers) it came out 0.6-0.85 over 3
seeds, and ``eoca evaluate``'s test Gini was 0.689 against ``mtl_ziln``'s 0.733 (MSE 4,916 against 4,330).

``p`` (and ``pctr``/``pcvr``) are the network's. The blend is a direct ETV (``formula = None``): the ETV guard
caps it at the largest training amount and rescales it per fund on the validation split, as for every model
that predicts ETV directly. The flexible model must be a network (trained by gradient steps); its parameters are
the stack's own where their names match (every ``mtl_ziln`` parameter is one of the stack's), plus
``flexible_params``.
"""

from __future__ import annotations

import json
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
    "blend_steps": 20,  # w is chosen among 0, 1/steps, ..., 1; 0: w stays 0
    "trees": None,  # a LightGBM zoo model averaged with the network (e.g. "gbdt"); None: the network alone
    "trees_params": {},  # its parameters
    "trees_weight": 0.5,  # its weight in the average
    "tail_quantile": None,  # q: s itself where s >= the q-quantile of the training customers' s; None: off
}


class Stack(EtvModel):
    """``w * s + (1 - w) * f`` with ``w`` chosen on the validation split; see the module docstring.
    ``predict`` returns ``p`` and ``etv`` (each ``[B]``), and the network's ``pctr``/``pcvr`` where it has them.
    """

    name = "stack"
    formula = None
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    blend_weight: Tensor
    trees_state: Tensor
    trees_seed: Tensor
    tail_threshold: Tensor

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        super().__init__()
        from eoca.models.zoo import build_model, model_class, model_defaults

        self.space, self.params = space, params
        flexible = str(params["flexible"])
        cls = model_class(flexible)  # an unknown name is a ConfigError listing the zoo
        if issubclass(cls, Stack):
            raise ConfigError(
                f"stack: params.flexible cannot be {flexible!r}, a stack itself; name a zoo network, e.g. mtl_ziln"
            )
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
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(f"stack: params.blend_steps must be a non-negative integer, got {steps!r}")
        own = model_defaults(flexible)
        inner = {k: params[k] for k in own if k in params} | dict(extra)
        self.flexible = build_model(flexible, space, inner)
        self.tasks = self.flexible.tasks
        self._spend = structural_feature(space, str(params["base_spend"]), self.name, "base_spend")
        self._bounds = EtvGuard.from_label_stats(space.label_stats)
        # the structure's weight: 0 (the network alone) while training, then chosen on the validation split
        self.register_buffer("blend_weight", torch.tensor(0.0, dtype=torch.float64))
        # Not a registered submodule: its boosters travel in the tensor buffer ``trees_state`` (JSON bytes, empty
        # until fitted), since the trainer's copies of the best state hold tensors only.
        self.__dict__["trees"] = self._build_trees(space, params)
        self.tail_quantile = self._check_quantile(params["tail_quantile"])
        if self.trees is not None:
            # fitted after training (fit_on_split); its seed is the training seed the trainer set before building
            self.register_buffer("trees_state", torch.zeros(0, dtype=torch.uint8))
            self.register_buffer("trees_seed", torch.tensor(torch.initial_seed() % 2**31, dtype=torch.int64))
        if self.tail_quantile is not None:
            # +inf (no customer handed to the structure) until fitted on the training split
            self.register_buffer("tail_threshold", torch.tensor(math.inf, dtype=torch.float64))

    def _build_trees(self, space: FeatureSpace, params: dict[str, Any]) -> DirectFitModel | None:
        from eoca.models.zoo import build_model, model_class

        name = params["trees"]
        if name is None:
            return None
        if not isinstance(name, str) or not issubclass(model_class(name), DirectFitModel):
            raise ConfigError(
                f"stack: params.trees must name a LightGBM zoo model fitted in one call (e.g. gbdt), got {name!r}"
            )
        weight = params["trees_weight"]
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0.0 <= float(weight) <= 1.0:
            raise ConfigError(f"stack: params.trees_weight must be a number in [0, 1], got {weight!r}")
        extra = params["trees_params"]
        if not isinstance(extra, dict):
            raise ConfigError(f"stack: params.trees_params must be a mapping, got {extra!r}")
        trees = build_model(name, space, dict(extra))
        assert isinstance(trees, DirectFitModel)
        return trees

    trees: DirectFitModel | None

    @property
    def trees_fitted(self) -> bool:
        """Whether the optional trees are fitted (and so enter ``f``)."""
        return self.trees is not None and self.trees_state.numel() > 0

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "trees_state")
        if self.trees is not None and isinstance(saved, Tensor):
            self.trees_state = torch.zeros_like(saved)  # the saved size, so that the copy below fits
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.trees_fitted:
            assert self.trees is not None
            self.trees.set_extra_state(json.loads(bytes(self.trees_state.tolist()).decode("utf-8")))

    @staticmethod
    def _check_quantile(q: Any) -> float | None:
        if q is None:
            return None
        if not isinstance(q, int | float) or isinstance(q, bool) or not 0.0 < float(q) < 1.0:
            raise ConfigError(f"stack: params.tail_quantile must be a number in (0, 1) or null, got {q!r}")
        return float(q)

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
    def _bounded_etv(self, model: EtvModel, batch: Batch) -> tuple[ModelOutput, np.ndarray]:
        """``model``'s output and its ETV within the guard's bounds (float64 ``[B]``)."""
        out = model.predict(batch)
        raw = {
            k: getattr(out, k).detach().double().numpy()
            for k in ("p", "etv", "mu", "sigma", "amount")
            if getattr(out, k) is not None
        }
        return out, self._bounds.bound(raw, model.formula)["etv"].astype(np.float64)

    def structural_spend(self, batch: Batch) -> np.ndarray:
        """The structural expected spend ``s`` of the batch's rows (float64 ``[B]``)."""
        col, mean, std = self._spend
        log_spend = batch.inputs["c_num"][batch.inputs["row_unit"]][:, col].double().numpy() * std + mean
        return np.maximum(np.expm1(log_spend), 0.0)

    def parts(self, batch: Batch) -> tuple[ModelOutput, np.ndarray, np.ndarray]:
        """The network's output, the flexible ETV ``f`` and the structural spend ``s`` (float64 ``[B]`` each).
        ``f`` is the network's bounded ETV, averaged with the trees' once they are fitted, and ``s`` itself on
        the tail once its threshold is fitted (see the module docstring)."""
        out, f = self._bounded_etv(self.flexible, batch)
        s = self.structural_spend(batch)
        if self.trees is not None and self.trees_fitted:
            lam = float(self.params["trees_weight"])
            f = (1.0 - lam) * f + lam * self._bounded_etv(self.trees, batch)[1]
        if self.tail_quantile is not None:
            f = np.where(s >= float(self.tail_threshold), s, f)
        return out, f, s

    def predict(self, batch: Batch) -> ModelOutput:
        out, f, s = self.parts(batch)
        w = float(self.blend_weight)
        etv = torch.from_numpy((w * s + (1.0 - w) * f).astype(np.float32))
        return ModelOutput(p=out.p, etv=etv, pctr=out.pctr, pcvr=out.pcvr)

    # --- the blend weight, on the validation split ------------------------------------------------------------
    def fit_on_split(self, bound: BoundFeatures, split: str, batch_size: int, fund_ids: list[str]) -> None:
        """Fit the optional trees (train split, early stopping on valid) and tail threshold (train split), then
        choose ``w`` on ``split``'s labelled rows (see the module docstring); a split without converters, or
        ``blend_steps: 0``, keeps ``w = 0``."""
        if self.trees is not None:
            self.trees.fit_bound(
                bound, seed=int(self.trees_seed), num_threads=torch.get_num_threads(), batch_size=batch_size
            )
            text = json.dumps(self.trees.get_extra_state()).encode("utf-8")
            self.trees_state = torch.tensor(list(text), dtype=torch.uint8)
        if self.tail_quantile is not None:
            chunks = [self.structural_spend(b) for b in bound.exposure_batches("train", batch_size, shuffle=False)]
            train_s = np.concatenate(chunks) if chunks else np.zeros(0)
            # no training rows: nobody is handed to the structure
            self.tail_threshold.fill_(float(np.quantile(train_s, self.tail_quantile)) if train_s.size else math.inf)
        labels = bound.exposure_labels(split)
        if int(self.params["blend_steps"]) == 0:
            self.blend_weight.fill_(0.0)
            return
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
