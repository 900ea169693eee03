"""The multi-scenario world: customers in holding tiers, items from several business scenarios, and ground-truth
outcomes for every objective TAMOR predicts (click, purchase, amount, becoming a high-holding customer).

Generative story (every random step has its own generator ``default_rng([seed, STREAM, step])`` so a step's
draws do not depend on which steps ran before it):

* A customer has latent log capital, risk appetite, engagement, an own propensity (``user_bias``, the term
  TAMOR's user-bias module is meant to learn) and a taste per scenario. A share ``new_fraction`` holds nothing
  on the platform; the others hold a lognormal share of their capital. The high-holding threshold ``T`` is the
  holdings quantile that makes ``high_fraction`` of all customers high-holding, so tiers are unbalanced.
* An item belongs to one scenario and has shared features (risk level, expected return) and the features of its
  own scenario (:data:`eoca.tamor.config.SCENARIO_FEATURES`), missing (NaN) for items of other scenarios.
* ``P(click)``, ``P(convert | click)`` and the log amount depend on the tier through
  :class:`eoca.tamor.config.TierBehaviour` (base rates, scenario affinity, return sensitivity, risk aversion,
  response to campaign rewards, ticket size). A purchase of amount ``A`` of scenario ``s`` adds
  ``retention[s] * A`` to holdings; a customer whose holdings reach ``T`` within the period becomes
  high-holding. The per-exposure truth ``P(upgrade)`` is ``P(convert) * P(H + r A >= T)`` in closed form.
* The logged policy shows each customer ``slots`` distinct risk-eligible items per period, sampled from a
  softmax of the tier's scenario affinity mixed with uniform exploration. Periods ``0..train_periods-1`` are the
  training log, period ``train_periods`` the offline test log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtr

from eoca.errors import ConfigError
from eoca.tamor.config import SCENARIO_FEATURES, SCENARIO_NAMES, TIER_NAMES, MultiScenarioWorldConfig

STREAM = 1313
"""First element after the seed of every generator of this module, so no stream coincides with the fund world's."""
STEP_CUSTOMERS, STEP_ITEMS, STEP_LOG, STEP_NEXT = range(1, 5)

USER_FEATURES: tuple[str, ...] = ("log_holdings", "log_income", "activity", "risk_tolerance", "age")
"""Observed customer features (standardised where noted in :func:`generate_multi_scenario_world`)."""
ITEM_SHARED_FEATURES: tuple[str, ...] = ("risk_level", "expected_return")
"""Item features every scenario has."""
ITEM_SPECIFIC_FEATURES: tuple[str, ...] = tuple(f for s in SCENARIO_NAMES for f in SCENARIO_FEATURES[s])
"""Concatenation of every scenario's own features; column ``c`` belongs to scenario :data:`SPECIFIC_SCENARIO` [c]."""
SPECIFIC_SCENARIO: np.ndarray = np.array(
    [i for i, s in enumerate(SCENARIO_NAMES) for _ in SCENARIO_FEATURES[s]], dtype=np.int64
)


def _rng(seed: int, step: int, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM, step, sub])


@dataclass
class ExposureLog:
    """Logged exposures, one row each; arrays of shape ``(R,)``.

    ``upgrade`` is 1 when this row's purchase alone lifts the customer's holdings to the threshold, 0 otherwise,
    and -1 for high-holding customers (the task does not apply to them).
    """

    customer: np.ndarray
    item: np.ndarray
    period: np.ndarray
    click: np.ndarray
    convert: np.ndarray
    amount: np.ndarray
    upgrade: np.ndarray

    def __len__(self) -> int:
        return int(self.customer.shape[0])

    def subset(self, mask: np.ndarray) -> ExposureLog:
        """The rows where ``mask`` (bool ``(R,)``) holds."""
        return ExposureLog(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


@dataclass
class MultiScenarioWorld:
    """A generated world. Customer arrays have shape ``(N,)`` or ``(N, .)``, item arrays ``(M,)`` or ``(M, .)``,
    truth matrices ``(N, M)`` float32."""

    seed: int
    config: MultiScenarioWorldConfig
    customer_id: np.ndarray
    tier: np.ndarray
    user_x: np.ndarray
    tolerance: np.ndarray
    holdings: np.ndarray
    threshold: float
    scenario: np.ndarray
    risk: np.ndarray
    item_shared: np.ndarray
    item_specific: np.ndarray
    p_click: np.ndarray
    p_cvr: np.ndarray
    mu: np.ndarray
    sigma: float
    retention: np.ndarray
    train: ExposureLog
    test: ExposureLog
    own_propensity: np.ndarray | None = None
    """float64 ``(N,)``: each customer's latent own propensity (the term the user bias is meant to learn);
    ground truth for diagnostics, never a model input."""

    @property
    def n_customers(self) -> int:
        return int(self.tier.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.scenario.shape[0])

    def eligible(self) -> np.ndarray:
        """bool ``(N, M)``: item risk level within the customer's risk tolerance."""
        return self.risk[None, :] <= self.tolerance[:, None]

    def true_p_convert(self) -> np.ndarray:
        """``P(click) * P(convert | click)``, float32 ``(N, M)``."""
        return self.p_click * self.p_cvr

    def true_amount(self) -> np.ndarray:
        """``E[amount | convert] = exp(mu + sigma^2 / 2)``, float32 ``(N, M)``."""
        return np.exp(self.mu + 0.5 * self.sigma**2).astype(np.float32)

    def true_etv(self) -> np.ndarray:
        """Expected transaction value ``P(convert) * E[amount | convert]``, float32 ``(N, M)``."""
        return self.true_p_convert() * self.true_amount()

    def log_gap(self) -> np.ndarray:
        """float32 ``(N,)``: log of what a customer still needs to hold to reach the high-holding threshold,
        ``log(max(T - H, 1))`` (0 for high-holding customers). Known to the platform: tiers are defined by it."""
        return np.log(np.maximum(self.threshold - self.holdings, 1.0)).astype(np.float32)

    def true_p_upgrade(self) -> np.ndarray:
        """P(this exposure makes the customer high-holding), float32 ``(N, M)``; 0 for high-holding customers."""
        need = np.maximum(self.threshold - self.holdings, 1e-9)[:, None] / np.maximum(self.retention, 1e-12)[None, :]
        p_big = ndtr((self.mu - np.log(need)) / self.sigma)
        p_big[:, self.retention <= 0] = 0.0
        p_big[self.tier == 2] = 0.0
        return (self.true_p_convert() * p_big).astype(np.float32)

    def tier_counts(self) -> np.ndarray:
        """Customers per tier, int64 ``(3,)``."""
        return np.bincount(self.tier, minlength=len(TIER_NAMES))


def _z(x: np.ndarray) -> np.ndarray:
    """Standardise over finite entries; NaN stays NaN."""
    finite = np.isfinite(x)
    if not finite.any():
        return x
    m, s = float(x[finite].mean()), float(x[finite].std())
    return (x - m) / (s if s > 0 else 1.0)


def generate_multi_scenario_world(config: MultiScenarioWorldConfig, seed: int = 0) -> MultiScenarioWorld:
    """Generate the world for ``config`` and ``seed``; the same pair always gives identical arrays.

    Raises:
        ConfigError: when fewer risk-level-1 items exist than a customer must be shown (``slots``).
    """
    cfg = config
    n = cfg.n_customers

    # --- customers -------------------------------------------------------------------------------------------
    rng = _rng(seed, STEP_CUSTOMERS)
    log_capital = cfg.capital_log_mean + cfg.capital_log_sd * rng.standard_normal(n)
    appetite = 0.3 * (log_capital - cfg.capital_log_mean) / cfg.capital_log_sd + rng.standard_normal(n)
    engagement = rng.standard_normal(n)
    age = rng.standard_normal(n)
    user_bias = cfg.user_bias_sd * rng.standard_normal(n)
    taste = cfg.preference_sd * rng.standard_normal((n, len(SCENARIO_NAMES)))
    is_new = rng.random(n) < cfg.new_fraction
    share = expit(-1.0 + cfg.holdings_share_sd * rng.standard_normal(n))
    holdings = np.where(is_new, 0.0, np.exp(log_capital) * share)
    high_share_of_holders = cfg.high_fraction / max(1e-9, 1.0 - float(is_new.mean()))
    threshold = float(np.quantile(holdings[~is_new], 1.0 - min(high_share_of_holders, 0.99)))
    tier = np.where(is_new, 0, np.where(holdings >= threshold, 2, 1)).astype(np.int64)
    tolerance = np.clip(np.rint(3.0 + appetite + 0.5 * rng.standard_normal(n)), 1, 5).astype(np.int64)
    user_x = np.stack(
        [
            np.log1p(holdings),
            log_capital + 0.5 * rng.standard_normal(n),
            engagement + 0.5 * rng.standard_normal(n),
            tolerance.astype(np.float64),
            age,
        ],
        axis=1,
    )
    user_x = ((user_x - user_x.mean(0)) / user_x.std(0)).astype(np.float32)

    # --- items -----------------------------------------------------------------------------------------------
    rng = _rng(seed, STEP_ITEMS)
    scenario = np.repeat(np.arange(len(SCENARIO_NAMES)), cfg.items_per_scenario).astype(np.int64)
    m = scenario.size
    spec = np.full((m, len(ITEM_SPECIFIC_FEATURES)), np.nan)
    risk = np.ones(m, dtype=np.int64)
    exp_ret = np.zeros(m)
    for s, name in enumerate(SCENARIO_NAMES):
        idx = np.flatnonzero(scenario == s)
        k = idx.size
        if k == 0:
            continue
        cols = np.flatnonzero(s == SPECIFIC_SCENARIO)
        if name == "fund":
            r = rng.integers(1, 6, k)
            ret = 1.5 + 2.2 * r + rng.normal(0, 1.0, k)
            vals = [ret, 1.0 + 5.0 * r + rng.normal(0, 1.5, k), rng.uniform(0.1, 1.5, k)]
        elif name == "fixed_term":
            r = rng.integers(1, 3, k)
            term = rng.choice([3.0, 6.0, 12.0, 24.0, 36.0], k)
            ret = 1.5 + 0.08 * term + 0.5 * r + rng.normal(0, 0.3, k)
            vals = [term, ret, rng.normal(9.0, 1.0, k)]
        elif name == "insurance":
            r = rng.integers(1, 3, k)
            ret = rng.uniform(0.0, 1.5, k)
            vals = [rng.normal(7.5, 0.8, k), rng.uniform(5.0, 50.0, k)]
        else:
            r = np.ones(k, dtype=np.int64)
            ret = rng.uniform(0.5, 4.0, k)
            vals = [rng.uniform(5.0, 100.0, k), rng.uniform(3.0, 30.0, k), rng.normal(7.0, 1.0, k)]
        risk[idx] = r
        exp_ret[idx] = ret
        spec[np.ix_(idx, cols)] = np.stack(vals, axis=1)
    n_safe = int((risk == 1).sum())
    if n_safe < cfg.slots:
        raise ConfigError(
            f"tamor.world: only {n_safe} items of risk level 1 but every customer is shown slots={cfg.slots}; "
            "add campaign items (always risk 1) or lower slots"
        )
    appeal = cfg.item_appeal_sd * rng.standard_normal(m)
    zs = np.stack([_z(spec[:, c]) for c in range(spec.shape[1])], axis=1)
    item_shared = np.stack([risk.astype(np.float64), exp_ret], axis=1)
    item_shared = ((item_shared - item_shared.mean(0)) / np.maximum(item_shared.std(0), 1e-9)).astype(np.float32)
    item_specific = zs.astype(np.float32)  # NaN outside the item's own scenario, by design

    # --- truth -----------------------------------------------------------------------------------------------
    tb = cfg.tiers
    col = {f: i for i, f in enumerate(ITEM_SPECIFIC_FEATURES)}

    def spec_or0(name: str) -> np.ndarray:
        return np.nan_to_num(zs[:, col[name]])

    ret_z = _z(exp_ret)
    aff = np.array([t.scenario_affinity for t in tb])  # (3, S)
    ci = np.array([t.click_intercept for t in tb])[tier]
    vi = np.array([t.cvr_intercept for t in tb])[tier]
    rs = np.array([t.return_sensitivity for t in tb])[tier]
    ra = np.array([t.risk_aversion for t in tb])[tier]
    cr = np.array([t.campaign_reward for t in tb])[tier]
    am = np.array([t.amount_shift for t in tb])[tier]
    scen_taste = taste[:, scenario]  # (N, M)
    click_logit = (
        ci[:, None]
        + aff[tier][:, scenario]
        + scen_taste
        + 0.5 * engagement[:, None]
        + user_bias[:, None]
        + appeal[None, :]
        + rs[:, None] * ret_z[None, :]
        + cr[:, None] * spec_or0("reward_value")[None, :]
        - 0.2 * spec_or0("management_fee")[None, :]
        + 0.4 * age[:, None] * spec_or0("coverage_ratio")[None, :]
    )
    gap = np.maximum(0.0, risk[None, :] - (3.0 + appetite[:, None]))
    cvr_logit = (
        vi[:, None]
        + 0.5 * scen_taste
        + 0.6 * user_bias[:, None]
        + 0.3 * engagement[:, None]
        + rs[:, None] * ret_z[None, :]
        - ra[:, None] * gap
        - 0.3 * spec_or0("term_months")[None, :] * (tier == 0)[:, None]
    )
    scen_amount = np.array([0.0, 0.4, -1.0, -1.5])[scenario]
    mu = (
        log_capital[:, None]
        - 1.5
        + am[:, None]
        + scen_amount[None, :]
        + 0.3 * spec_or0("log_min_amount")[None, :]
        + 0.3 * spec_or0("log_threshold")[None, :]
        + 0.2 * scen_taste
    )
    p_click = expit(click_logit).astype(np.float32)
    p_cvr = expit(cvr_logit).astype(np.float32)
    mu32 = mu.astype(np.float32)
    retention = np.asarray(cfg.retention, dtype=np.float64)[scenario]

    world = MultiScenarioWorld(
        seed=seed,
        config=cfg,
        customer_id=np.arange(1, n + 1, dtype=np.int64) * 7919 % 1_000_003,
        tier=tier,
        user_x=user_x,
        tolerance=tolerance,
        holdings=holdings,
        threshold=threshold,
        scenario=scenario,
        risk=risk,
        item_shared=item_shared,
        item_specific=item_specific,
        p_click=p_click,
        p_cvr=p_cvr,
        mu=mu32,
        sigma=float(cfg.amount_sigma),
        retention=retention,
        own_propensity=user_bias,
        train=ExposureLog(*(np.empty(0) for _ in range(7))),
        test=ExposureLog(*(np.empty(0) for _ in range(7))),
    )
    full = _logged_exposures(world, aff, seed)
    world.train = full.subset(full.period < cfg.train_periods)
    world.test = full.subset(full.period == cfg.train_periods)
    return world


def _logged_exposures(world: MultiScenarioWorld, aff: np.ndarray, seed: int) -> ExposureLog:
    """Every logged period's exposures and their sampled outcomes (see the module docstring)."""
    cfg = world.config
    n, m = world.n_customers, world.n_items
    eligible = world.eligible()
    logits = np.where(eligible, 0.8 * aff[world.tier][:, world.scenario], -np.inf)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    uni = eligible / eligible.sum(1, keepdims=True)
    prob = (1.0 - cfg.logged_epsilon) * soft + cfg.logged_epsilon * uni
    parts = []
    for t in range(cfg.train_periods + 1):
        rng = _rng(seed, STEP_LOG, t)
        # Gumbel top-k draws `slots` distinct items per customer with the policy's probabilities.
        keys = np.log(np.maximum(prob, 1e-300)) + rng.gumbel(size=(n, m))
        keys[~eligible] = -np.inf
        items = np.argsort(-keys, axis=1)[:, : cfg.slots]
        cust = np.repeat(np.arange(n), cfg.slots)
        item = items.ravel()
        parts.append((cust, item, np.full(cust.size, t), *draw_outcomes(world, cust, item, rng)))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    return ExposureLog(
        customer=cols[0].astype(np.int64),
        item=cols[1].astype(np.int64),
        period=cols[2].astype(np.int64),
        click=cols[3].astype(np.float32),
        convert=cols[4].astype(np.float32),
        amount=cols[5].astype(np.float32),
        upgrade=cols[6].astype(np.float32),
    )


def draw_outcomes(
    world: MultiScenarioWorld,
    cust: np.ndarray,
    item: np.ndarray,
    rng: np.random.Generator | None = None,
    uniforms: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``(click, convert, amount, upgrade)`` for pairs ``(cust[r], item[r])``, each shape ``(R,)``.

    Either ``rng`` draws fresh randomness, or ``uniforms = (u_click, u_convert, z_amount)`` (each ``(R,)``)
    supplies it, which is how the simulated next period gives every framework common random numbers.
    ``upgrade`` is the row-alone transition (see :class:`ExposureLog`), -1 for high-holding customers.
    """
    if uniforms is None:
        if rng is None:
            raise ValueError("draw_outcomes needs rng or uniforms")
        uniforms = (rng.random(cust.size), rng.random(cust.size), rng.standard_normal(cust.size))
    u_click, u_conv, z = uniforms
    click = u_click < world.p_click[cust, item]
    convert = click & (u_conv < world.p_cvr[cust, item])
    amount = np.where(convert, np.exp(world.mu[cust, item] + world.sigma * z), 0.0)
    crosses = world.holdings[cust] + world.retention[item] * amount >= world.threshold
    upgrade = np.where(world.tier[cust] == 2, -1.0, (convert & crosses).astype(np.float64))
    return click, convert, amount, upgrade


def common_numbers(world: MultiScenarioWorld, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniforms ``(u_click, u_convert)`` and normals ``z_amount`` for every (customer, item) pair, each float32
    ``(N, M)``: the common random numbers of one simulated period (the same for every framework)."""
    rng = _rng(world.seed, STEP_NEXT, stream)
    shape = (world.n_customers, world.n_items)
    return (
        rng.random(shape, dtype=np.float32),
        rng.random(shape, dtype=np.float32),
        rng.standard_normal(shape, dtype=np.float32),
    )
