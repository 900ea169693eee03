"""ETV prediction models: feature encodings, layers, losses and the model zoo.

Public API: :class:`FeatureSpace` / :class:`BoundFeatures` (encodings), :class:`Batch`, :class:`ModelOutput`,
:class:`EtvModel` (interface), :data:`MODEL_NAMES`, :func:`build_model`, :func:`model_defaults`.
"""

from __future__ import annotations

from eoca.models.base import TASKS, Batch, EtvModel, ModelOutput
from eoca.models.features import BoundFeatures, FeatureSpace
from eoca.models.zoo import MODEL_NAMES, build_model, model_defaults

__all__ = [
    "MODEL_NAMES",
    "TASKS",
    "Batch",
    "BoundFeatures",
    "EtvModel",
    "FeatureSpace",
    "ModelOutput",
    "build_model",
    "model_defaults",
]
