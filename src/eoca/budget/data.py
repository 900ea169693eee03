"""Incentive data: customers' features, the randomized treatment log, the arms' cost rules, and (simulated data
only) the truth of every customer x arm.

Three sources share one type, :class:`IncentiveData`:

* :func:`load_simulated` reads a dataset written by ``eoca simulate`` with an ``incentives`` section;
* :func:`load_hillstrom_incentives` reads the Hillstrom e-mail test with the e-mails as arms. The data has no
  cost; each e-mail costs ``email_cost`` (default 1.0, an assumption: the budget is then simply a number of
  e-mails), and value = spend;
* :func:`load_table` reads any CSV/Parquet with a treatment column, the outcome columns and either a
  propensity column or a declared randomized design (one probability per arm).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eoca.config import read_yaml
from eoca.data.importer import read_source
from eoca.errors import DataValidationError

__all__ = [
    "ArmSpec",
    "IncentiveData",
    "IncentiveTruth",
    "encode_features",
    "from_world",
    "load_hillstrom_incentives",
    "load_simulated",
    "load_table",
]

COST_RULES = ("fixed", "on_conversion")
DEFAULT_EMAIL_COST = 1.0


@dataclass(frozen=True)
class ArmSpec:
    """One arm: ``cost_rule`` ``fixed`` (``cost`` per customer given it) or ``on_conversion`` (``cost`` paid
    when the customer converts; expected cost p x cost)."""

    name: str
    cost_rule: str
    cost: float


@dataclass(frozen=True)
class IncentiveTruth:
    """True p, mu, sigma of log(amount + 1), expected value and expected cost: float64 (n, k) each."""

    p: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    value: np.ndarray
    expected_cost: np.ndarray


@dataclass(frozen=True)
class IncentiveData:
    """A randomized incentive log over n customers and k arms (arm 0 = no incentive).

    Attributes:
        name: data set name.
        customer_id: (n,) ids as given.
        features: float32 (n, d): numeric features as they are, categoricals one-hot.
        feature_names: d names.
        arms: k :class:`ArmSpec`.
        arm: int64 (n,) logged arm; propensity: float64 (n,) probability the logging policy gave it.
        converted: float64 (n,) 0/1; value: float64 (n,) amount (0 if not converted); cost: float64 (n,)
            realised cost of the logged arm.
        truth: only for simulated data.
    """

    name: str
    customer_id: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    arms: tuple[ArmSpec, ...]
    arm: np.ndarray
    propensity: np.ndarray
    converted: np.ndarray
    value: np.ndarray
    cost: np.ndarray
    truth: IncentiveTruth | None = None

    @property
    def n(self) -> int:
        return int(self.arm.size)

    @property
    def n_arms(self) -> int:
        return len(self.arms)

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def subset(self, rows: np.ndarray) -> IncentiveData:
        """The customers at ``rows`` (int positions or a bool mask)."""
        t = self.truth
        sub_t = (
            None if t is None else IncentiveTruth(*(getattr(t, f)[rows] for f in IncentiveTruth.__dataclass_fields__))
        )
        return replace(
            self,
            customer_id=self.customer_id[rows],
            features=self.features[rows],
            arm=self.arm[rows],
            propensity=self.propensity[rows],
            converted=self.converted[rows],
            value=self.value[rows],
            cost=self.cost[rows],
            truth=sub_t,
        )

    def split(self, test_fraction: float = 0.5, seed: int = 0) -> tuple[IncentiveData, IncentiveData]:
        """Random (train, test) split of customers."""
        if not 0.0 < test_fraction < 1.0:
            raise DataValidationError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        test = np.random.default_rng(seed).random(self.n) < test_fraction
        return self.subset(~test), self.subset(test)

    def cost_matrix(self, p: np.ndarray) -> np.ndarray:
        """Expected cost (n, k) of every customer x arm given conversion probabilities ``p`` (n, k)."""
        unit = np.array([a.cost for a in self.arms])
        on_conv = np.array([a.cost_rule == "on_conversion" for a in self.arms])
        return np.where(on_conv[None, :], p * unit[None, :], np.broadcast_to(unit, p.shape))

    def treat_all_cost(self) -> float:
        """Reference budget: every customer on its most expensive arm, at true expected costs when known, at the
        logged arm-0.. conversion rates otherwise (exact for fixed costs)."""
        if self.truth is not None:
            return float(self.truth.expected_cost.max(axis=1).sum())
        rates = np.array(
            [self.converted[self.arm == t].mean() if (self.arm == t).any() else 0.0 for t in range(self.n_arms)]
        )
        return float(self.cost_matrix(np.broadcast_to(rates, (self.n, self.n_arms))).max(axis=1).sum())


def _check_arms(arms: Sequence[ArmSpec], where: str) -> tuple[ArmSpec, ...]:
    for t, a in enumerate(arms):
        if a.cost_rule not in COST_RULES:
            raise DataValidationError(
                f"{where}: arm {t} ('{a.name}') has cost rule {a.cost_rule!r}; use one of {list(COST_RULES)}"
            )
        if not np.isfinite(a.cost) or a.cost < 0:
            raise DataValidationError(f"{where}: arm {t} ('{a.name}') needs a cost >= 0, got {a.cost!r}")
    if len(arms) < 2:
        raise DataValidationError(f"{where}: needs at least two arms (no incentive and one incentive)")
    return tuple(arms)


def encode_features(
    table: pa.Table, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Numeric columns as float32 (missing -> column mean) and categoricals one-hot; returns (X (n, d), names)."""
    cols: list[np.ndarray] = []
    names: list[str] = []
    for c in numeric:
        x = np.array(pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.all():
            raise DataValidationError(f"feature '{c}' has no finite value")
        x[bad] = x[~bad].mean()
        cols.append(x)
        names.append(c)
    for c in categorical:
        vals = np.asarray(pc.cast(table.column(c), pa.string()).fill_null("<missing>").to_numpy(zero_copy_only=False))
        levels = np.unique(vals)
        for lev in levels:
            cols.append((vals == lev).astype(np.float64))
            names.append(f"{c}={lev}")
    if not cols:
        raise DataValidationError("no features: give at least one numeric or categorical column")
    return np.stack(cols, axis=1).astype(np.float32), tuple(names)


def load_simulated(folder: str | os.PathLike[str]) -> IncentiveData:
    """A simulated dataset folder with the incentive files of ``eoca simulate`` (incentives section)."""
    from eoca.data.dataset import Dataset
    from eoca.simulate.incentives import INCENTIVE_FILES

    root = Path(folder)
    meta_file = root / INCENTIVE_FILES["arms"]
    if not meta_file.exists():
        raise DataValidationError(
            f"{root}: no {INCENTIVE_FILES['arms']}; simulate with an incentives section "
            "(eoca simulate --set 'incentives={}' ...) to get an incentive campaign"
        )
    meta = read_yaml(meta_file)
    arms = _check_arms(
        [ArmSpec(str(a["name"]), str(a["cost_rule"]), float(a["cost"])) for a in meta.get("arms", [])],
        str(meta_file),
    )
    ds = Dataset.load(root)
    feats = ds.spec.customers.features
    X, names = encode_features(
        ds.customers,
        [f.name for f in feats if f.type == "numeric"],
        [f.name for f in feats if f.type != "numeric"],
    )
    log = pq.read_table(root / INCENTIVE_FILES["log"])
    pos = ds.customer_index(log.column("customer_id"))
    if log.num_rows != ds.n_customers or np.bincount(pos, minlength=ds.n_customers).max(initial=0) != 1:
        raise DataValidationError(f"{root / INCENTIVE_FILES['log']}: must hold every customer exactly once")
    order = np.argsort(pos)
    truth_t = pq.read_table(root / INCENTIVE_FILES["truth"])
    k = len(arms)
    n = ds.n_customers
    tpos = ds.customer_index(truth_t.column("customer_id")) * k + np.asarray(truth_t.column("arm").to_numpy())
    mats = {}
    for f in ("p", "mu", "sigma", "value", "expected_cost"):
        m = np.empty(n * k)
        m[tpos] = np.asarray(truth_t.column(f).to_numpy(), dtype=np.float64)
        mats[f] = m.reshape(n, k)

    def col(name: str) -> np.ndarray:
        return np.asarray(log.column(name).to_numpy(), dtype=np.float64)[order]

    return IncentiveData(
        name=ds.spec.name,
        customer_id=np.asarray(ds.customers.column("customer_id").to_numpy(zero_copy_only=False)),
        features=X,
        feature_names=names,
        arms=arms,
        arm=np.asarray(log.column("arm").to_numpy(), dtype=np.int64)[order],
        propensity=col("propensity"),
        converted=col("converted"),
        value=col("amount"),
        cost=col("cost"),
        truth=IncentiveTruth(**mats),
    )


def load_hillstrom_incentives(
    path: str | os.PathLike[str] | None = None, *, email_cost: float = DEFAULT_EMAIL_COST
) -> IncentiveData:
    """Hillstrom's e-mail test: arms (no e-mail, men's e-mail, women's e-mail), value = spend, propensity 1/3.

    ``email_cost`` is the fixed cost of one e-mail (an assumption: the data has no cost; with the default 1.0 a
    budget is a number of e-mails).
    """
    from eoca.data.hillstrom import ARMS, load_hillstrom

    if not np.isfinite(email_cost) or email_cost < 0:
        raise DataValidationError(f"email_cost must be a number >= 0, got {email_cost!r}")
    ds = load_hillstrom(path)
    feats = ds.spec.customers.features
    X, names = encode_features(
        ds.customers,
        [f.name for f in feats if f.type == "numeric"],
        [f.name for f in feats if f.type != "numeric"],
    )
    exp = ds.exposures
    pos = ds.customer_index(exp.column("customer_id"))
    order = np.argsort(pos)
    arm = ds.fund_index(exp.column("fund_id"))[order].astype(np.int64)
    arms = (
        ArmSpec(ARMS[0], "fixed", 0.0),
        ArmSpec(ARMS[1], "fixed", float(email_cost)),
        ArmSpec(ARMS[2], "fixed", float(email_cost)),
    )
    unit = np.array([a.cost for a in arms])
    return IncentiveData(
        name="hillstrom",
        customer_id=np.asarray(ds.customers.column("customer_id").to_numpy(zero_copy_only=False)),
        features=X,
        feature_names=names,
        arms=arms,
        arm=arm,
        propensity=np.asarray(exp.column("propensity").to_numpy(), dtype=np.float64)[order],
        converted=np.asarray(pc.cast(exp.column("converted"), pa.float64()).to_numpy(), dtype=np.float64)[order],
        value=np.asarray(exp.column("amount").to_numpy(), dtype=np.float64)[order],
        cost=unit[arm],
    )


def load_table(
    path: str | os.PathLike[str],
    *,
    treatment: str,
    arms: Sequence[ArmSpec],
    value: str,
    converted: str | None = None,
    propensity: str | None = None,
    design: Mapping[str, float] | None = None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    id_column: str | None = None,
) -> IncentiveData:
    """Any CSV/Parquet with one row per customer: a treatment column whose values are the arms' names, a value
    column (amount, >= 0), optionally a 0/1 conversion column (else converted = value > 0), and either a
    propensity column or ``design`` (arm name -> probability, a declared randomized design).
    """
    file = Path(path)
    src = read_source(file)
    arm_specs = _check_arms(arms, str(file))
    names = [a.name for a in arm_specs]
    for c in [
        treatment,
        value,
        *([converted] if converted else []),
        *([propensity] if propensity else []),
        *numeric,
        *categorical,
    ]:
        if c not in src.column_names:
            raise DataValidationError(f"{file}: column '{c}' not found; the file has {src.column_names}")
    tr = np.asarray(pc.cast(src.column(treatment), pa.string()).to_numpy(zero_copy_only=False))
    known = np.isin(tr, names)
    if not known.all():
        bad = np.flatnonzero(~known)
        raise DataValidationError(
            f"{file}, column '{treatment}': {bad.size:,} row(s) name no declared arm {names}, first at row "
            f"{int(bad[0])} ({tr[bad[0]]!r})"
        )
    arm = np.searchsorted(np.array(names)[np.argsort(names)], tr)
    arm = np.argsort(names)[arm].astype(np.int64)
    val = np.asarray(pc.cast(src.column(value), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(val) | (val < 0))
    if bad.size:
        raise DataValidationError(f"{file}, column '{value}': must be finite and >= 0; first bad row {int(bad[0])}")
    conv = (
        np.asarray(pc.cast(src.column(converted), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        if converted
        else (val > 0).astype(np.float64)
    )
    if propensity:
        prop = np.asarray(pc.cast(src.column(propensity), pa.float64()).to_numpy(zero_copy_only=False))
    elif design:
        unknown = set(design) - set(names)
        if unknown:
            raise DataValidationError(f"design names unknown arm(s) {sorted(unknown)}; arms are {names}")
        probs = np.array([float(design.get(nm, 0.0)) for nm in names])
        if abs(probs.sum() - 1.0) > 1e-6 or (probs < 0).any():
            raise DataValidationError(f"design probabilities must be >= 0 and sum to 1, got {dict(design)}")
        prop = probs[arm]
    else:
        raise DataValidationError(
            f"{file}: give a propensity column or a declared randomized design (arm -> probability); without one "
            "the value of another policy cannot be estimated"
        )
    bad = np.flatnonzero(~((prop > 0) & (prop <= 1)))
    if bad.size:
        raise DataValidationError(f"{file}: propensity must lie in (0, 1]; first bad row {int(bad[0])}")
    X, fnames = encode_features(src, numeric, categorical)
    unit = np.array([a.cost for a in arm_specs])
    on_conv = np.array([a.cost_rule == "on_conversion" for a in arm_specs])
    ids = np.asarray(src.column(id_column).to_numpy(zero_copy_only=False)) if id_column else np.arange(src.num_rows)
    return IncentiveData(
        name=file.stem,
        customer_id=ids,
        features=X,
        feature_names=fnames,
        arms=arm_specs,
        arm=arm,
        propensity=prop.astype(np.float64),
        converted=conv,
        value=val,
        cost=np.where(on_conv[arm], conv * unit[arm], unit[arm]),
    )


def from_world(world: Any) -> IncentiveData:
    """The incentive campaign of a simulated :class:`eoca.simulate.simulator.World` whose config has incentives,
    generated in memory (the same draws ``eoca simulate`` writes)."""
    from eoca.simulate.incentives import generate_incentives

    cfg = world.config.incentives
    if cfg is None:
        raise DataValidationError("the simulated world has no incentives section; add one (incentives={}) first")
    inc = generate_incentives(world, cfg)
    ds = world.dataset
    feats = ds.spec.customers.features
    X, names = encode_features(
        ds.customers,
        [f.name for f in feats if f.type == "numeric"],
        [f.name for f in feats if f.type != "numeric"],
    )
    arms = _check_arms(
        [ArmSpec(inc.arm_names[t], inc.cost_rules[t], float(inc.unit_costs[t])) for t in range(len(inc.arm_names))],
        "incentives",
    )
    return IncentiveData(
        name=ds.spec.name,
        customer_id=np.asarray(ds.customers.column("customer_id").to_numpy(zero_copy_only=False)),
        features=X,
        feature_names=names,
        arms=arms,
        arm=inc.arm,
        propensity=inc.propensity,
        converted=inc.converted.astype(np.float64),
        value=inc.amount,
        cost=inc.cost,
        truth=IncentiveTruth(inc.p, inc.mu, inc.sigma, inc.value, inc.expected_cost),
    )
