"""Descriptive statistics of a dataset: what ``eoca inspect`` prints and writes as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from eoca.data.dataset import SPLITS, Dataset

AMOUNT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def describe(ds: Dataset) -> dict[str, Any]:
    """Summary statistics of ``ds``: table sizes, conversion, amount quantiles among converters, per-fund
    exposure and conversion, per-split counts and risk histograms. Every value is computed from the tables."""
    exp = pl.from_arrow(ds.exposures)
    assert isinstance(exp, pl.DataFrame)
    n_exp = exp.height
    conv = int(exp["converted"].sum())
    converters = exp.filter(pl.col("converted") == 1)["amount"].to_numpy()
    out: dict[str, Any] = {
        "name": ds.spec.name,
        "rows": {name: t.num_rows for name, t in ds.tables().items()},
        "exposures": n_exp,
        "conversions": conv,
        "conversion_per_mille": 1000.0 * conv / n_exp,
        "total_amount": float(exp["amount"].sum()),
        "amount_per_mille_exposures": 1000.0 * float(exp["amount"].sum()) / n_exp,
    }
    if ds.has_clicks:
        clicks = int(exp["clicked"].sum())
        out["click_per_mille"] = 1000.0 * clicks / n_exp
        out["cvr_given_click"] = conv / clicks if clicks else float("nan")
    if len(converters):
        qs = np.quantile(converters, AMOUNT_QUANTILES)
        out["amount_quantiles_converters"] = {
            f"p{round(q * 100)}": float(v) for q, v in zip(AMOUNT_QUANTILES, qs, strict=True)
        }
        out["amount_mean_converters"] = float(converters.mean())
        med = float(np.median(converters))
        out["amount_p99_over_median"] = float(qs[-1] / med) if med > 0 else float("nan")
    split = ds.split_labels()
    out["split"] = {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}
    funds = pl.from_arrow(ds.funds.select(["fund_id", "risk_level"]))
    assert isinstance(funds, pl.DataFrame)
    per_fund = (
        exp.group_by("fund_id")
        .agg(
            pl.len().alias("exposures"),
            pl.col("converted").sum().alias("conversions"),
            pl.col("amount").sum().alias("amount"),
        )
        .with_columns((1000.0 * pl.col("conversions") / pl.col("exposures")).alias("conversion_per_mille"))
    )
    per_fund = funds.join(per_fund, on="fund_id", how="left").fill_null(0)
    out["per_fund"] = per_fund.sort("fund_id").to_dicts()
    lo, hi = ds.spec.risk_levels
    levels = list(range(lo, hi + 1))
    tol = np.asarray(ds.customers.column("risk_tolerance").to_numpy())
    rl = np.asarray(ds.funds.column("risk_level").to_numpy())
    out["risk_tolerance_histogram"] = {str(k): int((tol == k).sum()) for k in levels}
    out["fund_risk_level_histogram"] = {str(k): int((rl == k).sum()) for k in levels}
    if ds.events is not None:
        ev = pl.from_arrow(ds.events.select(["event_type"]))
        assert isinstance(ev, pl.DataFrame)
        out["events_by_type"] = {r["event_type"]: r["len"] for r in ev.group_by("event_type").len().to_dicts()}
        out["events_per_customer"] = ds.events.num_rows / ds.n_customers
    if ds.consumption is not None:
        out["consumption_edges_per_customer"] = ds.consumption.num_rows / ds.n_customers
        out["merchants"] = int(pl.from_arrow(ds.consumption.select(["merchant_id"]))["merchant_id"].n_unique())  # type: ignore[index]
    if ds.truth is not None:
        etv = np.asarray(ds.truth.column("etv").to_numpy())
        out["truth_mean_etv"] = float(etv.mean())
        p = np.asarray(ds.truth.column("p").to_numpy())
        out["truth_mean_p_per_mille"] = 1000.0 * float(p.mean())
    return out
