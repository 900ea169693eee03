"""Value of allocations: each framework's objective against the exact optimum on the same scores and, on
simulated data, the true expected value of what it delivers against the oracle's (true ETV, exact allocation).

Inputs are allocation results and arrays; nothing here trains, simulates or reads files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eoca.allocation import AllocationResult
from eoca.evaluation.metrics import ORACLE


@dataclass(frozen=True)
class AllocationValue:
    """One framework's allocation value (a row of ``allocation_value.csv``)."""

    framework: str
    model: str
    method: str
    objective: float
    pct_of_optimum: float | None
    certificate_gap: float | None
    optimal: bool | None
    true_value: float | None
    pct_of_oracle_true_value: float | None
    customers_short: int
    funds_off_demand: int
    risk_rule_breaches: int
    wall_time_s: float
    peak_memory_mb: float

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def allocation_values(
    frameworks: Sequence[tuple[str, str, AllocationResult]],
    true_value: Mapping[str, float] | None = None,
    oracle: str = f"{ORACLE}+exact",
) -> list[AllocationValue]:
    """One :class:`AllocationValue` per framework.

    Args:
        frameworks: (framework name, model name, result) in report order; a model's ``exact`` result is the
            optimum its other methods are measured against.
        true_value: framework name -> total true ETV of its delivered pairs (simulated data), or None.
        oracle: the framework whose true value is 100%.
    """
    optimum = {model: res.objective for _, model, res in frameworks if res.method == "exact"}
    truth = dict(true_value or {})
    oracle_value = truth.get(oracle)
    out = []
    for name, model, res in frameworks:
        viol = res.verification
        opt = optimum.get(model)
        tv = truth.get(name)
        out.append(
            AllocationValue(
                framework=name,
                model=model,
                method=res.method,
                objective=res.objective,
                pct_of_optimum=None if not opt else 100.0 * res.objective / opt,
                certificate_gap=res.gap,
                optimal=res.optimal,
                true_value=tv,
                pct_of_oracle_true_value=None if tv is None or not oracle_value else 100.0 * tv / oracle_value,
                customers_short=int(viol.short_customers),
                funds_off_demand=int(np.count_nonzero(viol.fund_mismatch)),
                risk_rule_breaches=int(viol.risk_breaches),
                wall_time_s=res.wall_time_s,
                peak_memory_mb=res.peak_memory_mb,
            )
        )
    return out
