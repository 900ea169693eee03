"""Configuration of the fund-platform simulator: every parameter of the generative process, with its default.

The model is nested by stage (world size, customers, funds, behaviour, consumption graph, conversion, amount,
logged policy). It is loaded through :func:`eoca.config.load_config` (defaults <- YAML <- ``key=value``
overrides), so an invalid value is reported with its dotted key. ``src/eoca/configs/simulator.yaml`` is the
rendering of these defaults by :func:`config_yaml`; a test keeps the two identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eoca.config import load_config, packaged_config
from eoca.simulate.incentive_config import IncentiveConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldConfig(_Section):
    """Sizes of the simulated platform."""

    n_customers: int = Field(default=100_000, ge=10, description="number of customers N")
    n_funds: int = Field(
        default=8, ge=1, le=512, description="number of funds K (fund j gets type j mod len(fund_types))"
    )
    n_periods: int = Field(
        default=4,
        ge=2,
        description="delivery periods 0..P-1; one exposure per customer per period; the last is the test",
    )
    n_merchants: int = Field(default=200, ge=2, le=100_000, description="merchants in the consumption graph")
    history_days: int = Field(default=180, ge=1, description="behaviour events fall on days -history_days..-1")
    block_customers: int | None = Field(
        default=None,
        ge=10,
        description="generate the world in independent blocks of this many customers (bounded memory; "
        "`eoca simulate --parts` writes one part per block); unset: one block, the default world",
    )


class FundTypeConfig(_Section):
    """One fund type (a categorical fund feature) and the typical figures of its funds."""

    name: str = Field(description="type name, written to funds.fund_type")
    risk_level: int = Field(ge=1, le=5, description="regulatory risk level of the type's funds before jitter")
    annual_return: float = Field(description="mean trailing annual return of the type's funds, in %")
    volatility: float = Field(gt=0, description="mean annualised volatility of the type's funds, in %")
    management_fee: float = Field(ge=0, description="mean yearly management fee, in %")


def _default_fund_types() -> list[FundTypeConfig]:
    rows = [
        ("money_market", 1, 2.0, 0.3, 0.2),
        ("bond", 2, 3.5, 2.5, 0.5),
        ("balanced", 3, 6.0, 9.0, 1.0),
        ("index", 4, 8.0, 18.0, 0.5),
        ("equity", 4, 10.0, 22.0, 1.5),
        ("sector_qdii", 5, 12.0, 30.0, 1.5),
    ]
    return [
        FundTypeConfig(name=n, risk_level=r, annual_return=a, volatility=v, management_fee=f) for n, r, a, v, f in rows
    ]


class CustomerConfig(_Section):
    """Latent customer traits and the noisy profile features observed from them."""

    capital_log_mean: float = Field(default=10.5, description="mean of log available capital (currency units)")
    capital_log_sd: float = Field(default=1.6, gt=0, description="sd of log capital: lognormal, heavy-tailed")
    appetite_capital_corr: float = Field(
        default=0.25, ge=-0.99, le=0.99, description="correlation of latent risk appetite with log capital"
    )
    engagement_capital_corr: float = Field(
        default=-0.4,
        ge=-0.99,
        le=0.99,
        description="correlation of latent engagement with log capital; negative makes wealthy customers "
        "convert rarely (with large amounts) and engaged ones often (with small amounts)",
    )
    preference_sd: float = Field(default=1.0, ge=0, description="sd of the idiosyncratic preference for each fund type")
    preference_risk_affinity: float = Field(
        default=0.6, description="how much risk appetite tilts preference towards riskier types"
    )
    tolerance_noise_sd: float = Field(
        default=0.5, ge=0, description="noise of the risk questionnaire: tolerance = round(3 + appetite + noise)"
    )
    holdings_noise_sd: float = Field(
        default=1.0, ge=0, description="noise of observed log platform holdings around log capital"
    )
    no_holdings_fraction: float = Field(default=0.3, ge=0, le=1, description="share of customers holding nothing yet")
    income_noise_sd: float = Field(
        default=0.7, ge=0, description="noise of the income band around standardised capital"
    )
    stated_preference_noise_sd: float = Field(
        default=1.0, ge=0, description="noise added to preferences before the questionnaire's stated favourite type"
    )


class FundConfig(_Section):
    """Latent fund traits."""

    fund_types: list[FundTypeConfig] = Field(
        default_factory=_default_fund_types,
        min_length=1,
        description="fund types; the first must have risk level 1 (every customer may be shown it)",
    )
    risk_jitter_prob: float = Field(
        default=0.25, ge=0, le=1, description="chance a fund (except fund 0) is one risk level above/below its type"
    )
    appeal_sd: float = Field(
        default=0.35, ge=0, description="sd of a fund's latent appeal (click-through logit effect)"
    )
    appeal_return: float = Field(
        default=0.3, description="appeal added per sd of the fund's return above its type mean (returns attract clicks)"
    )
    amount_effect_sd: float = Field(default=0.25, ge=0, description="sd of a fund's effect on log purchase amount")

    @model_validator(mode="after")
    def _first_type_safe(self) -> FundConfig:
        if self.fund_types[0].risk_level != 1:
            raise ValueError(
                "fund_types[0].risk_level must be 1: fund 0 has the first type, and customers with risk tolerance "
                "1 must have at least one fund they may be shown"
            )
        names = [t.name for t in self.fund_types]
        if len(set(names)) != len(names):
            raise ValueError(f"fund type names must be unique, got {names}")
        return self


class BehaviourConfig(_Section):
    """Behaviour events before the first delivery period (the sequences attention models read)."""

    events_mean: float = Field(default=10.0, ge=0, description="mean events per customer at average engagement")
    events_max: int = Field(default=64, ge=1, description="cap on events per customer")
    events_engagement: float = Field(default=0.6, ge=0, description="log-rate effect of engagement on the event count")
    preference_scale: float = Field(
        default=1.2, ge=0, description="weight of type preference in the event's fund choice"
    )
    ineligible_penalty: float = Field(
        default=1.0, ge=0, description="logit penalty for browsing funds above the customer's risk tolerance"
    )
    click_weight: float = Field(default=0.62, ge=0, description="relative frequency of click events")
    favourite_weight: float = Field(default=0.10, ge=0, description="relative frequency of favourite events")
    purchase_weight: float = Field(
        default=0.20, ge=0, description="relative frequency of purchases (eligible funds only)"
    )
    sell_weight: float = Field(default=0.08, ge=0, description="relative frequency of sells (eligible funds only)")
    sell_fraction_min: float = Field(
        default=0.3, gt=0, le=1, description="a sell redeems a purchase-sized amount times Uniform(min, 1)"
    )

    @model_validator(mode="after")
    def _some_weight(self) -> BehaviourConfig:
        if self.click_weight + self.favourite_weight <= 0:
            raise ValueError("click_weight + favourite_weight must be > 0 (events on ineligible funds need them)")
        return self


class ConsumptionConfig(_Section):
    """The customer-merchant consumption graph; merchants' price levels reveal spending power."""

    payments_mean: float = Field(default=15.0, ge=1, description="mean payments per customer (at least one each)")
    spend_capital_loading: float = Field(
        default=0.7, ge=0, le=1, description="correlation of a customer's spending level with log capital"
    )
    bandwidth: float = Field(
        default=0.6, gt=0, description="how narrowly customers pick merchants near their spending level (sd units)"
    )
    merchant_popularity_sd: float = Field(default=1.0, ge=0, description="sd of log merchant popularity")
    ticket_log_base: float = Field(default=4.0, description="log of a mid-priced merchant's typical payment (about 55)")
    price_scale: float = Field(default=1.0, ge=0, description="log ticket change per sd of merchant price level")
    ticket_noise_sd: float = Field(default=0.5, ge=0, description="sd of log payment around the merchant's ticket")


class ConversionConfig(_Section):
    """P(click) and P(convert | click) of a (customer, fund) pair; p = CTR x CVR (CTCVR)."""

    target_per_mille: float = Field(
        default=2.0,
        gt=0,
        lt=1000,
        description="mean true CTCVR over risk-eligible pairs, per mille; the CVR intercept is solved for it",
    )
    ctr_intercept: float = Field(default=-4.0, description="click logit at average traits")
    ctr_preference: float = Field(default=0.4, description="click logit per unit of type preference")
    ctr_engagement: float = Field(default=0.6, description="click logit per sd of engagement")
    ctr_history: float = Field(default=0.3, description="click logit per log(1 + past purchases of the fund's type)")
    cvr_preference: float = Field(default=0.5, description="conversion-given-click logit per unit of type preference")
    cvr_engagement: float = Field(default=0.3, description="conversion-given-click logit per sd of engagement")
    cvr_history: float = Field(default=0.5, description="conversion-given-click logit per log(1 + past type purchases)")
    cvr_risk_gap: float = Field(
        default=0.8, ge=0, description="conversion logit penalty per level the fund's risk exceeds latent appetite"
    )


class AmountConfig(_Section):
    """Purchase amount given conversion: log(amount + 1) ~ Normal(mu, sigma), both pair-dependent."""

    median_ticket: float = Field(default=3000.0, gt=1, description="exp(mu) of an average customer on an average fund")
    capital_elasticity: float = Field(
        default=1.0, ge=0, description="d mu / d log capital; 1 makes the typical ticket proportional to capital"
    )
    ticket_style_sd: float = Field(
        default=0.4, ge=0, description="sd of a customer's own log-amount level beyond capital"
    )
    preference: float = Field(default=0.25, description="mu per unit of type preference (liked types get more money)")
    pair_sd: float = Field(default=0.2, ge=0, description="sd of idiosyncratic pair noise in mu")
    mu_min: float = Field(default=4.6, ge=1, description="floor of mu (log of about 100)")
    sigma_base: float = Field(default=1.0, gt=0, description="sigma at average traits")
    sigma_customer_sd: float = Field(default=0.35, ge=0, description="sd of the customer's log-sigma effect")
    sigma_capital: float = Field(default=0.15, description="log-sigma per sd of log capital")
    sigma_fund_risk: float = Field(
        default=0.25, description="log-sigma per unit of centred fund risk ((risk_level - 3) / 2)"
    )
    sigma_preference: float = Field(default=0.1, description="log-sigma decrease per unit of type preference")
    sigma_min: float = Field(default=0.25, gt=0, description="lower clip of sigma")
    sigma_max: float = Field(default=2.0, gt=0, description="upper clip of sigma")

    @model_validator(mode="after")
    def _sigma_range(self) -> AmountConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        return self


class PolicyConfig(_Section):
    """The logged delivery policy: a softmax over an operations score on observables, mixed with uniform."""

    epsilon: float = Field(
        default=0.2, gt=0, le=1, description="share of uniform exploration over the customer's eligible funds"
    )
    temperature: float = Field(default=1.0, gt=0, description="softmax temperature of the operations score")
    type_weight: float = Field(default=1.5, description="score for the customer's most-used fund type in history")
    popularity_weight: float = Field(default=0.5, description="score per sd of the fund's past event volume")
    risk_match_weight: float = Field(default=1.0, description="score for a fund risk close to the customer's tolerance")


class SimulatorConfig(_Section):
    """Every parameter of ``eoca simulate``."""

    seed: int = Field(default=0, ge=0, description="random seed; the same seed and config give identical tables")
    name: str = Field(default="simulated", min_length=1, description="dataset name written to dataset.yaml")
    sequence_length: int = Field(default=32, ge=1, description="latest behaviour events a model keeps per customer")
    world: WorldConfig = Field(default_factory=WorldConfig)
    customers: CustomerConfig = Field(default_factory=CustomerConfig)
    funds: FundConfig = Field(default_factory=FundConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    consumption: ConsumptionConfig = Field(default_factory=ConsumptionConfig)
    conversion: ConversionConfig = Field(default_factory=ConversionConfig)
    amount: AmountConfig = Field(default_factory=AmountConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    incentives: IncentiveConfig | None = Field(
        default=None,
        description="incentive campaign (docs/budget.md); absent = off, and the world is unchanged by it",
    )


def default_config_path() -> Path:
    """The packaged default config, ``eoca/configs/simulator.yaml``."""
    return packaged_config("simulator.yaml")


def load_simulator_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> SimulatorConfig:
    """Defaults <- YAML file ``path`` <- ``key.path=value`` overrides; raises ConfigError naming the key."""
    return load_config(SimulatorConfig, path, overrides)


def config_yaml(config: SimulatorConfig) -> str:
    """Render ``config`` as commented YAML: each key preceded by its description."""
    lines: list[str] = []
    _render(config, 0, lines)
    return "\n".join(lines) + "\n"


def _render(model: BaseModel, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and info.default is None:
            # absent optional keys (the incentives section, world.block_customers) are not rendered, so default
            # worlds stay byte-identical
            continue
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _render(value, indent + 2, lines)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:")
            for item in value:
                flow = yaml.safe_dump(item.model_dump(mode="json"), default_flow_style=True, sort_keys=False).strip()
                lines.append(f"{pad}  - {flow}")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")


def _scalar(value: Any) -> str:
    return str(yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip())
