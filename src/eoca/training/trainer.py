"""Training loop of the ETV model zoo: Adam, early stopping on validation loss, a checkpoint every epoch, exact
resume, and the EOCA grid search over learning rate x dropout.

Reproducibility. Weight initialisation is seeded with ``config.seed``; each epoch then re-seeds both the data
order (a ``torch.Generator`` handed to :meth:`BoundFeatures.exposure_batches`) and the global torch RNG that
dropout draws from with a number derived from ``(seed, epoch)`` only. Epoch ``e`` therefore does exactly the
same thing whether the process has run since epoch 0 or was restarted from the checkpoint of epoch ``e - 1``,
which is what makes ``resume=True`` bit-identical to an uninterrupted run.

Safety. Checkpoints and saved models contain only tensors and plain Python values (the FeatureSpace is stored
as its JSON-like ``state_dict``), so they are read with ``torch.load(weights_only=True)``: a file that would
need arbitrary unpickling to load is refused instead of executed.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.optim import optimizer as torch_optimizer

from eoca.config import validate_config
from eoca.data import Dataset
from eoca.errors import ConfigError, DataValidationError
from eoca.io import atomic_path, write_json, write_yaml
from eoca.models import BoundFeatures, EtvModel, FeatureSpace, build_model, model_defaults
from eoca.models.base import Batch, DirectFitModel
from eoca.models.guard import AMOUNT_FACTOR_MAX_ROWS, EtvGuard
from eoca.risk import eligible_mask
from eoca.threads import resolve_threads
from eoca.training.config import TrainConfig, coerce_train_config
from eoca.training.selection import argmax_policy_value, etv_selection_score, resolve_selection

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
GRID_FILE = "grid.json"
GRID_CONFIG_FILE = "grid_config.yaml"
_FORMAT = "eoca-etv-model"
_CKPT_FORMAT = "eoca-training-checkpoint"
_VERSION = 3
"""2: the zoo's ``sequence_encoder`` parameter exists (default ``pooling``); files of version 1 were all trained
with the behaviour self-attention, which :func:`_saved_params` restores for them. 3: ``customer_summary`` exists
(default on); files of versions 1 and 2 were trained without that input."""

OUTPUT_FIELDS: tuple[str, ...] = ("p", "etv", "pctr", "pcvr", "mu", "sigma", "amount")
"""ModelOutput fields copied into predictions, in column order."""

EpochCallback = Callable[[int, dict[str, float]], None]


# --- threads and seeds ---------------------------------------------------------------------------------------
def set_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads by :func:`resolve_threads`; returns the number used."""
    n = resolve_threads(num_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def set_prediction_threads(model: torch.nn.Module, predict_threads: int | None) -> None:
    """Give every tree model in ``model`` (itself, or the trees inside a stack) the ``predict_threads`` setting;
    each prediction resolves it (:func:`eoca.threads.prediction_threads`) in the process that runs it."""
    for module in model.modules():
        if isinstance(module, DirectFitModel):
            module.predict_threads = predict_threads


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Run the block with torch's deterministic kernels when ``enabled``, restoring the caller's setting.

    With more than one thread some CPU kernels (scatter/index-add backward passes among them) sum in an order
    that depends on scheduling; the last-bit differences grow over epochs of rare-positive training into
    visibly different models, so two identical runs would disagree. Deterministic kernels cost little here.
    """
    before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(enabled or before)
    # Deterministic mode also fills every new uninitialised tensor with NaN, a guard against kernels that read
    # memory they did not write; none of ours do, and the fills were hundreds of small kernels per step.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.utils.deterministic.fill_uninitialized_memory = fill_before  # type: ignore[attr-defined]


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order and dropout: a fixed mix of (seed, epoch), no hidden state."""
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class FlatParameters:
    """A model's trainable parameters moved into one flat tensor that the optimizer updates as a single tensor.

    An optimizer step costs a fixed number of small kernels per parameter tensor, and a zoo model has 40 to 70
    small tensors, so the update was a large share of a training step. Here every parameter becomes a view into
    one flat storage (same values, same modules), and every parameter's ``.grad`` a view into one flat gradient:
    ``backward`` adds each parameter's gradient in place into its view (autograd accumulates into a ``.grad`` that
    exists), so after :meth:`zero_grad` and ``backward`` the flat gradient is complete without a copy, and the
    optimizer steps ``flat`` in place, which updates every view. Adam's update is elementwise, so the trained
    values are those of the per-tensor update; adding a gradient to zeros gives the same value (only a ``-0.0``
    becomes ``+0.0``, which no update tells apart).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        flat = torch.cat([p.detach().reshape(-1) for p in self.params]) if self.params else torch.zeros(0)
        grad = torch.zeros_like(flat)
        self._grad_views: list[torch.Tensor] = []
        offset = 0
        for p in self.params:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            self._grad_views.append(grad[offset : offset + n].view_as(p))
            offset += n
        self.flat = torch.nn.Parameter(flat)
        self._grad = grad
        self.zero_grad()

    def gather_grad(self) -> None:
        """Complete ``flat.grad`` after ``backward``: a parameter whose ``.grad`` is no longer its view (replaced,
        or sparse) has it copied in; normally every gradient is already in place."""
        for p, view in zip(self.params, self._grad_views, strict=True):
            g = p.grad
            if g is None:
                view.zero_()
            elif g is not view:
                view.copy_(g.to_dense() if g.is_sparse else g)
        self.flat.grad = self._grad

    def zero_grad(self) -> None:
        """Zero the flat gradient and point every parameter's ``.grad`` at its view of it."""
        self._grad.zero_()
        # Reassigning ``.grad`` checks shape, dtype and device per parameter; only a gradient that is no longer
        # its view (replaced by the caller, or ``None``) needs it.
        for p, view in zip(self.params, self._grad_views, strict=True):
            if p.grad is not view:
                p.grad = view
        self.flat.grad = self._grad


def adam_step(opt: torch.optim.Optimizer, param: torch.Tensor) -> None:
    """``opt.step()`` for an Adam that updates the single tensor ``param`` (:attr:`FlatParameters.flat`), with
    the same arithmetic in the same order as torch's ``foreach`` Adam on the CPU, whose per-tensor loop it is
    for a list of one (bit-identical, tested), and the same optimizer state (so checkpoints and resuming are
    unchanged).

    Why: torch's ``step`` spends about 0.3 ms per call in Python (hooks, grouping the tensors by device and
    dtype, state checks) around a handful of kernels on a few ten thousand floats; that was 3% of a training
    step. The first step (which creates the state), and any configuration this does not cover (several
    groups, ``amsgrad``, ``maximize``, ``capturable``, ``fused``, a tensor learning rate, step hooks), go
    through ``opt.step()`` itself, and so does an Adam without ``foreach=True`` (whose per-tensor path this does
    not claim to reproduce).
    """
    groups = opt.param_groups
    group = groups[0]
    state = opt.state.get(param)
    grad = param.grad
    lr = group.get("lr")
    plain = (
        type(opt) is torch.optim.Adam
        and len(groups) == 1
        and len(group["params"]) == 1
        and group["params"][0] is param
        and bool(state)
        and grad is not None
        and not grad.is_sparse
        and param.device.type == "cpu"
        and isinstance(lr, (float, int))
        and group.get("foreach") is True
        and not any(group.get(k) for k in ("amsgrad", "maximize", "capturable", "differentiable", "fused"))
        and not group.get("decoupled_weight_decay", False)
        and not (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks)
        and not (torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)
    )
    if not plain:
        opt.step()
        return
    assert state is not None and grad is not None
    beta1, beta2 = group["betas"]
    weight_decay, eps = group["weight_decay"], group["eps"]
    step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
    with torch.no_grad():
        # torch's _multi_tensor_adam (capturable=False) on a one-tensor list, call for call.
        step_t.add_(1.0)
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2)
        exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        step_size = (lr / (1 - beta1**step)) * -1
        denom = exp_avg_sq.sqrt()
        denom.div_((1 - beta2**step) ** 0.5)
        denom.add_(eps)
        param.addcdiv_(exp_avg, denom, value=step_size)


# --- progress ------------------------------------------------------------------------------------------------
def make_progress(enabled: bool) -> Progress:
    """A rich progress display (bar, count, elapsed, remaining); ``enabled=False`` renders nothing."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


# --- the trained model ---------------------------------------------------------------------------------------
@dataclass
class TrainedModel:
    """A fitted model with the feature encodings it was trained with, its config and its epoch history."""

    model: EtvModel
    features: FeatureSpace
    config: TrainConfig
    history: list[dict[str, float]]
    guard: EtvGuard | None = None
    """The ETV guard (:mod:`eoca.models.guard`) applied to every prediction; None only while fitting it."""
    _bound: tuple[Dataset, BoundFeatures] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_prediction_threads(self.model, self.config.predict_threads)

    # binding encodes every customer of a dataset; scoring calls predict_pairs many times per dataset, so the
    # last binding is kept (compared by identity, datasets are not hashable).
    def bind(self, dataset: Dataset) -> BoundFeatures:
        # Read the cache once and return what was bound here: threads scoring different datasets with one model
        # (Dask workers in one process) replace the cache in turn, and re-reading it could hand back another
        # thread's binding.
        cached = self._bound
        if cached is not None and cached[0] is dataset:
            return cached[1]
        bound = self.features.bind(dataset)
        self._bound = (dataset, bound)
        return bound

    @property
    def name(self) -> str:
        return self.config.model

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``model.pt`` (weights, features, config, history) and ``config.yaml`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "model": self.config.model,
            "state_dict": self.model.state_dict(),
            "features": self.features.state_dict(),
            "config": self.config.model_dump(mode="json"),
            "history": [dict(h) for h in self.history],
            "guard": self.guard.state_dict() if self.guard is not None else None,
        }
        with atomic_path(d / MODEL_FILE) as tmp:
            torch.save(payload, tmp)
        write_yaml(self.config.model_dump(mode="json"), d / CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TrainedModel:
        """Load a model saved by :meth:`save` (a run folder or the ``model.pt`` file itself), safely."""
        p = Path(directory)
        path = p / MODEL_FILE if p.is_dir() else p
        payload = safe_torch_load(path)
        if payload.get("format") != _FORMAT:
            raise DataValidationError(f"{path}: not an eoca model file (format {payload.get('format')!r})")
        config = validate_config(TrainConfig, saved_config(payload["config"]), f"{path} (config)")
        features = FeatureSpace.from_state_dict(payload["features"])
        model = build_model(config.model, features, _saved_params(config.model, config.params, payload.get("version")))
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise DataValidationError(f"{path}: weights do not fit model '{config.model}': {exc}") from exc
        model.eval()
        guard_state = payload.get("guard")
        guard = (
            EtvGuard.from_state_dict(guard_state)
            if isinstance(guard_state, dict)
            else EtvGuard.from_label_stats(features.label_stats)
        )
        return cls(model=model, features=features, config=config, history=list(payload.get("history", [])), guard=guard)

    # --- prediction ----------------------------------------------------------------------------------------
    def predict_pairs(
        self,
        dataset: Dataset,
        customer_pos: np.ndarray,
        fund_pos: np.ndarray,
        batch_size: int = 65536,
        *,
        guarded: bool = True,
    ) -> dict[str, np.ndarray]:
        """Predictions for arbitrary (customer, fund) position pairs of ``dataset``.

        Returns one float32 array of shape (m,) per ModelOutput field the model fills (``p``, ``etv`` always).
        With ``guarded`` (always, except when fitting the guard itself) the ETV guard bounds and recalibrates
        ``amount``/``etv`` (and clips ``mu``/``sigma``): the one place every model's ETV passes through.
        """
        cust = np.asarray(customer_pos, dtype=np.int64).ravel()
        fund = np.asarray(fund_pos, dtype=np.int64).ravel()
        if cust.shape != fund.shape:
            raise ValueError(f"customer_pos and fund_pos differ in length: {cust.size} vs {fund.size}")
        if cust.size and (cust.min() < 0 or cust.max() >= dataset.n_customers):
            raise ValueError(f"customer_pos must lie in [0, {dataset.n_customers})")
        if fund.size and (fund.min() < 0 or fund.max() >= dataset.n_funds):
            raise ValueError(f"fund_pos must lie in [0, {dataset.n_funds})")
        bound = self.bind(dataset)
        self.model.eval()
        parts: dict[str, list[np.ndarray]] = {}
        # An empty request still runs one pair so the caller learns which outputs the model has.
        probe = cust.size == 0
        if probe:
            cust, fund = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, cust.size, batch_size):
                out = self.model.predict(bound.pair_batch(cust[s : s + batch_size], fund[s : s + batch_size]))
                for name, values in _output_arrays(out).items():
                    parts.setdefault(name, []).append(values)
        result = {k: np.concatenate(v) for k, v in parts.items()}
        if probe:
            return {k: v[:0] for k, v in result.items()}
        if guarded and self.guard is not None:
            result = self.guard.apply(result, fund, dataset_fund_ids(dataset), self.model.formula)
        return result

    def fit_guard(self, dataset: Dataset, split: str = "valid", *, final: bool = True) -> EtvGuard:
        """Fit the ETV guard: bounds from the train converters, recalibration on ``split``'s labelled rows.
        ``final`` (after training) first fits what the model itself chooses on the split
        (:meth:`~eoca.models.base.EtvModel.fit_on_split`); a per-epoch score passes False, so that it scores the
        network as trained so far and a choice made on the same split cannot hide whether the network improved."""
        guard = EtvGuard.from_label_stats(self.features.label_stats)
        bound = self.bind(dataset)
        labels = bound.exposure_labels(split)
        if final:
            self.model.fit_on_split(bound, split, self.config.eval_batch_size, dataset_fund_ids(dataset))
        if labels["converted"].size:
            raw = self.predict_pairs(
                dataset, labels["customer_pos"], labels["fund_pos"], self.config.eval_batch_size, guarded=False
            )
            guard.fit_recalibration(
                raw,
                labels["fund_pos"],
                labels["converted"],
                labels["amount"],
                dataset_fund_ids(dataset),
                self.model.formula,
                split,
                bound.split_weights(split),
            )
        self._fit_amount_factor(guard, bound, dataset)
        self.guard = guard
        return guard

    def _fit_amount_factor(self, guard: EtvGuard, bound: BoundFeatures, dataset: Dataset) -> None:
        """Step 3 of the guard on the dataset's past purchases, scored with the features each had at its own time:
        :meth:`EtvGuard.fit_amount_factor` (``amount_level: shared``) or :meth:`EtvGuard.fit_amount_level`
        (``per_fund``); nothing for a direct-ETV model or without behaviour events."""
        n_history = bound.n_purchase_history()
        if n_history == 0:
            return
        # a fixed seed: the same subset (and factor) for the same trained model, whatever ran before
        order = torch.Generator().manual_seed(0)
        limit = min(n_history, AMOUNT_FACTOR_MAX_ROWS)
        fund_ids = dataset_fund_ids(dataset)
        realised, funds, raws = [], [], []
        self.model.eval()
        with torch.inference_mode():
            for batch, amount in bound.purchase_history(self.config.eval_batch_size, generator=order, limit=limit):
                realised.append(np.asarray(amount, dtype=np.float64))
                funds.append(batch.fund.numpy())
                raws.append(_output_arrays(self.model.predict(batch)))
        if not raws:
            return
        raw = {name: np.concatenate([r[name] for r in raws]) for name in raws[0]}
        fund_pos, y = np.concatenate(funds), np.concatenate(realised)
        source = "past purchases" if limit == n_history else f"past purchases (a seeded {limit} of {n_history})"
        if self.config.amount_level == "per_fund":
            guard.fit_amount_level(y, raw, fund_pos, fund_ids, self.model.formula, source)
            return
        guarded = guard.apply(raw, fund_pos, fund_ids, self.model.formula)
        if "amount" in guarded:
            guard.fit_amount_factor(y, np.asarray(guarded["amount"], dtype=np.float64), source)

    def score_matrix(
        self,
        dataset: Dataset,
        *,
        chunk_customers: int = 65536,
        progress: bool = False,
        tolerance: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Every customer x every fund: one float32 array of shape (N, k) per output (``p``, ``etv``, ...).

        ``tolerance``: int (N,) risk tolerance of every customer, when only the pairs the risk rule allows are
        wanted (no allocation and no decision metric reads another): those pairs' values are the same, the others
        NaN, for every model. A model that scores each pair on its own (:attr:`EtvModel.scores_pairs_alone`,
        the trees) then predicts only the allowed pairs; a network scores the whole grid (see there).
        """
        n, k = dataset.n_customers, dataset.n_funds
        out: dict[str, np.ndarray] = {}
        chunks = iter_score_chunks(
            self, dataset, chunk_customers=chunk_customers, progress=progress, tolerance=tolerance
        )
        for start, stop, chunk in chunks:
            for name, values in chunk.items():
                if name not in out:
                    out[name] = np.empty((n, k), dtype=np.float32)
                out[name][start:stop] = values.reshape(stop - start, k)
        if not out:  # a dataset without customers
            out = {
                name: np.empty((0, k), dtype=np.float32)
                for name in self.predict_pairs(dataset, np.empty(0, np.int64), np.empty(0, np.int64))
            }
        return out


def dataset_fund_ids(dataset: Dataset) -> list[str]:
    """The dataset's fund ids as strings, in fund-position order."""
    return [str(f) for f in dataset.funds.column("fund_id").to_pylist()]


def iter_score_chunks(
    trained: TrainedModel,
    dataset: Dataset,
    *,
    chunk_customers: int = 65536,
    progress: bool = False,
    tolerance: np.ndarray | None = None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield ``(start, stop, predictions)`` for customers ``start..stop-1`` x all funds, customer-major.

    Memory stays proportional to ``chunk_customers * n_funds`` whatever the number of customers. ``tolerance``:
    int (N,), the pairs the risk rule forbids come back NaN (see :meth:`TrainedModel.score_matrix`).
    """
    if chunk_customers < 1:
        raise ConfigError(f"chunk_customers must be at least 1, got {chunk_customers}")
    set_threads(trained.config.num_threads)
    n, k = dataset.n_customers, dataset.n_funds
    risk = None
    if tolerance is not None:
        tolerance = np.asarray(tolerance)
        if tolerance.shape != (n,):
            raise ValueError(f"tolerance must hold one value per customer, shape ({n},); got {tolerance.shape}")
        risk = np.asarray(dataset.funds.column("risk_level").to_numpy(zero_copy_only=False))
    alone = trained.model.scores_pairs_alone
    funds = np.arange(k, dtype=np.int64)
    batch = trained.config.eval_batch_size
    with make_progress(progress) as bar:
        task = bar.add_task(f"scoring {trained.name}", total=n * k)
        for start in range(0, n, chunk_customers):
            stop = min(n, start + chunk_customers)
            cust = np.repeat(np.arange(start, stop, dtype=np.int64), k)
            fund = np.tile(funds, stop - start)
            if tolerance is None:
                yield start, stop, trained.predict_pairs(dataset, cust, fund, batch_size=batch)
            else:
                keep = eligible_mask(tolerance[start:stop], risk).ravel()
                if alone:
                    some = trained.predict_pairs(dataset, cust[keep], fund[keep], batch_size=batch)
                    preds = {}
                    for name, values in some.items():
                        preds[name] = np.full(keep.size, np.nan, dtype=values.dtype)
                        preds[name][keep] = values
                else:
                    preds = trained.predict_pairs(dataset, cust, fund, batch_size=batch)
                    for values in preds.values():
                        values[~keep] = np.nan
                yield start, stop, preds
            bar.advance(task, (stop - start) * k)


# --- safe loading --------------------------------------------------------------------------------------------
def safe_torch_load(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that name the file; refuses anything needing pickle code."""
    if not path.exists():
        raise DataValidationError(f"{path}: file not found (train a model with `eoca train --out RUN` first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataValidationError(
            f"{path}: refused to load: it holds objects that only arbitrary unpickling could build, which eoca "
            f"never writes ({exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise DataValidationError(f"{path}: not a readable torch file: {exc}") from exc
    if not isinstance(payload, dict):
        raise DataValidationError(f"{path}: expected a mapping, found {type(payload).__name__}")
    return payload


# --- the training loop ---------------------------------------------------------------------------------------
@dataclass
class _LoopState:
    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    best_state: dict[str, torch.Tensor] | None = None


def _numpy_rng_state() -> dict[str, Any]:
    # np.random's state holds a numpy array, which weights_only loading refuses; store it as a tensor instead.
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached"]))


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save_checkpoint(
    path: Path, cfg: TrainConfig, features: FeatureSpace, model: EtvModel, opt: torch.optim.Optimizer, st: _LoopState
) -> None:
    payload = {
        "format": _CKPT_FORMAT,
        "version": _VERSION,
        "config": cfg.model_dump(mode="json"),
        "features": features.state_dict(),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "best_model": st.best_state,
        "loop": {
            "epoch": st.epoch,
            "best_loss": st.best_loss,
            "best_epoch": st.best_epoch,
            "bad_epochs": st.bad_epochs,
            "stopped": st.stopped,
        },
        "history": [dict(h) for h in st.history],
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


SETTINGS_BEFORE: dict[str, Any] = {"graph_neighbours": 10, "batch_order": "rows"}
"""Training settings added after model files were first written, with the behaviour they name that files without
them were trained with; :func:`saved_config` fills them in."""


def saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """A model file's or checkpoint's stored config with every setting it predates (:data:`SETTINGS_BEFORE`) set
    to the value in effect when it was written, so an older file neither claims today's default nor fails to
    resume over a key it never had."""
    return {**SETTINGS_BEFORE, **config}


RESULT_NEUTRAL = frozenset({"predict_threads"})
"""Training settings that cannot change a model (a resume may differ in them)."""


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in (set(a) | set(b)) - RESULT_NEUTRAL if a.get(k) != b.get(k))


def _valid_loss(model: EtvModel, bound: BoundFeatures, split: str, batch_size: int) -> float:
    model.eval()
    total, rows = 0.0, 0
    with torch.inference_mode():
        for batch in bound.exposure_batches(split, batch_size, shuffle=False):
            total += float(model.loss(batch)) * len(batch)
            rows += len(batch)
    return total / rows if rows else math.nan


def _output_arrays(out: Any) -> dict[str, np.ndarray]:
    """The filled :data:`OUTPUT_FIELDS` of one model output, as float32 arrays ``[B]``."""
    return {
        name: t.detach().to(torch.float32).reshape(-1).numpy()
        for name in OUTPUT_FIELDS
        if (t := getattr(out, name, None)) is not None
    }


def _history_batches(
    model: EtvModel,
    bound: BoundFeatures,
    generator: torch.Generator,
    rows_per_epoch: int,
    n_train: int,
    batch_size: int,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """One batch of past purchases per training step of an epoch, for a model that learns its amount from them
    (:meth:`EtvModel.amount_history_loss`): the same fraction of the history as of the training exposures
    (``rows_per_epoch / n_train``), in a random order from the epoch's ``generator``, spread evenly over the
    epoch's steps. Empty for other models and without behaviour events."""
    n_history = bound.n_purchase_history() if model.learns_amount_from_history else 0
    if n_history == 0 or n_train == 0:
        return iter(())
    n_rows = max(1, round(n_history * rows_per_epoch / n_train))
    steps = max(1, math.ceil(rows_per_epoch / batch_size))
    return bound.purchase_history(math.ceil(n_rows / steps), generator=generator, limit=n_rows)


def _saved_params(model: str, params: dict[str, Any], version: Any) -> dict[str, Any]:
    """The parameters to rebuild a saved model with: those of its config, plus the value each parameter
    introduced since had in effect before it existed (``sequence_encoder: self_attention`` before format
    version 2, ``customer_summary: false`` before version 3) for a zoo model that has that parameter."""
    if not isinstance(version, int):
        return params
    defaults = model_defaults(model)
    before = {"sequence_encoder": ("self_attention", 2), "customer_summary": (False, 3)}
    restored = {key: value for key, (value, since) in before.items() if version < since and key in defaults}
    return {**restored, **params}


def _fit_features(dataset: Dataset, cfg: TrainConfig) -> FeatureSpace:
    # A model without a graph branch never reads the consumption graph, so its feature space leaves it out: no
    # graph is built at binding and none sampled per batch (the sampling draws from its own generator, so the
    # other inputs and the model's numbers are unchanged).
    use_graph = cfg.use_graph and bool({**model_defaults(cfg.model), **cfg.params}.get("use_graph", False))
    return FeatureSpace.fit(
        dataset,
        sequence_length=cfg.sequence_length,
        use_sequences=cfg.use_sequences,
        use_graph=use_graph,
        graph_neighbours=cfg.graph_neighbours,
    )


def _train_one(
    dataset: Dataset,
    cfg: TrainConfig,
    out: Path | None,
    *,
    resume: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    features: FeatureSpace | None = None,
    label: str | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    started = time.perf_counter()
    ckpt_path = out / CHECKPOINT_FILE if out is not None else None
    ckpt: dict[str, Any] | None = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = safe_torch_load(ckpt_path)
        if ckpt.get("format") != _CKPT_FORMAT:
            raise DataValidationError(f"{ckpt_path}: not an eoca training checkpoint")
        saved = _saved_params(cfg.model, cfg.params, ckpt.get("version"))
        if saved != cfg.params:
            older = ", ".join(f"params.{k}={v}" for k, v in saved.items() if cfg.params.get(k) != v)
            raise ConfigError(
                f"{ckpt_path}: cannot resume, the checkpoint was written by an older eoca whose '{cfg.model}' had "
                f"{older}; use a new --out folder (and --set those values there to train that architecture)"
            )
        diff = _config_diff(saved_config(ckpt["config"]), cfg.model_dump(mode="json"))
        if diff:
            raise ConfigError(
                f"{ckpt_path}: cannot resume, the config differs from the checkpoint's in {', '.join(diff)}; "
                "use the same settings or a new --out folder"
            )
        # The checkpoint's encodings, not a refit, so the resumed model sees exactly the inputs it trained on.
        features = FeatureSpace.from_state_dict(ckpt["features"])
    if features is None:
        features = _fit_features(dataset, cfg)
    bound = features.bind(dataset)
    n_train, n_valid = bound.n_exposures("train"), bound.n_exposures("valid")
    if n_train == 0:
        raise DataValidationError(f"dataset '{dataset.spec.name}': no training exposures to fit a model on")

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model = build_model(cfg.model, features, cfg.params)
    set_prediction_threads(model, cfg.predict_threads)
    if isinstance(model, DirectFitModel):
        return _fit_direct(model, dataset, bound, features, cfg, out, started)
    flat = FlatParameters(model)
    opt = torch.optim.Adam([flat.flat], lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    st = _LoopState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loop = ckpt["loop"]
        st = _LoopState(
            epoch=int(loop["epoch"]),
            history=list(ckpt["history"]),
            best_loss=float(loop["best_loss"]),
            best_epoch=int(loop["best_epoch"]),
            bad_epochs=int(loop["bad_epochs"]),
            stopped=bool(loop["stopped"]),
            best_state=ckpt["best_model"],
        )
        torch.set_rng_state(ckpt["rng"]["torch"])
        _set_numpy_rng_state(ckpt["rng"]["numpy"])

    rows_per_epoch = min(n_train, cfg.max_train_rows or n_train)
    by_customer = cfg.batch_order == "customers"
    name = label or cfg.model
    selection = resolve_selection(cfg.selection, dataset) if n_valid else "loss"
    # One wrapper bound once: the decision value scores the validation customers after every epoch.
    probe = TrainedModel(model=model, features=features, config=cfg, history=[], _bound=(dataset, bound))
    with make_progress(progress) as bar:
        task = bar.add_task(name, total=rows_per_epoch)
        while st.epoch < cfg.max_epochs and not st.stopped:
            epoch = st.epoch
            t0, c0 = time.perf_counter(), time.process_time()
            bar.reset(task, total=rows_per_epoch, description=f"{name} epoch {epoch + 1}/{cfg.max_epochs}")
            seed = epoch_seed(cfg.seed, epoch)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model.train()
            total, rows = 0.0, 0
            batches = bound.exposure_batches(
                "train", cfg.batch_size, shuffle=True, generator=gen, by_customer=by_customer
            )
            history = _history_batches(model, bound, gen, rows_per_epoch, n_train, cfg.batch_size)
            for step, batch in enumerate(batches):
                if rows >= rows_per_epoch:
                    break
                flat.zero_grad()
                past = next(history, None)
                if past is None:
                    loss = model.loss(batch)
                else:
                    loss = model.loss_with_history(batch, past[0], torch.from_numpy(past[1]).to(torch.float32))
                # One read of the loss serves the check and the epoch's mean (each read is a kernel and a copy).
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"model '{cfg.model}': training loss is {value} at epoch {epoch + 1}, step {step + 1} "
                        f"(lr={cfg.lr}); lower lr or check the data"
                    )
                loss.backward()
                flat.gather_grad()
                adam_step(opt, flat.flat)
                total += value * len(batch)
                rows += len(batch)
                if progress:
                    bar.advance(task, len(batch))
            train_seconds = time.perf_counter() - t0
            train_cpu_seconds = time.process_time() - c0
            train_loss = total / max(rows, 1)
            # Without a validation split, early stopping falls back to the training loss (stated in metrics).
            valid_loss = _valid_loss(model, bound, "valid", cfg.eval_batch_size) if n_valid else train_loss
            # Lower is better for both criteria: the loss, or minus the decision value (NaN never improves).
            score = valid_loss
            valid_value = math.nan
            if selection == "ips":
                valid_value = argmax_policy_value(probe, dataset, "valid")
                score = -valid_value if math.isfinite(valid_value) else math.inf
            elif selection in ("etv_mse", "gini"):
                # valid_value: the validation ETV's MSE, or its Gini; score: lower is better.
                score = etv_selection_score(probe, dataset, selection, "valid")
                valid_value = -score if selection == "gini" else score
            seconds = time.perf_counter() - t0
            record = {
                "epoch": float(epoch + 1),
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "rows": float(rows),
                "seconds": seconds,
                "train_seconds": train_seconds,
                "samples_per_s": rows / train_seconds if train_seconds else 0.0,
                # CPU seconds of every thread of the process: robust to other jobs sharing the machine.
                "train_cpu_seconds": train_cpu_seconds,
                "samples_per_cpu_s": rows / train_cpu_seconds if train_cpu_seconds else 0.0,
            }
            if selection != "loss":  # a NaN would make two identical histories compare unequal
                record["valid_value"] = valid_value
            st.history.append(record)
            st.epoch = epoch + 1
            if score < st.best_loss - cfg.min_delta:
                st.best_loss, st.best_epoch, st.bad_epochs = score, epoch + 1, 0
                st.best_state = _clone_state(model)
            else:
                st.bad_epochs += 1
                st.stopped = st.bad_epochs >= cfg.patience
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, cfg, features, model, opt, st)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)

    if st.best_state is not None:
        model.load_state_dict(st.best_state)
    model.eval()
    # The training binding serves scoring the same dataset next (as `eoca run` does) without encoding it again.
    trained = TrainedModel(model=model, features=features, config=cfg, history=st.history, _bound=(dataset, bound))
    guard = trained.fit_guard(dataset)
    summary = {
        "model": cfg.model,
        "best_epoch": st.best_epoch,
        "selection": selection,
        "best_valid_loss": st.best_loss if selection == "loss" else st.history[st.best_epoch - 1]["valid_loss"],
        "best_score": st.best_loss,
        "epochs_run": st.epoch,
        "early_stopped": st.stopped,
        "validation": "valid split" if n_valid else "none: early stopping on the training loss",
        "train_exposures": n_train,
        "valid_exposures": n_valid,
        "rows_per_epoch": rows_per_epoch,
    }
    return _finish(trained, guard, summary, started, out)


def _fit_direct(
    model: DirectFitModel,
    dataset: Dataset,
    bound: BoundFeatures,
    features: FeatureSpace,
    cfg: TrainConfig,
    out: Path | None,
    started: float,
) -> tuple[TrainedModel, dict[str, Any]]:
    """Train a model fitted in one call (``gbdt``): no epochs, checkpoints or resume; early stopping is the
    model's own (on the valid split); the guard and the run folder are as for the networks."""
    record = model.fit_bound(
        bound, seed=cfg.seed, num_threads=set_threads(cfg.num_threads), batch_size=cfg.eval_batch_size
    )
    model.eval()
    trained = TrainedModel(model=model, features=features, config=cfg, history=[record], _bound=(dataset, bound))
    guard = trained.fit_guard(dataset)
    summary = {
        "model": cfg.model,
        "best_epoch": 1,
        "selection": "loss",
        "best_valid_loss": record["valid_loss"],
        "best_score": record["valid_loss"],
        "epochs_run": 1,
        "early_stopped": False,
        "validation": "valid split (the model's own early stopping)",
        "train_exposures": bound.n_exposures("train"),
        "valid_exposures": bound.n_exposures("valid"),
        "rows_per_epoch": bound.n_exposures("train"),
    }
    return _finish(trained, guard, summary, started, out)


def _finish(
    trained: TrainedModel, guard: Any, summary: dict[str, Any], started: float, out: Path | None
) -> tuple[TrainedModel, dict[str, Any]]:
    """Complete the training summary (threads, time, history, guard) and write the model and it to ``out``."""
    summary.update(
        threads=torch.get_num_threads(),
        seconds=time.perf_counter() - started,
        history=trained.history,
        guard=guard.state_dict(),
    )
    if out is not None:
        trained.save(out)
        write_json(summary, out / METRICS_FILE)
    return trained, summary


def _grid_search(
    dataset: Dataset,
    cfg: TrainConfig,
    out: Path | None,
    *,
    resume: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
) -> TrainedModel:
    """Train every (lr, dropout) of the grid and keep the model with the lowest best validation score (the
    config's ``selection``: validation loss, minus the decision value, the validation ETV's MSE or minus its
    Gini)."""
    features = _fit_features(dataset, cfg)
    results: list[dict[str, Any]] = []
    best: tuple[float, TrainedModel, dict[str, Any]] | None = None
    for lr in cfg.grid_lr:
        for dropout in cfg.grid_dropout:
            sub = cfg.model_copy(update={"lr": lr, "params": {**cfg.params, "dropout": dropout}, "grid": False})
            tag = f"lr={lr:g}_dropout={dropout:g}"
            sub_out = out / "grid" / tag if out is not None else None
            trained, summary = _train_one(
                dataset,
                sub,
                sub_out,
                resume=resume,
                progress=progress,
                on_epoch_end=on_epoch_end,
                features=features,
                label=f"{cfg.model} {tag}",
            )
            # best_score: the validation loss, minus the decision value ("ips"), the validation ETV's MSE
            # ("etv_mse") or minus its Gini ("gini"); lower is better for all.
            loss = float(summary["best_score"])
            results.append(
                {
                    "lr": lr,
                    "dropout": dropout,
                    "best_valid_loss": float(summary["best_valid_loss"]),
                    "best_score": loss,
                    "selection": summary["selection"],
                    "best_epoch": summary["best_epoch"],
                }
            )
            if best is None or loss < best[0]:
                best = (loss, trained, summary)
            else:
                del trained  # keep one model in memory at a time
    assert best is not None  # the validators guarantee a non-empty grid
    _, winner, summary = best
    if out is not None:
        winner.save(out)
        write_json(
            {
                **summary,
                "grid": results,
                "selected": {"lr": winner.config.lr, "dropout": winner.config.params.get("dropout")},
            },
            out / METRICS_FILE,
        )
        write_json(results, out / GRID_FILE)
    return winner


def check_learnable(dataset: Dataset) -> None:
    """Refuse data nothing can be learnt from, and warn about data almost nothing can.

    Raises:
        DataValidationError: fewer than two customers, or no conversion among the training exposures (every
            model would predict zero whatever its inputs).

    Warns (``UserWarning``) when the training exposures hold a single conversion: a model then fits that one
    customer, and its scores say little about anyone else.
    """
    name = dataset.spec.name
    if dataset.n_customers < 2:
        raise DataValidationError(
            f"dataset '{name}' has {dataset.n_customers} customer(s); a model needs at least two customers to "
            "learn who converts"
        )
    train_rows = dataset.split_mask("train")
    converted = np.asarray(dataset.exposures.column("converted").to_numpy(zero_copy_only=False))[train_rows]
    n_conv = int(np.count_nonzero(converted))
    if n_conv == 0:
        raise DataValidationError(
            f"dataset '{name}': none of the {int(train_rows.sum()):,} training exposures converted, so there is "
            "nothing to learn (every model would predict zero); add data with conversions"
        )
    if n_conv == 1:
        warnings.warn(
            f"dataset '{name}': only 1 of the {int(train_rows.sum()):,} training exposures converted; the model "
            "learns that one customer and its scores say little about anyone else",
            UserWarning,
            stacklevel=3,
        )


def train(
    dataset: Dataset,
    config: TrainConfig | dict[str, Any] | None,
    out: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainedModel:
    """Train ``config.model`` on ``dataset``'s train split, early-stopping on its validation split.

    Args:
        dataset: a loaded :class:`~eoca.data.Dataset`.
        config: a :class:`TrainConfig` or a partial mapping over the packaged defaults.
        out: run folder; receives ``config.yaml``, ``metrics.json``, ``model.pt`` and ``checkpoint.pt`` (every
            epoch). ``None`` trains in memory only.
        resume: continue from ``out/checkpoint.pt`` when it exists (same config required); the result equals
            that of an uninterrupted run.
        progress: show rich progress bars.
        on_epoch_end: called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is written.

    Returns:
        The model restored to its best validation epoch.
    """
    cfg = coerce_train_config(config)
    check_learnable(dataset)
    set_threads(cfg.num_threads)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        # A grid run's model.pt/config.yaml describe the winning grid point; the request itself is kept beside.
        write_yaml(cfg.model_dump(mode="json"), out_path / (GRID_CONFIG_FILE if cfg.grid else CONFIG_FILE))
    with deterministic_kernels(cfg.deterministic):
        if cfg.grid:
            return _grid_search(dataset, cfg, out_path, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
        trained, _ = _train_one(dataset, cfg, out_path, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
    return trained
