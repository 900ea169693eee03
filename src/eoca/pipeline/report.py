"""Step 7 of ``eoca run``: plots and the self-contained HTML report a marketing analyst can open offline."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.evaluation.allocation_value import AllocationValue
from eoca.evaluation.metrics import ORACLE
from eoca.evaluation.online import FrameworkABResult
from eoca.evaluation.ope import OPEResult, PolicyLift, PolicyValue
from eoca.io import write_bytes
from eoca.pipeline.frameworks import FrameworkRun, Plan
from eoca.pipeline.online import RANDOM
from eoca.pipeline.results import ModelRun, OnlineEvaluation, RunData, RunMetrics, RunResult
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
    online: OnlineEvaluation,
    allocation: Sequence[AllocationValue],
) -> dict[str, Path]:
    """Render every plot of the report to PNG files in ``folder``; returns name -> path.

    ``allocation``: the allocation values (:func:`eoca.evaluation.allocation_value.allocation_values`).
    """
    from eoca.report import plots

    dataset = data.dataset
    out: dict[str, Path] = {}
    # Allocation value: each framework's % of the exact optimum on its own model's scores.
    with_pct = [v for v in allocation if v.pct_of_optimum is not None and v.model != ORACLE]
    if with_pct:
        out["allocation_value"] = write_bytes(
            plots.allocation_value_chart(
                [v.framework for v in with_pct],
                np.array([v.pct_of_optimum for v in with_pct]),
                wall_time_s=np.array([v.wall_time_s for v in with_pct]),
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
    # The pairs the plan allows, the only ones a decision reads (and the only ones a tree model scores).
    allowed = plan.eligible()
    for m in models:
        flat = m.etv[allowed]
        etv_by_model[m.name] = flat if flat.size <= _ETV_SAMPLE else rng.choice(flat, _ETV_SAMPLE, replace=False)
    if data.truth is not None:
        flat = data.truth.etv[plan.customer_pos][allowed]
        etv_by_model["true ETV"] = flat if flat.size <= _ETV_SAMPLE else rng.choice(flat, _ETV_SAMPLE, replace=False)
    out["etv_distribution"] = write_bytes(
        plots.etv_distribution_chart(etv_by_model, title="Predicted ETV per customer-fund pair the plan allows"),
        folder / "etv_distribution.png",
    )
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
    if online.ab_test is not None:
        ab = [r for r in online.ab_test.frameworks if r.role != "control"]
        names = [r.name for r in ab]
        out["ab_lift"] = write_bytes(
            plots.lift_chart(
                names,
                {"CPMD": [r.cpmd_lift_pct for r in ab], "TAPMD": [r.tapmd_lift_pct for r in ab]},
                {"CPMD": [_bounds(r.cpmd_lift_ci)[0] for r in ab], "TAPMD": [_bounds(r.tapmd_lift_ci)[0] for r in ab]},
                {"CPMD": [_bounds(r.cpmd_lift_ci)[1] for r in ab], "TAPMD": [_bounds(r.tapmd_lift_ci)[1] for r in ab]},
                control=online.ab_test.control,
                title="Simulated A/B test: lift against the control",
            ),
            folder / "ab_lift.png",
        )
    if online.policy_values is not None:
        ope = online.policy_values
        lifts = [ope.lift(p.name) for p in ope.policies if p.name != ope.reference]
        out["ope_lift"] = write_bytes(
            plots.lift_chart(
                [lift.policy for lift in lifts],
                {
                    "conversions": [lift.conversions_lift_pct for lift in lifts],
                    "spend": [lift.spend_lift_pct for lift in lifts],
                },
                {
                    "conversions": [lift.conversions_lift_ci[0] for lift in lifts],
                    "spend": [lift.spend_lift_ci[0] for lift in lifts],
                },
                {
                    "conversions": [lift.conversions_lift_ci[1] for lift in lifts],
                    "spend": [lift.spend_lift_ci[1] for lift in lifts],
                },
                control=str(ope.reference),
                title="Estimated policy value: lift against the best single arm",
            ),
            folder / "ope_lift.png",
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def run_summary(m: RunMetrics) -> list[str]:
    """The run's findings in sentences, from its metrics (everything but ``summary`` filled in)."""
    ds = m.dataset
    lines = [
        f"Data: {ds.name} with {ds.customers:,} customers and {ds.funds} funds; the delivery plan covers "
        f"{ds.evaluation_customers:,} customers, {m.plan.K} fund(s) each"
        + (", respecting every customer's risk tolerance." if m.plan.risk_rule else " (risk rule off).")
    ]
    exact = [r for r in m.allocation if r.method == "exact" and r.model != ORACLE]
    for r in exact:
        others = [
            f"{o.method} reaches {o.pct_of_optimum:.2f}%"
            for o in m.allocation
            if o.model == r.model and o.method != "exact" and o.pct_of_optimum is not None
        ]
        if others:
            lines.append(
                f"Allocation with {r.model} scores: the exact solver finds the certified optimum "
                f"(gap {r.certificate_gap:.2g}) in {r.wall_time_s:.2f} s; of that optimum, " + ", ".join(others) + "."
            )
    ab_test = m.online.ab_test
    if ab_test is not None:
        ctrl = ab_test.control
        fws = [r for r in ab_test.frameworks if not r.name.startswith(ORACLE)]
        best = max(fws, key=lambda r: r.tapmd)
        tapmd_low, tapmd_high = _bounds(best.tapmd_lift_ci)
        lines.append(
            f"Simulated A/B test against {ctrl}: {best.name} brings the most amount per mille deliveries "
            f"(TAPMD {best.tapmd:,.0f}, {_pct(best.tapmd_lift_pct)} "
            f"[{_pct(tapmd_low)}, {_pct(tapmd_high)}]) and conversions per mille "
            f"{best.cpmd:.2f} ({_pct(best.cpmd_lift_pct)})."
        )
        oracle = ab_test.oracle
        if oracle and oracle in ab_test.names and all(r.pct_of_oracle_expected is not None for r in fws):
            # Realised amounts of a few hundred heavy-tailed purchases are noisy; the expected value of the
            # delivered pairs (true ETV) ranks frameworks without that noise, so say which leads on it.
            top = max(fws, key=lambda r: r.expected_value or 0.0)
            lines.append(
                f"Expected value (true ETV of the delivered pairs, free of purchase noise) as % of the ceiling "
                f"(true ETV + exact allocation): {top.name} {top.pct_of_oracle_expected:.1f}% (highest), "
                f"{ctrl} {ab_test[ctrl].pct_of_oracle_expected:.1f}%; "
                + ", ".join(f"{r.name} {r.pct_of_oracle_expected:.1f}%" for r in fws if r.name not in (top.name, ctrl))
                + "."
            )
        broken = [r for r in m.allocation if r.customers_short or r.funds_off_demand]
        if broken:
            lines.append(
                "Contracts broken (customers left without a fund, funds off their demand): "
                + "; ".join(
                    f"{r.framework} {r.customers_short:,} customers, {r.funds_off_demand} fund(s)" for r in broken
                )
                + ". The exact solver meets every contract."
            )
    ope = m.online.policy_values
    if ope is not None:
        ref = ope.reference
        pols = [p for p in ope.policies if p.name not in (ref, RANDOM)]
        if pols:
            top_policy = max(pols, key=lambda p: p.spend_per_mille)
            lift = ope.lift(top_policy.name)
            lines.append(
                f"Estimated on held-out randomized customers: {top_policy.name} spends "
                f"{top_policy.spend_per_mille:,.0f} per mille customers, {_pct(lift.spend_lift_pct)} "
                f"[{_pct(lift.spend_lift_ci[0])}, {_pct(lift.spend_lift_ci[1])}] against {ref}."
            )
    if m.online.kind == "none":
        lines.append("No online evaluation: " + m.online.note + ".")
    lines.append(f"The run took {m.timings_s['total']:.0f} s; the answer is {m.primary_framework}.")
    return lines


def build_report(result: RunResult, plots: dict[str, Path]) -> Report:
    m = result.metrics
    cfg = result.config
    ds = m.dataset
    sections: list[Section] = []
    sections.append(
        Section(
            "Data and delivery plan",
            "What the run worked on and the contract every allocation had to meet: each fund is shown to exactly "
            "its number of customers, and no customer sees a fund riskier than their tolerance.",
            [
                Facts(
                    [
                        ("Customers", ds.customers),
                        ("Funds", ds.funds),
                        ("Logged exposures", ds.exposures),
                        ("Customers in the plan", ds.evaluation_customers),
                        ("Funds per customer (K)", m.plan.K),
                    ]
                ),
                Table(
                    [
                        {
                            "fund": f,
                            "risk_level": r,
                            "demanded": d,
                            "share_pct": 100.0 * d / max(1, sum(m.plan.demand.values())),
                        }
                        for (f, d), r in zip(m.plan.demand.items(), m.plan.risk_levels, strict=True)
                    ],
                    labels={"share_pct": "share %"},
                    caption=f"Demands: {m.plan.shares_rule}.",
                ),
            ],
        )
    )
    offline_rows = m.offline_rows()
    offline_cols = [c for c in _columns(offline_rows) if c != "model"]
    sections.append(
        Section(
            "Offline model comparison",
            "How well each model predicts on the held-out test period before any allocation: ranking quality of "
            "conversion (AUC, higher is better; logloss, lower is better), error of the amount, and how well the "
            "predicted ETV orders customers by what they actually spent (Gini, Spearman, THC/THA). A dash means "
            "the model has no such output.",
            [Table(offline_rows, columns=["model", *offline_cols], caption="Test split of the logged data.")],
        )
    )
    ab_ci = f"{cfg.ab_test.confidence:.0%}"
    ope_ci = f"{cfg.ope.confidence:.0%}"
    online = m.online
    if online.ab_test is not None:
        blocks: list[Any] = [
            Table(
                [_ab_display_row(r) for r in online.ab_test.frameworks],
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
            Note(online.note, kind="info", title="How the test was simulated"),
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
    if online.policy_values is not None:
        ope = online.policy_values
        blocks = [
            Table(
                [
                    _ope_display_row(p, "reference" if p.name == ope.reference else "", _lift_or_none(ope, p))
                    for p in ope.policies
                ],
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
            Note(online.note, kind="approximation", title="Estimated, not observed"),
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
    if online.kind == "none":
        sections.append(Section("Online evaluation", online.note + "."))
    alloc_blocks: list[Any] = [
        Table(
            m.allocation_rows(),
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
    train_rows = [dataclasses.asdict(t) for t in m.training]
    sections.append(
        Section(
            "Run details",
            "Configuration and timings, to reproduce or audit the run.",
            [
                Table(train_rows, caption="Training epochs and seconds per model, scoring seconds."),
                Table(
                    [{"step": k, "seconds": v} for k, v in m.timings_s.items()],
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
        f"{ds.name}: models {', '.join(cfg.models)}; allocation {', '.join(cfg.allocation.methods)}; K = {m.plan.K}"
    )
    return Report(
        title="eoca run report",
        date=m.date,
        summary=list(m.summary),
        sections=sections,
        subtitle=subtitle,
        footer=f"eoca run, folder {result.folder.name.removeprefix('.').removesuffix('.partial')}",
    )


def _interval(value: float | None, low: float | None, high: float | None, fmt: str) -> str | None:
    if value is None:
        return None
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _bounds(ci: tuple[float, float] | None) -> tuple[float | None, float | None]:
    return (None, None) if ci is None else ci


def _lift_or_none(ope: OPEResult, policy: PolicyValue) -> PolicyLift | None:
    return next((lift for lift in ope.lifts if lift.policy == policy.name), None)


def _ope_display_row(p: PolicyValue, role: str, lift: PolicyLift | None) -> dict[str, Any]:
    return {
        "policy": p.name,
        "role": role,
        "matched": p.n_matched,
        "conversions_per_mille": _interval(
            p.conversions_per_mille, p.conversions_per_mille_ci[0], p.conversions_per_mille_ci[1], ".2f"
        ),
        "spend_per_mille": p.spend_per_mille,
        "spend_ci": f"[{p.spend_per_mille_ci[0]:,.0f}, {p.spend_per_mille_ci[1]:,.0f}]",
        "conversions_lift": None
        if lift is None
        else _interval(lift.conversions_lift_pct, *lift.conversions_lift_ci, "+.1f"),
        "spend_lift": None if lift is None else _interval(lift.spend_lift_pct, *lift.spend_lift_ci, "+.1f"),
    }


def _ab_display_row(r: FrameworkABResult) -> dict[str, Any]:
    def lift(value: float | None, ci: tuple[float, float] | None) -> str | None:
        return _interval(value, *_bounds(ci), "+.1f")

    return {
        "framework": r.name,
        "role": r.role,
        "deliveries": r.deliveries,
        "conversions": r.conversions,
        "amount": r.amount,
        "cpmd": r.cpmd,
        "cpmd_lift": lift(r.cpmd_lift_pct, r.cpmd_lift_ci),
        "tapmd": r.tapmd,
        "tapmd_lift": lift(r.tapmd_lift_pct, r.tapmd_lift_ci),
        "expected_value": r.expected_value,
        "pct_of_oracle_expected": r.pct_of_oracle_expected,
    }


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    return seen
