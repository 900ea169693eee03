"""``eoca run`` with a ``tamor`` section: the multi-scenario comparison end to end, written to one run folder.

The folder (assembled under a hidden temporary name and renamed when complete) holds ``config.yaml``,
``metrics.json``, ``tamor_offline.csv`` (AUCs per framework x tier / scenario), ``tamor_period.csv`` (the
simulated next period: totals, lifts over the control with 95% intervals, share of the oracle) and
``report.html`` with the TAMOR section.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eoca.evaluation.metrics import ORACLE
from eoca.io import check_output_folder, output_folder, write_csv, write_json, write_yaml
from eoca.report import Facts, Note, Report, Section, Table, render_report
from eoca.tamor.config import SCENARIO_NAMES, TIER_NAMES, TamorConfig
from eoca.tamor.evaluate import METRICS
from eoca.tamor.experiment import TamorResult, run_comparison


@dataclass
class TamorRunResult:
    """A finished TAMOR run: its folder, the comparison and the metrics written to ``metrics.json``."""

    folder: Path
    result: TamorResult
    metrics: dict[str, Any]


def run_tamor_pipeline(
    cfg: TamorConfig, name: str, out: Path | None = None, runs_root: Path = Path("runs"), *, overwrite: bool = False
) -> TamorRunResult:
    """Run the comparison of ``cfg`` into ``out`` (default ``runs_root/<stamp>-<name>``).

    Raises:
        ConfigError: the folder exists and is not empty (unless ``overwrite``), or is a file.
    """
    final = out if out is not None else runs_root / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
    check_output_folder(final, overwrite)
    t0 = time.perf_counter()
    with output_folder(final, overwrite=overwrite) as work:
        write_yaml({"name": name, "tamor": cfg.model_dump(mode="json")}, work / "config.yaml")
        result = run_comparison(cfg)
        metrics = tamor_metrics(cfg, result)
        metrics["timings_s"] = {"total": time.perf_counter() - t0}
        write_csv(metrics["offline"], work / "tamor_offline.csv")
        write_csv(metrics["period"], work / "tamor_period.csv")
        write_json(metrics, work / "metrics.json")
        render_report(work / "report.html", build_tamor_report(cfg, metrics, name))
    return TamorRunResult(folder=final, result=result, metrics=metrics)


def tamor_metrics(cfg: TamorConfig, result: TamorResult) -> dict[str, Any]:
    """The run's numbers as plain data: tier counts, offline rows, period rows, throughput and a summary."""
    period = result.period
    assert period is not None
    offline = [{"framework": n, **row} for n, rows in result.offline.items() for row in rows]
    rows = period.rows()
    best = max(cfg.frameworks, key=lambda n: period.totals[n]["expected_amount"])
    summary = [
        f"{n}: {period.totals[n]['expected_new_high_holding']:,.1f} expected new high-holding customers, "
        f"expected amount {period.totals[n]['expected_amount']:,.0f} "
        f"({period.oracle_share(n)['expected_amount']:.1f}% of the oracle)"
        for n in cfg.frameworks
    ]
    summary.append(f"highest expected amount: {best}")
    return {
        "date": dt.date.today().isoformat(),
        "seed": cfg.seed,
        "tier_counts": dict(zip(TIER_NAMES, result.tier_counts, strict=True)),
        "offline": offline,
        "period": rows,
        "throughput_samples_per_s": result.throughput,
        "summary": summary,
    }


def _ci(row: dict[str, Any], metric: str) -> str | None:
    point, lo, hi = (row[f"{metric}_lift_{k}"] for k in ("pct", "low", "high"))
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return None
    return f"{point:+.1f}% [{lo:+.1f}, {hi:+.1f}]"


def build_tamor_report(cfg: TamorConfig, metrics: dict[str, Any], name: str) -> Report:
    """The HTML report of a TAMOR run."""
    counts = metrics["tier_counts"]
    period_rows = [
        {
            "framework": r["framework"],
            **{m: r[m] for m in METRICS},
            **{f"{m}_lift": _ci(r, m) for m in METRICS},
            "expected_amount_oracle_pct": r["expected_amount_oracle_pct"],
            "expected_new_high_holding_oracle_pct": r["expected_new_high_holding_oracle_pct"],
        }
        for r in metrics["period"]
    ]
    by_tier = [r for r in metrics["offline"] if r["group"] in ("all", "tier")]
    by_scen = [r for r in metrics["offline"] if r["group"] == "scenario"]
    columns = ["framework", "value", "rows", "auc_click", "auc_purchase", "auc_upgrade"]
    sections = [
        Section(
            "Multi-scenario world",
            "Customers fall into tiers by platform holdings and behave differently per tier; items come from "
            f"several business scenarios ({', '.join(SCENARIO_NAMES)}) with their own features. Each framework "
            f"ranks a mixed slate of {cfg.rank.k} items per customer by ETV + {cfg.rank.upgrade_weight:g} x "
            f"P(upgrade) x {cfg.rank.upgrade_value:,.0f}.",
            [
                Facts([(f"{t} customers", counts[t]) for t in TIER_NAMES] + [("seed", cfg.seed)]),
            ],
        ),
        Section(
            "Offline metrics per tier and per scenario",
            "AUC of click, purchase (click and conversion) and tier upgrade on the logged test period; higher is "
            "better. Upgrade applies to the new and low tiers only.",
            [
                Table(by_tier, columns=columns, labels={"value": "tier"}, caption="'all' = every test exposure."),
                Table(by_scen, columns=columns, labels={"value": "scenario"}),
            ],
        ),
        Section(
            "Simulated next period (common random numbers)",
            f"Every framework's slates are delivered in {cfg.evaluation.replications} simulated periods that share "
            "their random numbers, so differences come from the slates alone; expected amount and expected new "
            "high-holding customers are computed from the true probabilities (no draw noise). Lifts are over "
            f"{cfg.control} with {cfg.evaluation.confidence:.0%} paired-bootstrap intervals over customers; the "
            f"{ORACLE} ranks by the true scores with the same rule and is the ceiling.",
            [
                Table(
                    period_rows,
                    labels={
                        "new_high_holding": "new high-holding",
                        "expected_new_high_holding": "expected new high-holding",
                        "expected_amount_oracle_pct": "expected amount % of oracle",
                        "expected_new_high_holding_oracle_pct": "expected new high-holding % of oracle",
                    },
                    highlight="expected_amount",
                ),
                Note(
                    "The oracle picks each item by its own expected contribution to the upgrade; with several "
                    "purchases adding up it is a near-ceiling, not the exact optimum of new high-holding customers.",
                    kind="approximation",
                ),
                Note(
                    "The intervals resample the customers of this one world, each framework trained once (seed "
                    f"{cfg.seed}). They do not hold the variance between trainings, which on the default world moves "
                    "a framework's totals by more than these intervals are wide; judge a difference between "
                    "frameworks over several seeds (benchmarks/tamor.py reports the interval over seeds).",
                    kind="warning",
                ),
            ],
        ),
    ]
    return Report(
        title=f"TAMOR run {name}",
        date=metrics["date"],
        summary=metrics["summary"],
        sections=sections,
        subtitle=f"multi-scenario world, seed {cfg.seed}",
    )
