"""Configuration of ``eoca run``: defaults in ``src/eoca/configs/run.yaml``, then a YAML file, then overrides."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eoca.config import load_config, read_yaml
from eoca.tamor.config import TamorConfig

ORACLE = "oracle"
"""Name of the pseudo-model whose scores are the simulator's true ETV (the ceiling of the A/B test)."""


class _Strict(BaseModel):
    # A misspelt key must fail loudly instead of silently leaving a default in place.
    model_config = ConfigDict(extra="forbid")


class SimulatorSection(_Strict):
    customers: int = Field(100_000, ge=10, description="customers N of the simulated world")
    funds: int = Field(8, ge=1, description="funds k")
    periods: int = Field(4, ge=2, description="delivery periods logged; the last is the offline test period")
    seed: int = Field(0, description="seed of the world; the A/B test draws the period after the last one")
    set: list[str] = Field(
        default_factory=list, description="further simulator overrides KEY=VALUE (see configs/simulator.yaml)"
    )


class PlanSection(_Strict):
    K: int = Field(1, ge=1, description="funds shown to each customer")
    shares: Literal["logged", "uniform"] | dict[str, float] = Field(
        "logged",
        description="share of the K*N delivery slots per fund: 'logged' (each fund's share of the logged "
        "exposures in the evaluation period), 'uniform', or a mapping fund_id -> share (summing to 1); "
        "rounded to counts by the largest-remainder rule",
    )
    demands: dict[str, int] | None = Field(None, description="exact deliveries per fund_id; overrides shares")
    risk_rule: bool = Field(True, description="show a customer only funds with risk level <= their tolerance")


AllocationMethod = Literal["manual", "ha", "ha_ptofa", "exact", "ip"]


class AllocationSection(_Strict):
    methods: list[AllocationMethod] = Field(
        default_factory=lambda: ["manual", "ha", "exact"],  # type: ignore[arg-type]
        description="allocation methods; 'ha' is EOCA Algorithm 1 (K = 1; with K > 1 it runs PTOFA's Eq. 7)",
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
    train: dict[str, Any] = Field(
        default_factory=dict, description="training options shared by every model (see configs/train.yaml)"
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model architecture parameters, model name -> params"
    )
    plan: PlanSection = Field(default_factory=PlanSection)
    allocation: AllocationSection = Field(default_factory=AllocationSection)
    ab_test: ABTestSection = Field(default_factory=ABTestSection)
    ope: OPESection = Field(default_factory=OPESection)
    score_chunk: int = Field(65_536, ge=1, description="customers scored per chunk")
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


def default_run_config_path() -> os.PathLike[str]:
    return resources.files("eoca") / "configs" / "run.yaml"  # type: ignore[return-value]


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
