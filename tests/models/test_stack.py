"""``stack``: the convex blend ``w * s + (1 - w) * f`` of BG/NBD x Gamma-Gamma's expected spend ``s`` and a flexible
network's bounded ETV ``f``, with ``w`` chosen on the validation split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eoca.data import Dataset
from eoca.data.dataset import split_exposures
from eoca.errors import ConfigError
from eoca.models import FeatureSpace, build_model
from eoca.models.zoo.bgnbd_ziln import BgNbdZiln
from eoca.models.zoo.stack import Stack, choose_weight
from eoca.training import train
from eoca.training.trainer import dataset_fund_ids
from tests.data.test_customer_base import _import, _log
from tests.models.test_bgnbd_hybrids import _column, _seeded_round_trip, log_ds  # noqa: F401 (fixture)

STATS = {"n_converters": 100.0, "max_amount": 1e6, "log1p_min": 0.0, "log1p_max": 14.0, "log1p_sigma": 1.0}
"""Label statistics whose bounds never bind on the synthetic arrays below."""


def _arrays(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.9, n), rng.gamma(2.0, 20.0, n), rng.gamma(0.5, 80.0, n)


@pytest.mark.parametrize("metric", ["deviance", "mse"])
@pytest.mark.parametrize(("truth", "expected"), [(0.0, 0.0), (0.3, 0.3), (0.7, 0.7), (1.0, 1.0)])
def test_the_weight_that_generated_the_labels_is_chosen(metric: str, truth: float, expected: float) -> None:
    p, f, s = _arrays()
    y = truth * s + (1.0 - truth) * f  # the blend itself: its recalibration factor is 1 and its loss 0
    n = y.size
    fund, conv = np.zeros(n, dtype=np.int64), np.ones(n)
    assert choose_weight(p, f, s, y, fund, conv, None, ["f0"], STATS, metric, 10) == expected


def test_a_flat_score_keeps_the_network_and_weights_enter_the_choice() -> None:
    p, f, _ = _arrays()
    n = f.size
    fund, conv = np.zeros(n, dtype=np.int64), np.ones(n)
    # s = f: every weight gives the same prediction, so the tie goes to the network alone
    assert choose_weight(p, f, f.copy(), f * 1.5, fund, conv, None, ["f0"], STATS, "mse", 20) == 0.0
    # Labels from w = 0.2 on the first half and w = 0.8 on the second: the sampling weights decide which half counts.
    _, f, s = _arrays(1)
    y = np.concatenate([0.2 * s[:200] + 0.8 * f[:200], 0.8 * s[200:] + 0.2 * f[200:]])
    first = np.r_[np.full(200, 1.0), np.full(200, 1e-6)]
    assert choose_weight(p, f, s, y, fund, conv, first, ["f0"], STATS, "mse", 10) == 0.2
    assert choose_weight(p, f, s, y, fund, conv, first[::-1].copy(), ["f0"], STATS, "mse", 10) == 0.8


def test_stack_trains_seeded_round_trips_and_predicts_the_chosen_blend(log_ds: Dataset, tmp_path: Path) -> None:  # noqa: F811
    ds = log_ds
    torch.set_num_threads(1)
    cfg = {"model": "stack", "seed": 1, "max_epochs": 3, "num_threads": 1, "params": {"blend_metric": "mse"}}
    trained, pred = _seeded_round_trip(ds, cfg, tmp_path)
    model = trained.model
    assert isinstance(model, Stack)
    bound = trained.bind(ds)
    test = split_exposures(ds, "test")
    with torch.inference_mode():
        out, f, s = model.parts(bound.pair_batch(test["customer_pos"], test["fund_pos"]))
    np.testing.assert_allclose(s, _column(ds, "cbm_expected_spend")[test["customer_pos"]], rtol=1e-5, atol=1e-4)
    w = float(model.blend_weight)
    assert w * 20 == round(w * 20) and 0.0 <= w <= 1.0
    raw = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"], guarded=False)
    np.testing.assert_allclose(raw["etv"], w * s + (1.0 - w) * f, rtol=1e-5)
    np.testing.assert_array_equal(raw["p"], out.p.numpy())
    # w is the validation split's choice, recomputed from the parts on that split
    valid = bound.exposure_labels("valid")
    with torch.inference_mode():
        vout, vf, vs = model.parts(bound.pair_batch(valid["customer_pos"], valid["fund_pos"]))
    y, fund, conv = valid["amount"].astype(np.float64), valid["fund_pos"], valid["converted"]
    fund_ids = dataset_fund_ids(ds)
    again = choose_weight(
        vout.p.double().numpy(), vf, vs, y, fund, conv, None, fund_ids, trained.features.label_stats, "mse", 20
    )
    assert again == w
    # A per-epoch score (final=False) leaves the weight alone; the fit after training chooses it again.
    model.blend_weight.fill_(0.5)
    trained.fit_guard(ds, final=False)
    assert float(model.blend_weight) == 0.5
    trained.fit_guard(ds)
    assert float(model.blend_weight) == w
    assert trained.guard is not None and float(pred["etv"].max()) <= trained.guard.amount_cap * (1 + 1e-6)
    assert np.isfinite(pred["etv"]).all() and (pred["etv"] >= 0).all()


def test_the_flexible_model_and_its_parameters(log_ds: Dataset) -> None:  # noqa: F811
    space = FeatureSpace.fit(log_ds)
    model = build_model("stack", space, {"flexible": "bgnbd_ziln", "dropout": 0.3})
    assert isinstance(model, Stack) and isinstance(model.flexible, BgNbdZiln)
    assert model.flexible.params["dropout"] == 0.3 and float(model.blend_weight) == 0.0
    ptofa = build_model("stack", space, {"flexible": "ptofa", "flexible_params": {"eps": 0.5}})
    assert isinstance(ptofa, Stack) and ptofa.flexible.params["eps"] == 0.5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"flexible": "stack"}, "cannot be 'stack', a stack itself"),
        ({"flexible": "stack_tail"}, "cannot be 'stack_tail', a stack itself"),
        ({"trees": "mtl_ziln"}, "trees must name a LightGBM zoo model.*'mtl_ziln'"),
        ({"trees": "gbdtt"}, "unknown model 'gbdtt'"),
        ({"trees": "gbdt", "trees_weight": 1.5}, r"trees_weight must be a number in \[0, 1\], got 1.5"),
        ({"trees": "gbdt", "trees_params": [1]}, "trees_params must be a mapping"),
        ({"trees": "gbdt", "trees_params": {"leaves": 3}}, r"model 'gbdt' has no parameter\(s\) leaves"),
        ({"tail_quantile": 1.0}, r"tail_quantile must be a number in \(0, 1\) or null, got 1.0"),
        ({"tail_quantile": "top"}, "tail_quantile must be a number"),
        ({"flexible": "gbdt"}, "must be a network.*'gbdt'"),
        ({"flexible": "mtl_zilnn"}, "unknown model 'mtl_zilnn'"),
        ({"blend_metric": "gini"}, "blend_metric must be one of deviance, mse"),
        ({"blend_steps": -1}, "blend_steps must be a non-negative integer"),
        ({"flexible_params": [1]}, "flexible_params must be a mapping"),
        ({"base_spend": "nope"}, r"no numeric customer feature 'nope' \(params.base_spend\)"),
    ],
)
def test_bad_parameters_are_clear_errors(log_ds: Dataset, params: dict[str, object], message: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        build_model("stack", FeatureSpace.fit(log_ds), params)


def test_without_the_customer_base_features_it_names_the_import_option(tmp_path: Path) -> None:
    plain = _import(tmp_path, _log(), option="false")
    with pytest.raises(ConfigError, match=r"no numeric customer feature 'cbm_log_expected_spend'.*customer_base_model"):
        build_model("stack", FeatureSpace.fit(plain))
    with pytest.raises(ConfigError, match=r"model 'stack' has no parameter\(s\) blend_metrics"):
        train(plain, {"model": "stack", "params": {"blend_metrics": "mse"}}, progress=False)


def test_stack_tail_hands_the_tail_to_the_structure_and_averages_network_and_trees(
    log_ds: Dataset,  # noqa: F811
    tmp_path: Path,
) -> None:
    ds = log_ds
    torch.set_num_threads(1)
    cfg = {"model": "stack_tail", "seed": 2, "max_epochs": 2, "num_threads": 1}
    trained, pred = _seeded_round_trip(ds, cfg, tmp_path)
    model = trained.model
    assert isinstance(model, Stack) and model.trees is not None and model.trees_fitted
    assert float(model.blend_weight) == 0.0  # blend_steps 0: nothing chosen on validation
    # The threshold is the 99th percentile of the training customers' structural spend, exactly.
    s_all = _column(ds, "cbm_expected_spend")
    train_s = s_all[split_exposures(ds, "train")["customer_pos"]]
    threshold = float(model.tail_threshold)
    np.testing.assert_allclose(threshold, np.quantile(train_s, 0.99), rtol=1e-5)
    # The trees are the zoo's gbdt fitted with the training seed: the same as gbdt trained on its own.
    alone = train(ds, {"model": "gbdt", "seed": 2, "num_threads": 1}, progress=False)
    test = split_exposures(ds, "test")
    bound = trained.bind(ds)
    batch = bound.pair_batch(test["customer_pos"], test["fund_pos"])
    with torch.inference_mode():
        _, net = model._bounded_etv(model.flexible, batch)
        _, trees = model._bounded_etv(model.trees, batch)
    g = alone.predict_pairs(ds, test["customer_pos"], test["fund_pos"], guarded=False)
    np.testing.assert_allclose(trees, model._bounds.bound(g, "eoca")["etv"], rtol=1e-6)
    s = s_all[test["customer_pos"]]
    tail = s >= threshold
    raw = trained.predict_pairs(ds, test["customer_pos"], test["fund_pos"], guarded=False)["etv"]
    np.testing.assert_allclose(raw, np.where(tail, s, 0.5 * net + 0.5 * trees), rtol=1e-5, atol=1e-4)
    # Before the fit after training (per-epoch scores), the network alone: trees unused, nobody in the tail.
    fresh = build_model("stack_tail", trained.features)
    unfitted = {"trees_state": torch.zeros(0, dtype=torch.uint8), "tail_threshold": torch.tensor(math.inf)}
    fresh.load_state_dict(model.state_dict() | unfitted)
    assert isinstance(fresh, Stack) and not fresh.trees_fitted
    fresh.eval()
    with torch.inference_mode():
        np.testing.assert_allclose(fresh.predict(batch).etv.numpy(), net, rtol=1e-5)
    assert trained.guard is not None and float(pred["etv"].max()) <= trained.guard.amount_cap * (1 + 1e-6)


def test_a_plain_stack_keeps_its_saved_state(log_ds: Dataset) -> None:  # noqa: F811
    # Runs saved before the optional parts existed load unchanged: a plain stack has no new state.
    keys = set(build_model("stack", FeatureSpace.fit(log_ds)).state_dict())
    assert not {k for k in keys if k.startswith(("trees", "tail_threshold"))}
    assert build_model("stack", FeatureSpace.fit(log_ds)).trees is None
