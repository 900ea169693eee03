"""TAMOR: the multi-scenario world, the network's parts, training and the simulated period (tiny worlds)."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import torch

from eoca.errors import ConfigError, EocaError
from eoca.tamor.config import SCENARIO_NAMES, MultiScenarioWorldConfig, TamorConfig, TamorTrainConfig
from eoca.tamor.evaluate import (
    METRICS,
    build_slates,
    contract_demand,
    expected_upgrades,
    oracle_scores,
    paired_lift,
    per_customer_outcomes,
    simulate_next_period,
)
from eoca.tamor.model import TamorBatch, UserBias, Variant, tier_balanced_mean
from eoca.tamor.train import WeightAverage, WorldTensors, build_net, fit_framework
from eoca.tamor.world import SPECIFIC_SCENARIO, MultiScenarioWorld, common_numbers, generate_multi_scenario_world

TINY = MultiScenarioWorldConfig(n_customers=1500)
TRAIN = TamorTrainConfig(epochs=4, batch_size=256, dim=8, user_bias_buckets=4096)


@pytest.fixture(scope="module")
def world() -> MultiScenarioWorld:
    return generate_multi_scenario_world(TINY, seed=3)


def test_world_is_deterministic_for_a_seed() -> None:
    a = generate_multi_scenario_world(MultiScenarioWorldConfig(n_customers=400), seed=5)
    b = generate_multi_scenario_world(MultiScenarioWorldConfig(n_customers=400), seed=5)
    c = generate_multi_scenario_world(MultiScenarioWorldConfig(n_customers=400), seed=6)
    for name in ("tier", "user_x", "holdings", "item_specific", "p_click", "p_cvr", "mu"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("customer", "item", "click", "convert", "amount", "upgrade"):
        np.testing.assert_array_equal(getattr(a.train, name), getattr(b.train, name))
    assert not np.array_equal(a.p_click, c.p_click)


def test_tier_statistics_hold() -> None:
    cfg = MultiScenarioWorldConfig(n_customers=20_000)
    w = generate_multi_scenario_world(cfg, seed=0)
    share = w.tier_counts() / w.n_customers
    assert abs(share[0] - cfg.new_fraction) < 0.02
    assert abs(share[2] - cfg.high_fraction) < 0.01
    assert share[2] == share.min()  # high-holding customers are the smallest tier
    assert w.own_propensity is not None  # diagnostic truth of what the user bias should learn
    assert abs(float(w.own_propensity.std()) - cfg.user_bias_sd) < 0.05
    assert np.all(w.holdings[w.tier == 0] == 0)
    assert w.holdings[w.tier == 2].min() >= w.threshold > w.holdings[w.tier == 1].max()
    # high-holding customers are worth far more per exposure, and only the lower tiers can upgrade
    etv = w.true_etv()
    assert etv[w.tier == 2].mean() > 5 * etv[w.tier == 1].mean()
    assert np.all(w.train.upgrade[w.tier[w.train.customer] == 2] == -1)
    assert (w.train.upgrade > 0).sum() > 0
    assert np.all(w.true_p_upgrade()[w.tier == 2] == 0)
    # behaviour differs by tier: new customers favour campaigns, high-holding customers avoid them
    tier, scen = w.tier[w.train.customer], w.scenario[w.train.item]
    camp = scen == SCENARIO_NAMES.index("campaign")
    assert w.train.click[(tier == 0) & camp].mean() > w.train.click[(tier == 2) & camp].mean()


def test_scenario_features_are_missing_outside_their_scenario(world: MultiScenarioWorld) -> None:
    own = SPECIFIC_SCENARIO[None, :] == world.scenario[:, None]
    assert np.all(np.isfinite(world.item_specific[own]))
    assert np.all(np.isnan(world.item_specific[~own]))


def test_too_few_safe_items_is_a_clear_error() -> None:
    cfg = MultiScenarioWorldConfig(n_customers=100, items_per_scenario=[3, 0, 0, 0], slots=3)
    with pytest.raises(ConfigError, match="risk level 1"):
        generate_multi_scenario_world(cfg, seed=0)


def _same_user_every_tier(world: MultiScenarioWorld, item: int) -> TamorBatch:
    t = WorldTensors.of(world)
    b = t.batch(torch.zeros(3, dtype=torch.int64), torch.full((3,), item, dtype=torch.int64))
    b.tier = torch.arange(3)
    return b


@pytest.mark.parametrize(("name", "aware"), [("tamor", True), ("pooled", False)])
def test_tier_gates_change_the_representation(world: MultiScenarioWorld, name: str, aware: bool) -> None:
    torch.manual_seed(0)
    net = build_net(name, world, TRAIN, world.train)
    for p in net.parameters():  # gates start as the identity; any trained state moves them
        torch.nn.init.normal_(p, std=0.3)
    net.eval()
    b = _same_user_every_tier(world, item=0)  # one customer's features under tiers new, low, high
    with torch.no_grad():
        out = net(b)
        if aware:
            assert net.user_gate is not None and net.tier_emb is not None
            user = net.user_mlp(b.user_x)
            gated = net.user_gate(user, net.tier_emb(b.tier))
            assert not torch.allclose(gated[0], gated[1]) and not torch.allclose(gated[1], gated[2])
            # the item gate: one item's representation under each tier, and under another scenario prior
            assert net.item_gate is not None
            item = torch.ones(3, net.item_gate.out.out_features)
            scen = net.scen_emb(torch.zeros(3, dtype=torch.int64))
            by_tier = net.item_gate(item, torch.cat([net.tier_emb(b.tier), scen], dim=1))
            assert not torch.allclose(by_tier[0], by_tier[2])
            other = net.scen_emb(torch.full((3,), 3, dtype=torch.int64))
            by_scen = net.item_gate(item, torch.cat([net.tier_emb(b.tier), other], dim=1))
            assert not torch.allclose(by_tier[0], by_scen[0])
    differs = not torch.allclose(out.p[0], out.p[2]) and not torch.allclose(out.etv[1], out.etv[2])
    assert differs == aware


@pytest.mark.parametrize("name", ["tamor", "tamor_no_scenario", "star", "per_tier", "tamor_item_towers"])
def test_items_of_every_scenario_score_without_nan(world: MultiScenarioWorld, name: str) -> None:
    model = fit_framework(name, world, TamorTrainConfig(epochs=1, dim=8, user_bias_buckets=1024), seed=0)
    out = model.score_matrix(world, WorldTensors.of(world))
    for field in ("p", "pctr", "etv", "amount", "p_upgrade"):
        v = getattr(out, field)
        assert torch.isfinite(v).all(), field
    assert torch.all((out.p >= 0) & (out.p <= 1))
    assert torch.all(out.p_upgrade <= out.p + 1e-7)  # an upgrade needs a purchase


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_each_task_loss_falls(world: MultiScenarioWorld, schedule: str) -> None:
    model = fit_framework("tamor", world, TRAIN.model_copy(update={"schedule": schedule}), seed=0)
    for task in ("click", "conversion", "amount", "upgrade"):
        curve = model.stats.task_loss[task]
        assert curve[-1] < curve[0], (task, curve)
    stats = model.stats
    assert stats.rows == TRAIN.epochs * len(world.train)
    assert stats.cpu_seconds > 0 and stats.samples_per_cpu_second == stats.rows / stats.cpu_seconds


def test_unseen_customer_gets_the_prior_zero_bias() -> None:
    bias = UserBias(buckets=8, dim=3)
    torch.nn.init.normal_(bias.table.weight)
    bias.register(np.array([10, 11, 12], dtype=np.int64))
    keys = torch.tensor([10, 11, 12, 999, 10 + 8 * 7919])
    # the last key hashes somewhere; whatever bucket it lands in, it was never registered
    out = bias(keys)
    assert torch.all(out[:3].abs().sum(1) > 0)
    assert torch.all(out[3:] == 0)
    assert torch.all(UserBias(buckets=8, dim=3)(keys) == 0)  # nothing registered: all prior


def test_unseen_customer_scores_through_the_model(world: MultiScenarioWorld) -> None:
    model = fit_framework("tamor", world, TamorTrainConfig(epochs=1, dim=8, user_bias_buckets=1024), seed=0)
    net = model.nets[-1]
    assert net.user_bias is not None
    b = WorldTensors.of(world).batch(torch.tensor([0, 0]), torch.tensor([1, 1]))
    b.user_key = torch.tensor([int(world.customer_id[0]), 10**12])  # a known and a brand-new customer
    with torch.no_grad():
        ub = net.user_bias(b.user_key)
        out = net(b)
    assert torch.all(ub[1] == 0)
    assert torch.isfinite(out.p).all()


def test_slates_contracts_and_simulated_period(world: MultiScenarioWorld) -> None:
    cfg = TamorConfig()
    scores = oracle_scores(world, cfg.rank)
    free = build_slates(scores, world, cfg.rank)
    assert free.shape == (world.n_customers, cfg.rank.k)
    assert np.all(world.eligible()[np.arange(world.n_customers)[:, None], free])
    contracted = build_slates(scores, world, cfg.rank.model_copy(update={"contracts": "proportional"}))
    np.testing.assert_array_equal(
        np.bincount(contracted.ravel(), minlength=world.n_items), contract_demand(world, cfg.rank.k)
    )
    assert np.all(world.eligible()[np.arange(world.n_customers)[:, None], contracted])
    rng = np.random.default_rng(0)
    random_slates = np.stack([rng.choice(np.flatnonzero(e), cfg.rank.k, replace=False) for e in world.eligible()])
    res = simulate_next_period(
        world, {"oracle": free, "random": random_slates}, control="random", oracle="oracle", cfg=cfg.evaluation
    )
    lift = res.lift("oracle", "random")
    assert lift["expected_amount"][1] > 0  # the oracle's interval lies above the random slates'
    assert res.oracle_share("oracle")["expected_amount"] == pytest.approx(100.0)
    # common random numbers: the same slates give the same outcome, so a framework against itself has zero lift
    same = simulate_next_period(world, {"a": free, "b": free.copy()}, control="a", oracle=None)
    assert same.lift("b", "a")["amount"] == (0.0, 0.0, 0.0)


def test_calibration_matches_observed_totals(world: MultiScenarioWorld) -> None:
    model = fit_framework("pooled", world, TamorTrainConfig(epochs=1, dim=8, validation_fraction=0.2), seed=0)
    assert model.calibration["etv"] != 1.0  # fitted on the held-out fifth of the training rows
    tensors = WorldTensors.of(world)
    model.calibrate(tensors, world.test)
    out = model.predict(tensors, world.test.customer, world.test.item)
    assert float(out.etv.sum()) == pytest.approx(float(world.test.amount.sum()), rel=1e-3)
    assert torch.all(out.p_upgrade <= out.p)


def test_expected_upgrades_is_the_truth_for_one_item_and_the_long_run_average(world: MultiScenarioWorld) -> None:
    rng = np.random.default_rng(1)
    one = np.stack([rng.choice(np.flatnonzero(e), 1) for e in world.eligible()])
    exact = expected_upgrades(world, one, [])
    np.testing.assert_allclose(exact, world.true_p_upgrade()[np.arange(world.n_customers), one[:, 0]], rtol=1e-5)
    slates = build_slates(oracle_scores(world, TamorConfig().rank), world, TamorConfig().rank)
    reps = 200
    numbers = [common_numbers(world, r) for r in range(reps)]
    realised = np.mean([per_customer_outcomes(world, slates, nb)[:, 3] for nb in numbers], axis=0)
    expected = expected_upgrades(world, slates, [nb[2] for nb in numbers[:8]])
    assert np.all(expected[world.tier == 2] == 0)
    assert expected.sum() == pytest.approx(realised.sum(), rel=0.05)
    assert expected.sum() > 0


def test_pooled_lift_sums_periods_and_resamples_within_each(world: MultiScenarioWorld) -> None:
    cfg = TamorConfig()
    good = build_slates(oracle_scores(world, cfg.rank), world, cfg.rank)
    rng = np.random.default_rng(0)
    rand = np.stack([rng.choice(np.flatnonzero(e), cfg.rank.k, replace=False) for e in world.eligible()])
    one = simulate_next_period(world, {"good": good, "random": rand}, control="random", oracle=None)
    assert paired_lift([one], "good", "random") == one.lift("good", "random")
    other = simulate_next_period(world, {"good": good, "random": rand}, control="random", oracle=None, seed=1)
    both = paired_lift([one, other], "good", "random")
    single = one.lift("good", "random")
    for metric in METRICS:
        assert both[metric][0] == pytest.approx(single[metric][0])  # same totals twice: same ratio
        assert both[metric][2] - both[metric][1] < single[metric][2] - single[metric][1]  # twice the customers
    with pytest.raises(EocaError):
        paired_lift([], "good", "random")


def test_log_gap_is_what_the_customer_lacks(world: MultiScenarioWorld) -> None:
    gap = world.log_gap()
    lower = world.tier < 2
    np.testing.assert_allclose(gap[lower], np.log(world.threshold - world.holdings[lower]), rtol=1e-5)
    assert np.all(gap[~lower] == 0)


def test_upgrade_link_raises_p_upgrade_as_the_gap_shrinks(world: MultiScenarioWorld) -> None:
    torch.manual_seed(0)
    net = build_net("tamor", world, TRAIN, world.train)
    with torch.no_grad():
        for p in net.towers["upgrade"].parameters():
            p.zero_()  # only the link moves the upgrade logit
    net.eval()
    b = WorldTensors.of(world).batch(torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    b.log_gap = torch.tensor([12.0, 10.0, 8.0])
    with torch.no_grad():
        p_up = net(b).p_upgrade
    assert p_up[0] < p_up[1] < p_up[2]
    plain = build_net("tamor_no_link", world, TRAIN, world.train)
    assert plain.log_retention is None and net.log_retention is not None


def test_user_bias_is_a_level_shift_of_the_click_and_conversion_logits(world: MultiScenarioWorld) -> None:
    torch.manual_seed(0)
    nets = {name: build_net(name, world, TRAIN, world.train) for name in ("tamor", "tamor_previous")}
    tensors = WorldTensors.of(world)
    b = tensors.batch(torch.zeros(6, dtype=torch.int64), torch.arange(6))  # one customer, six items
    shifts = {}
    for name, net in nets.items():
        assert net.user_bias is not None
        net.user_bias.register(world.customer_id[:1])
        with torch.no_grad():
            torch.nn.init.normal_(net.user_bias.table.weight)
            for p in net.parameters():
                if p is not net.user_bias.table.weight:
                    p.add_(0.3 * torch.randn_like(p))  # a network away from its initialisation
            h = net._logits(b)
        shifts[name] = (h.click - h.base_click, h.cvr - h.base_cvr)
    click, cvr = shifts["tamor"]
    # the same shift for every item of the customer (so alone it cannot reorder a free slate), and not zero
    assert float(click.abs().min()) > 1e-4 and float(cvr.abs().min()) > 1e-4
    torch.testing.assert_close(click, click[:1].expand(6))
    torch.testing.assert_close(cvr, cvr[:1].expand(6))
    # as a tower input (the earlier design) the bias interacts with the item
    tower_click, _ = shifts["tamor_previous"]
    assert float(tower_click.max() - tower_click.min()) > 1e-4
    # an unregistered customer gets no shift at all
    b.user_key = torch.full((6,), 10**12)
    with torch.no_grad():
        h = nets["tamor"]._logits(b)
    torch.testing.assert_close(h.click, h.base_click)


def test_tier_towers_give_each_tier_its_own_heads(world: MultiScenarioWorld) -> None:
    torch.manual_seed(0)
    net = build_net("tamor", world, TRAIN, world.train)
    assert all(len(cast(torch.nn.ModuleList, towers)) == 3 for towers in net.towers.values())
    tensors = WorldTensors.of(world)
    cust = torch.tensor([int(np.flatnonzero(world.tier == t)[0]) for t in range(3)])
    b = tensors.batch(cust, torch.zeros(3, dtype=torch.int64))
    with torch.no_grad():
        before = net._logits(b).click.clone()
        for p in cast(torch.nn.ModuleList, net.towers["click"])[2].parameters():
            p.add_(1.0)  # only the high tier's click tower changes
        after = net._logits(b).click
    torch.testing.assert_close(before[:2], after[:2])
    assert abs(float(after[2] - before[2])) > 1e-3


def test_tier_towers_need_tier_awareness() -> None:
    with pytest.raises(ValueError, match="tier_towers needs tier_aware"):
        Variant(tier_aware=False, tier_towers=True)


def testtier_balanced_mean_weights_every_tier_alike() -> None:
    terms = torch.tensor([1.0, 3.0, 10.0, 4.0, 100.0])
    rows = torch.tensor([True, True, True, True, False])
    tier = torch.tensor([0, 0, 2, 2, 1])
    # tier 0: mean(1, 3) = 2; tier 2: mean(10, 4) = 7; tier 1 has no row the task applies to
    assert float(tier_balanced_mean(terms, rows, tier)) == pytest.approx(4.5)
    assert float(tier_balanced_mean(terms, torch.zeros(5, dtype=torch.bool), tier)) == 0.0


def test_tier_balanced_loss_is_the_plain_loss_within_one_tier(world: MultiScenarioWorld) -> None:
    tensors = WorldTensors.of(world)
    low = np.flatnonzero(world.tier[world.train.customer] == 1)[:300]
    log = world.train.subset(np.isin(np.arange(len(world.train)), low))
    b = tensors.batch(torch.from_numpy(log.customer.astype(np.int64)), torch.from_numpy(log.item.astype(np.int64)))
    b.click, b.convert = torch.from_numpy(log.click), torch.from_numpy(log.convert)
    b.amount, b.upgrade = torch.from_numpy(log.amount), torch.from_numpy(log.upgrade)
    losses = {}
    for name in ("tamor_pooled_init", "tamor_balanced"):  # only the loss differs
        torch.manual_seed(0)
        losses[name] = build_net(name, world, TRAIN, world.train).task_losses(b)
    for task in ("click", "conversion", "amount"):
        torch.testing.assert_close(losses["tamor_pooled_init"][task], losses["tamor_balanced"][task])
    # the plain upgrade loss averages over every row, the balanced one over the rows the task applies to
    share = float((log.upgrade >= 0).mean())
    torch.testing.assert_close(losses["tamor_pooled_init"]["upgrade"], losses["tamor_balanced"]["upgrade"] * share)


def test_tier_init_starts_each_tier_at_its_own_rates(world: MultiScenarioWorld) -> None:
    log = world.train
    tiers = world.tier[log.customer]
    net = build_net("tamor", world, TRAIN, log)
    pooled = build_net("tamor_pooled_init", world, TRAIN, log)

    def head_bias(n: torch.nn.Module, task: str, t: int) -> torch.Tensor:
        tower = cast(torch.nn.Sequential, cast(torch.nn.ModuleList, cast(torch.nn.ModuleDict, n.towers)[task])[t])
        return cast(torch.nn.Linear, tower[2]).bias.detach()

    for t in range(3):
        rows = tiers == t
        click_bias = float(head_bias(net, "click", t))
        assert click_bias == pytest.approx(math.log(log.click[rows].mean() / (1 - log.click[rows].mean())), rel=1e-6)
        mu_bias = float(head_bias(net, "amount", t)[0])
        conv = rows & (log.convert > 0)
        assert mu_bias == pytest.approx(float(np.log(log.amount[conv]).mean()), rel=1e-6)
    pooled_click = float(head_bias(pooled, "click", 2))
    assert pooled_click == pytest.approx(math.log(log.click.mean() / (1 - log.click.mean())), rel=1e-6)
    with pytest.raises(ValueError, match="tier_init needs tier_towers"):
        Variant(tier_towers=False, tier_init=True)


def test_weight_average_follows_the_warm_up_then_the_decay() -> None:
    w = torch.nn.Parameter(torch.tensor([0.0]))
    average = WeightAverage([w], decay=0.5)
    with torch.no_grad():
        w.fill_(10.0)
    average.update()  # d_1 = min(0.5, 1 / 10) = 0.1: 0.1 * 0 + 0.9 * 10
    assert float(average.average[0]) == pytest.approx(9.0)
    with torch.no_grad():
        w.fill_(20.0)
    for _ in range(8):
        average.update()  # d_t = t / (9 + t) <= 0.5 up to t = 9: the decay caps it from t = 10 on
    with torch.no_grad():
        w.fill_(0.0)
    average.update()  # t = 10: d = min(0.5, 10 / 19) = 0.5
    before = float(average.average[0])
    average.update()
    assert float(average.average[0]) == pytest.approx(before * 0.5)
    average.copy_to_params()
    assert float(w) == pytest.approx(before * 0.5)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([w], decay=1.0)


def test_ema_changes_the_trained_weights_and_zero_keeps_them(world: MultiScenarioWorld) -> None:
    cfg = TRAIN.model_copy(update={"epochs": 1})
    nets = {}
    for decay in (0.0, 0.9):
        nets[decay] = fit_framework("pooled", world, cfg.model_copy(update={"ema_decay": decay}), seed=0).nets[-1]
    plain = fit_framework("pooled", world, cfg, seed=0).nets[-1]
    same = [torch.equal(a, b) for a, b in zip(nets[0.0].parameters(), plain.parameters(), strict=True)]
    assert all(same)
    moved = [not torch.equal(a, b) for a, b in zip(nets[0.9].parameters(), plain.parameters(), strict=True)]
    assert any(moved)


def test_towers_that_read_the_item_see_the_item_representation(world: MultiScenarioWorld) -> None:
    torch.manual_seed(0)
    net = build_net("tamor_item_towers", world, TRAIN, world.train)
    click = cast(torch.nn.Sequential, cast(torch.nn.ModuleList, cast(torch.nn.ModuleDict, net.towers)["click"])[1])
    assert cast(torch.nn.Linear, click[0]).in_features == 2 * TRAIN.dim
    tensors = WorldTensors.of(world)
    low = torch.tensor([int(np.flatnonzero(world.tier == 1)[0])] * 2)
    b = tensors.batch(low, torch.tensor([0, 1]))
    with torch.no_grad():
        before = net._logits(b).click.clone()
        # only the item half of the low tier's click tower changes: its output moves
        cast(torch.nn.Linear, click[0]).weight[:, TRAIN.dim :].add_(0.5)
        after = net._logits(b).click
    assert not torch.allclose(before, after)
