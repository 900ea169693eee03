"""The delivery plan: how many customers each fund must reach, how many funds each customer sees, and whether
the risk rule applies. One type serves ``eoca allocate --plan FILE`` and the ``plan`` section of ``eoca run``.

YAML format (a plan file, or the ``plan:`` section of a run configuration)::

    K: 1                 # funds per customer (``eoca allocate --K`` wins when given)
    demands:             # fund_id -> exact number of customers
      F1: 120000
      F2: 80000

or shares of the N*K delivery slots instead of ``demands``::

    shares:              # fund_id -> share >= 0; shares must sum to 1 (within 1e-6)
      F1: 0.6
      F2: 0.4

``shares`` may also be ``uniform`` (equal shares) or ``logged`` (each fund's share of the logged exposures of
the evaluation period, only where a dataset with a log is at hand); with neither ``demands`` nor ``shares`` the
plan is ``logged``. ``risk_rule: false`` lifts every customer's tolerance to the top level. Every fund of the
funds table must appear in ``demands`` / ``shares`` (give 0 to leave a fund out); an unknown fund is an error.

Rounding rule for shares (largest remainder, deterministic): each fund first gets floor(share * N * K); the
slots still missing are given one each to the funds with the largest fractional parts, ties broken by the larger
share and then by the fund's position in the funds table. The counts therefore sum exactly to N * K and no
fund's count differs from its exact quota by one or more. With K > 1 a fund can reach a customer at most once,
so shares above 1/K are capped at 1/K and the excess spread over the other funds in proportion to their shares.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eoca.config import read_yaml, validate_config
from eoca.errors import ConfigError

__all__ = ["DeliveryPlan", "cap_shares", "load_plan", "shares_to_counts"]

SharesRule = Literal["logged", "uniform"]


class DeliveryPlan(BaseModel):
    """A validated delivery plan (see the module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid")

    K: int = Field(1, ge=1, description="funds shown to each customer")
    demands: dict[str, int] | None = Field(None, description="exact deliveries per fund_id; excludes shares")
    shares: SharesRule | dict[str, float] | None = Field(
        None,
        description="share of the K*N delivery slots per fund: 'logged' (each fund's share of the logged "
        "exposures in the evaluation period), 'uniform', or a mapping fund_id -> share (summing to 1); "
        "rounded to counts by the largest-remainder rule; null with no demands means 'logged'",
    )
    risk_rule: bool = Field(True, description="show a customer only funds with risk level <= their tolerance")

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, raw: Any) -> Any:
        # Hand-written checks so that each message names the key and the value in the user's terms.
        if not isinstance(raw, Mapping):
            raise ValueError("expected a mapping with 'demands' or 'shares'")
        extra = sorted(set(raw) - {"K", "demands", "shares", "risk_rule"})
        if extra:
            raise ValueError(f"unknown key(s) {extra}; allowed: K, demands, shares, risk_rule")
        if raw.get("demands") is not None and raw.get("shares") is not None:
            raise ValueError("give exactly one of 'demands' (counts) or 'shares'")
        K = raw.get("K", 1)
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"K must be an integer >= 1, got {K!r}")
        out = dict(raw)
        if raw.get("demands") is not None:
            counts = _number_map(raw["demands"], "demands")
            for fund, v in counts.items():
                if v < 0 or v != math.floor(v):
                    raise ValueError(f"demands.{fund} must be a whole number >= 0, got {v!r}")
            out["demands"] = {f: int(v) for f, v in counts.items()}
        shares = raw.get("shares")
        if shares is not None and not (isinstance(shares, str) and shares in ("logged", "uniform")):
            if isinstance(shares, str):
                raise ValueError(f"shares must be 'logged', 'uniform' or a mapping fund_id -> share, got {shares!r}")
            given = _number_map(shares, "shares")
            for fund, v in given.items():
                if not 0 <= v <= 1:
                    raise ValueError(f"shares.{fund} must lie in [0, 1], got {v!r}")
            total = math.fsum(given.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"shares sum to {total:.9g}; they must sum to 1")
            out["shares"] = {f: float(v) for f, v in given.items()}
        return out

    @property
    def shares_rule(self) -> str:
        """How the demands are obtained, in words (for reports)."""
        if self.demands is not None:
            return "demands given as counts"
        if self.shares is None or self.shares == "logged":
            return "each fund's share of the logged test-period exposures"
        if self.shares == "uniform":
            return "equal shares"
        return "shares given in the configuration"

    @property
    def needs_log(self) -> bool:
        """True when the demands come from a dataset's logged exposures."""
        return self.demands is None and (self.shares is None or self.shares == "logged")

    def demand_vector(
        self,
        fund_ids: Sequence[Any] | np.ndarray,
        n_customers: int,
        K: int | None = None,
        logged_shares: np.ndarray | None = None,
        source: str = "plan",
    ) -> np.ndarray:
        """Demand per fund, int64 (k,) aligned with ``fund_ids``, summing to ``n_customers * K`` for shares.

        Args:
            fund_ids: (k,) ids of the funds table, in its order (compared as strings).
            n_customers: customers the plan covers.
            K: funds per customer (default: the plan's).
            logged_shares: (k,) each fund's share of the logged exposures; needed for ``logged`` shares.
            source: names the plan in errors (a file path, or ``plan`` for a run configuration).
        """
        K = self.K if K is None else K
        keys = [str(f) for f in np.asarray(fund_ids).tolist()]
        if len(keys) < K:
            label = "plan.K" if source == "plan" else f"{source}: K"
            raise ConfigError(f"{label} = {K} but the dataset has only {len(keys)} funds")
        if self.demands is not None:
            return np.array([v for v in self._per_fund(self.demands, keys, source, "demands")], dtype=np.int64)
        if self.shares == "uniform":
            shares = np.full(len(keys), 1.0 / len(keys))
        elif isinstance(self.shares, dict):
            shares = np.array(self._per_fund(self.shares, keys, source, "shares"), dtype=np.float64)
        else:
            if logged_shares is None:
                raise ConfigError(
                    f"{source}: no 'demands' or 'shares' given, and there is no logged exposure table to take "
                    "each fund's share from; give demands or shares"
                )
            shares = np.asarray(logged_shares, dtype=np.float64)
        if K > 1:
            shares = cap_shares(shares, 1.0 / K)
        return shares_to_counts(shares, n_customers * K)

    @staticmethod
    def _per_fund(given: Mapping[str, Any], keys: list[str], source: str, what: str) -> list[Any]:
        """Values of ``given`` in funds-table order; the one check that the plan names exactly the funds."""
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ConfigError(f"{source}: {what}: fund(s) {unknown[:10]} are not in the funds table")
        missing = [f for f in keys if f not in given]
        if missing:
            raise ConfigError(
                f"{source}: {what}: no demand for fund(s) {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; list every fund (use 0 to leave one out)"
            )
        return [given[f] for f in keys]

    def tolerances(self, tolerance: np.ndarray, risk: np.ndarray) -> np.ndarray:
        """Customer tolerances (N,) under the plan: as given, or all lifted to the top level when the risk
        rule is off."""
        tol = np.asarray(tolerance, dtype=np.int64)
        if self.risk_rule:
            return tol
        top = max(int(np.max(risk, initial=0)), int(tol.max(initial=0)))
        return np.full(tol.shape, top, dtype=np.int64)


def _number_map(raw: Any, key: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"'{key}' must be a non-empty mapping fund_id -> number")
    out: dict[str, Any] = {}
    for fund, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}.{fund} must be a number, got {value!r}")
        out[str(fund)] = value
    return out


def load_plan(path: str | os.PathLike[str]) -> DeliveryPlan:
    """Read and validate a delivery plan YAML file (format in the module docstring)."""
    return validate_config(DeliveryPlan, read_yaml(path, "delivery plan"), str(path))


def shares_to_counts(shares: np.ndarray, total: int) -> np.ndarray:
    """Round shares (k,) summing to 1 into int64 counts (k,) summing exactly to ``total``.

    Largest remainder: floors first, then one more slot to each of the funds with the largest fractional part
    (ties: larger share first, then lower index), until the counts add up to ``total``.
    """
    shares = np.asarray(shares, dtype=np.float64)
    quota = shares * total
    base = np.floor(quota).astype(np.int64)
    missing = int(total - base.sum())
    if missing < 0 or missing > len(shares):
        raise ConfigError(f"shares sum to {shares.sum():.9g}, not 1; cannot round them to {total:,} slots")
    frac = quota - base
    order = np.lexsort((np.arange(len(shares)), -shares, -frac))
    base[order[:missing]] += 1
    return base


def cap_shares(shares: np.ndarray, cap: float) -> np.ndarray:
    """Shares (k,) with none above ``cap``: the excess of capped funds is spread over the others in proportion
    to their shares (equally when they have none), repeated until nothing exceeds the cap; renormalised."""
    out = np.asarray(shares, dtype=np.float64).copy()
    for _ in range(out.size):
        over = out > cap
        if not over.any():
            break
        excess = float((out[over] - cap).sum())
        out[over] = cap
        room = ~over & (out < cap)
        if not room.any():
            break
        out[room] += excess * out[room] / out[room].sum() if out[room].sum() > 0 else excess / room.sum()
    return out / out.sum()
