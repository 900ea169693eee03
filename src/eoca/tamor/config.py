"""Configuration of the TAMOR subsystem: the multi-scenario world, the networks, ranking and the simulated period.

Loaded like every eoca config (:func:`eoca.config.load_config`: defaults <- YAML <- ``key=value`` overrides).
The whole section is opt-in: nothing here is read by ``eoca simulate`` or by a run config without a ``tamor``
section, so existing worlds and runs are unchanged (a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eoca.config import load_config

TIER_NAMES: tuple[str, ...] = ("new", "low", "high")
"""Customer tiers by platform holdings: no holdings, below the high-holding threshold, at or above it."""

SCENARIO_NAMES: tuple[str, ...] = ("fund", "fixed_term", "insurance", "campaign")
"""Business scenarios an item comes from; each has its own item features (see :data:`SCENARIO_FEATURES`)."""

SCENARIO_FEATURES: dict[str, tuple[str, ...]] = {
    "fund": ("annual_return", "volatility", "management_fee"),
    "fixed_term": ("term_months", "yield_pct", "log_min_amount"),
    "insurance": ("log_premium", "coverage_ratio"),
    "campaign": ("reward_value", "duration_days", "log_threshold"),
}
"""Scenario-specific item features; an item of another scenario has them missing (NaN) by design."""


FRAMEWORK_NAMES: tuple[str, ...] = (
    "tamor",
    "tamor_no_tier",
    "tamor_no_scenario",
    "tamor_no_bias",
    "tamor_no_link",
    "tamor_shared_towers",
    "tamor_previous",
    "tamor_pooled_init",
    "tamor_balanced",
    "tamor_item_towers",
    "pooled",
    "per_tier",
    "star",
)
"""Networks a comparison may include (:data:`eoca.tamor.model.VARIANTS` defines each)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierBehaviour(_Section):
    """How one tier behaves: base rates, which scenarios it uses and what moves it."""

    click_intercept: float = Field(description="click logit at average traits")
    cvr_intercept: float = Field(description="conversion-given-click logit at average traits")
    scenario_affinity: list[float] = Field(
        min_length=4, max_length=4, description="click logit per scenario (fund, fixed_term, insurance, campaign)"
    )
    return_sensitivity: float = Field(description="click/conversion logit per sd of the item's expected return")
    risk_aversion: float = Field(ge=0, description="conversion logit penalty per risk level above the appetite")
    campaign_reward: float = Field(description="click logit per sd of a campaign's reward (campaign items only)")
    amount_shift: float = Field(description="log-amount shift of the tier (share of capital it invests at once)")


def _default_tiers() -> list[TierBehaviour]:
    return [
        # new customers: drawn by campaigns and rewards, small cautious tickets, indifferent to returns
        TierBehaviour(
            click_intercept=-2.2,
            cvr_intercept=-2.6,
            scenario_affinity=[-0.6, -0.2, 0.0, 0.9],
            return_sensitivity=-0.1,
            risk_aversion=1.2,
            campaign_reward=0.8,
            amount_shift=-1.2,
        ),
        # low-holding: funds and fixed-term products, chase returns, moderately risk averse
        TierBehaviour(
            click_intercept=-2.0,
            cvr_intercept=-2.2,
            scenario_affinity=[0.3, 0.5, -0.3, 0.2],
            return_sensitivity=0.6,
            risk_aversion=0.6,
            campaign_reward=0.2,
            amount_shift=-0.3,
        ),
        # high-holding: funds and insurance, care about risk far more than return, large tickets
        TierBehaviour(
            click_intercept=-1.8,
            cvr_intercept=-1.8,
            scenario_affinity=[0.4, 0.1, 0.6, -0.8],
            return_sensitivity=-0.3,
            risk_aversion=1.0,
            campaign_reward=-0.3,
            amount_shift=0.4,
        ),
    ]


class MultiScenarioWorldConfig(_Section):
    """The multi-scenario world: customers in tiers, items of several scenarios, outcomes per objective."""

    n_customers: int = Field(default=20_000, ge=30, description="customers")
    items_per_scenario: list[int] = Field(
        default_factory=lambda: [16, 8, 6, 6],
        min_length=4,
        max_length=4,
        description="items of each scenario (fund, fixed_term, insurance, campaign); 0 drops a scenario",
    )
    train_periods: int = Field(default=2, ge=1, description="logged periods used for training (the next is test)")
    slots: int = Field(default=4, ge=1, description="items each customer is shown per logged period")
    new_fraction: float = Field(default=0.35, gt=0, lt=1, description="share of customers with no holdings (tier new)")
    high_fraction: float = Field(
        default=0.06, gt=0, lt=0.5, description="target share of high-holding customers (sets the threshold)"
    )
    capital_log_mean: float = Field(default=10.0, description="mean log available capital")
    capital_log_sd: float = Field(default=1.3, gt=0, description="sd of log capital")
    holdings_share_sd: float = Field(default=1.0, gt=0, description="sd of log share of capital held on the platform")
    user_bias_sd: float = Field(
        default=0.7, ge=0, description="sd of each customer's own propensity (the term the user-bias module learns)"
    )
    preference_sd: float = Field(default=0.5, ge=0, description="sd of a customer's idiosyncratic scenario taste")
    item_appeal_sd: float = Field(default=0.3, ge=0, description="sd of an item's latent appeal")
    amount_sigma: float = Field(default=0.8, gt=0, description="sd of log amount given conversion")
    retention: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 0.3, 0.6],
        min_length=4,
        max_length=4,
        description="share of a purchase that stays as holdings per scenario (an insurance premium mostly does not)",
    )
    logged_epsilon: float = Field(default=0.5, gt=0, le=1, description="uniform share of the logged policy")
    tiers: list[TierBehaviour] = Field(
        default_factory=_default_tiers, min_length=3, max_length=3, description="behaviour of tiers new, low, high"
    )

    @model_validator(mode="after")
    def _check(self) -> MultiScenarioWorldConfig:
        if sum(self.items_per_scenario) < 2 or min(self.items_per_scenario) < 0:
            raise ValueError(f"items_per_scenario must be >= 0 with at least 2 items, got {self.items_per_scenario}")
        if self.new_fraction + self.high_fraction >= 1:
            raise ValueError("new_fraction + high_fraction must be below 1 (the low tier needs customers)")
        return self


class TamorTrainConfig(_Section):
    """Training of every network in the comparison (same budget for all)."""

    epochs: int = Field(default=3, ge=1, description="passes over the training log")
    batch_size: int = Field(default=1024, ge=16, description="rows per step")
    lr: float = Field(default=3e-3, gt=0, description="Adam learning rate")
    schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="learning rate over the steps: constant, or cosine decay to zero"
    )
    ema_decay: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="0: the trained weights as they end; else the networks are evaluated with an exponential "
        "moving average of their weights over the steps (this decay per step, every framework alike)",
    )
    dim: int = Field(default=16, ge=2, description="width of user/item representations and experts")
    user_bias_dim: int = Field(default=4, ge=1, description="width of the learned per-user bias vector")
    user_bias_buckets: int = Field(default=1 << 18, ge=16, description="hash buckets of the user-bias table")
    user_bias_l2: float = Field(default=1e-4, ge=0, description="L2 penalty on the rows of the user-bias table used")
    threads: int = Field(default=1, ge=1, description="torch threads")
    validation_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="training rows held out to calibrate ETV and P(upgrade); 0: none",
    )


class TamorRankConfig(_Section):
    """The mixed slate: top-K items across scenarios by a combination of the objectives."""

    k: int = Field(default=3, ge=1, le=10, description="items per customer (at most 10)")
    upgrade_weight: float = Field(default=1.0, ge=0, description="w in ETV + w x P(upgrade) x upgrade_value")
    upgrade_value: float = Field(
        default=20_000.0, ge=0, description="value of one customer becoming high-holding, in currency units"
    )
    contracts: Literal["none", "proportional"] = Field(
        default="none",
        description="none: free top-K per customer; proportional: every item must reach its share of the "
        "deliveries (demand proportional to the logged volume) and the exact allocator places them",
    )


class TamorEvalConfig(_Section):
    """The simulated next period."""

    n_bootstrap: int = Field(default=500, ge=0, description="paired bootstrap replicates over customers")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="interval coverage")
    replications: int = Field(
        default=8, ge=1, description="simulated periods averaged per customer (common random numbers in each)"
    )


class TamorConfig(_Section):
    """Everything a TAMOR experiment needs; the ``tamor`` section of an ``eoca run`` config."""

    seed: int = Field(default=0, ge=0, description="seed of the world, training and outcome draws")
    world: MultiScenarioWorldConfig = Field(default_factory=MultiScenarioWorldConfig)
    train: TamorTrainConfig = Field(default_factory=TamorTrainConfig)
    rank: TamorRankConfig = Field(default_factory=TamorRankConfig)
    evaluation: TamorEvalConfig = Field(default_factory=TamorEvalConfig)
    frameworks: list[str] = Field(
        default_factory=lambda: ["tamor", "pooled", "per_tier", "star"],
        min_length=1,
        description="networks compared (see eoca.tamor.model.VARIANTS); the oracle is always added as ceiling",
    )
    control: str = Field(default="pooled", description="framework the lifts are measured against")

    @model_validator(mode="after")
    def _control_listed(self) -> TamorConfig:
        unknown = [f for f in self.frameworks if f not in FRAMEWORK_NAMES]
        if unknown:
            raise ValueError(f"unknown framework(s) {unknown}; choose from {list(FRAMEWORK_NAMES)}")
        if len(set(self.frameworks)) != len(self.frameworks):
            raise ValueError(f"a framework is listed twice in {self.frameworks}")
        if self.control not in self.frameworks:
            raise ValueError(f"control {self.control!r} must be one of frameworks {self.frameworks}")
        return self


def load_tamor_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> TamorConfig:
    """Defaults <- YAML ``path`` <- ``key=value`` overrides; raises ConfigError naming the key at fault."""
    return load_config(TamorConfig, path, overrides)
