"""Response models: shapes, sane uplift on a world with a strong effect, peers through the same solver."""

from __future__ import annotations

import numpy as np
import pytest

from eoca.budget.data import from_world
from eoca.budget.evaluate import allocate, true_outcome
from eoca.budget.models import make_model
from eoca.errors import DataValidationError
from eoca.simulate import SimulatorConfig
from eoca.simulate.simulator import generate_world


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    cfg = SimulatorConfig.model_validate(
        {"seed": 5, "world": {"n_customers": 12_000, "n_merchants": 50}, "incentives": {}}
    )
    return from_world(generate_world(cfg)).split(0.5, 0)


@pytest.mark.parametrize(
    "name", ["t_learner", "t_conversion", "x_learner", "multi_head", "e2e", "e2e_perturbed", "peer_tlearner"]
)
def test_models_predict_every_arm_and_beat_random_targeting(split, name: str) -> None:  # type: ignore[no-untyped-def]
    train, test = split
    if name.startswith("peer_"):
        pytest.importorskip("sklift")
        from eoca.budget.peers import make_peer

        model = make_peer(name, 0)
    else:
        kwargs = {"epochs": 4} if "e2e" in name or name == "multi_head" else {"n_estimators": 60}
        model = make_model(name, 0, **kwargs)  # type: ignore[arg-type]
        if "e2e" in name:
            model.e2e = type(model.e2e)(estimator=model.e2e.estimator, warmup_epochs=2, samples=4)  # type: ignore[attr-defined]
    pred = model.fit(train).predict(test.features)
    assert pred.p.shape == pred.value.shape == (test.n, test.n_arms)
    assert np.isfinite(pred.value).all() and (pred.p >= 0).all() and (pred.p <= 1).all()
    budget = 0.3 * test.treat_all_cost()
    v, _ = true_outcome(test, allocate(pred, test, budget).arm)
    assert test.truth is not None
    # random targeting at the same budget treats customers at random; any model worth the name beats it
    rand_v = float((test.truth.value[:, 1:].mean(axis=1) - test.truth.value[:, 0]).sum()) * 0.3
    assert v > rand_v


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(DataValidationError, match="valid"):
        make_model("nope")
