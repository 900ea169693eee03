"""Configuration of the simulator's incentive campaign (docs/budget.md): arms, their cost rules, how customers
respond, and the randomized logging policy. Off unless the simulator config has an ``incentives`` section.

Kept apart from :mod:`eoca.simulate.incentives` (the generator) so that :mod:`eoca.simulate.config` can embed it
without importing the outcome model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CostRule = Literal["fixed", "on_conversion"]
"""``fixed``: paid for every customer given the arm (a push message); ``on_conversion``: paid only when the
customer converts (a redeemed coupon), so the expected cost is p x face value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncentiveArmConfig(_Section):
    """One incentive arm (treatment). Its response: conversion logit + lift, log amount + amount_lift."""

    name: str = Field(min_length=1, description="arm name")
    cost_rule: CostRule = Field(description="fixed (per customer treated) or on_conversion (per redemption)")
    cost: float = Field(ge=0, description="cost per customer treated (fixed) or face value paid on conversion")
    lift: float = Field(default=0.0, description="conversion-logit lift for an average customer")
    lift_price_sensitivity: float = Field(
        default=0.0, description="extra logit lift per sd of latent price sensitivity (coupon hunters)"
    )
    lift_aversion: float = Field(
        default=0.0, description="logit lift per sd of latent message aversion (negative: a message puts off)"
    )
    amount_lift: float = Field(default=0.0, description="shift of mu (log amount) for converters")
    log_weight: float = Field(default=1.0, gt=0, description="relative weight of the arm in the logging policy")


def _default_arms() -> list[IncentiveArmConfig]:
    return [
        IncentiveArmConfig(name="message", cost_rule="fixed", cost=1.0, lift=0.2, lift_aversion=-0.9),
        IncentiveArmConfig(
            name="small_coupon",
            cost_rule="on_conversion",
            cost=30.0,
            lift=0.15,
            lift_price_sensitivity=0.45,
            amount_lift=0.03,
        ),
        IncentiveArmConfig(
            name="large_coupon",
            cost_rule="on_conversion",
            cost=120.0,
            lift=0.2,
            lift_price_sensitivity=1.1,
            amount_lift=0.08,
        ),
    ]


class IncentiveConfig(_Section):
    """The incentive campaign: one randomized treatment per customer, outcomes over the campaign window."""

    control_name: str = Field(default="none", min_length=1, description="name of the no-incentive arm (arm 0)")
    arms: list[IncentiveArmConfig] = Field(
        default_factory=_default_arms, min_length=1, description="incentive arms 1..T"
    )
    base_rate: float = Field(
        default=0.05, gt=0, lt=1, description="conversion probability of an average non-dormant untreated customer"
    )
    base_engagement: float = Field(default=0.8, description="untreated conversion logit per sd of engagement")
    dormant_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="share of customers who never buy whatever they get (lost causes)"
    )
    trait_noise: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="share of the variance of price sensitivity, message aversion and dormancy that no profile "
        "feature explains (0: fully predictable from the profile, 1: pure noise)",
    )
    median_ticket: float = Field(default=2000.0, gt=1, description="exp(mu) of an average converter's purchase")
    ticket_capital: float = Field(default=0.5, ge=0, description="d mu / d (sd of log capital)")
    sigma: float = Field(default=0.8, gt=0, le=3, description="sd of log(amount + 1) given conversion")
    log_tilt: float = Field(
        default=0.3,
        ge=0,
        description="logging policy: log-odds tilt of the treated arms per sd of log sessions (so propensities "
        "vary by customer; they are recorded)",
    )
    control_log_weight: float = Field(default=1.5, gt=0, description="relative weight of arm 0 in the logging policy")

    @model_validator(mode="after")
    def _unique_names(self) -> IncentiveConfig:
        names = [self.control_name, *(a.name for a in self.arms)]
        if len(set(names)) != len(names):
            raise ValueError(f"incentive arm names must be unique, got {names}")
        return self
