"""A tiny simulated world shared by the training tests (2,000 customers, raised conversion rate so that a
few hundred conversions exist and losses have something to learn)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eoca.data import Dataset
from eoca.simulate import load_simulator_config, simulate

TINY_WORLD = [
    "world.n_customers=2000",
    "world.n_merchants=60",
    "conversion.ctr_intercept=-1.5",
    "conversion.target_per_mille=40",
]

# Small networks keep every test in seconds on two cores; the model architecture is the zoo's own.
SMALL = {"max_epochs": 3, "patience": 3, "batch_size": 512, "num_threads": 1}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_world")
    simulate(load_simulator_config(None, TINY_WORLD)).save(root)
    return root


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> Dataset:
    return Dataset.load(tiny_dir)


@pytest.fixture
def pairs_asked(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[int]]:
    """A function that starts counting the pairs asked of ``TrainedModel.predict_pairs`` (one entry per call) and
    returns the list it appends to; the predictions themselves are unchanged."""
    from eoca.training import TrainedModel

    def start() -> list[int]:
        asked: list[int] = []
        predict_pairs = TrainedModel.predict_pairs

        def counting(self: TrainedModel, dataset: Dataset, cust: np.ndarray, *args: Any, **kwargs: Any) -> Any:
            asked.append(int(np.asarray(cust).size))
            return predict_pairs(self, dataset, cust, *args, **kwargs)

        monkeypatch.setattr(TrainedModel, "predict_pairs", counting)
        return asked

    return start
