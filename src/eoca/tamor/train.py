"""Training and scoring of the TAMOR networks on a multi-scenario world.

All networks of a comparison get the same data, optimiser, epochs and batch size; ``per_tier`` trains one
network per tier on that tier's rows only. Tensors are built once per world (features indexed by customer and
item position), so a batch is a handful of ``index_select`` calls.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from eoca.tamor.config import SCENARIO_NAMES, TIER_NAMES, TamorTrainConfig
from eoca.tamor.model import TamorBatch, TamorNet, TamorOutput, variant
from eoca.tamor.world import SPECIFIC_SCENARIO, ExposureLog, MultiScenarioWorld
from eoca.training.trainer import set_threads


@dataclass
class WorldTensors:
    """The world's features as tensors: customers ``[N, .]``, items ``[M, .]``."""

    user_x: torch.Tensor
    tier: torch.Tensor
    user_key: torch.Tensor
    item_shared: torch.Tensor
    scenario: torch.Tensor
    item_specific: torch.Tensor
    log_gap: torch.Tensor

    @classmethod
    def of(cls, world: MultiScenarioWorld) -> WorldTensors:
        return cls(
            user_x=torch.from_numpy(world.user_x),
            tier=torch.from_numpy(world.tier),
            user_key=torch.from_numpy(world.customer_id),
            item_shared=torch.from_numpy(world.item_shared),
            scenario=torch.from_numpy(world.scenario),
            item_specific=torch.from_numpy(world.item_specific),
            log_gap=torch.from_numpy(world.log_gap()),
        )

    def batch(self, cust: torch.Tensor, item: torch.Tensor) -> TamorBatch:
        """Unlabelled batch of pairs ``(cust[b], item[b])`` (int64 ``[B]`` positions)."""
        return TamorBatch(
            user_x=self.user_x.index_select(0, cust),
            tier=self.tier.index_select(0, cust),
            user_key=self.user_key.index_select(0, cust),
            item_shared=self.item_shared.index_select(0, item),
            scenario=self.scenario.index_select(0, item),
            item_specific=self.item_specific.index_select(0, item),
            log_gap=self.log_gap.index_select(0, cust),
        )


@dataclass
class FitStats:
    """What training measured: rows seen, wall and CPU seconds of this process, throughput and the mean loss of
    each task per epoch. On a machine shared with other jobs the wall-clock rate falls with their load; the rate
    per CPU-second of the process does much less."""

    rows: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    task_loss: dict[str, list[float]] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    @property
    def samples_per_cpu_second(self) -> float:
        return self.rows / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


class TamorModel:
    """A trained framework: one :class:`TamorNet` (or one per tier for ``per_tier``) with ``predict``.

    ``calibration`` holds the factors ``predict`` multiplies into ETV / amount (``etv``) and P(upgrade)
    (``upgrade``): observed over predicted totals on the validation rows, so that the slate's trade-off between
    amount and upgrades compares like with like across frameworks (1.0 before :meth:`calibrate`).
    """

    def __init__(self, name: str, nets: dict[int, TamorNet], stats: FitStats) -> None:
        self.name = name
        self.nets = nets  # key -1: one network for every tier; else the tier it serves
        self.stats = stats
        self.calibration = {"etv": 1.0, "upgrade": 1.0}

    def calibrate(self, tensors: WorldTensors, log: ExposureLog) -> None:
        """Set :attr:`calibration` from labelled rows ``log`` (ratio of sums; a factor stays 1.0 without data)."""
        self.calibration = {"etv": 1.0, "upgrade": 1.0}
        out = self.predict(tensors, log.customer, log.item)
        applies = log.upgrade >= 0
        pred_up = float(out.p_upgrade.numpy()[applies].sum())
        pred_amount = float(out.etv.numpy().sum())
        if pred_amount > 0 and log.amount.sum() > 0:
            self.calibration["etv"] = float(log.amount.sum()) / pred_amount
        if pred_up > 0 and (log.upgrade[applies] > 0).any():
            self.calibration["upgrade"] = float(log.upgrade[applies].sum()) / pred_up

    def predict(self, tensors: WorldTensors, cust: np.ndarray, item: np.ndarray, chunk: int = 65_536) -> TamorOutput:
        """Predictions for pairs ``(cust[r], item[r])``, each field float32 ``[R]``."""
        c_all = torch.from_numpy(np.asarray(cust, dtype=np.int64))
        i_all = torch.from_numpy(np.asarray(item, dtype=np.int64))
        outs: list[TamorOutput] = []
        for net in self.nets.values():
            net.eval()
        with torch.no_grad():
            for start in range(0, c_all.numel(), chunk):
                c, i = c_all[start : start + chunk], i_all[start : start + chunk]
                b = tensors.batch(c, i)
                if -1 in self.nets:
                    outs.append(self.nets[-1](b))
                    continue
                parts: dict[str, torch.Tensor] = {}
                for tier, net in self.nets.items():
                    rows = torch.nonzero(b.tier == tier).squeeze(1)
                    o = net(b.rows(rows))
                    for name, value in vars(o).items():
                        buf = parts.setdefault(name, torch.zeros(len(b)))
                        buf[rows] = value
                outs.append(TamorOutput(**parts))
        out = TamorOutput(**{k: torch.cat([getattr(o, k) for o in outs]) for k in vars(outs[0])})
        c_etv, c_up = self.calibration["etv"], self.calibration["upgrade"]
        if c_etv != 1.0 or c_up != 1.0:
            out.etv, out.amount = out.etv * c_etv, out.amount * c_etv
            out.p_upgrade = torch.minimum(out.p_upgrade * c_up, out.p)
        return out

    def score_matrix(self, world: MultiScenarioWorld, tensors: WorldTensors) -> TamorOutput:
        """Predictions for every (customer, item) pair, each field ``[N * M]`` in row-major (customer, item) order."""
        n, m = world.n_customers, world.n_items
        return self.predict(tensors, np.repeat(np.arange(n), m), np.tile(np.arange(m), n))


class WeightAverage:
    """Exponential moving average of ``params`` over the optimiser steps (every framework alike, see
    ``TamorTrainConfig.ema_decay``). After update ``t`` (1-based) the average is ``d_t avg + (1 - d_t) w`` with
    ``d_t = min(decay, t / (9 + t))``: the usual warm-up, so the first steps are not averaged with the initial
    weights for long."""

    def __init__(self, params: list[torch.Tensor], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.params = params
        self.decay = decay
        self.updates = 0
        self.average = [p.detach().clone() for p in params]

    def update(self) -> None:
        """Fold the current weights into the average."""
        self.updates += 1
        d = min(self.decay, self.updates / (9.0 + self.updates))
        with torch.no_grad():
            for avg, p in zip(self.average, self.params, strict=True):
                avg.lerp_(p.detach(), 1.0 - d)

    def copy_to_params(self) -> None:
        """Overwrite the weights with their average."""
        with torch.no_grad():
            for avg, p in zip(self.average, self.params, strict=True):
                p.copy_(avg)


def _init_rates(log: ExposureLog, log_gap: np.ndarray) -> dict[str, float]:
    clicks = float(log.click.sum())
    gaps = log_gap[log.customer[log.upgrade >= 0]]
    conv = log.convert > 0
    applies = log.upgrade >= 0
    return {
        "click_rate": clicks / max(len(log), 1),
        "cvr_rate": float(conv.sum()) / max(clicks, 1.0),
        "upgrade_rate": float((log.upgrade[applies & conv] > 0).sum()) / max(float((applies & conv).sum()), 1.0),
        "log_amount": float(np.log(log.amount[conv]).mean()) if conv.any() else 0.0,
        "log_gap_mean": float(gaps.mean()) if gaps.size else 0.0,
        "log_gap_sd": float(gaps.std()) if gaps.size > 1 and gaps.std() > 0 else 1.0,
    }


def _labels(log: ExposureLog) -> dict[str, torch.Tensor]:
    return {
        "cust": torch.from_numpy(log.customer.astype(np.int64)),
        "item": torch.from_numpy(log.item.astype(np.int64)),
        "click": torch.from_numpy(log.click.astype(np.float32)),
        "convert": torch.from_numpy(log.convert.astype(np.float32)),
        "amount": torch.from_numpy(log.amount.astype(np.float32)),
        "upgrade": torch.from_numpy(log.upgrade.astype(np.float32)),
    }


def build_net(name: str, world: MultiScenarioWorld, cfg: TamorTrainConfig, log: ExposureLog) -> TamorNet:
    """An untrained network of framework ``name`` sized for ``world``, output biases at ``log``'s base rates
    (with ``Variant.tier_init``, each tier's towers at the rates of that tier's rows of ``log``)."""
    var = variant(name)
    log_gap = world.log_gap()
    tiers = world.tier[log.customer]
    pooled = _init_rates(log, log_gap)
    tier_inits = None
    if var.tier_init:
        # a tier without a purchase in the log has no amount to start from: its towers start at the pooled rates
        tier_inits = [
            _init_rates(log.subset(tiers == t), log_gap) if (log.convert[tiers == t] > 0).any() else pooled
            for t in range(len(TIER_NAMES))
        ]
    return TamorNet(
        var,
        n_user=world.user_x.shape[1],
        n_shared=world.item_shared.shape[1],
        scenario_columns=[np.flatnonzero(s == SPECIFIC_SCENARIO).tolist() for s in range(len(SCENARIO_NAMES))],
        n_tiers=len(TIER_NAMES),
        dim=cfg.dim,
        bias_dim=cfg.user_bias_dim,
        bias_buckets=cfg.user_bias_buckets,
        init=pooled,
        tier_inits=tier_inits,
    )


def fit_framework(
    name: str,
    world: MultiScenarioWorld,
    cfg: TamorTrainConfig,
    seed: int = 0,
    tensors: WorldTensors | None = None,
) -> TamorModel:
    """Train framework ``name`` (a key of :data:`eoca.tamor.model.VARIANTS`) on ``world.train`` less a random
    ``cfg.validation_fraction`` of its rows, which then calibrate the model (see :class:`TamorModel`)."""
    set_threads(cfg.threads)
    tensors = tensors or WorldTensors.of(world)
    stats = FitStats()
    var = variant(name)
    held = np.random.default_rng([seed, 1313, 7]).random(len(world.train)) < cfg.validation_fraction
    fit_log, valid_log = world.train.subset(~held), world.train.subset(held)
    tiers = world.tier[fit_log.customer]
    groups = {t: tiers == t for t in range(len(TIER_NAMES))} if var.per_tier else None
    nets: dict[int, TamorNet] = {}
    for key, mask in (groups or {-1: np.ones(len(fit_log), dtype=bool)}).items():
        log = fit_log.subset(mask)
        torch.manual_seed(seed * 7 + key + 1)
        net = build_net(name, world, cfg, log)
        if net.user_bias is not None:
            net.user_bias.register(world.customer_id[np.unique(log.customer)])
        _fit_net(net, tensors, _labels(log), cfg, seed, stats)
        nets[key] = net
    model = TamorModel(name, nets, stats)
    if len(valid_log):
        model.calibrate(tensors, valid_log)
    return model


def _fit_net(
    net: TamorNet,
    tensors: WorldTensors,
    lab: dict[str, torch.Tensor],
    cfg: TamorTrainConfig,
    seed: int,
    stats: FitStats,
) -> None:
    sparse = [net.user_bias.table.weight] if net.user_bias is not None and net.user_bias.table.sparse else []
    dense = [p for p in net.parameters() if all(p is not q for q in sparse)]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=cfg.lr)]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.lr))
    gen = torch.Generator().manual_seed(seed)
    n = lab["cust"].numel()
    total_steps = cfg.epochs * -(-n // cfg.batch_size)
    step_no = 0
    average = WeightAverage(list(net.parameters()), cfg.ema_decay) if cfg.ema_decay > 0 else None
    net.train()
    for _epoch in range(cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        steps = 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            b = tensors.batch(lab["cust"].index_select(0, idx), lab["item"].index_select(0, idx))
            b.click, b.convert = lab["click"].index_select(0, idx), lab["convert"].index_select(0, idx)
            b.amount, b.upgrade = lab["amount"].index_select(0, idx), lab["upgrade"].index_select(0, idx)
            if cfg.schedule == "cosine":
                # decaying to zero averages out the last steps' noise, which on the small high-holding tier
                # otherwise moves its amount ranking from one training seed to the next
                lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * step_no / total_steps))
                for opt in opts:
                    for group in opt.param_groups:
                        group["lr"] = lr
            step_no += 1
            losses = net.task_losses(b, cfg.user_bias_l2)
            total = sum(losses.values(), torch.zeros(()))
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            total.backward()
            for opt in opts:
                opt.step()
            if average is not None:
                average.update()
            for k, loss in losses.items():
                sums[k] = sums.get(k, 0.0) + float(loss.detach())
            steps += 1
        stats.seconds += time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        stats.rows += n
        for k, v in sums.items():
            stats.task_loss.setdefault(k, []).append(v / max(steps, 1))
    if average is not None:
        average.copy_to_params()
