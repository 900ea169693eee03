"""Trainer: loss falls, save/load round trip, exact resume, safe loading, grid search, config errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eoca.data import Dataset
from eoca.errors import ConfigError, DataValidationError
from eoca.models import FeatureSpace
from eoca.models.features import BoundFeatures
from eoca.training import TrainConfig, TrainedModel, load_train_config, train
from eoca.training import trainer as trainer_module
from eoca.training.trainer import CHECKPOINT_FILE, MODEL_FILE, epoch_seed

from .conftest import SMALL


def _cfg(**kw: Any) -> dict[str, Any]:
    return {**SMALL, **kw}


def test_training_loss_falls_and_run_folder_is_complete(tiny: Dataset, tmp_path: Path) -> None:
    trained = train(tiny, _cfg(model="esdpm"), tmp_path, progress=False)
    losses = [h["train_loss"] for h in trained.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    for name in (MODEL_FILE, CHECKPOINT_FILE, "config.yaml", "metrics.json"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_epoch"] >= 1
    if metrics["selection"] == "loss":
        assert metrics["best_valid_loss"] == min(h["valid_loss"] for h in trained.history)
    else:  # enough matched validation conversions: early stopping keeps the highest decision value
        assert metrics["selection"] == "ips"
        assert metrics["best_score"] == -max(h["valid_value"] for h in trained.history)


def test_save_load_gives_identical_predictions(tiny: Dataset, tmp_path: Path) -> None:
    trained = train(tiny, _cfg(model="esdpm", max_epochs=1), None, progress=False)
    trained.save(tmp_path)
    loaded = TrainedModel.load(tmp_path)
    assert loaded.config == trained.config
    rng = np.random.default_rng(0)
    cust = rng.integers(0, tiny.n_customers, 500)
    fund = rng.integers(0, tiny.n_funds, 500)
    a = trained.predict_pairs(tiny, cust, fund)
    b = loaded.predict_pairs(tiny, cust, fund)
    assert set(a) == set(b) >= {"p", "etv", "mu", "sigma"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert loaded.history == trained.history


def test_graph_neighbours_reaches_the_feature_space_and_the_saved_model(tiny: Dataset, tmp_path: Path) -> None:
    trained = train(tiny, _cfg(model="esdpm", max_epochs=1, graph_neighbours=1), tmp_path, progress=False)
    assert trained.features.graph_neighbours == 1
    assert TrainedModel.load(tmp_path).features.graph_neighbours == 1
    batch = next(trained.features.bind(tiny).exposure_batches("train", 256, shuffle=False))
    assert np.bincount(batch.inputs["g_e2_dst"].numpy()).max() == 1


def test_batch_order_reaches_the_training_batches(tiny: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    cut = BoundFeatures.exposure_batches

    def spy(self: BoundFeatures, split: str, batch_size: int, **kw: Any) -> Any:
        if kw.get("shuffle"):
            seen.append(bool(kw.get("by_customer", False)))
        return cut(self, split, batch_size, **kw)

    monkeypatch.setattr(BoundFeatures, "exposure_batches", spy)
    rows = train(tiny, _cfg(model="esmm", max_epochs=1, batch_order="rows"), None, progress=False)
    grouped = train(tiny, _cfg(model="esmm", max_epochs=1, batch_order="customers"), None, progress=False)
    assert seen == [False, True]
    assert grouped.config.batch_order == "customers"
    # Another order of the same rows: another model (tiny has several exposures per customer).
    assert rows.history[0]["train_loss"] != grouped.history[0]["train_loss"]


def _without_settings(path: Path, keys: tuple[str, ...]) -> None:
    """Rewrite a model file or checkpoint as eoca wrote it before the training settings ``keys`` existed."""
    payload = torch.load(path, weights_only=True)
    for key in keys:
        payload["config"].pop(key)
    torch.save(payload, path)


def test_files_from_before_a_setting_existed_load_and_resume_with_the_value_they_were_trained_with(
    tiny: Dataset, tmp_path: Path
) -> None:
    keys = ("batch_order", "graph_neighbours", "predict_threads")
    cfg = _cfg(model="esmm", max_epochs=1, batch_order="rows")
    train(tiny, cfg, tmp_path, progress=False)
    _without_settings(tmp_path / MODEL_FILE, keys)
    _without_settings(tmp_path / CHECKPOINT_FILE, keys)
    loaded = TrainedModel.load(tmp_path)
    assert (loaded.config.batch_order, loaded.config.graph_neighbours) == ("rows", 10)
    assert loaded.config.predict_threads is None
    with pytest.raises(ConfigError, match="differs from the checkpoint's in batch_order;"):
        train(tiny, {**cfg, "batch_order": "customers"}, tmp_path, resume=True, progress=False)
    # The prediction threads cannot change a model, so a resume may set them.
    resumed = train(tiny, {**cfg, "predict_threads": 1}, tmp_path, resume=True, progress=False)
    assert resumed.history == loaded.history


def _as_version_1(path: Path) -> None:
    """Rewrite a model file or checkpoint as eoca wrote it before ``sequence_encoder`` existed."""
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1
    payload["config"]["params"].pop("sequence_encoder")
    payload["config"]["params"].pop("customer_summary")
    torch.save(payload, path)


def test_a_version_1_model_file_loads_with_the_self_attention_it_was_trained_with(
    tiny: Dataset, tmp_path: Path
) -> None:
    old_params = {"sequence_encoder": "self_attention", "customer_summary": False}
    trained = train(tiny, _cfg(model="esmm", max_epochs=1, params=old_params), tmp_path)
    _as_version_1(tmp_path / MODEL_FILE)
    loaded = TrainedModel.load(tmp_path)
    cust, fund = np.arange(40) % tiny.n_customers, np.arange(40) % tiny.n_funds
    np.testing.assert_array_equal(
        trained.predict_pairs(tiny, cust, fund)["p"], loaded.predict_pairs(tiny, cust, fund)["p"]
    )
    # Resuming such a checkpoint would rebuild the model with today's default encoder: refused, with the way out.
    _as_version_1(tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ConfigError, match="self_attention"):
        train(tiny, _cfg(model="esmm", max_epochs=1), tmp_path, resume=True, progress=False)


def test_a_model_without_a_graph_branch_trains_the_same_without_the_graph(
    tiny: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """esmm's feature space leaves the consumption graph out (no graph built or sampled); its numbers are those of
    a feature space that carries the graph, because the graph sampling draws from its own generator."""
    cfg = _cfg(model="esmm", max_epochs=1)
    lean = train(tiny, cfg, None, progress=False)
    assert tiny.has_graph and not lean.features.has_graph
    assert train(tiny, _cfg(model="esdpm", max_epochs=1), None, progress=False).features.has_graph

    def with_graph(dataset: Dataset, c: TrainConfig) -> FeatureSpace:
        return FeatureSpace.fit(dataset, sequence_length=c.sequence_length, use_graph=True)

    monkeypatch.setattr(trainer_module, "_fit_features", with_graph)
    full = train(tiny, cfg, None, progress=False)
    assert full.features.has_graph
    cust, fund = np.arange(60) % tiny.n_customers, np.arange(60) % tiny.n_funds
    a, b = lean.predict_pairs(tiny, cust, fund), full.predict_pairs(tiny, cust, fund)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [h["train_loss"] for h in lean.history] == [h["train_loss"] for h in full.history]


class _CrashError(RuntimeError):
    pass


def _crash_after(epoch: int) -> Any:
    def callback(e: int, record: dict[str, float]) -> None:
        if e == epoch:
            raise _CrashError(f"simulated crash after epoch {e}")

    return callback


def test_resume_after_crash_equals_uninterrupted_run(tiny: Dataset, tmp_path: Path) -> None:
    cfg = _cfg(model="esmm", params={"dropout": 0.3})  # dropout on: the RNG stream must be restored too
    straight = train(tiny, cfg, tmp_path / "a", progress=False)
    with pytest.raises(_CrashError):
        train(tiny, cfg, tmp_path / "b", progress=False, on_epoch_end=_crash_after(1))
    saved = torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)
    assert saved["loop"]["epoch"] == 1
    resumed = train(tiny, cfg, tmp_path / "b", resume=True, progress=False)
    assert len(resumed.history) == len(straight.history) == 3
    for ha, hb in zip(straight.history, resumed.history, strict=True):
        assert ha["train_loss"] == hb["train_loss"]
        assert ha["valid_loss"] == hb["valid_loss"]
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_refuses_a_changed_config(tiny: Dataset, tmp_path: Path) -> None:
    with pytest.raises(_CrashError):
        train(tiny, _cfg(model="esmm"), tmp_path, progress=False, on_epoch_end=_crash_after(1))
    with pytest.raises(ConfigError, match="lr"):
        train(tiny, _cfg(model="esmm", lr=0.05), tmp_path, resume=True, progress=False)


class _Payload:
    """Unpickling this would call _Payload.mark(): proof the loader executed code from the file."""

    executed = False

    @classmethod
    def mark(cls) -> None:
        cls.executed = True

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_Payload.mark, ())


def test_loading_refuses_non_weights_pickle(tmp_path: Path) -> None:
    torch.save({"format": "eoca-etv-model", "state_dict": _Payload()}, tmp_path / MODEL_FILE)
    with pytest.raises(DataValidationError, match="refused"):
        TrainedModel.load(tmp_path)
    assert not _Payload.executed
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataValidationError, match=r"junk\.pt"):
        TrainedModel.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("selection", ["loss", "ips"])
def test_grid_search_selects_best_validation_score(tiny: Dataset, tmp_path: Path, selection: str) -> None:
    cfg = _cfg(model="mtl_mse", max_epochs=1, grid=True, grid_lr=[0.01, 0.04], grid_dropout=[0.1], selection=selection)
    winner = train(tiny, cfg, tmp_path, progress=False)
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert len(grid) == 2 and all(g["selection"] == selection for g in grid)
    # best_score: the validation loss, or minus the decision value; lower is better either way.
    best = min(grid, key=lambda g: g["best_score"])
    if selection == "loss":
        assert best["best_score"] == min(g["best_valid_loss"] for g in grid)
    assert winner.config.lr == best["lr"]
    assert winner.config.params["dropout"] == 0.1
    assert TrainedModel.load(tmp_path).config.lr == best["lr"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("lr=-1", "lr"),
        ("learning_rate=0.1", "learning_rate"),
        ("grid_dropout=[1.5]", "grid_dropout"),
        ("batch_size=abc", "batch_size"),
        ("graph_neighbours=0", "graph_neighbours"),
        ("batch_order=funds", "batch_order"),
        ("predict_threads=0", "predict_threads"),
    ],
)
def test_config_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_train_config(None, [override])


def test_defaults_file_matches_model_defaults() -> None:
    # train.yaml is the documented source of defaults; it must say what TrainConfig would default to.
    assert load_train_config() == TrainConfig()


def test_unknown_model_is_a_config_error(tiny: Dataset) -> None:
    with pytest.raises(ConfigError, match="esdpmm"):
        train(tiny, _cfg(model="esdpmm"), None, progress=False)


def test_epoch_seed_depends_on_seed_and_epoch_only() -> None:
    seeds = {epoch_seed(s, e) for s in range(5) for e in range(5)}
    assert len(seeds) == 25
    assert epoch_seed(3, 2) == epoch_seed(3, 2)


def test_two_threaded_runs_are_identical_and_global_setting_restored(tiny: Dataset) -> None:
    """Deterministic kernels: the graph model's scatter backward would otherwise sum in a thread-dependent
    order, and two runs with the same seed would drift apart."""
    # A few hundred rows of one epoch exercise every kernel (the graph branch's scatter backward included) on two
    # threads; any thread-order dependence shows up in the last bits after the first optimiser steps already.
    cfg = {"model": "esdpm", "max_epochs": 1, "num_threads": 2, "batch_size": 128, "max_train_rows": 768}
    before = torch.are_deterministic_algorithms_enabled()
    a = train(tiny, cfg, None, progress=False).score_matrix(tiny)
    b = train(tiny, cfg, None, progress=False).score_matrix(tiny)
    assert torch.are_deterministic_algorithms_enabled() == before
    for key in ("p", "etv", "mu", "sigma"):
        np.testing.assert_array_equal(a[key], b[key])


def test_thread_policy_is_one_thread_unless_set() -> None:
    from eoca.threads import resolve_threads

    assert resolve_threads(None) == 1
    assert resolve_threads(3) == 3
    assert load_train_config().num_threads is None  # the packaged default is the automatic policy


def test_tree_predictions_take_every_cpu_unless_threads_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from eoca import threads
    from eoca.threads import prediction_threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert prediction_threads(None) == 6
    assert prediction_threads(3) == 3
    assert prediction_threads(0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Dask worker process
    assert prediction_threads(None) == 1
    assert prediction_threads(2) == 2  # an explicit num_threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert prediction_threads(None) == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested lists are not a count: every CPU
    assert prediction_threads(None) == 6
    # A followed share (eoca run's workers) replaces OMP_NUM_THREADS, read at every call, within the CPUs.
    share = [3]
    monkeypatch.setattr(threads, "_CPU_SHARE", None)
    threads.follow_cpu_share(lambda: share[0])
    assert prediction_threads(None) == 3
    share[0] = 9
    assert prediction_threads(None) == 6
    share[0] = 0
    assert prediction_threads(None) == 1
    assert prediction_threads(2) == 2
    threads.follow_cpu_share(None)
    assert prediction_threads(None) == 6


def test_a_resume_may_change_only_result_neutral_settings() -> None:
    diff = trainer_module._config_diff
    assert diff({"predict_threads": 1, "lr": 0.1}, {"predict_threads": 2, "lr": 0.1}) == []
    assert diff({"predict_threads": 1, "num_threads": 1}, {"predict_threads": 1, "num_threads": 2}) == ["num_threads"]


def test_gbdt_predicts_on_the_configured_threads_with_the_same_values(
    tiny: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import lightgbm as lgb

    from eoca import threads
    from eoca.training.trainer import set_prediction_threads

    seen: list[Any] = []
    predict = lgb.Booster.predict

    def recording(self: lgb.Booster, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_threads"))
        return predict(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", recording)
    trained = train(tiny, _cfg(model="gbdt", predict_threads=1), None, progress=False)
    assert seen and set(seen) == {1}  # fitting's own predictions (spread, guard) included
    cust = np.repeat(np.arange(300), tiny.n_funds)
    fund = np.tile(np.arange(tiny.n_funds), 300)
    one = trained.predict_pairs(tiny, cust, fund)
    seen.clear()
    two = dataclasses.replace(trained, config=trained.config.model_copy(update={"predict_threads": 2}))
    assert two.model.predict_threads == 2
    both = two.predict_pairs(tiny, cust, fund)
    assert seen and set(seen) == {2}
    for key in one:
        np.testing.assert_array_equal(one[key], both[key])
    holder = torch.nn.Module()
    holder.trees = trained.model  # a stack holds its trees as a submodule
    set_prediction_threads(holder, None)
    assert trained.model.predict_threads is None
    # The automatic count is resolved where the prediction runs: a Dask worker process sets OMP_NUM_THREADS=1.
    seen.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trained.predict_pairs(tiny, cust[:80], fund[:80])
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "available_cpus", lambda: 3)
    trained.predict_pairs(tiny, cust[:80], fund[:80])
    assert seen == [1] * (len(seen) // 2) + [3] * (len(seen) // 2) and seen


def test_history_records_cpu_throughput(tiny: Dataset) -> None:
    trained = train(tiny, _cfg(max_epochs=1), None, progress=False)
    record = trained.history[0]
    assert record["train_cpu_seconds"] > 0
    assert record["samples_per_cpu_s"] == pytest.approx(record["rows"] / record["train_cpu_seconds"])


def test_foreach_adam_matches_the_per_tensor_update() -> None:
    """Training uses Adam's foreach implementation for speed; it must give the very same weights as the
    per-tensor loop, so models trained before and after the switch are identical."""
    weights = []
    for foreach in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
        opt = torch.optim.Adam(net.parameters(), lr=0.01, foreach=foreach)
        x = torch.randn(64, 6)
        for _ in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        weights.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_bind_returns_its_own_datasets_binding_when_another_thread_replaces_the_cache(tiny: Dataset) -> None:
    """Dask workers in one process score different datasets with one model; if another thread stores its binding
    right after this call stored its own, this call must still return the binding of its own dataset."""
    trained = train(tiny, {**SMALL, "model": "dnn_c", "max_epochs": 1}, None, progress=False)
    other = Dataset(spec=tiny.spec, customers=tiny.customers, funds=tiny.funds, exposures=tiny.exposures)
    other_bound = trained.features.bind(other)  # a binding of another dataset object

    class Interleaved(TrainedModel):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name == "_bound" and value is not None and value[0] is tiny:
                super().__setattr__("_bound", (other, other_bound))  # the other thread's store

    racing = Interleaved(model=trained.model, features=trained.features, config=trained.config, history=[])
    assert racing.bind(tiny) is not other_bound


@pytest.mark.parametrize("model", ["gbdt", "esmm"])
def test_scoring_under_the_risk_rule_gives_the_allowed_pairs_their_grid_values_and_leaves_the_others_nan(
    tiny: Dataset, pairs_asked: Callable[[], list[int]], model: str
) -> None:
    from eoca.risk import eligible_mask

    trained = train(tiny, _cfg(model=model, max_epochs=1), None, progress=False)
    full = trained.score_matrix(tiny, chunk_customers=700)
    tolerance = np.asarray(tiny.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)
    allowed = eligible_mask(tolerance, tiny.funds.column("risk_level").to_numpy())
    assert 0 < allowed.sum() < allowed.size  # the tiny world has forbidden pairs to skip
    asked = pairs_asked()
    ruled = trained.score_matrix(tiny, chunk_customers=700, tolerance=tolerance)
    assert set(ruled) == set(full)
    for key in full:
        np.testing.assert_array_equal(ruled[key][allowed], full[key][allowed])  # bit for bit
        assert np.isnan(ruled[key][~allowed]).all()
    # The trees are asked for the allowed pairs only; a network scores its whole grid.
    assert sum(asked) == (int(allowed.sum()) if model == "gbdt" else allowed.size)
    with pytest.raises(ValueError, match=r"one value per customer, shape \(2000,\)"):
        trained.score_matrix(tiny, tolerance=tolerance[:5])


@pytest.mark.parametrize("model", ["gbdt", "gbdt_mean"])
def test_a_model_that_scores_pairs_alone_gives_a_pair_the_same_value_in_any_batch(tiny: Dataset, model: str) -> None:
    trained = train(tiny, _cfg(model=model), None, progress=False)
    assert trained.model.scores_pairs_alone
    cust = np.repeat(np.arange(400), tiny.n_funds)
    fund = np.tile(np.arange(tiny.n_funds), 400)
    grid = trained.predict_pairs(tiny, cust, fund)
    pick = np.random.default_rng(3).permutation(cust.size)[: cust.size // 3]
    alone = trained.predict_pairs(tiny, cust[pick], fund[pick], batch_size=97)
    for key in grid:
        np.testing.assert_array_equal(alone[key], grid[key][pick])
