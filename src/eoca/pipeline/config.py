"""Configuration of ``eoca run``: packaged defaults (``configs/run.yaml``), then a YAML file, then overrides.

Every section is a typed, validated model, checked when the configuration is loaded: a misspelt key or a bad
value in any section (simulator, train, plan...) fails before any data is simulated or any model trained.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from eoca.allocation.plan import DeliveryPlan
from eoca.config import load_config, packaged_config, read_yaml
from eoca.evaluation.metrics import ORACLE
from eoca.tamor.config import TamorConfig
from eoca.training.config import TrainConfig, TrainOptions

if TYPE_CHECKING:
    from eoca.simulate.config import SimulatorConfig

__all__ = [
    "ORACLE",
    "ABTestSection",
    "AllocationSection",
    "OPESection",
    "RunConfig",
    "SimulatorSection",
    "config_to_yaml",
    "default_run_config_path",
    "load_run_config",
]


class _Strict(BaseModel):
    # A misspelt key must fail loudly instead of silently leaving a default in place.
    model_config = ConfigDict(extra="forbid")


class SimulatorSection(_Strict):
    customers: int = Field(100_000, ge=10, description="customers N of the simulated world")
    funds: int = Field(8, ge=1, description="funds k")
    periods: int = Field(4, ge=2, description="delivery periods logged; the last is the offline test period")
    seed: int = Field(0, ge=0, description="seed of the world; the A/B test draws the period after the last one")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="further simulator parameters as nested keys of configs/simulator.yaml, e.g. "
        "{conversion: {target_per_mille: 3}}; world sizes and the seed come from the keys above",
    )
    _config: SimulatorConfig | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _simulator_valid(self) -> SimulatorSection:
        from eoca.config import deep_merge
        from eoca.simulate.config import SimulatorConfig

        for key in ("seed",):
            if key in self.params:
                raise ValueError(f"params.{key}: set simulator.{key} instead")
        world = dict(self.params.get("world") or {})
        for key in ("n_customers", "n_funds", "n_periods"):
            if key in world:
                raise ValueError(f"params.world.{key}: set simulator.customers / funds / periods instead")
        data = deep_merge(
            self.params,
            {
                "seed": self.seed,
                "world": {"n_customers": self.customers, "n_funds": self.funds, "n_periods": self.periods},
            },
        )
        self._config = SimulatorConfig.model_validate(data)
        return self

    def config(self) -> SimulatorConfig:
        """The full simulator configuration this section describes (validated when the section was)."""
        assert self._config is not None
        return self._config


AllocationMethod = Literal["manual", "ha", "ha_ptofa", "exact", "ip"]


class AllocationSection(_Strict):
    methods: list[AllocationMethod] = Field(
        default_factory=lambda: ["manual", "ha", "exact"],  # type: ignore[arg-type]
        description="allocation methods; 'ha' is EOCA Algorithm 1 (K = 1 only), 'ha_ptofa' PTOFA's Eq. 7 (any K)",
    )
    manual_priority: list[str] | None = Field(
        None, description="fund ids in the order the manual baseline fills them (default: by mean score)"
    )
    repair: bool = Field(
        False, description="let HA/manual re-solve exactly the customers they strand (off: the papers' HA)"
    )
    ip_time_limit: float = Field(60.0, gt=0, description="seconds for the 'ip' method")


class ABTestSection(_Strict):
    control: str = Field("esmm+manual", description="framework lifts are measured against: MODEL+METHOD")
    n_bootstrap: int = Field(1000, ge=0, description="paired bootstrap replicates over customers")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the intervals")
    seed: int = Field(0, description="seed of the bootstrap (outcomes use the world's own stream)")


class OPESection(_Strict):
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap replicates over held-out customers")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the intervals")
    seed: int = Field(0, description="seed of the bootstrap")


class RunConfig(_Strict):
    """Everything ``eoca run`` does, in one validated object (written to the run folder as config.yaml)."""

    name: str = Field("eoca-run", description="run name, part of the run folder's name")
    data: str | None = Field(None, description="dataset folder, 'hillstrom', or null for the built-in simulated world")
    simulator: SimulatorSection = Field(default_factory=SimulatorSection)
    models: list[str] = Field(default_factory=lambda: ["esmm", "esdpm"], description="models to train")
    train: TrainOptions = Field(
        default_factory=TrainOptions,
        description="training options shared by every model (keys of configs/train.yaml except model, params)",
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model architecture parameters, model name -> params"
    )
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)
    allocation: AllocationSection = Field(default_factory=AllocationSection)
    ab_test: ABTestSection = Field(default_factory=ABTestSection)
    ope: OPESection = Field(default_factory=OPESection)
    score_chunk: int = Field(65_536, ge=1, description="customers scored per chunk")
    jobs: int | None = Field(
        None,
        ge=1,
        description="models trained and scored at once, each in its own process; null = one after the other below "
        "100,000 exposures, else as many as the CPUs hold at train.num_threads threads each, within the available "
        "memory (eoca.threads.model_jobs); 1 = one after the other in this process. The numbers do not depend on it",
    )
    progress: bool = Field(True, description="show progress bars")
    tamor: TamorConfig | None = Field(
        None, description="multi-scenario TAMOR run instead of the fund pipeline (see docs/tamor.md); off when null"
    )

    @field_validator("models")
    @classmethod
    def _models_known(cls, models: list[str]) -> list[str]:
        from eoca.models.zoo import model_names_problem

        problem = model_names_problem(models)
        if problem is not None:
            raise ValueError(problem)
        if ORACLE in models:
            raise ValueError(f"'{ORACLE}' is reserved for the true-ETV ceiling")
        return models

    @model_validator(mode="after")
    def _methods_fit_the_plan(self) -> RunConfig:
        from eoca.allocation import method_problem

        for method in self.allocation.methods:
            why = method_problem(method, self.plan.K)
            if why is not None:
                raise ValueError(f"allocation.methods: {why} (plan.K = {self.plan.K})")
        return self

    @model_validator(mode="after")
    def _control_is_a_framework(self) -> RunConfig:
        model, _, method = self.ab_test.control.partition("+")
        if model not in self.models or method not in self.allocation.methods:
            raise ValueError(
                f"ab_test.control '{self.ab_test.control}' is not one of the frameworks MODEL+METHOD with MODEL in "
                f"models {self.models} and METHOD in allocation.methods {self.allocation.methods}"
            )
        return self

    def framework_names(self) -> list[str]:
        return [f"{m}+{a}" for m in self.models for a in self.allocation.methods]

    def train_config(self, model: str) -> TrainConfig:
        """The full training configuration of ``model``: the shared ``train`` options and its parameters."""
        return TrainConfig(**self.train.model_dump(), model=model, params=self.model_params.get(model, {}))


def default_run_config_path() -> Path:
    return packaged_config("run.yaml")


def load_run_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), data: str | None = None
) -> RunConfig:
    """Packaged defaults <- YAML ``path`` <- ``KEY=VALUE`` overrides <- ``--data``; errors name the key."""
    base = read_yaml(default_run_config_path())
    cfg = load_config(RunConfig, path, overrides, base=base)
    if data is not None:
        cfg = cfg.model_copy(update={"data": data})
    return cfg


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
