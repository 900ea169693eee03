"""Latent and observable parts of the simulated platform: customers, funds, behaviour events and the
customer-merchant consumption graph.

Every random step draws from its own generator, ``numpy.random.default_rng([seed, step, chunk])``, so a step's
output depends only on the seed, the config and its inputs, never on the order steps run in. Steps that scale
with the number of customers run over fixed-size customer chunks (the chunk size is a function of the config,
not of the machine), which bounds memory and keeps the result identical from run to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from eoca.data.schema import EVENT_TYPES
from eoca.simulate.config import SimulatorConfig
from eoca.simulate.outcomes import sample_amounts

# Stream identifiers of the random steps (the second element of each generator's seed).
STEP_CUSTOMERS, STEP_FUNDS, STEP_PAIRS, STEP_EVENTS, STEP_MERCHANTS, STEP_CONSUMPTION, STEP_POLICY = range(1, 8)
STEP_BLOCKS = 8  # the customer seed of each block of a blocked world

EVENT_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}
"""Integer code of each event type (index into :data:`eoca.data.schema.EVENT_TYPES`)."""

Tick = Callable[[], None]


def step_rng(seed: int, step: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, chunk])


def chunks(n: int, size: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, start, stop) over range(n) in blocks of ``size``."""
    for k, start in enumerate(range(0, n, size)):
        yield k, start, min(n, start + size)


def categorical_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from many categorical distributions at once.

    Args:
        cdf: float array, shape (R, C): cumulative probabilities per row, non-decreasing, last column 1.
        rows: int array, shape (m,): which row's distribution each draw uses.
        u: float array in [0, 1), shape (m,).

    Returns:
        int64 array, shape (m,): the drawn column of each draw.
    """
    n_rows, n_cols = cdf.shape
    # Offsetting row r by r turns R separate searches into one sorted search over the flattened table.
    flat = (cdf + np.arange(n_rows, dtype=np.float64)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1).astype(np.int64)


def _cdf(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax CDF of ``logits`` (shape (R, C)), last column exactly 1."""
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return cdf


# --- customers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerLatents:
    """Hidden customer traits; arrays of shape (N,) except ``preference`` (N, T) over fund types.

    ``z_capital``, ``risk_appetite``, ``engagement``, ``ticket_style``, ``dispersion`` are standard normal;
    ``log_capital = capital_log_mean + capital_log_sd * z_capital``.
    """

    z_capital: np.ndarray
    log_capital: np.ndarray
    risk_appetite: np.ndarray
    engagement: np.ndarray
    ticket_style: np.ndarray
    dispersion: np.ndarray
    preference: np.ndarray


def _correlated(rng: np.random.Generator, base: np.ndarray, corr: float) -> np.ndarray:
    return corr * base + np.sqrt(1.0 - corr * corr) * rng.standard_normal(base.shape[0])


def generate_customers(cfg: SimulatorConfig) -> tuple[CustomerLatents, dict[str, np.ndarray]]:
    """Latent traits and observable profile columns of N customers.

    Returns:
        (latents, columns): columns maps ``risk_tolerance`` (int64, 1..5) and every profile feature to an
        array of shape (N,); ``stated_preference`` holds fund-type indices (named by the caller).
    """
    cc = cfg.customers
    types = cfg.funds.fund_types
    n, n_types = cfg.world.n_customers, len(types)
    rng = step_rng(cfg.seed, STEP_CUSTOMERS)
    z_cap = rng.standard_normal(n)
    appetite = _correlated(rng, z_cap, cc.appetite_capital_corr)
    engagement = _correlated(rng, z_cap, cc.engagement_capital_corr)
    ticket_style = rng.standard_normal(n)
    dispersion = rng.standard_normal(n)
    type_risk = (np.array([t.risk_level for t in types], dtype=np.float64) - 3.0) / 2.0
    preference = cc.preference_risk_affinity * appetite[:, None] * type_risk[None, :] + cc.preference_sd * (
        rng.standard_normal((n, n_types))
    )
    lat = CustomerLatents(
        z_capital=z_cap,
        log_capital=cc.capital_log_mean + cc.capital_log_sd * z_cap,
        risk_appetite=appetite,
        engagement=engagement,
        ticket_style=ticket_style,
        dispersion=dispersion,
        preference=preference,
    )

    # Observables: each a noisy, partly nonlinear view of the latents, as a questionnaire or KYC record is.
    tolerance = np.clip(np.rint(3.0 + appetite + cc.tolerance_noise_sd * rng.standard_normal(n)), 1, 5)
    age = np.clip(40.0 + 6.0 * z_cap - 4.0 * appetite + 9.0 * rng.standard_normal(n), 18.0, 85.0).round()
    # Tier 1 is the largest cities: wealthier customers live there more often.
    tier_x = -0.6 * z_cap + 0.8 * rng.standard_normal(n)
    city_tier = 1 + np.digitize(tier_x, [-0.84, 0.0, 0.84])
    inc_x = (z_cap + cc.income_noise_sd * rng.standard_normal(n)) / np.sqrt(1.0 + cc.income_noise_sd**2)
    income_band = np.digitize(inc_x, ndtri(np.arange(1, 10) / 10.0))
    holds = rng.random(n) >= cc.no_holdings_fraction
    log_holdings = np.where(
        holds, np.maximum(lat.log_capital - 2.0 + cc.holdings_noise_sd * rng.standard_normal(n), 0.0), 0.0
    )
    tenure = np.clip(24.0 + 12.0 * engagement + 15.0 * rng.standard_normal(n), 0.0, 120.0).round()
    sessions = rng.poisson(np.exp(1.6 + 0.6 * engagement)).astype(np.float64)
    stated = np.argmax(preference + cc.stated_preference_noise_sd * rng.standard_normal((n, n_types)), axis=1)
    cols = {
        "risk_tolerance": tolerance.astype(np.int64),
        "age": age,
        "city_tier": city_tier.astype(np.int64),
        "income_band": income_band.astype(np.int64),
        "log_holdings": log_holdings,
        "tenure_months": tenure,
        "sessions_30d": sessions,
        "stated_preference": stated.astype(np.int64),
    }
    return lat, cols


# --- funds ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundLatents:
    """Fund traits, arrays of shape (K,): type index, latent appeal (click logit), amount effect (log-amount
    shift) and centred risk ``(risk_level - 3) / 2``."""

    type_index: np.ndarray
    appeal: np.ndarray
    amount_effect: np.ndarray
    centred_risk: np.ndarray


def generate_funds(cfg: SimulatorConfig) -> tuple[FundLatents, dict[str, np.ndarray]]:
    """K funds; fund j has type j mod T, so every type appears once K >= T and fund 0 is the risk-1 type.

    Returns:
        (latents, columns) with ``risk_level`` (int64, 1..5), ``fund_type`` (type index), ``annual_return``,
        ``volatility``, ``management_fee`` (all in %) and ``fund_age_years``, each shape (K,).
    """
    fc = cfg.funds
    types = fc.fund_types
    k = cfg.world.n_funds
    rng = step_rng(cfg.seed, STEP_FUNDS)
    tix = np.arange(k) % len(types)
    base_risk = np.array([types[t].risk_level for t in tix], dtype=np.int64)
    jitter = np.where(rng.random(k) < fc.risk_jitter_prob, rng.choice([-1, 1], size=k), 0)
    jitter[0] = 0
    risk = np.clip(base_risk + jitter, 1, 5)
    mean_ret = np.array([types[t].annual_return for t in tix])
    vol_type = np.array([types[t].volatility for t in tix])
    ret_sd = 0.25 * vol_type
    ret_z = rng.standard_normal(k)
    annual_return = mean_ret + ret_sd * ret_z
    volatility = vol_type * np.exp(0.15 * rng.standard_normal(k))
    fee = np.array([types[t].management_fee for t in tix]) * np.exp(0.2 * rng.standard_normal(k))
    age = rng.uniform(0.5, 15.0, size=k)
    appeal = fc.appeal_return * ret_z + fc.appeal_sd * rng.standard_normal(k)
    amount_effect = fc.amount_effect_sd * rng.standard_normal(k)
    lat = FundLatents(
        type_index=tix.astype(np.int64),
        appeal=appeal,
        amount_effect=amount_effect,
        centred_risk=(risk.astype(np.float64) - 3.0) / 2.0,
    )
    cols = {
        "risk_level": risk.astype(np.int64),
        "fund_type": tix.astype(np.int64),
        "annual_return": annual_return.round(3),
        "volatility": volatility.round(3),
        "management_fee": fee.round(3),
        "fund_age_years": age.round(2),
    }
    return lat, cols


# --- behaviour events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Events:
    """Behaviour events sorted by (customer, time); arrays of shape (n_events,).

    ``event_type`` holds codes of :data:`EVENT_CODE`; ``time`` is a day in [-history_days, -1]; ``amount`` is
    the purchase or redemption amount (0 for clicks and favourites).
    """

    customer: np.ndarray
    fund: np.ndarray
    time: np.ndarray
    event_type: np.ndarray
    amount: np.ndarray


def generate_events(
    cfg: SimulatorConfig,
    pref_pair: np.ndarray,
    eligible: np.ndarray,
    engagement: np.ndarray,
    fund_appeal: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    tick: Tick | None = None,
) -> Events:
    """Behaviour history before period 0, generated from preferences, eligibility and amounts.

    Each customer has Poisson(events_mean * engagement factor) events (capped at events_max). An event's fund
    is drawn by softmax of preference_scale * preference + fund appeal, with a penalty on funds above the
    customer's tolerance; its type by the configured weights (purchase and sell only on eligible funds); a
    purchase amount from the pair's own amount law (so the history reveals capital and its dispersion); a
    sell redeems such an amount times Uniform(sell_fraction_min, 1).

    Args:
        pref_pair, eligible, mu, sigma: shape (N, K); engagement: shape (N,); fund_appeal: shape (K,).
        tick: called once per customer chunk (progress).
    """
    bc = cfg.behaviour
    n, k = pref_pair.shape
    w_elig = np.array([bc.click_weight, bc.purchase_weight, bc.sell_weight, bc.favourite_weight])
    w_inel = np.array([bc.click_weight, 0.0, 0.0, bc.favourite_weight])
    cum_elig = np.cumsum(w_elig / w_elig.sum())
    cum_inel = np.cumsum(w_inel / w_inel.sum())
    order = [EVENT_CODE[t] for t in ("click", "purchase", "sell", "favourite")]
    rate = bc.events_mean * np.exp(bc.events_engagement * engagement - 0.5 * bc.events_engagement**2)
    parts: list[tuple[np.ndarray, ...]] = []
    for ci, start, stop in chunks(n, _chunk_size(k)):
        rng = step_rng(cfg.seed, STEP_EVENTS, ci)
        m = stop - start
        count = np.minimum(rng.poisson(rate[start:stop]), bc.events_max)
        rows = np.repeat(np.arange(m), count)
        logits = bc.preference_scale * pref_pair[start:stop] + fund_appeal[None, :]
        logits -= bc.ineligible_penalty * ~eligible[start:stop]
        fund = categorical_rows(_cdf(logits), rows, rng.random(rows.size))
        elig = eligible[start + rows, fund]
        u = rng.random(rows.size)
        kind_pos = np.where(elig, np.searchsorted(cum_elig, u, side="right"), np.searchsorted(cum_inel, u, "right"))
        kind = np.asarray(order, dtype=np.int8)[np.minimum(kind_pos, 3)]
        time = rng.integers(-cfg.world.history_days, 0, size=rows.size)
        amount = np.zeros(rows.size)
        money = (kind == EVENT_CODE["purchase"]) | (kind == EVENT_CODE["sell"])
        c_m, f_m = start + rows[money], fund[money]
        amt = sample_amounts(mu[c_m, f_m], sigma[c_m, f_m], rng)
        is_sell = kind[money] == EVENT_CODE["sell"]
        amt[is_sell] *= rng.uniform(bc.sell_fraction_min, 1.0, size=int(is_sell.sum()))
        amount[money] = amt
        srt = np.lexsort((time, rows))
        parts.append(((start + rows)[srt], fund[srt], time[srt], kind[srt], amount[srt]))
        if tick is not None:
            tick()
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)] if parts else [np.zeros(0)] * 5
    return Events(
        customer=cols[0].astype(np.int64),
        fund=cols[1].astype(np.int64),
        time=cols[2].astype(np.int64),
        event_type=cols[3].astype(np.int8),
        amount=cols[4].astype(np.float64),
    )


def _chunk_size(k: int) -> int:
    # About 2^22 (customer, fund) cells per chunk: tens of MB per temporary whatever K is.
    return max(1024, (1 << 22) // max(k, 1))


def chunk_count(n: int, k: int) -> int:
    """Number of customer chunks the chunked steps use (for progress totals)."""
    size = _chunk_size(k)
    return (n + size - 1) // size


# --- consumption graph ---------------------------------------------------------------------------------------

_SPEND_BINS = 256
_SPEND_RANGE = 5.0


@dataclass(frozen=True)
class Consumption:
    """Customer-merchant edges, shape (n_edges,) each, sorted by customer then merchant, plus the merchants'
    latent price level (shape (M,), standard normal: log ticket = ticket_log_base + price_scale * level)."""

    customer: np.ndarray
    merchant: np.ndarray
    payment_count: np.ndarray
    payment_total: np.ndarray
    merchant_price: np.ndarray


def generate_consumption(
    cfg: SimulatorConfig, z_capital: np.ndarray, tick: Tick | None = None, *, merchant_seed: int | None = None
) -> Consumption:
    """Payments of each customer to merchants whose price level is near the customer's spending level.

    spending level = loading * z_capital + sqrt(1 - loading^2) * noise; each of 1 + Poisson(payments_mean - 1)
    payments picks merchant m with probability proportional to popularity_m * exp(-(price_m - level)^2 /
    (2 bandwidth^2)), and pays exp(ticket_log_base + price_scale * price_m + ticket_noise_sd * noise). Payments
    to the same merchant are summed into one edge. The merchant choice uses the spending level rounded to a
    fine grid (256 cells over +-5 sd) so all customers share precomputed CDFs.

    Args:
        z_capital: standardised log capital, shape (N,).
        tick: called once per customer chunk (progress).
        merchant_seed: seed of the merchants (default ``cfg.seed``; the blocks of a blocked world share the
            world's merchants while drawing their customers' payments from their own seed).
    """
    gc = cfg.consumption
    n, n_m = z_capital.shape[0], cfg.world.n_merchants
    rng_m = step_rng(cfg.seed if merchant_seed is None else merchant_seed, STEP_MERCHANTS)
    price = rng_m.standard_normal(n_m)
    log_pop = gc.merchant_popularity_sd * rng_m.standard_normal(n_m)
    centres = np.linspace(-_SPEND_RANGE, _SPEND_RANGE, _SPEND_BINS)
    logits = log_pop[None, :] - (price[None, :] - centres[:, None]) ** 2 / (2.0 * gc.bandwidth**2)
    cdf = _cdf(logits)
    load = gc.spend_capital_loading
    parts: list[tuple[np.ndarray, ...]] = []
    for ci, start, stop in chunks(n, _chunk_size(16)):
        rng = step_rng(cfg.seed, STEP_CONSUMPTION, ci)
        m = stop - start
        level = load * z_capital[start:stop] + np.sqrt(1.0 - load * load) * rng.standard_normal(m)
        cell = np.rint(
            (np.clip(level, -_SPEND_RANGE, _SPEND_RANGE) + _SPEND_RANGE) / (2 * _SPEND_RANGE) * (_SPEND_BINS - 1)
        ).astype(np.int64)
        count = 1 + rng.poisson(gc.payments_mean - 1.0, size=m)
        rows = np.repeat(np.arange(m), count)
        merch = categorical_rows(cdf, cell[rows], rng.random(rows.size))
        ticket = np.exp(
            gc.ticket_log_base + gc.price_scale * price[merch] + gc.ticket_noise_sd * (rng.standard_normal(rows.size))
        )
        keys, inv = np.unique(rows * n_m + merch, return_inverse=True)
        parts.append(
            (
                start + keys // n_m,
                keys % n_m,
                np.bincount(inv).astype(np.int64),
                np.bincount(inv, weights=ticket).round(2),
            )
        )
        if tick is not None:
            tick()
    cols = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    return Consumption(
        customer=cols[0].astype(np.int64),
        merchant=cols[1].astype(np.int64),
        payment_count=cols[2],
        payment_total=cols[3].astype(np.float64),
        merchant_price=price,
    )
