"""One TAMOR comparison end to end: world -> every framework trained -> offline metrics -> slates -> simulated
next period with common random numbers (the oracle as ceiling)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eoca.evaluation.metrics import ORACLE
from eoca.tamor.config import TamorConfig
from eoca.tamor.evaluate import (
    PeriodResult,
    build_slates,
    offline_metrics,
    oracle_scores,
    output_scores,
    simulate_next_period,
)
from eoca.tamor.train import TamorModel, WorldTensors, fit_framework
from eoca.tamor.world import MultiScenarioWorld, generate_multi_scenario_world


@dataclass
class TamorResult:
    """What :func:`run_comparison` measured.

    ``offline[name]``: rows of :func:`eoca.tamor.evaluate.offline_metrics`; ``period``: the simulated next
    period; ``throughput[name]``: training samples per second (``throughput_cpu``: per CPU-second of the
    training process); ``tier_counts``: customers per tier.
    """

    seed: int
    tier_counts: list[int]
    offline: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    throughput_cpu: dict[str, float] = field(default_factory=dict)
    period: PeriodResult | None = None


def run_comparison(cfg: TamorConfig, world: MultiScenarioWorld | None = None) -> TamorResult:
    """Generate the world of ``cfg`` (unless given), train ``cfg.frameworks`` and compare them."""
    world = world or generate_multi_scenario_world(cfg.world, cfg.seed)
    tensors = WorldTensors.of(world)
    result = TamorResult(seed=cfg.seed, tier_counts=world.tier_counts().tolist())
    slates: dict[str, np.ndarray] = {}
    for name in cfg.frameworks:
        model: TamorModel = fit_framework(name, world, cfg.train, cfg.seed, tensors)
        result.throughput[name] = model.stats.samples_per_second
        result.throughput_cpu[name] = model.stats.samples_per_cpu_second
        result.offline[name] = offline_metrics(world, model.predict(tensors, world.test.customer, world.test.item))
        slates[name] = build_slates(output_scores(model.score_matrix(world, tensors), world, cfg.rank), world, cfg.rank)
    slates[ORACLE] = build_slates(oracle_scores(world, cfg.rank), world, cfg.rank)
    result.period = simulate_next_period(
        world,
        slates,
        control=cfg.control,
        oracle=ORACLE,
        cfg=cfg.evaluation,
        seed=cfg.seed,
    )
    return result
