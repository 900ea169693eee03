"""Typed results of ``eoca run``, shared by the orchestrator (:mod:`eoca.pipeline.run`) and the report
(:mod:`eoca.pipeline.report`) so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eoca.data import Dataset
from eoca.pipeline.config import RunConfig
from eoca.pipeline.frameworks import FrameworkRun, Plan

if TYPE_CHECKING:
    from eoca.simulate import TruthArrays


@dataclass(frozen=True)
class RunData:
    """The data of a run, opened once: the dataset and, for a simulated world, its true arrays and seed.

    Attributes:
        dataset: the validated tables.
        truth: the simulator's true p, mu, sigma and ETV as (N, k) matrices, or None for real data.
        world_seed: the seed the simulated world was generated with (its outcome streams derive from it),
            or None for real data.
    """

    dataset: Dataset
    truth: TruthArrays | None = None
    world_seed: int | None = None


@dataclass
class ModelRun:
    """One trained model's outputs used downstream."""

    name: str
    offline: dict[str, Any]
    etv: np.ndarray  # float32 (n_eval, k): predicted ETV of the evaluation customers
    p: np.ndarray  # float32 (n_eval, k): predicted conversion probability
    test_pred: dict[str, np.ndarray]  # predictions on the test exposures, keys etv and p (n_test,)
    train_seconds: float
    score_seconds: float
    epochs: int
    valid_value: float = float("nan")  # SNIPS decision value on the validation split (NaN without propensities)


@dataclass
class RunResult:
    """What a run produced; ``folder`` holds every artefact."""

    folder: Path
    config: RunConfig
    dataset_name: str
    models: list[ModelRun]
    plan: Plan
    frameworks: list[FrameworkRun]
    online: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
