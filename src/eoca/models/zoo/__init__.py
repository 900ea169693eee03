"""The model zoo: one small module per model, selected by name.

Each module defines ``MODEL``, a :class:`eoca.models.zoo.common.ZooModel` subclass whose ``DEFAULTS`` are the
model's documented parameters.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eoca.errors import ConfigError
from eoca.models.features import FeatureSpace
from eoca.models.zoo.common import ZooModel

if TYPE_CHECKING:
    from eoca.models.zoo.gbdt import Gbdt

MODEL_NAMES: tuple[str, ...] = (
    "dnn_c",
    "dnn_v",
    "shared_bottom",
    "mmoe",
    "esmm",
    "mtl_ziln",
    "mtl_mse",
    "esdpm_ncg",
    "esdpm",
    "ptofa",
    "gbdt",
    "gbdt_mean",
    "bgnbd_gbdt",
    "bgnbd_ziln",
    "stack",
    "stack_tail",
    "tamor",
)


def model_names_problem(models: list[str] | tuple[str, ...]) -> str | None:
    """Why ``models`` is not a usable list of zoo names (empty, unknown names, repeats), or None if it is."""
    if not models:
        return "give at least one model name, e.g. esmm,esdpm"
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        return f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}"
    if len(set(models)) != len(models):
        return f"a model is listed twice in {','.join(models)}"
    return None


def model_class(name: str) -> type[ZooModel] | type[Gbdt]:
    """The class of zoo model ``name``; unknown names raise :class:`ConfigError` listing the valid ones."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    cls: type[ZooModel] | type[Gbdt] = importlib.import_module(f"eoca.models.zoo.{name}").MODEL
    return cls


def model_defaults(name: str) -> dict[str, Any]:
    """Default parameters of model ``name`` (a fresh copy; lists are copied too)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in model_class(name).DEFAULTS.items()}


def build_model(name: str, features: FeatureSpace, params: dict[str, Any] | None = None) -> ZooModel | Gbdt:
    """Build zoo model ``name`` for ``features`` with ``params`` overriding :func:`model_defaults`.

    Raises :class:`ConfigError` for an unknown model name or a parameter the model does not take.
    """
    merged = model_defaults(name)
    unknown = sorted(set(params or {}) - set(merged))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no parameter(s) {', '.join(unknown)}; its parameters: {', '.join(sorted(merged))}"
        )
    merged.update(params or {})
    _check_params(name, merged)
    return model_class(name)(features, merged)


def _check_params(name: str, params: dict[str, Any]) -> None:
    """Reject values that would fail deep inside a layer with an unhelpful message."""
    for key in ("embedding_dim", "heads", "n_experts", "expert_dim", "tower_hidden", "graph_hidden"):
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool) or params[key] < 1):
            raise ConfigError(f"model {name!r}: parameter {key} must be a positive integer, got {params[key]!r}")
    if "hidden" in params:
        hidden = params["hidden"]
        if not isinstance(hidden, list | tuple) or not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ConfigError(f"model {name!r}: parameter hidden must be a non-empty list of positive ints: {hidden!r}")
    dropout = params.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model {name!r}: parameter dropout must be in [0, 1), got {dropout!r}")
    if "embedding_dim" in params and "heads" in params and params["embedding_dim"] % params["heads"]:
        raise ConfigError(
            f"model {name!r}: embedding_dim ({params['embedding_dim']}) must be divisible by heads ({params['heads']})"
        )
    if "eps" in params and not (isinstance(params["eps"], int | float) and params["eps"] > 0):
        raise ConfigError(f"model {name!r}: parameter eps must be > 0, got {params['eps']!r}")
