"""Issue 9: candidate-aware pair counts, the ETV guard and the gbdt hurdle model."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from eoca.data import Dataset
from eoca.models import FeatureSpace
from eoca.models.guard import AMOUNT_CAP_MULTIPLE, EtvGuard
from eoca.models.losses import SIGMA_FLOOR
from eoca.training import TrainedModel, train


def _with_events(sim: Dataset, rows: list[tuple[int, int, int, str, float]]) -> Dataset:
    """``sim`` with customer 0's behaviour history replaced by ``rows`` of (customer, fund, time, type, amount)."""
    assert sim.events is not None
    ev = sim.events
    keep = ev.filter(pa.array(np.asarray(ev.column("customer_id").to_numpy()) != 0))
    extra = pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "fund_id": pa.array([r[1] for r in rows], pa.int64()),
            "time": pa.array([r[2] for r in rows], pa.int64()),
            "event_type": pa.array([r[3] for r in rows], pa.string()),
            "amount": pa.array([r[4] for r in rows], pa.float64()),
        }
    ).cast(keep.schema)
    events = pa.concat_tables([keep, extra])
    return Dataset(
        spec=sim.spec,
        customers=sim.customers,
        funds=sim.funds,
        exposures=sim.exposures,
        events=events,
        consumption=sim.consumption,
    )


def test_pair_counts_equal_hand_computed_values_and_ignore_later_events(sim: Dataset) -> None:
    # Funds 1 and 7 share the type "bond" in the simulator's default catalogue (fund j has type j mod 6).
    history = [
        (0, 1, -10, "purchase", 100.0),
        (0, 1, -5, "click", 0.0),
        (0, 7, -3, "favourite", 0.0),
        (0, 1, 1, "click", 0.0),  # at exposure time 1: invisible to the period-1 exposure, visible from period 2
        (0, 1, 2, "purchase", 50.0),  # visible only to the period-3 exposure
    ]
    ds = _with_events(sim, history)
    space = FeatureSpace.fit(ds)
    assert space.fund_group_source == "fund_type"
    fund_ids = [int(f) for f in ds.funds.column("fund_id").to_pylist()]
    assert space.fund_groups[space.fund_ids.index("1")] == space.fund_groups[space.fund_ids.index("7")]
    w = space.recent_window
    assert w >= 10  # so every event above is "recent" for every exposure
    bound = space.bind(ds)
    exp_cust = ds.customer_index(ds.exposures.column("customer_id"))
    exp_time = np.asarray(ds.exposures.column("time").to_numpy(), dtype=np.int64)
    f1 = fund_ids.index(1)

    def expected(t: int) -> tuple[list[float], list[float]]:
        # [n_click, n_purchase, n_sell, n_favourite] (all / recent), log1p purchase total, recency.
        if t <= 1:
            fund_counts, amount, last = [1, 1, 0, 0], 100.0, -5
        elif t == 2:
            fund_counts, amount, last = [2, 1, 0, 0], 100.0, 1
        else:
            fund_counts, amount, last = [2, 2, 0, 0], 150.0, 2
        type_counts = [*fund_counts[:3], 1]
        type_last = max(last, -3)
        fund = [math.log1p(c) for c in fund_counts] * 2 + [math.log1p(amount), 1 / (1 + (t - last) / w)]
        typ = [math.log1p(c) for c in type_counts] * 2 + [math.log1p(amount), 1 / (1 + (t - type_last) / w)]
        return fund, typ

    seen = set()
    for split in ("train", "valid", "test"):
        rows = np.flatnonzero(ds.split_mask(split))
        for batch in bound.exposure_batches(split, 4096, shuffle=False):
            r, rows = rows[: len(batch)], rows[len(batch) :]
            pair = batch.inputs["pair_x"][batch.inputs["row_unit"], f1].numpy()
            for i in np.flatnonzero(exp_cust[r] == 0):
                t = int(exp_time[r][i])
                fund, typ = expected(t)
                np.testing.assert_allclose(pair[i], np.array(fund + typ, dtype=np.float32), rtol=1e-5, atol=1e-6)
                seen.add(t)
    assert seen == {0, 1, 2, 3}
    # Another fund of another type: nothing at the fund level.
    other = fund_ids.index(0)
    batch = bound.pair_batch(np.array([0]), np.array([other]))
    assert float(batch.inputs["pair_x"][0, other, :10].abs().sum()) == 0.0


def test_guard_bounds_mu_sigma_and_amount() -> None:
    stats = {"log1p_min": 2.0, "log1p_max": 8.0, "log1p_sigma": 1.0, "max_amount": 3000.0, "n_converters": 50.0}
    guard = EtvGuard.from_label_stats(stats)
    preds = {
        "p": np.array([0.1, 0.1, 0.1], np.float32),
        "mu": np.array([5.0, 20.0, 5.0], np.float32),
        "sigma": np.array([0.8, 0.8, 4.0], np.float32),
        "etv": np.zeros(3, np.float32),
    }
    out = guard.bound(preds, "eoca")
    np.testing.assert_allclose(out["mu"], [5.0, 8.0, 5.0])
    np.testing.assert_allclose(out["sigma"], [0.8, 0.8, 1.0])
    amount = out["amount"]
    assert amount[0] == pytest.approx(math.exp(5 + 0.32) - 1, rel=1e-5)
    assert amount[1] == pytest.approx(AMOUNT_CAP_MULTIPLE * 3000.0)  # exp(8.32) - 1 > 3000: capped
    assert amount[2] == pytest.approx(math.exp(5.5) - 1, rel=1e-5)
    np.testing.assert_allclose(out["etv"], 0.1 * amount, rtol=1e-6)
    # A direct-ETV model: ETV capped at the largest amount.
    direct = guard.bound({"p": np.array([0.5], np.float32), "etv": np.array([1e9], np.float32)}, None)
    assert direct["etv"][0] == pytest.approx(3000.0)
    assert EtvGuard.from_state_dict(guard.state_dict()) == guard


def test_guard_recalibration_removes_a_per_fund_bias_and_an_inflated_sigma() -> None:
    rng = np.random.default_rng(0)
    m = 40000
    fund = rng.integers(0, 2, m)
    true_mu = rng.normal(6.0, 0.5, m)
    true_sigma = 0.9
    y = np.expm1(rng.normal(true_mu, true_sigma))
    converted = (rng.random(m) < 0.01).astype(np.float32)
    # The model: fund 0's mu 0.7 too high, and sigma inflated to 1.8 everywhere (E[amount] x 3.4 from sigma alone).
    preds = {
        "p": np.full(m, 0.01, np.float32),
        "mu": (true_mu + np.where(fund == 0, 0.7, 0.0)).astype(np.float32),
        "sigma": np.full(m, 1.8, np.float32),
        "etv": np.zeros(m, np.float32),
    }
    stats = {"log1p_min": 0.0, "log1p_max": 12.0, "log1p_sigma": 2.5, "max_amount": 1e7, "n_converters": 400.0}
    guard = EtvGuard.from_label_stats(stats).fit_recalibration(
        preds, fund, converted, y * converted, ["a", "b"], "eoca"
    )
    assert guard.fund_shift["a"] == pytest.approx(-0.7, abs=0.15) and abs(guard.fund_shift["b"]) < 0.15
    assert guard.sigma_scale == pytest.approx(true_sigma / 1.8, rel=0.1)
    out = guard.apply(preds, fund, ["a", "b"], "eoca")
    true_amount = np.expm1(true_mu + true_sigma**2 / 2)
    for f in (0, 1):
        ratio = out["amount"][fund == f].mean() / true_amount[fund == f].mean()
        assert ratio == pytest.approx(1.0, abs=0.2)
    # A direct-ETV model gets a per-fund scale instead.
    direct = {"p": np.full(m, 0.01, np.float32), "etv": (0.01 * 3 * true_amount).astype(np.float32)}
    g2 = EtvGuard.from_label_stats(stats).fit_recalibration(direct, fund, converted, y * converted, ["a", "b"], None)
    assert 0.2 < g2.global_factor < 0.5 and g2.fund_shift == {}


def test_guard_amount_factor_corrects_the_jensen_gap_of_a_latent_dispersion_and_keeps_every_argmax() -> None:
    """Step 3: amounts whose log-sigma varies with a latent the model cannot see; a model with the right mu and the
    right mean square of sigma under-states the mean. One shared factor from the purchases restores the mean level,
    scales every amount alike (same argmax per customer) and survives a save/load; noise within one standard error
    is dropped."""
    rng = np.random.default_rng(5)
    m = 50000
    mu = rng.normal(5.0, 0.6, m)
    sigma_true = np.clip(np.exp(np.log(1.2) + 0.35 * rng.standard_normal(m)), 0.25, 2.0)  # as the simulator's
    y = np.expm1(mu + sigma_true * rng.standard_normal(m))
    rms = float(np.sqrt(np.mean(sigma_true**2)))
    stats = {"log1p_min": 0.0, "log1p_max": 14.0, "log1p_sigma": 3.0, "max_amount": 1e9, "n_converters": 1000.0}
    guard = EtvGuard.from_label_stats(stats)
    funds = ["a", "b"]
    fund = np.zeros(m, np.int64)
    preds = {"p": np.full(m, 0.1), "mu": mu, "sigma": np.full(m, rms), "etv": np.zeros(m)}
    before = guard.apply(preds, fund, funds, "eoca")["amount"].astype(np.float64)
    true_mean = float(np.expm1(mu + sigma_true**2 / 2).sum())
    assert before.sum() / true_mean < 0.9  # the gap the factor exists for
    guard.fit_amount_factor(y, before, "test purchases")
    assert guard.amount_factor == pytest.approx(1.2249, abs=1e-4)  # the truth's gap: 1 / 0.857
    # purchases of zero (log1p amount <= 0) carry no amount and are left out
    assert guard.amount_factor_source.startswith(f"test purchases, {int((y > 0).sum())} purchases: realised")
    after = guard.apply(preds, fund, funds, "eoca")["amount"].astype(np.float64)
    assert after.sum() / true_mean == pytest.approx(1.0, abs=0.06)
    np.testing.assert_allclose(after, before * guard.amount_factor, rtol=1e-6)
    # the same factor for every customer and fund: a customer's best fund does not change
    grid = {"p": rng.uniform(0.01, 0.2, (400, 8)).ravel(), "mu": rng.normal(5, 1, 3200), "sigma": np.full(3200, 1.0)}
    grid["etv"] = np.zeros(3200)
    cells = np.tile(np.arange(8), 400) % 2
    plain = EtvGuard.from_label_stats(stats).apply(grid, cells, funds, "eoca")["etv"].reshape(400, 8)
    scaled = guard.apply(grid, cells, funds, "eoca")["etv"].reshape(400, 8)
    np.testing.assert_array_equal(plain.argmax(axis=1), scaled.argmax(axis=1))
    assert EtvGuard.from_state_dict(guard.state_dict()) == guard
    # a guard saved before step 3 existed loads with factor 1
    old = {k: v for k, v in guard.state_dict().items() if not k.startswith("amount_factor")}
    assert EtvGuard.from_state_dict(old).amount_factor == 1.0
    # noise: 40 lognormal purchases of a calibrated model move the ratio by far less than its standard error
    z = rng.standard_normal(40)
    calibrated = np.full(40, math.expm1(5 + 1.125))
    noisy = EtvGuard.from_label_stats(stats).fit_amount_factor(np.expm1(5 + 1.5 * z), calibrated, "few")
    assert noisy.amount_factor == 1.0
    assert "shrunk to 1.0000" in noisy.amount_factor_source
    empty = EtvGuard.from_label_stats(stats).fit_amount_factor(np.zeros(3), np.ones(3), "none here")
    assert empty.amount_factor == 1.0 and empty.amount_factor_source.startswith("none: no purchase")
    with pytest.raises(ValueError, match="differ in length"):
        guard.fit_amount_factor(np.ones(3), np.ones(2), "bad")


def test_guard_per_fund_level_corrects_each_fund_where_one_factor_cannot() -> None:
    """Step 3's ``per_fund`` form: two funds whose amounts have different spreads, both with a latent dispersion
    the model cannot see, and a head whose mu is biased on one fund. One shared factor, set by the high-spread
    fund's mean, ends over-stating the low-spread fund by a quarter or more; the per-fund form (log-space shift and
    sigma scale per fund, then a factor growing with the spread) puts both within 10% of the truth. It survives a
    save/load; a guard saved before it existed loads without it; a model without a lognormal amount gets the shared
    factor."""
    rng = np.random.default_rng(11)
    m = 120000
    fund = rng.integers(0, 2, m)
    funds = ["lo", "hi"]
    mu = rng.normal(5.0, 0.6, m)
    base = np.where(fund == 1, 1.5, 0.6)
    sigma_true = np.clip(base * np.exp(0.35 * rng.standard_normal(m)), 0.25, 2.2)
    y = np.expm1(mu + sigma_true * rng.standard_normal(m))
    rms = np.array([np.sqrt(np.mean(sigma_true[fund == f] ** 2)) for f in (0, 1)])
    head_mu = mu - np.where(fund == 1, 0.2, 0.0)  # the head under-states the high-spread fund's log level
    preds = {"p": np.full(m, 0.1), "mu": head_mu, "sigma": rms[fund], "etv": np.zeros(m)}
    stats = {"log1p_min": 0.0, "log1p_max": 14.0, "log1p_sigma": 2.5, "max_amount": 1e9, "n_converters": 1000.0}
    true_amount = np.expm1(mu + sigma_true**2 / 2)

    def ratios(g: EtvGuard) -> np.ndarray:
        out = g.apply(preds, fund, funds, "eoca")["amount"].astype(np.float64)
        return np.array([out[fund == f].sum() / true_amount[fund == f].sum() for f in (0, 1)])

    shared = EtvGuard.from_label_stats(stats)
    shared.fit_amount_factor(y, shared.apply(preds, fund, funds, "eoca")["amount"].astype(np.float64), "purchases")
    r_shared = ratios(shared)
    assert r_shared[0] > 1.3, r_shared  # what one factor cannot do: the high-spread fund's mean sets it
    per_fund = EtvGuard.from_label_stats(stats).fit_amount_level(y, preds, fund, funds, "eoca", "purchases")
    np.testing.assert_allclose(ratios(per_fund), [1.0, 1.0], atol=0.1)
    assert per_fund.level_shift["hi"] == pytest.approx(0.2, abs=0.05)
    assert abs(per_fund.level_shift["lo"]) < 0.05
    assert per_fund.jensen_b > 0.1
    assert per_fund.amount_factor_source.startswith("per fund: purchases, ")
    # the reported sigma is the one whose lognormal mean is the prediction (before the shared factor)
    out = per_fund.apply(preds, fund, funds, "eoca")
    lognormal = np.expm1(out["mu"].astype(np.float64) + out["sigma"].astype(np.float64) ** 2 / 2)
    np.testing.assert_allclose(out["amount"], lognormal * per_fund.amount_factor, rtol=1e-4)
    # the bounds alone (no recalibration) do not use it
    np.testing.assert_array_equal(per_fund.bound(preds, "eoca")["amount"], shared.bound(preds, "eoca")["amount"])
    assert EtvGuard.from_state_dict(per_fund.state_dict()) == per_fund
    old = {k: v for k, v in per_fund.state_dict().items() if not k.startswith(("level_", "jensen"))}
    loaded = EtvGuard.from_state_dict(old)
    assert loaded.level_shift == {} and loaded.jensen_b == 0.0
    # a model whose amount is not lognormal: the shared factor, fitted on its amounts
    direct = {"p": np.full(m, 0.1), "amount": np.full(m, 500.0), "etv": np.full(m, 50.0)}
    g = EtvGuard.from_label_stats(stats).fit_amount_level(y, direct, fund, funds, None, "purchases")
    assert g.level_shift == {} and g.jensen_b == 0.0
    assert g.amount_factor == pytest.approx(y[y > 0].sum() / (500.0 * (y > 0).sum()), rel=0.02)
    with pytest.raises(ValueError, match="differ in length"):
        EtvGuard.from_label_stats(stats).fit_amount_level(y, preds, fund[:-1], funds, "eoca", "bad")


def test_amount_level_is_validated_by_name() -> None:
    from eoca.errors import ConfigError
    from eoca.training.config import coerce_train_config

    assert coerce_train_config(None).amount_level == "shared"
    with pytest.raises(ConfigError, match="amount_level"):
        coerce_train_config({"amount_level": "per_customer"})


def test_gbdt_saves_loads_and_scores_like_the_others(sim: Dataset, tmp_path) -> None:
    trained = train(sim, {"model": "gbdt", "num_threads": 1, "params": {"n_estimators": 30}}, tmp_path, progress=False)
    assert trained.guard is not None and trained.guard.recalibration.startswith("valid split")
    loaded = TrainedModel.load(tmp_path)
    a = trained.score_matrix(sim, chunk_customers=700)
    b = loaded.score_matrix(sim)
    assert set(a) == {"p", "etv", "mu", "sigma", "amount"}
    for key in a:
        assert a[key].shape == (sim.n_customers, sim.n_funds)
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    assert np.all((a["p"] > 0) & (a["p"] < 1)) and np.all(a["etv"] >= 0)
    assert np.all(a["sigma"] >= SIGMA_FLOOR)
    # Customers differ, and so do funds of one customer: the model reads the pair, not only the customer.
    assert np.unique(a["p"].round(6)).size > 50
    assert (a["p"].std(axis=1) > 0).mean() > 0.5
    assert torch.load(tmp_path / "model.pt", weights_only=True)["model"] == "gbdt"


def test_target_attention_differs_across_candidate_funds(sim: Dataset) -> None:
    from eoca.models import build_model

    space = FeatureSpace.fit(sim)
    torch.manual_seed(0)
    model = build_model("esdpm_ncg", space)
    assert model.candidate_arch is not None  # type: ignore[union-attr]
    bound = space.bind(sim)
    k = bound.n_funds
    batch = bound.pair_batch(np.repeat(np.arange(30), k), np.tile(np.arange(k), 30))
    with torch.no_grad():
        attended = model.candidate_arch.attention(batch.inputs)  # type: ignore[union-attr]
    assert attended.shape == (30, k, space.sequence_length and model.params["embedding_dim"])
    has_events = batch.inputs["seq_mask"].any(dim=1)
    assert has_events.any()
    for u in torch.nonzero(has_events).squeeze(1).tolist():
        spread = attended[u].std(dim=0).max()
        assert float(spread) > 1e-4, "one customer's funds must get different attention outputs"
    assert float(attended[~has_events].abs().sum()) == 0.0
    # The per-row candidate input (counts + attention) differs across the funds of one customer as well.
    pair = model.encode(batch).pair
    assert pair is not None and pair.shape[0] == 30 * k
    assert float(pair.view(30, k, -1)[has_events].std(dim=1).max()) > 1e-4


def test_ips_selection_picks_the_better_model_on_a_randomized_log() -> None:
    from eoca.training.selection import snips_argmax_value

    rng = np.random.default_rng(1)
    n_cust, k = 4000, 5
    value = rng.gamma(2.0, 50.0, size=(n_cust, k))  # true expected amount of each (customer, fund)
    rows = np.repeat(np.arange(n_cust), 3)  # three logged exposures per customer
    logged = rng.integers(0, k, rows.size)  # uniformly randomized
    propensity = np.full(rows.size, 1.0 / k)
    reward = rng.exponential(value[rows, logged])
    good = value * rng.lognormal(0.0, 0.3, size=value.shape)  # a noisy view of the truth
    bad = rng.random(size=value.shape)  # unrelated to the truth
    v_good = snips_argmax_value(good, None, rows, logged, propensity, reward)
    v_bad = snips_argmax_value(bad, None, rows, logged, propensity, reward)
    assert v_good > 1.3 * v_bad
    truth_good = value[np.arange(n_cust), good.argmax(axis=1)].mean()
    assert v_good == pytest.approx(truth_good, rel=0.15)
    # Ineligible funds are never chosen: with only fund 0 eligible the value is fund 0's logged mean reward.
    only0 = np.zeros((n_cust, k), dtype=bool)
    only0[:, 0] = True
    assert snips_argmax_value(good, only0, rows, logged, propensity, reward) == pytest.approx(
        reward[logged == 0].mean()
    )


def test_training_selects_by_decision_value_when_asked(sim: Dataset) -> None:
    from eoca.training.selection import MIN_MATCHED_CONVERSIONS, has_propensities, resolve_selection

    # auto trusts the decision value only with enough matched validation conversions; this world has too few.
    assert has_propensities(sim) and not has_propensities(sim, "valid", MIN_MATCHED_CONVERSIONS)
    assert resolve_selection("auto", sim) == "loss" and resolve_selection("ips", sim) == "ips"
    trained = train(
        sim,
        {"model": "esmm", "num_threads": 1, "max_epochs": 2, "patience": 1, "max_train_rows": 2048, "selection": "ips"},
        None,
        progress=False,
    )
    values = [h["valid_value"] for h in trained.history]
    assert all(math.isfinite(v) and v > 0 for v in values)
    loss_run = train(
        sim,
        {"model": "esmm", "num_threads": 1, "max_epochs": 1, "max_train_rows": 2048, "selection": "loss"},
        None,
        progress=False,
    )
    assert "valid_value" not in loss_run.history[0]


def test_evaluate_seeds_summarises_each_metric_and_adds_an_ensemble(sim: Dataset, tmp_path) -> None:
    from eoca.pipeline.seeds import evaluate_seeds, parse_seeds, summarise

    cfg = {"num_threads": 1, "max_epochs": 1, "max_train_rows": 1024, "selection": "loss"}
    result = evaluate_seeds(sim, ["esmm"], tmp_path, seeds=[0, 1], config=cfg, ensemble=True, progress=False)
    names = [r["model"] for r in result.rows]
    assert names == ["esmm", "esmm (ensemble of 2)", "oracle"]
    per = [m["auc"] for m in result.per_seed["esmm"]]
    s = result.rows[0]["auc"]
    assert s["mean"] == pytest.approx(np.mean(per)) and s["sd"] == pytest.approx(np.std(per, ddof=1))
    assert s["lo"] < s["mean"] < s["hi"]
    assert (tmp_path / "runs" / "esmm" / "seed=1" / "model.pt").exists()
    assert {"seeds.md", "seeds.csv", "seeds.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "% of oracle" in result.markdown
    # Reuse: a second call loads the saved seeds instead of training.
    again = evaluate_seeds(sim, ["esmm"], tmp_path, seeds=[0, 1], config=cfg, progress=False)
    assert again.rows[0]["auc"]["mean"] == pytest.approx(s["mean"])
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(Exception, match="distinct"):
        parse_seeds("1,1")
    one = summarise([0.5])
    assert one["mean"] == 0.5 and one["sd"] is None


def test_customer_summary_and_purchase_history_see_only_earlier_events(sim: Dataset) -> None:
    from eoca.models.features import CUSTOMER_SUMMARY_NAMES

    history = [
        (0, 1, -10, "purchase", 100.0),
        (0, 1, -5, "click", 0.0),
        (0, 7, -3, "favourite", 0.0),
        (0, 1, 1, "click", 0.0),
        (0, 1, 2, "purchase", 50.0),
    ]
    ds = _with_events(sim, history)
    space = FeatureSpace.fit(ds)
    bound = space.bind(ds)
    exp_cust = ds.customer_index(ds.exposures.column("customer_id"))
    exp_time = np.asarray(ds.exposures.column("time").to_numpy(), dtype=np.int64)
    assert CUSTOMER_SUMMARY_NAMES[:4] == ("n_click", "n_purchase", "n_sell", "n_favourite")
    one = [math.log1p(100.0)]
    two = [math.log1p(100.0), math.log1p(50.0)]
    # Every fund counts: [click, purchase, sell, favourite], then the mean and sd of log1p(purchase amount).
    expected = {
        0: ([1, 1, 0, 1], one),
        1: ([1, 1, 0, 1], one),  # the click at time 1 is not before the period-1 exposure
        2: ([2, 1, 0, 1], one),
        3: ([2, 2, 0, 1], two),
    }
    seen = set()
    for split in ("train", "valid", "test"):
        rows = np.flatnonzero(ds.split_mask(split))
        for batch in bound.exposure_batches(split, 4096, shuffle=False):
            r, rows = rows[: len(batch)], rows[len(batch) :]
            summary = batch.inputs["cust_x"][batch.inputs["row_unit"]].numpy()
            for i in np.flatnonzero(exp_cust[r] == 0):
                t = int(exp_time[r][i])
                counts, logs = expected[t]
                want = [*(math.log1p(c) for c in counts), float(np.mean(logs)), float(np.std(logs))]
                np.testing.assert_allclose(summary[i], np.array(want, np.float32), rtol=1e-5, atol=1e-6)
                seen.add(t)
    assert seen == {0, 1, 2, 3}
    # Past purchases as amount rows: only those before the first held-out exposure (time 0), each seeing only
    # the events strictly before itself, so customer 0's purchase at -10 sees an empty history.
    mine = []
    for batch, amount in bound.purchase_history(1024):
        assert np.all(amount > 0)
        own = batch.customer.numpy() == 0
        for i in np.flatnonzero(own):
            unit = int(batch.inputs["row_unit"][i])
            mine.append((float(amount[i]), batch.inputs["cust_x"][unit].numpy(), batch.inputs["pair_x"][unit].numpy()))
    assert len(mine) == 1 and mine[0][0] == pytest.approx(100.0)
    assert float(np.abs(mine[0][1]).sum()) == 0.0 and float(np.abs(mine[0][2]).sum()) == 0.0


def test_guard_leaves_a_calibrated_model_alone_and_still_fixes_a_biased_one() -> None:
    rng = np.random.default_rng(1)
    m = 20000
    fund = rng.integers(0, 4, m)
    true_mu = rng.normal(7.0, 0.8, m)
    y = np.expm1(rng.normal(true_mu, 1.0))
    converted = (rng.random(m) < 0.005).astype(np.float32)  # about 100 converters, like the default world's split
    stats = {"log1p_min": 0.0, "log1p_max": 14.0, "log1p_sigma": 2.0, "max_amount": 1e8, "n_converters": 1000.0}
    calibrated = {
        "p": np.full(m, 0.005, np.float32),
        "mu": true_mu.astype(np.float32),
        "sigma": np.full(m, 1.0, np.float32),
        "etv": np.zeros(m, np.float32),
    }
    funds = ["a", "b", "c", "d"]
    guard = EtvGuard.from_label_stats(stats).fit_recalibration(
        calibrated, fund, converted, y * converted, funds, "eoca"
    )
    # Noise of ~25 converters per fund moves a fund's mean residual by ~0.2; the guard must not follow it.
    assert all(abs(v) < 0.1 for v in guard.fund_shift.values())
    assert guard.sigma_scale == pytest.approx(1.0, abs=0.08)
    biased = {**calibrated, "mu": (true_mu + np.where(fund == 0, 1.0, 0.0)).astype(np.float32)}
    g2 = EtvGuard.from_label_stats(stats).fit_recalibration(biased, fund, converted, y * converted, funds, "eoca")
    # ~25 converters against RECALIBRATION_PRIOR = 20 pseudo-converters: more than half the bias is removed.
    assert -1.1 < g2.fund_shift["a"] < -0.5
    assert all(abs(g2.fund_shift[f]) < 0.2 for f in ("b", "c", "d"))


def test_gbdt_amount_is_calibrated_on_a_small_simulated_world(sim: Dataset) -> None:
    """The guarded E[amount | convert], weighted by the true conversion probability (the customers a fund
    would convert), is within 20% of the simulator's truth over all funds, and within 30% for every fund (with
    2,000 customers a fund's weighted mean rests on a few high-sigma pairs). On the default world one fund stays
    at 0.65-0.70 after the guard's mean-level factor (benchmarks/decisions.py; benchmarks/amount_calibration.py
    measures why and what was tried)."""
    from eoca.simulate import truth_arrays

    trained = train(sim, {"model": "gbdt", "num_threads": 1}, None, progress=False)
    record = trained.history[0]
    assert record["cvr_trees"] > 0, "with click labels p is engaged x convert-given-engaged"
    assert record["amount_history_rows"] > 1000, "past purchases train the amount regressor"
    truth = truth_arrays(sim)
    pred = trained.score_matrix(sim)
    w = truth.p
    true_amount = truth.etv / np.maximum(truth.p, 1e-300)
    overall = float((w * pred["amount"]).sum() / (w * true_amount).sum())
    ratios = (w * pred["amount"]).sum(axis=0) / (w * true_amount).sum(axis=0)
    assert 0.8 < overall < 1.2, overall
    assert np.all((ratios > 0.7) & (ratios < 1.3)), ratios
    # the per-fund form of step 3 refits on the same trained model and keeps everything else of the guard
    assert trained.guard is not None
    shared = trained.guard.state_dict()
    trained.config = trained.config.model_copy(update={"amount_level": "per_fund"})
    per_fund = trained.fit_guard(sim).state_dict()
    assert per_fund["amount_factor_source"].startswith("per fund: past purchases")
    assert set(per_fund["level_shift"]) == {str(f) for f in range(sim.n_funds)}
    assert all(per_fund[k] == shared[k] for k in ("mu_min", "mu_max", "sigma_max", "fund_shift", "sigma_scale"))
    refit = trained.score_matrix(sim)
    np.testing.assert_array_equal(refit["p"], pred["p"])
    refit_overall = float((w * refit["amount"]).sum() / (w * true_amount).sum())
    assert 0.8 < refit_overall < 1.2, refit_overall


def test_network_amount_head_learns_from_the_training_share_of_past_purchases(sim: Dataset, monkeypatch) -> None:
    """Each epoch the trainer gives an ESDPM-family network the same fraction of the past purchases as of the
    training exposures, in an order drawn from the epoch's seed, as extra amount rows; `amount_from_history:
    false` and a model without an amount head (esmm) get none. Training on them lowers the amount head's
    negative log-likelihood on the past purchases against the same network trained without them."""
    from eoca.models.losses import lognormal_logpdf
    from eoca.models.zoo.esdpm import EsdpmFamily

    seen: list[np.ndarray] = []
    real = EsdpmFamily._history_nll  # the past purchases' term, in the joint step and in amount_history_loss

    def spy(self: EsdpmFamily, mu: torch.Tensor, sigma: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
        seen.append(amount.numpy().copy())
        return real(self, mu, sigma, amount)

    monkeypatch.setattr(EsdpmFamily, "_history_nll", spy)
    base = {"model": "esdpm_ncg", "num_threads": 1, "max_epochs": 2, "patience": 2, "batch_size": 256}
    cfg = {**base, "max_train_rows": 2048}
    with_history = train(sim, cfg, None, progress=False)
    bound = with_history.bind(sim)
    n_history, n_train = bound.n_purchase_history(), bound.n_exposures("train")
    assert n_history > 1000
    per_epoch = round(n_history * 2048 / n_train)
    assert sum(a.size for a in seen) == 2 * per_epoch  # two epochs
    first = np.concatenate(seen)[:per_epoch]
    assert np.all(first > 0)
    all_amounts = np.concatenate([a for _, a in bound.purchase_history(4096)])
    assert not np.array_equal(first, all_amounts[:per_epoch]), "the epoch's purchases are drawn in random order"

    seen.clear()
    without = train(sim, {**cfg, "params": {"amount_from_history": False}}, None, progress=False)
    train(sim, {**cfg, "model": "esmm", "max_epochs": 1}, None, progress=False)
    assert not seen

    def nll(trained: TrainedModel) -> float:
        total, rows = 0.0, 0
        trained.model.eval()
        with torch.inference_mode():
            for batch, amount in bound.purchase_history(4096):
                out = trained.model.predict(batch)
                y = torch.from_numpy(amount).to(torch.float32) + 1.0
                total += float(-lognormal_logpdf(y, out.mu, out.sigma).sum())
                rows += amount.size
        return total / rows

    a, b = nll(with_history), nll(without)
    assert a < b - 0.05, (a, b)


def test_network_amount_from_past_purchases_is_calibrated_on_a_small_simulated_world(sim: Dataset) -> None:
    """`esdpm_ncg`'s guarded E[amount | convert], weighted by the true conversion probability, is within 25% of
    the simulator's truth over all funds when its amount head learns from the past purchases, and further off
    without them (0.51-0.61 over seeds 0-2 when this was written, 0.78-0.90 with them). The head is compared
    without the guard's shared mean-level factor (step 3); that factor, fitted on the same past purchases, then
    brings the head that never saw them closer to the truth (0.61 -> 0.90 here), and leaves the head that learned
    from them alone (its factor 1.07 lies within one standard error and is shrunk to 1)."""
    from eoca.simulate import truth_arrays

    truth = truth_arrays(sim)
    w = truth.p
    true_amount = truth.etv / np.maximum(truth.p, 1e-300)

    def overall(amount_from_history: bool) -> tuple[float, float]:
        params = {"amount_from_history": amount_from_history}
        cfg = {"model": "esdpm_ncg", "num_threads": 1, "max_epochs": 4, "params": params}
        trained = train(sim, cfg, None, progress=False)
        pred = trained.score_matrix(sim)
        assert trained.guard is not None and trained.guard.amount_factor_source.startswith("past purchases, 3574")
        level = float((w * pred["amount"]).sum() / (w * true_amount).sum())
        return level / trained.guard.amount_factor, level

    (with_history, with_factor), (without, without_factor) = overall(True), overall(False)
    assert 0.75 < with_history < 1.25, with_history
    assert abs(math.log(with_history)) < abs(math.log(without)), (with_history, without)
    assert with_factor == pytest.approx(with_history, rel=1e-6)
    assert abs(math.log(without_factor)) < abs(math.log(without)), (without_factor, without)
