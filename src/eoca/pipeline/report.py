"""Step 7 of ``eoca run``: plots and the self-contained HTML report a marketing analyst can open offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.evaluation.metrics import ORACLE
from eoca.io import write_bytes
from eoca.pipeline.frameworks import FrameworkRun, Plan
from eoca.pipeline.results import ModelRun, RunData, RunResult
from eoca.report import Facts, Image, Note, Paragraph, Report, Section, Table

_ETV_SAMPLE = 200_000  # pairs per model drawn for the ETV histogram; a histogram needs no more


def _fund_labels(dataset: Dataset) -> list[str]:
    ids = dataset.funds.column("fund_id").to_pylist()
    risk = dataset.funds.column("risk_level").to_pylist()
    return [f"{f} (risk {r})" for f, r in zip(ids, risk, strict=True)]


def write_plots(
    folder: Path,
    data: RunData,
    plan: Plan,
    models: list[ModelRun],
    frameworks: list[FrameworkRun],
    online: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Path]:
    """Render every plot of the report to PNG files in ``folder``; returns name -> path.

    ``rows`` are the allocation values (:func:`eoca.evaluation.allocation_value.allocation_values` as rows).
    """
    from eoca.report import plots

    dataset = data.dataset
    out: dict[str, Path] = {}
    # Allocation value: each framework's % of the exact optimum on its own model's scores.
    with_pct = [r for r in rows if r["pct_of_optimum"] is not None and r["model"] != ORACLE]
    if with_pct:
        out["allocation_value"] = write_bytes(
            plots.allocation_value_chart(
                [r["framework"] for r in with_pct],
                np.array([r["pct_of_optimum"] for r in with_pct]),
                wall_time_s=np.array([r["wall_time_s"] for r in with_pct]),
            ),
            folder / "allocation_value.png",
        )
    # Delivered vs demanded for the primary model's methods (every model meets or misses the plan alike).
    primary = models[-1].name
    delivered = {fw.method: fw.result.verification.delivered for fw in frameworks if fw.model in (primary, ORACLE)}
    out["delivered_vs_demanded"] = write_bytes(
        plots.delivered_vs_demanded_chart(
            _fund_labels(dataset),
            plan.demand,
            delivered,
            title=f"Deliveries per fund against the contract ({primary} scores)",
        ),
        folder / "delivered_vs_demanded.png",
    )
    rng = np.random.default_rng(0)
    etv_by_model: dict[str, Any] = {}
    for m in models:
        flat = m.etv.ravel()
        etv_by_model[m.name] = flat if flat.size <= _ETV_SAMPLE else rng.choice(flat, _ETV_SAMPLE, replace=False)
    if data.truth is not None:
        flat = data.truth.etv[plan.customer_pos].ravel()
        etv_by_model["true ETV"] = flat if flat.size <= _ETV_SAMPLE else rng.choice(flat, _ETV_SAMPLE, replace=False)
    out["etv_distribution"] = write_bytes(plots.etv_distribution_chart(etv_by_model), folder / "etv_distribution.png")
    test = dataset.split_mask("test")
    amount = np.asarray(dataset.exposures.column("amount").to_numpy(zero_copy_only=False), dtype=np.float64)[test]
    converted = np.asarray(dataset.exposures.column("converted").to_numpy(zero_copy_only=False), dtype=np.float64)[test]
    out["calibration"] = write_bytes(
        plots.calibration_chart(
            {m.name: m.test_pred["etv"] for m in models},
            amount,
            {m.name: m.test_pred["p"] for m in models},
            converted,
        ),
        folder / "calibration.png",
    )
    if "ab_test" in online:
        ab = [r for r in online["ab_test"] if r["role"] != "control"]
        names = [r["framework"] for r in ab]
        out["ab_lift"] = write_bytes(
            plots.lift_chart(
                names,
                {"CPMD": [r["cpmd_lift_pct"] for r in ab], "TAPMD": [r["tapmd_lift_pct"] for r in ab]},
                {"CPMD": [r["cpmd_lift_ci_low"] for r in ab], "TAPMD": [r["tapmd_lift_ci_low"] for r in ab]},
                {"CPMD": [r["cpmd_lift_ci_high"] for r in ab], "TAPMD": [r["tapmd_lift_ci_high"] for r in ab]},
                control=online["ab_test_control"],
                title="Simulated A/B test: lift against the control",
            ),
            folder / "ab_lift.png",
        )
    if "policy_values" in online:
        pv = [r for r in online["policy_values"] if r["role"] != "reference"]
        out["ope_lift"] = write_bytes(
            plots.lift_chart(
                [r["policy"] for r in pv],
                {"conversions": [r["conversions_lift_pct"] for r in pv], "spend": [r["spend_lift_pct"] for r in pv]},
                {
                    "conversions": [r["conversions_lift_ci_low"] for r in pv],
                    "spend": [r["spend_lift_ci_low"] for r in pv],
                },
                {
                    "conversions": [r["conversions_lift_ci_high"] for r in pv],
                    "spend": [r["spend_lift_ci_high"] for r in pv],
                },
                control=online["policy_reference"],
                title="Estimated policy value: lift against the best single arm",
            ),
            folder / "ope_lift.png",
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def run_summary(result: RunResult) -> list[str]:
    m = result.metrics
    ds = m["dataset"]
    lines = [
        f"Data: {ds['name']} with {ds['customers']:,} customers and {ds['funds']} funds; the delivery plan covers "
        f"{ds['evaluation_customers']:,} customers, {m['plan']['K']} fund(s) each"
        + (", respecting every customer's risk tolerance." if m["plan"]["risk_rule"] else " (risk rule off).")
    ]
    exact = [r for r in m["allocation"] if r["method"] == "exact" and r["model"] != ORACLE]
    for r in exact:
        others = [
            f"{o['method']} reaches {o['pct_of_optimum']:.2f}%"
            for o in m["allocation"]
            if o["model"] == r["model"] and o["method"] != "exact" and o["pct_of_optimum"] is not None
        ]
        if others:
            lines.append(
                f"Allocation with {r['model']} scores: the exact solver finds the certified optimum "
                f"(gap {r['certificate_gap']:.2g}) in {r['wall_time_s']:.2f} s; of that optimum, "
                + ", ".join(others)
                + "."
            )
    if "ab_test" in m:
        rows = {r["framework"]: r for r in m["ab_test"]}
        ctrl = m["ab_test_control"]
        fws = [r for r in m["ab_test"] if not r["framework"].startswith(ORACLE)]
        best = max(fws, key=lambda r: r["tapmd"])
        lines.append(
            f"Simulated A/B test against {ctrl}: {best['framework']} brings the most amount per mille deliveries "
            f"(TAPMD {best['tapmd']:,.0f}, {_pct(best['tapmd_lift_pct'])} "
            f"[{_pct(best['tapmd_lift_ci_low'])}, {_pct(best['tapmd_lift_ci_high'])}]) and conversions per mille "
            f"{best['cpmd']:.2f} ({_pct(best['cpmd_lift_pct'])})."
        )
        oracle = m.get("ab_test_oracle")
        if oracle and oracle in rows and all(r["pct_of_oracle_expected"] is not None for r in fws):
            # Realised amounts of a few hundred heavy-tailed purchases are noisy; the expected value of the
            # delivered pairs (true ETV) ranks frameworks without that noise, so say which leads on it.
            top = max(fws, key=lambda r: r["expected_value"])
            lines.append(
                f"Expected value (true ETV of the delivered pairs, free of purchase noise) as % of the ceiling "
                f"(true ETV + exact allocation): {top['framework']} {top['pct_of_oracle_expected']:.1f}% (highest), "
                f"{ctrl} {rows[ctrl]['pct_of_oracle_expected']:.1f}%; "
                + ", ".join(
                    f"{r['framework']} {r['pct_of_oracle_expected']:.1f}%"
                    for r in fws
                    if r["framework"] not in (top["framework"], ctrl)
                )
                + "."
            )
        broken = [r for r in m["allocation"] if r["customers_short"] or r["funds_off_demand"]]
        if broken:
            lines.append(
                "Contracts broken (customers left without a fund, funds off their demand): "
                + "; ".join(
                    f"{r['framework']} {r['customers_short']:,} customers, {r['funds_off_demand']} fund(s)"
                    for r in broken
                )
                + ". The exact solver meets every contract."
            )
    if "policy_values" in m:
        ref = m["policy_reference"]
        fws = [r for r in m["policy_values"] if r["role"] != "reference" and r["policy"] != "random"]
        if fws:
            best = max(fws, key=lambda r: r["spend_per_mille"])
            lines.append(
                f"Estimated on held-out randomized customers: {best['policy']} spends "
                f"{best['spend_per_mille']:,.0f} per mille customers, {_pct(best['spend_lift_pct'])} "
                f"[{_pct(best['spend_lift_ci_low'])}, {_pct(best['spend_lift_ci_high'])}] against {ref}."
            )
    if m.get("online_kind") == "none":
        lines.append("No online evaluation: " + m["online_note"] + ".")
    lines.append(f"The run took {m['timings_s']['total']:.0f} s; the answer is {m['primary_framework']}.")
    return lines


def build_report(result: RunResult, plots: dict[str, Path]) -> Report:
    m = result.metrics
    cfg = result.config
    ds = m["dataset"]
    sections: list[Section] = []
    sections.append(
        Section(
            "Data and delivery plan",
            "What the run worked on and the contract every allocation had to meet: each fund is shown to exactly "
            "its number of customers, and no customer sees a fund riskier than their tolerance.",
            [
                Facts(
                    [
                        ("Customers", ds["customers"]),
                        ("Funds", ds["funds"]),
                        ("Logged exposures", ds["exposures"]),
                        ("Customers in the plan", ds["evaluation_customers"]),
                        ("Funds per customer (K)", m["plan"]["K"]),
                    ]
                ),
                Table(
                    [
                        {
                            "fund": f,
                            "risk_level": r,
                            "demanded": d,
                            "share_pct": 100.0 * d / max(1, sum(m["plan"]["demand"].values())),
                        }
                        for f, r, d in zip(
                            m["plan"]["demand"], m["plan"]["risk_levels"], m["plan"]["demand"].values(), strict=True
                        )
                    ],
                    labels={"share_pct": "share %"},
                    caption=f"Demands: {m['plan']['shares_rule']}.",
                ),
            ],
        )
    )
    offline_cols = [c for c in _columns(m["offline"]) if c != "model"]
    sections.append(
        Section(
            "Offline model comparison",
            "How well each model predicts on the held-out test period before any allocation: ranking quality of "
            "conversion (AUC, higher is better; logloss, lower is better), error of the amount, and how well the "
            "predicted ETV orders customers by what they actually spent (Gini, Spearman, THC/THA). A dash means "
            "the model has no such output.",
            [Table(m["offline"], columns=["model", *offline_cols], caption="Test split of the logged data.")],
        )
    )
    ab_ci = f"{cfg.ab_test.confidence:.0%}"
    ope_ci = f"{cfg.ope.confidence:.0%}"
    if "ab_test" in m:
        blocks: list[Any] = [
            Table(
                [_ab_display_row(r) for r in m["ab_test"]],
                labels={
                    "cpmd": "CPMD",
                    "cpmd_lift": f"CPMD lift % [{ab_ci} CI]",
                    "tapmd": "TAPMD",
                    "tapmd_lift": f"TAPMD lift % [{ab_ci} CI]",
                    "expected_value": "expected amount",
                    "pct_of_oracle_expected": "% of oracle",
                },
                highlight="tapmd",
                caption="CPMD = conversions per 1,000 deliveries; TAPMD = amount per 1,000 deliveries (EOCA Eq. "
                "17-18). Lifts against the control with paired bootstrap intervals; expected amount = the true "
                "ETV of the delivered pairs (no draw noise); the oracle allocates the true ETV exactly.",
            ),
            Note(m["online_note"], kind="info", title="How the test was simulated"),
        ]
        if "ab_lift" in plots:
            blocks.append(Image(plots["ab_lift"], alt="lift of CPMD and TAPMD against the control"))
        sections.append(
            Section(
                "Simulated online A/B test",
                "Each framework (a model plus an allocation method) delivers the plan to the same customers in the "
                "next period; purchases are drawn from the simulator's ground truth, with the same random draw for "
                "the same customer-fund pair in every framework, so differences come from the decisions alone.",
                blocks,
            )
        )
    if "policy_values" in m:
        blocks = [
            Table(
                [_ope_display_row(r) for r in m["policy_values"]],
                labels={
                    "matched": "customers matched",
                    "conversions_per_mille": f"conversions per mille [{ope_ci} CI]",
                    "spend_per_mille": "spend per mille",
                    "spend_ci": f"spend {ope_ci} CI",
                    "conversions_lift": "conversions lift % [CI]",
                    "spend_lift": "spend lift % [CI]",
                },
                highlight="spend_per_mille",
                caption="Per 1,000 customers treated by the policy; self-normalised inverse propensity weighting; "
                "lifts against the reference with paired bootstrap intervals.",
            ),
            Note(m["online_note"], kind="approximation", title="Estimated, not observed"),
        ]
        if "ope_lift" in plots:
            blocks.append(Image(plots["ope_lift"], alt="estimated lift against the best single arm"))
        sections.append(
            Section(
                "Policy value on the randomized log",
                "Outcomes cannot be simulated on real data, but the log comes from a randomized experiment: "
                "customers whose logged arm matches what a policy would have chosen stand in for everyone that "
                "policy would treat, weighted by the inverse of the probability they were logged with that arm.",
                blocks,
            )
        )
    if m.get("online_kind") == "none":
        sections.append(Section("Online evaluation", m["online_note"] + "."))
    alloc_blocks: list[Any] = [
        Table(
            m["allocation"],
            columns=[
                "framework",
                "objective",
                "pct_of_optimum",
                "certificate_gap",
                "true_value",
                "pct_of_oracle_true_value",
                "customers_short",
                "funds_off_demand",
                "risk_rule_breaches",
                "wall_time_s",
            ],
            labels={"pct_of_optimum": "% of optimum", "pct_of_oracle_true_value": "% of oracle (true)"},
            caption="Objective = total predicted ETV on the framework's own scores; % of optimum against the exact "
            "solver on the same scores; true value = the simulator's expected amount of the allocated pairs.",
        )
    ]
    if "allocation_value" in plots:
        alloc_blocks.append(Image(plots["allocation_value"], alt="allocation value as % of the optimum"))
    sections.append(
        Section(
            "Allocation value against the optimum",
            "The same scores allocated three ways: the platform's manual priority rule, the papers' greedy "
            "heuristic (HA) and eoca's exact solver, whose certificate (dual bound = objective) proves no "
            "allocation meeting the plan can do better.",
            alloc_blocks,
        )
    )
    sections.append(
        Section(
            "Delivered versus demanded",
            "Every contract asks for an exact number of customers per fund. Bars that do not reach the outline "
            "are contracts a method failed to fill.",
            [Image(plots["delivered_vs_demanded"], alt="deliveries per fund against the contract")],
        )
    )
    sections.append(
        Section(
            "Predicted ETV",
            "The spread of predicted expected transaction values over all customer-fund pairs of the plan; "
            "amounts are heavy-tailed, so the axis is logarithmic.",
            [Image(plots["etv_distribution"], alt="distribution of predicted ETV")],
        )
    )
    sections.append(
        Section(
            "Calibration",
            "Do predictions mean what they say? Test pairs are grouped into deciles of the prediction; a "
            "calibrated model's points lie on the diagonal.",
            [Image(plots["calibration"], alt="calibration of ETV and conversion probability")],
        )
    )
    train_rows = m["training"]
    sections.append(
        Section(
            "Run details",
            "Configuration and timings, to reproduce or audit the run.",
            [
                Table(train_rows, caption="Training epochs and seconds per model, scoring seconds."),
                Table(
                    [{"step": k, "seconds": v} for k, v in m["timings_s"].items()],
                    caption="Wall time per step.",
                ),
                Paragraph(
                    "The configuration used is in `config.yaml`; metrics in `metrics.json` and the CSV files; the "
                    "allocation of the answer framework in `allocation.parquet`, every framework's in "
                    "`allocations.parquet`; trained models in `models/`."
                ),
            ],
        )
    )
    subtitle = (
        f"{ds['name']}: models {', '.join(cfg.models)}; allocation {', '.join(cfg.allocation.methods)}; "
        f"K = {m['plan']['K']}"
    )
    return Report(
        title="eoca run report",
        date=m["date"],
        summary=m["summary"],
        sections=sections,
        subtitle=subtitle,
        footer=f"eoca run, folder {result.folder.name.removeprefix('.').removesuffix('.partial')}",
    )


def _interval(value: float | None, low: float | None, high: float | None, fmt: str) -> str | None:
    if value is None:
        return None
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _ope_display_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": r["policy"],
        "role": r["role"],
        "matched": r["matched"],
        "conversions_per_mille": _interval(
            r["conversions_per_mille"], r["conversions_per_mille_ci_low"], r["conversions_per_mille_ci_high"], ".2f"
        ),
        "spend_per_mille": r["spend_per_mille"],
        "spend_ci": f"[{r['spend_per_mille_ci_low']:,.0f}, {r['spend_per_mille_ci_high']:,.0f}]",
        "conversions_lift": _interval(
            r["conversions_lift_pct"], r["conversions_lift_ci_low"], r["conversions_lift_ci_high"], "+.1f"
        ),
        "spend_lift": _interval(r["spend_lift_pct"], r["spend_lift_ci_low"], r["spend_lift_ci_high"], "+.1f"),
    }


def _ab_display_row(r: dict[str, Any]) -> dict[str, Any]:
    def lift(key: str) -> str | None:
        return _interval(r[f"{key}_lift_pct"], r[f"{key}_lift_ci_low"], r[f"{key}_lift_ci_high"], "+.1f")

    return {
        "framework": r["framework"],
        "role": r["role"],
        "deliveries": r["deliveries"],
        "conversions": r["conversions"],
        "amount": r["amount"],
        "cpmd": r["cpmd"],
        "cpmd_lift": lift("cpmd"),
        "tapmd": r["tapmd"],
        "tapmd_lift": lift("tapmd"),
        "expected_value": r["expected_value"],
        "pct_of_oracle_expected": r["pct_of_oracle_expected"],
    }


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    return seen
