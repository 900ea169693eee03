"""Typed results of ``eoca run``, shared by the orchestrator (:mod:`eoca.pipeline.run`) and the report
(:mod:`eoca.pipeline.report`) so that neither imports the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from eoca.data import Dataset
from eoca.evaluation.allocation_value import AllocationValue
from eoca.evaluation.compare import OfflineMetrics
from eoca.evaluation.online import ABTestResult
from eoca.evaluation.ope import OPEResult
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
    offline: OfflineMetrics
    etv: np.ndarray  # float32 (n_eval, k): predicted ETV of the evaluation customers
    p: np.ndarray  # float32 (n_eval, k): predicted conversion probability
    test_pred: dict[str, np.ndarray]  # predictions on the test exposures, keys etv and p (n_test,)
    train_seconds: float
    score_seconds: float
    epochs: int
    valid_value: float = float("nan")  # SNIPS decision value on the validation split (NaN without propensities)


OnlineKind = Literal["simulated_ab", "ips", "none"]


@dataclass(frozen=True)
class OnlineEvaluation:
    """Step 6 of a run: how the allocations were evaluated online, and the result.

    Attributes:
        kind: ``simulated_ab`` (simulated data: ``ab_test`` is set), ``ips`` (a randomized log:
            ``policy_values`` is set, its ``reference`` the best single arm) or ``none`` (neither is possible).
        note: how the evaluation was made, or why there is none, in words for the report.
    """

    kind: OnlineKind
    note: str
    ab_test: ABTestResult | None = None
    policy_values: OPEResult | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``online_*``, ``ab_test*`` and ``policy_*`` entries of metrics.json."""
        out: dict[str, Any] = {"online_kind": self.kind, "online_note": self.note}
        if self.ab_test is not None:
            out["ab_test"] = self.ab_test.to_rows()
            out["ab_test_control"] = self.ab_test.control
            out["ab_test_oracle"] = self.ab_test.oracle
        if self.policy_values is not None:
            out["policy_values"] = self.policy_values.to_rows()
            out["policy_reference"] = self.policy_values.reference
        return out


@dataclass(frozen=True)
class DatasetSummary:
    """The data a run worked on; ``evaluation_customers`` are the customers of the delivery plan."""

    name: str
    simulated: bool
    customers: int
    funds: int
    exposures: int
    evaluation_customers: int


@dataclass(frozen=True)
class PlanSummary:
    """The delivery plan every allocation had to meet.

    Attributes:
        K: funds per customer.
        risk_rule: whether a customer sees only funds at or below their risk tolerance.
        shares_rule: how the demands were derived, in words.
        demand: fund id (as text) -> customers to deliver, in fund order.
        risk_levels: each fund's risk level, in fund order.
    """

    K: int
    risk_rule: bool
    shares_rule: str
    demand: dict[str, int]
    risk_levels: list[int]


@dataclass(frozen=True)
class TrainingSummary:
    """One model's training: epochs, seconds, and its validation decision value (None without propensities)."""

    model: str
    epochs: int
    train_s: float
    score_s: float
    valid_decision_value: float | None


@dataclass(frozen=True)
class RunMetrics:
    """Every number of a run; :meth:`to_json` is the content of ``metrics.json``.

    Attributes:
        offline: model name -> its offline metrics on the test split, in configured order.
        allocation: one allocation value per framework, in report order.
        reproducibility: library versions, platform and the settings that fix the run's numbers.
        timings_s: wall seconds per step and ``total``.
        summary: the run's findings in sentences (the report's summary).
    """

    date: str
    dataset: DatasetSummary
    plan: PlanSummary
    offline: dict[str, OfflineMetrics]
    training: tuple[TrainingSummary, ...]
    allocation: tuple[AllocationValue, ...]
    primary_framework: str
    reproducibility: dict[str, Any]
    online: OnlineEvaluation
    timings_s: dict[str, float]
    summary: tuple[str, ...] = ()

    def offline_rows(self) -> list[dict[str, Any]]:
        """One row per model: ``model`` then its metrics (``offline_metrics.csv``)."""
        return [{"model": name, **m.to_row()} for name, m in self.offline.items()]

    def allocation_rows(self) -> list[dict[str, Any]]:
        """One row per framework (``allocation_value.csv``)."""
        return [v.to_row() for v in self.allocation]

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``metrics.json`` (its keys are what downstream readers rely on)."""
        return {
            "date": self.date,
            "dataset": asdict(self.dataset),
            "plan": asdict(self.plan),
            "offline": self.offline_rows(),
            "training": [asdict(t) for t in self.training],
            "allocation": self.allocation_rows(),
            "primary_framework": self.primary_framework,
            "reproducibility": dict(self.reproducibility),
            **self.online.to_json(),
            "timings_s": dict(self.timings_s),
            "summary": list(self.summary),
        }


@dataclass
class RunResult:
    """What a run produced; ``folder`` holds every artefact."""

    folder: Path
    config: RunConfig
    dataset_name: str
    models: list[ModelRun]
    plan: Plan
    frameworks: list[FrameworkRun]
    metrics: RunMetrics
    timings: dict[str, float] = field(default_factory=dict)
