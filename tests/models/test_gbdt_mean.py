"""``gbdt_mean``: a LightGBM regressor of E[amount | x] under a Tweedie deviance, and the deviance metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
from sklearn.metrics import mean_poisson_deviance, mean_tweedie_deviance

from eoca.data.dataset import split_exposures
from eoca.data.donations import donation_spec, write_donation_sample
from eoca.data.importer import import_dataset
from eoca.errors import ConfigError
from eoca.evaluation import metrics as M
from eoca.models import FeatureSpace, build_model
from eoca.models.zoo.gbdt_mean import response_odds_ratio
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
def donation_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the sample ``d.csv``, its truth ``t.csv`` and the spec ``spec.yaml``."""
    root = tmp_path_factory.mktemp("don")
    info = write_donation_sample(
        root / "d.csv", population=60_000, sample_size=3_000, seed=5, truth_path=root / "t.csv"
    )
    (root / "spec.yaml").write_text(
        donation_spec("d.csv", FEATURES, split=SPLIT, population_rate=info["population_rate"], name="don")
    )
    return root


@pytest.fixture(scope="module")
def donations(donation_files: Path):  # type: ignore[no-untyped-def]
    return import_dataset(donation_files / "spec.yaml")


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


def test_gbdt_mean_maps_a_response_based_sample_to_the_population(donations, donation_files: Path) -> None:  # type: ignore[no-untyped-def]
    ds = donations
    w = np.asarray(ds.exposures.column("weight").to_numpy())
    conv = np.asarray(ds.exposures.column("converted").to_numpy())
    k = response_odds_ratio(w, conv)
    assert k is not None and k == pytest.approx(w[conv > 0][0] / w[conv == 0][0])
    assert response_odds_ratio(w * np.linspace(1.0, 2.0, w.size), conv) is None  # weights vary within a class
    assert response_odds_ratio(None, conv) is None and response_odds_ratio(w, np.ones_like(conv)) is None
    # The Bayes predictor from the file's features (the generator's truth): the design-aware fit's expected MSE
    # above it is well below the weighted regressor's, whose small leaves of down-weighted donors over-shoot.
    truth = pacsv.read_csv(
        donation_files / "t.csv", convert_options=pacsv.ConvertOptions(column_types={"CONTROLN": pa.string()})
    )
    best = dict(zip(truth.column("CONTROLN").to_pylist(), truth.column("etv_observed").to_pylist(), strict=True))
    ids = ds.customers.column("customer_id").to_pylist()
    test = split_exposures(ds, "test")
    ceiling, wt = np.array([best[ids[int(c)]] for c in test["customer_pos"]]), test["weight"]
    excess = {}
    for mode in ("auto", "weighted"):
        cfg = {"model": "gbdt_mean", "num_threads": 1, "params": {"value_weighting": mode}}
        trained = train(ds, cfg, None, progress=False)
        assert (trained.model._odds_ratio is not None) == (mode == "auto")  # type: ignore[attr-defined]
        etv = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"])["etv"].astype(np.float64)
        excess[mode] = float(np.average((ceiling - etv) ** 2, weights=wt))
    assert excess["auto"] < 0.75 * excess["weighted"]
    with pytest.raises(ConfigError, match="value_weighting"):
        build_model("gbdt_mean", FeatureSpace.fit(ds), {"value_weighting": "none"})
