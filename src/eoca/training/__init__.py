"""Training and scoring of the ETV model zoo.

* :class:`TrainConfig`, :func:`load_train_config`: the configuration (defaults in ``eoca/configs/train.yaml``).
* :func:`train` -> :class:`TrainedModel` (``save`` / ``load`` / ``predict_pairs`` / ``score_matrix``).
* :func:`write_scores`: every customer x fund, streamed to Parquet.
"""

from eoca.training.config import TrainConfig, load_train_config
from eoca.training.scoring import write_scores
from eoca.training.trainer import TrainedModel, train

__all__ = ["TrainConfig", "TrainedModel", "load_train_config", "train", "write_scores"]
