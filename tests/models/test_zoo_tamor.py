"""The zoo's ``tamor`` on a fund dataset with the optional tier and scenario columns of the dataset spec."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from eoca.data import Dataset
from eoca.data.schema import DatasetSpec, FeatureSpec
from eoca.models import FeatureSpace, build_model
from eoca.models.features import BoundFeatures


def _with_tiers(ds: Dataset) -> Dataset:
    """``sim`` plus a customer ``tier`` (from holdings) and a fund ``scenario`` column (two scenarios), declared in
    the spec, and a fund feature that exists for one scenario only (missing for the other by design)."""
    holdings = np.asarray(ds.customers.column("log_holdings").to_numpy())
    tier = np.where(
        holdings <= np.quantile(holdings, 0.3), "new", np.where(holdings > np.quantile(holdings, 0.9), "high", "low")
    )
    fund_type = np.asarray(ds.funds.column("fund_type").to_pylist())
    scenario = np.where(np.isin(fund_type, ["money_market", "bond"]), "fixed_income", "fund")
    lockup = np.where(scenario == "fixed_income", np.arange(len(scenario), dtype=float), np.nan)
    spec = ds.spec.model_copy(deep=True)
    spec.customers.features.append(FeatureSpec(name="tier", type="categorical"))
    spec.funds.features += [
        FeatureSpec(name="scenario", type="categorical"),
        FeatureSpec(name="lockup_months", type="numeric", scenarios=["fixed_income"]),
    ]
    spec = DatasetSpec.model_validate({**spec.model_dump(), "tier_column": "tier", "scenario_column": "scenario"})
    customers = ds.customers.append_column("tier", pa.array(tier))
    funds = ds.funds.append_column("scenario", pa.array(scenario)).append_column("lockup_months", pa.array(lockup))
    return Dataset(
        spec=spec,
        customers=customers,
        funds=funds,
        exposures=ds.exposures,
        events=ds.events,
        consumption=ds.consumption,
        truth=ds.truth,
    )


@pytest.fixture(scope="module")
def tiered(sim: Dataset) -> tuple[FeatureSpace, BoundFeatures]:
    ds = _with_tiers(sim)
    space = FeatureSpace.fit(ds)
    return space, space.bind(ds)


def test_spec_rejects_a_tier_column_that_is_not_a_categorical_feature(sim: Dataset) -> None:
    with pytest.raises(ValueError, match="tier_column 'log_holdings'"):
        DatasetSpec.model_validate({**sim.spec.model_dump(), "tier_column": "log_holdings"})
    funds = sim.spec.funds.model_copy(deep=True)
    funds.features.append(FeatureSpec(name="x", type="numeric", scenarios=["a"]))
    with pytest.raises(ValueError, match="scenario_column must be set"):
        DatasetSpec.model_validate({**sim.spec.model_dump(), "funds": funds.model_dump()})


def test_tamor_reads_tiers_trains_and_reloads(tiered: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = tiered
    torch.manual_seed(0)
    model = build_model("tamor", space, {"user_bias_buckets": 1024})
    assert model.tier_col is not None and model.scen_col is not None  # type: ignore[attr-defined]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    # Training lowers the loss on the whole train split, measured without dropout before and after (per-batch
    # training losses are too noisy with a few conversions per batch to compare first and last batches).
    fixed = list(feats.exposure_batches("train", 4096, shuffle=False))

    def train_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(np.mean([float(model.loss(b)) for b in fixed]))

    before = train_loss()
    model.train()
    for _ in range(2):
        for batch in feats.exposure_batches("train", 256, shuffle=True, generator=g):
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert train_loss() < before
    assert model.user_bias.seen.numel() > 0  # type: ignore[attr-defined]
    model.eval()
    batch = next(feats.exposure_batches("test", 300, shuffle=False))
    with torch.no_grad():
        out = model.predict(batch)
        assert torch.isfinite(out.etv).all() and torch.isfinite(out.p).all()
        clone = build_model("tamor", FeatureSpace.from_state_dict(space.state_dict()), {"user_bias_buckets": 1024})
        clone.load_state_dict(model.state_dict())
        clone.eval()
        torch.testing.assert_close(clone.predict(batch).etv, out.etv)
        # a customer the model never saw gets the prior (zero) user bias, and a finite score
        batch.inputs["c_key"] = batch.inputs["c_key"] + 12345
        assert torch.all(model.user_bias(batch.inputs["c_key"]) == 0)  # type: ignore[attr-defined]
        assert torch.isfinite(model.predict(batch).etv).all()


def test_tier_changes_the_prediction(tiered: tuple[FeatureSpace, BoundFeatures]) -> None:
    space, feats = tiered
    torch.manual_seed(1)
    model = build_model("tamor", space)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model.eval()
    batch = feats.pair_batch(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    col = model.tier_col  # type: ignore[attr-defined]
    preds = []
    with torch.no_grad():
        for code in (1, 2, 3):
            batch.inputs["c_cat"] = batch.inputs["c_cat"].clone()
            batch.inputs["c_cat"][:, col] = code
            preds.append(float(model.predict(batch).p[0]))
    assert len(set(preds)) == 3
