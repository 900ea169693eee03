"""``gbdt_mean``: a LightGBM regressor of E[amount | x] under a Tweedie deviance, and the deviance metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_poisson_deviance, mean_tweedie_deviance

from eoca.data.dataset import split_exposures
from eoca.data.donations import donation_spec, write_donation_sample
from eoca.data.importer import import_dataset
from eoca.errors import ConfigError
from eoca.evaluation import metrics as M
from eoca.models import FeatureSpace, build_model
from eoca.training import TrainedModel, train

FEATURES = ["age", "n_gifts", "avg_gift", "months_since_last", "income"]
SPLIT = "{test_fraction: 0.3, validation_fraction: 0.2, seed: 0}"


@pytest.mark.parametrize("power", [1.0, 1.3, 1.5, 1.8])
def test_tweedie_deviance_matches_scikit_learn(power: float) -> None:
    rng = np.random.default_rng(int(power * 10))
    y = np.where(rng.random(300) < 0.7, 0.0, rng.lognormal(3, 1, 300))
    m = rng.lognormal(1, 1, 300)
    w = rng.uniform(0.1, 3.0, 300)
    expected = (
        mean_poisson_deviance(y, m, sample_weight=w)
        if power == 1.0
        else mean_tweedie_deviance(y, m, sample_weight=w, power=power)
    )
    assert M.tweedie_deviance(y, m, w, power=power) == pytest.approx(expected, rel=1e-10)
    # Minimised by the mean: a constant prediction's deviance is smallest at the (weighted) mean of y.
    mean = float(np.average(y, weights=w))
    at = [M.tweedie_deviance(y, np.full_like(y, c), w, power=power) for c in (0.8 * mean, mean, 1.25 * mean)]
    assert at[1] < at[0] and at[1] < at[2]
    with pytest.raises(ValueError, match="power"):
        M.tweedie_deviance(y, m, power=2.0)


@pytest.fixture(scope="module")
def donations(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("don")
    info = write_donation_sample(root / "d.csv", population=60_000, sample_size=3_000, seed=5)
    (root / "spec.yaml").write_text(
        donation_spec("d.csv", FEATURES, split=SPLIT, population_rate=info["population_rate"], name="don")
    )
    return import_dataset(root / "spec.yaml")


def test_gbdt_mean_estimates_the_population_mean_and_round_trips(donations, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds = donations
    torch.set_num_threads(1)
    trained = train(ds, {"model": "gbdt_mean", "num_threads": 1}, tmp_path / "run", progress=False)
    assert trained.model.tasks == frozenset({"conversion", "etv"})
    test = split_exposures(ds, "test")
    pred = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"])
    etv, w, y = pred["etv"].astype(np.float64), test["weight"], test["amount"]
    assert np.isfinite(etv).all() and (etv >= 0).all()
    assert trained.guard is not None and float(etv.max()) <= trained.guard.amount_cap * (1 + 1e-6)
    # The oversampled sample is 50% donors, the population ~5%: a weighted mean near the population's mean
    # (not the sample's, ten times larger) shows the sampling weights reach the value regressor.
    pop_mean, sample_mean = float(np.average(y, weights=w)), float(y.mean())
    assert 0.6 < float(np.average(etv, weights=w)) / pop_mean < 1.6
    assert sample_mean > 5 * pop_mean
    # It ranks donors: Gini well above a random order's 0, and it beats a constant on weighted MSE.
    assert M.normalized_gini(y, etv, w) > 0.2
    assert M.mse(y, etv, w) < M.mse(y, np.full_like(y, pop_mean), w)
    again = TrainedModel.load(tmp_path / "run").predict_pairs(ds, test["customer_pos"], test["fund_pos"])
    np.testing.assert_array_equal(again["etv"], pred["etv"])
    np.testing.assert_array_equal(again["p"], pred["p"])
    assert trained.history[0]["value_trees"] >= 1


def test_gbdt_mean_tweedie_objective_and_bad_parameters(donations) -> None:  # type: ignore[no-untyped-def]
    space = FeatureSpace.fit(donations)
    bound = space.bind(donations)
    model = build_model("gbdt_mean", space, {"value_objective": "tweedie", "tweedie_variance_power": 1.3})
    record = model.fit_bound(bound, seed=0, num_threads=1, batch_size=4096)  # type: ignore[union-attr]
    assert np.isfinite(record["valid_loss"]) and record["valid_loss"] > 0
    with pytest.raises(ConfigError, match="value_objective"):
        build_model("gbdt_mean", space, {"value_objective": "gamma"})
    with pytest.raises(ConfigError, match="tweedie_variance_power"):
        build_model("gbdt_mean", space, {"tweedie_variance_power": 2.5})
