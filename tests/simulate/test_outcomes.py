"""The outcome draw: common random numbers and agreement with the true ETV."""

from __future__ import annotations

import numpy as np
import pytest

from eoca.simulate import World, draw_outcomes, expected_value, outcome_draw, pair_uniforms, period_stream


def test_subset_calls_give_identical_draws() -> None:
    rng = np.random.default_rng(0)
    m = 5000
    cust = rng.integers(0, 10**6, size=m)
    fund = rng.integers(0, 8, size=m)
    p = rng.uniform(0.1, 0.9, size=m)
    mu = rng.uniform(5, 9, size=m)
    sigma = rng.uniform(0.3, 2.0, size=m)
    full = draw_outcomes(p, mu, sigma, cust, fund, stream=42)
    idx = rng.permutation(m)[:700]
    part = draw_outcomes(p[idx], mu[idx], sigma[idx], cust[idx], fund[idx], stream=42)
    np.testing.assert_array_equal(part.converted, full.converted[idx])
    np.testing.assert_array_equal(part.amount, full.amount[idx])
    assert np.all(full.amount[full.converted == 0] == 0)
    other = draw_outcomes(p, mu, sigma, cust, fund, stream=43)
    assert not np.array_equal(other.converted, full.converted)


def test_uniforms_distinguish_keys() -> None:
    u = pair_uniforms(np.array([1, 2, 1, 2]), np.array([2, 1, 2, 1]), stream=0)
    assert u.shape == (2, 4)
    assert u[0, 0] == u[0, 2] and u[0, 0] != u[0, 1]
    many = pair_uniforms(np.arange(200_000), np.zeros(200_000, dtype=int), stream=9)
    assert np.all((many > 0) & (many < 1))
    assert abs(many.mean() - 0.5) < 0.005
    assert abs(np.corrcoef(many[0], many[1])[0, 1]) < 0.01


def test_empirical_mean_matches_expected_value() -> None:
    # One law repeated over many distinct customers: independent draws whose mean must match Eq. 13.
    m = 2_000_000
    p, mu, sigma = 0.5, 7.0, 1.2
    out = draw_outcomes(
        np.full(m, p), np.full(m, mu), np.full(m, sigma), np.arange(m), np.zeros(m, dtype=np.int64), stream=3
    )
    etv = float(expected_value(np.array(p), np.array(mu), np.array(sigma)))
    se = out.amount.std() / np.sqrt(m)
    assert abs(out.amount.mean() - etv) < 4 * se
    assert abs(out.converted.mean() - p) < 4 * np.sqrt(p * (1 - p) / m)
    v = np.log1p(out.amount[out.converted == 1])
    assert abs(v.mean() - mu) < 0.01 and abs(v.std() - sigma) < 0.01


def test_click_is_coupled_to_conversion() -> None:
    m = 400_000
    p, ctr = np.full(m, 0.01), np.full(m, 0.05)
    args = (p, np.full(m, 6.0), np.full(m, 1.0), np.arange(m), np.ones(m, dtype=np.int64))
    out = draw_outcomes(*args, stream=1, ctr=ctr)
    assert out.clicked is not None
    assert np.all(out.clicked >= out.converted)
    assert abs(out.clicked.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / m)
    # Asking for clicks must not change the conversions (same stream, same pairs).
    np.testing.assert_array_equal(draw_outcomes(*args, stream=1).converted, out.converted)
    with pytest.raises(ValueError, match="ctr must be >= p"):
        draw_outcomes(*args, stream=1, ctr=np.full(m, 0.001))


def test_world_truth_matches_draws(world: World) -> None:
    """Over real pairs of the world: conversion rate and mean amount of many draws equal true p and ETV."""
    rng = np.random.default_rng(1)
    n, k = world.p.shape
    cust = rng.integers(0, n, size=300)
    fund = rng.integers(0, k, size=300)
    # Replicate the pairs under distinct customer keys so each replica is an independent draw of the same law.
    reps = 4000
    key = np.arange(cust.size * reps)
    c_rep, f_rep = np.repeat(cust, reps), np.repeat(fund, reps)
    p = world.p[c_rep, f_rep]
    out = draw_outcomes(p, world.mu[c_rep, f_rep], world.sigma[c_rep, f_rep], key, f_rep, 5)
    # Conversions: a sum of independent Bernoulli(p_i), so its variance is sum p_i (1 - p_i).
    assert abs(out.converted.sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
    se = out.amount.std() / np.sqrt(key.size)
    assert abs(out.amount.mean() - world.etv[cust, fund].mean()) < 4 * se
    assert np.all(out.amount[out.converted == 0] == 0)


def test_pair_draws_follow_their_own_law(world: World) -> None:
    """Pair by pair, for pairs of very different (p, mu, sigma): the drawn conversion rate is p and the
    converters' log(amount + 1) has mean mu and standard deviation sigma (Eq. 7's lognormal)."""
    el = np.argwhere(world.eligible)
    ea = world.etv[world.eligible]
    # Pairs spread over the ETV range: the smallest, the median and the largest ETV among eligible pairs,
    # plus the extremes of sigma.
    sig = world.sigma[world.eligible]
    picks = [np.argmin(ea), np.argsort(ea)[ea.size // 2], np.argmax(ea), np.argmin(sig), np.argmax(sig)]
    reps = 400_000
    for i in picks:
        c, f = el[i]
        p, mu, sigma = world.p[c, f], world.mu[c, f], world.sigma[c, f]
        keys = np.arange(reps)
        out = draw_outcomes(np.full(reps, p), np.full(reps, mu), np.full(reps, sigma), keys, np.full(reps, f), 11)
        n_conv = int(out.converted.sum())
        assert abs(n_conv - reps * p) < 4.5 * np.sqrt(reps * p * (1 - p)) + 1, (c, f, n_conv, reps * p)
        if n_conv >= 200:
            v = np.log1p(out.amount[out.converted == 1])
            assert abs(v.mean() - mu) < 4.5 * sigma / np.sqrt(n_conv), (c, f, v.mean(), mu)
            assert abs(v.std() / sigma - 1) < 4.5 / np.sqrt(2 * n_conv), (c, f, v.std(), sigma)


def test_outcome_draw_wrapper(world: World) -> None:
    draw = outcome_draw(world.dataset, period_stream(world.config.seed, 4))
    c = np.arange(1000)
    f = c % world.p.shape[1]
    conv, amount = draw(c, f)
    ref = draw_outcomes(world.p[c, f], world.mu[c, f], world.sigma[c, f], c, f, period_stream(world.config.seed, 4))
    np.testing.assert_array_equal(conv, ref.converted)
    np.testing.assert_array_equal(amount, ref.amount)
