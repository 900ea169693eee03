"""The zoo models built on BG/NBD x Gamma-Gamma's prediction: ``bgnbd_gbdt`` (LightGBM boosted from the base margin
log(1 + s)) and ``bgnbd_ziln`` (``mtl_ziln`` with the structural logit and location under its heads)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eoca.data import Dataset
from eoca.data.dataset import split_exposures
from eoca.errors import ConfigError
from eoca.models import FeatureSpace, build_model
from eoca.models.zoo.bgnbd_ziln import PROBABILITY_FLOOR, BgNbdZiln
from eoca.models.zoo.mtl_ziln import MtlZiln
from eoca.training import TrainedModel, train
from tests.data.test_customer_base import CAL_END, _import, _log

HEAVY = "H"
"""A hand-written heavy buyer: 400 a day on the last 40 days of the calibration window, far above anyone else."""


def _heavy_log() -> list[tuple[str, int, float]]:
    return _log() + [(HEAVY, day, 400.0) for day in range(CAL_END - 39, CAL_END + 1)]


@pytest.fixture(scope="module")
def log_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    pytest.importorskip("lifetimes")
    return _import(tmp_path_factory.mktemp("bg"), _heavy_log())


def _column(ds: Dataset, name: str) -> np.ndarray:
    return np.asarray(ds.customers.column(name).to_numpy(), dtype=np.float64)


def test_without_evidence_the_structural_prediction_is_kept_beyond_every_training_amount(log_ds: Dataset) -> None:
    ds = log_ds
    torch.set_num_threads(1)
    # A learning rate of ~0: the trees cannot move the margin, so the model is exactly 1 + s, extrapolation included.
    trained = train(
        ds, {"model": "bgnbd_gbdt", "num_threads": 1, "params": {"value_learning_rate": 1e-12}}, progress=False
    )
    pos = np.arange(ds.n_customers)
    raw = trained.predict_pairs(ds, pos, np.zeros_like(pos), guarded=False)["etv"].astype(np.float64)
    s = _column(ds, "cbm_expected_spend")
    np.testing.assert_allclose(raw, 1.0 + s, rtol=1e-5)
    model = trained.model
    assert model.name == "bgnbd_gbdt"
    heavy = ds.customers.column("customer_id").to_pylist().index(HEAVY)
    max_train = float(split_exposures(ds, "train")["amount"].max())
    assert raw[heavy] > 2 * max_train  # trees alone could not predict above what they saw; the structure does
    # The guard still bounds what reaches metrics and allocations by the largest training amount.
    guarded = trained.predict_pairs(ds, pos, np.zeros_like(pos))["etv"]
    assert trained.guard is not None and float(guarded.max()) <= trained.guard.amount_cap * (1 + 1e-6)


def _seeded_round_trip(ds: Dataset, cfg: dict[str, Any], tmp_path: Path) -> tuple[TrainedModel, dict[str, np.ndarray]]:
    """Train twice with the same seed and once more from the saved run: the test predictions must be identical."""
    trained = train(ds, cfg, tmp_path / "run", progress=False)
    again = train(ds, cfg, progress=False)
    test = split_exposures(ds, "test")
    pred = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"])
    np.testing.assert_array_equal(pred["etv"], again.predict_pairs(ds, test["customer_pos"], test["fund_pos"])["etv"])
    loaded = TrainedModel.load(tmp_path / "run").predict_pairs(ds, test["customer_pos"], test["fund_pos"])
    np.testing.assert_array_equal(pred["etv"], loaded["etv"])
    return trained, pred


def test_the_trees_correct_the_margin_multiplicatively_seeded_and_round_trip(log_ds: Dataset, tmp_path: Path) -> None:
    ds = log_ds
    torch.set_num_threads(1)
    cfg = {"model": "bgnbd_gbdt", "num_threads": 1, "seed": 3, "params": {"value_min_child_samples": 10}}
    trained, pred = _seeded_round_trip(ds, cfg, tmp_path)
    # etv = exp(F(x) + log(1 + s)): the booster's raw score plus the margin, the margin read back exactly.
    model = trained.model
    assert model._value is not None and model._value.num_trees() > 0
    x = model._matrix(trained.bind(ds), "test", 4096)["x"]
    margin = model.margin(x)
    test = split_exposures(ds, "test")
    s = _column(ds, "cbm_expected_spend")[test["customer_pos"]]
    np.testing.assert_allclose(margin, np.log1p(s), rtol=1e-5, atol=1e-6)
    raw = np.asarray(model._value.predict(x, raw_score=True), dtype=np.float64)
    assert np.ptp(raw) > 0.01  # a correction that differs between customers
    unguarded = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"], guarded=False)["etv"]
    np.testing.assert_allclose(unguarded, np.exp(raw + margin), rtol=1e-5)
    assert np.isfinite(pred["etv"]).all() and (pred["etv"] >= 0).all()
    assert ((pred["p"] >= 0) & (pred["p"] <= 1)).all()
    # It scores each pair on its own (scoring under the risk rule skips the forbidden pairs): a pair's values do not
    # depend on the rest of its batch.
    assert model.scores_pairs_alone
    cust, fund = test["customer_pos"], test["fund_pos"]
    whole = trained.predict_pairs(ds, cust, fund)
    pick = np.random.default_rng(0).permutation(cust.size)[: max(1, cust.size // 3)]
    alone = trained.predict_pairs(ds, cust[pick], fund[pick], batch_size=7)
    for key in whole:
        np.testing.assert_array_equal(alone[key], whole[key][pick])


def test_without_the_customer_base_features_it_is_a_clear_error(tmp_path: Path) -> None:
    plain = _import(tmp_path, _log(), option="false")
    with pytest.raises(ConfigError, match=r"no numeric customer feature 'cbm_log_expected_spend'.*customer_base_model"):
        build_model("bgnbd_gbdt", FeatureSpace.fit(plain))
    with pytest.raises(ConfigError, match="'recency_days'"):
        build_model("bgnbd_gbdt", FeatureSpace.fit(plain), {"base_margin": "recency_days"})


def test_without_lifetimes_the_import_it_needs_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lifetimes", None)  # import lifetimes now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'eoca\[peers\]'"):
        _import(tmp_path, _heavy_log())


def test_ziln_margins_are_the_structural_logit_and_location_on_top_of_mtl_ziln(log_ds: Dataset) -> None:
    ds = log_ds
    torch.manual_seed(0)
    space = FeatureSpace.fit(ds)
    model = build_model("bgnbd_ziln", space).eval()
    assert isinstance(model, BgNbdZiln)
    pos = np.arange(ds.n_customers)
    batch = space.bind(ds).pair_batch(pos, np.zeros_like(pos))
    d_logit, d_mu = (t.double().numpy() for t in model.margins(batch))
    stats = {f["name"]: f for f in space.customer_numeric}

    def structural(s: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return np.log(p / (1 - p)), np.log1p(s / p)

    logit, mu = structural(_column(ds, "cbm_expected_spend"), _column(ds, "cbm_p_purchase"))
    logit0, mu0 = structural(
        np.expm1(stats["cbm_log_expected_spend"]["mean"]), np.asarray(stats["cbm_p_purchase"]["mean"])
    )
    np.testing.assert_allclose(d_logit, logit - logit0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_mu, mu - mu0, rtol=1e-4, atol=1e-4)
    heavy = ds.customers.column("customer_id").to_pylist().index(HEAVY)
    assert d_mu[heavy] == d_mu.max()  # the heavy buyer's structural location is the highest
    # The network's own heads are mtl_ziln's, the margins added on top (eval mode: no dropout).
    with torch.no_grad():
        _, cvr, mu_net, sigma = MtlZiln._forward(model, batch)
        _, cvr_h, mu_h, sigma_h = model._forward(batch)
    np.testing.assert_allclose(cvr_h.numpy(), (cvr + model.margins(batch)[0]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(mu_h.numpy(), (mu_net + model.margins(batch)[1]).numpy(), rtol=1e-6)
    torch.testing.assert_close(sigma_h, sigma)


def test_ziln_trains_seeded_and_round_trips(log_ds: Dataset, tmp_path: Path) -> None:
    ds = log_ds
    torch.set_num_threads(1)
    cfg = {"model": "bgnbd_ziln", "seed": 1, "max_epochs": 3, "num_threads": 1}
    trained, pred = _seeded_round_trip(ds, cfg, tmp_path)
    assert np.isfinite(pred["etv"]).all() and (pred["etv"] >= 0).all()
    assert trained.guard is not None and float(pred["etv"].max()) <= trained.guard.amount_cap * (1 + 1e-6)
    plain = _import(tmp_path / "plain", _log(), option="false")
    with pytest.raises(ConfigError, match=r"no numeric customer feature 'cbm_log_expected_spend'.*customer_base_model"):
        build_model("bgnbd_ziln", FeatureSpace.fit(plain))
