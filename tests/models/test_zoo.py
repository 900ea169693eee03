"""Every zoo model: builds by name, trains a few steps with a falling loss, predicts a complete ModelOutput."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.models import MODEL_NAMES, TASKS, EtvModel, FeatureSpace, ModelOutput, build_model, model_defaults
from eoca.models.base import DirectFitModel
from eoca.models.features import BoundFeatures
from eoca.models.zoo import model_class

WITH_AMOUNT_PARAMS = {"mtl_ziln", "esdpm_ncg", "esdpm", "ptofa"}
NEEDS_TRANSACTION_LOG = {"bgnbd_gbdt", "bgnbd_ziln", "stack", "stack_tail"}
"""Models that read the customer-base features of a transaction log (tests/models/test_bgnbd_hybrids.py)."""
ANY_DATA_MODELS = [m for m in MODEL_NAMES if m not in NEEDS_TRANSACTION_LOG]


@pytest.fixture(scope="module")
def bound(sim: Dataset) -> tuple[FeatureSpace, BoundFeatures]:
    space = FeatureSpace.fit(sim)
    return space, space.bind(sim)


@pytest.fixture(scope="module")
def bound_plain(hillstrom_like: Dataset) -> tuple[FeatureSpace, BoundFeatures]:
    space = FeatureSpace.fit(hillstrom_like)
    return space, space.bind(hillstrom_like)


def _train_loss(model: EtvModel, bound: BoundFeatures) -> float:
    model.eval()
    with torch.no_grad():
        total, n = 0.0, 0
        for batch in bound.exposure_batches("train", 2048, shuffle=False):
            total += float(model.loss(batch)) * len(batch)
            n += len(batch)
    model.train()
    return total / n


def _train(model: EtvModel, bound: BoundFeatures, steps: int) -> None:
    if isinstance(model, DirectFitModel):  # gbdt: fitted in one call, its own rounds instead of Adam steps
        model.fit_bound(bound, seed=0, num_threads=1, batch_size=2048)
        return
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    done = 0
    while done < steps:
        for batch in bound.exposure_batches("train", 256, shuffle=True, generator=g):
            loss = model.loss(batch)
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def _check_output(model: EtvModel, out: ModelOutput, n: int) -> None:
    assert out.p.shape == out.etv.shape == (n,)
    assert torch.isfinite(out.p).all() and ((out.p >= 0) & (out.p <= 1)).all()
    assert torch.isfinite(out.etv).all() and (out.etv >= 0).all()
    if model.name in WITH_AMOUNT_PARAMS:
        assert out.mu is not None and out.sigma is not None and (out.sigma > 0).all()
    assert model.tasks <= TASKS and model.tasks


@pytest.mark.parametrize("name", ANY_DATA_MODELS)
def test_model_trains_and_predicts(name: str, bound: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = bound
    torch.manual_seed(0)
    model = build_model(name, space)
    assert model.name == name
    before = _train_loss(model, feats)
    _train(model, feats, 20)
    after = _train_loss(model, feats)
    assert after < before, f"{name}: training loss did not fall ({before:.4f} -> {after:.4f})"
    model.eval()
    cust = np.repeat(np.arange(100), feats.n_funds)
    fund = np.tile(np.arange(feats.n_funds), 100)
    with torch.no_grad():
        out = model.predict(feats.pair_batch(cust, fund))
    _check_output(model, out, cust.size)
    if "ctr" in model.tasks:
        assert out.pctr is not None and out.pcvr is not None
        torch.testing.assert_close(out.p, out.pctr * out.pcvr)


@pytest.mark.parametrize("name", ANY_DATA_MODELS)
def test_model_on_hillstrom_like_data(name: str, bound_plain: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = bound_plain
    torch.manual_seed(0)
    model = build_model(name, space)
    assert "ctr" not in model.tasks
    _train(model, feats, 5)
    model.eval()
    batch = next(feats.exposure_batches("test", 512, shuffle=False))
    with torch.no_grad():
        out = model.predict(batch)
    _check_output(model, out, len(batch))
    assert out.pctr is None


def test_prediction_is_deterministic_and_factorised(bound: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = bound
    torch.manual_seed(0)
    model = build_model("esdpm", space).eval()
    cust = np.repeat(np.arange(40), feats.n_funds)
    fund = np.tile(np.arange(feats.n_funds), 40)
    with torch.no_grad():
        together = model.predict(feats.pair_batch(cust, fund)).etv
        again = model.predict(feats.pair_batch(cust, fund)).etv
        # One pair at a time must give the same numbers as the factorised batch.
        single = torch.cat(
            [model.predict(feats.pair_batch(cust[i : i + 1], fund[i : i + 1])).etv for i in range(0, 320, 37)]
        )
    torch.testing.assert_close(together, again)
    torch.testing.assert_close(together[::37], single, rtol=1e-4, atol=1e-6)


def test_state_dict_reload_gives_identical_predictions(bound: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = bound
    torch.manual_seed(0)
    model = build_model("ptofa", space, {"embedding_dim": 16, "dropout": 0.3}).eval()
    clone = build_model(
        "ptofa", FeatureSpace.from_state_dict(space.state_dict()), {"embedding_dim": 16, "dropout": 0.3}
    )
    clone.load_state_dict(model.state_dict())
    clone.eval()
    batch = next(feats.exposure_batches("valid", 300, shuffle=False))
    with torch.no_grad():
        torch.testing.assert_close(model.predict(batch).etv, clone.predict(batch).etv)


def test_build_model_errors_name_the_culprit(bound: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, _ = bound
    with pytest.raises(ConfigError, match="unknown model 'esdpm2'.*esdpm_ncg"):
        build_model("esdpm2", space)
    with pytest.raises(ConfigError, match="n_expertz"):
        build_model("mmoe", space, {"n_expertz": 3})
    with pytest.raises(ConfigError, match="use_graph"):
        build_model("esdpm_ncg", space, {"use_graph": True})
    with pytest.raises(ConfigError, match="dropout"):
        build_model("esdpm", space, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="divisible"):
        build_model("esdpm", space, {"embedding_dim": 9, "heads": 2})
    with pytest.raises(ConfigError, match="unknown model"):
        model_defaults("nope")


def test_defaults_are_documented_copies() -> None:
    for name in MODEL_NAMES:
        defaults = model_defaults(name)
        trees = "gbdt" in name
        key = "learning_rate" if trees else "dropout"
        assert trees or {"embedding_dim", "dropout"} <= defaults.keys()
        defaults[key] = 0.9
        assert model_defaults(name)[key] != 0.9
    assert model_defaults("esdpm")["use_graph"] is True
    assert "use_graph" not in model_defaults("esdpm_ncg")
    assert "eps" in model_defaults("ptofa")


def test_graph_model_without_graph_turns_branch_off_with_message(
    hillstrom_like: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eoca.models"):
        space = FeatureSpace.fit(hillstrom_like)
        model = build_model("esdpm", space)
    assert model.customer_arch.consumption is None and model.customer_arch.behaviour is None
    text = caplog.text
    assert "no consumption graph" in text and "graph branch" in text
    assert "no behaviour events" in text and "no click labels" in text


def test_pytorch_geometric_is_imported_only_when_a_graph_branch_is_built() -> None:
    """Importing it costs a process 2-2.5 CPU-s; commands that never build a GAT (gbdt, Hillstrom) skip it."""
    import subprocess
    import sys

    probe = (
        "import sys, eoca.training, eoca.pipeline.run, eoca.models.zoo\n"
        "assert 'torch_geometric' not in sys.modules, 'imported at start'\n"
        "from eoca.models.layers import ConsumptionGAT\n"
        "from eoca.simulate import load_simulator_config, simulate\n"
        "from eoca.models import FeatureSpace\n"
        "ds = simulate(load_simulator_config(None, ['world.n_customers=200', 'world.n_merchants=10']))\n"
        "ConsumptionGAT(FeatureSpace.fit(ds), 8, 8, 2, 0.0)\n"
        "assert 'torch_geometric' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


NETWORKS = [m for m in ANY_DATA_MODELS if not issubclass(model_class(m), DirectFitModel)]
"""The zoo models trained by autograd (not fitted by LightGBM in one call)."""
AUTOCAST_CASES = [(m, {}) for m in NETWORKS] + [("esdpm", {"sequence_encoder": "self_attention"})]


@pytest.mark.parametrize(
    ("name", "params"), AUTOCAST_CASES, ids=["-".join([m, *p.values()]) for m, p in AUTOCAST_CASES]
)
def test_network_steps_under_mixed_precision(
    name: str, params: dict[str, str], bound: tuple[FeatureSpace, BoundFeatures]
) -> None:
    """A training step under autocast (16-bit activations, as on a GPU with ``torch.autocast``): every scatter
    buffer takes the dtype of what is added into it, so no layer mixes a 16-bit source with a 32-bit buffer."""
    space, feats = bound
    torch.manual_seed(0)
    model = build_model(name, space, params)
    batch = next(feats.exposure_batches("train", 256, shuffle=False))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
