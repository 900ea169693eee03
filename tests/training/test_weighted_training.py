"""Sampling weights: an oversampled response file trains models whose probabilities refer to the population."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eoca.data.donations import donation_spec, write_donation_sample
from eoca.data.importer import import_dataset
from eoca.pipeline.evaluate import offline_metrics, split_exposures
from eoca.training import train

FEATURES = ["n_gifts", "avg_gift", "months_since_last", "income"]
SPLIT = "{test_fraction: 0.3, validation_fraction: 0.15, seed: 0}"


@pytest.fixture(scope="module")
def donation_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("don")
    info = write_donation_sample(root / "d.csv", population=40_000, sample_size=2_000, seed=1)
    assert info["sample_rate"] == 0.5 and info["population_rate"] < 0.1
    return root, info["population_rate"]


@pytest.mark.parametrize("model", ["dnn_c", "gbdt"])
def test_weights_make_probabilities_refer_to_the_population(donation_files: tuple[Path, float], model: str) -> None:
    root, rate = donation_files
    cfg = {"model": model, "max_epochs": 4, "patience": 4, "batch_size": 128, "num_threads": 1, "lr": 0.01}
    mean_p = {}
    for label, population_rate in (("weighted", rate), ("plain", None)):
        spec = donation_spec("d.csv", FEATURES, split=SPLIT, population_rate=population_rate, name="don")
        (root / f"{label}.yaml").write_text(spec)
        ds = import_dataset(root / f"{label}.yaml")
        trained = train(ds, cfg, None, progress=False)
        lab = split_exposures(ds, "test")
        p = trained.predict_pairs(ds, lab["customer_pos"], lab["fund_pos"])["p"]
        w = lab.get("weight")
        mean_p[label] = float(np.average(p, weights=w))
        metrics = offline_metrics(trained, ds, "test").to_row()
        assert metrics["logloss"] is not None
    assert mean_p["plain"] > 0.3, "unweighted training learns the sample's 50% rate"
    assert mean_p["weighted"] == pytest.approx(rate, abs=0.03), "weighted training learns the population rate"
