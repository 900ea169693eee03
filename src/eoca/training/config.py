"""Training configuration: defaults in ``eoca/configs/train.yaml``, then a YAML file, then ``--set`` overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eoca.config import deep_merge, load_config, packaged_config, read_yaml, validate_config
from eoca.errors import ConfigError
from eoca.models.features.encoding import DEFAULT_NEIGHBOURS

DEFAULTS_FILE: Path = packaged_config("train.yaml")


class TrainOptions(BaseModel):
    """How to train, whatever the model: the ``train`` section of a run configuration.

    :class:`TrainConfig` adds which model and its architecture parameters.
    """

    # Unknown keys are errors, so a typo such as ``--set learning_rate=0.1`` fails loudly instead of being ignored.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(16384, ge=1)
    max_epochs: int = Field(10, ge=1)
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    max_train_rows: int | None = Field(None, ge=1)
    grid: bool = False
    grid_lr: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.04, 0.06])
    grid_dropout: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5])
    use_sequences: bool = True
    use_graph: bool = True
    sequence_length: int | None = Field(None, ge=1)
    graph_neighbours: int = Field(DEFAULT_NEIGHBOURS, ge=1)
    batch_order: Literal["rows", "customers"] = "rows"
    num_threads: int | None = Field(None, ge=1)
    predict_threads: int | None = Field(None, ge=1)
    deterministic: bool = True
    selection: Literal["auto", "loss", "ips", "etv_mse", "gini"] = "auto"
    amount_level: Literal["shared", "per_fund"] = "shared"

    @field_validator("grid_lr")
    @classmethod
    def _positive_lrs(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("must be a non-empty list of positive learning rates")
        return v

    @field_validator("grid_dropout")
    @classmethod
    def _dropouts_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 <= x < 1 for x in v):
            raise ValueError("must be a non-empty list of dropout rates in [0, 1)")
        return v


class TrainConfig(TrainOptions):
    """Everything that determines a training run; two runs with equal configs and data give equal models."""

    model: str = "esdpm"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        from eoca.models.zoo import model_names_problem

        problem = model_names_problem([v])
        if problem is not None:
            raise ValueError(problem)
        return v

    def options(self) -> TrainOptions:
        """The model-independent part."""
        return TrainOptions.model_validate(self.model_dump(exclude={"model", "params"}))


def default_train_dict() -> dict[str, Any]:
    """The packaged defaults as a plain mapping."""
    return read_yaml(DEFAULTS_FILE)


def load_train_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Packaged defaults <- ``base`` <- YAML ``path`` <- ``key=value`` overrides, validated (errors name the key)."""
    merged = deep_merge(default_train_dict(), base or {})
    return load_config(TrainConfig, path, overrides, base=merged)


def coerce_train_config(config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """Accept a ready config, a partial mapping (merged over the packaged defaults) or None (the defaults)."""
    if isinstance(config, TrainConfig):
        return config
    if config is None:
        return validate_config(TrainConfig, default_train_dict(), str(DEFAULTS_FILE))
    if not isinstance(config, Mapping):
        raise ConfigError(f"training config must be a TrainConfig or a mapping, got {type(config).__name__}")
    return validate_config(TrainConfig, deep_merge(default_train_dict(), config), "training config")
