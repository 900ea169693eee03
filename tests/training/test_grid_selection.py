"""Grid search on oversampled donation-like data: selected by a metric an exploding model cannot win, and no
predicted ETV above the guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eoca.data.dataset import split_exposures
from eoca.data.donations import donation_spec, write_donation_sample
from eoca.data.importer import import_dataset
from eoca.evaluation import metrics as M
from eoca.training import TrainedModel, train

FEATURES = ["age", "n_gifts", "avg_gift", "last_gift", "months_since_last", "income"]
SPLIT = "{test_fraction: 0.3, validation_fraction: 0.2, seed: 0}"


@pytest.mark.parametrize("selection", ["etv_mse", "gini"])
def test_grid_never_exceeds_the_guard_and_selects_near_the_best_mse(tmp_path: Path, selection: str) -> None:
    info = write_donation_sample(tmp_path / "d.csv", population=40_000, sample_size=2_000, seed=3)
    (tmp_path / "spec.yaml").write_text(
        donation_spec("d.csv", FEATURES, split=SPLIT, population_rate=info["population_rate"], name="don")
    )
    ds = import_dataset(tmp_path / "spec.yaml")
    out = tmp_path / "run"
    cfg = {
        "model": "esdpm_ncg",
        "grid": True,
        "grid_lr": [0.01, 0.06],
        "grid_dropout": [0.1, 0.5],
        "selection": selection,
        "max_epochs": 3,
        "patience": 3,
        "batch_size": 128,
        "num_threads": 1,
    }
    winner = train(ds, cfg, out, progress=False)
    test = split_exposures(ds, "test")
    every = np.arange(ds.n_customers)
    mse = {}
    for point in sorted((out / "grid").iterdir()):
        model = TrainedModel.load(point)
        etv = model.predict_pairs(ds, every, np.zeros_like(every))["etv"]
        assert model.guard is not None
        assert float(etv.max()) <= model.guard.amount_cap * (1 + 1e-6), f"{point.name}: ETV above the guard"
        pred = model.predict_pairs(ds, test["customer_pos"], test["fund_pos"])["etv"]
        mse[point.name] = M.mse(test["amount"], pred, test["weight"])
    chosen = M.mse(
        test["amount"], winner.predict_pairs(ds, test["customer_pos"], test["fund_pos"])["etv"], test["weight"]
    )
    assert chosen <= 2.0 * min(mse.values()), (chosen, mse)
    grid = json.loads((out / "grid.json").read_text())
    assert {g["selection"] for g in grid} == {selection}
