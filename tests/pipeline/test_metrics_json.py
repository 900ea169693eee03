"""metrics.json is written from typed results (:class:`eoca.pipeline.results.RunMetrics`); its keys are what
downstream readers (scripts, notebooks, the docs) rely on, so they are pinned here, as they were when the run
wrote plain dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eoca.evaluation.allocation_value import AllocationValue
from eoca.evaluation.compare import METRIC_KEYS, OfflineMetrics
from eoca.evaluation.online import simulate_ab_test
from eoca.evaluation.ope import RandomizedLog, constant_policy, evaluate_policies
from eoca.io import write_json
from eoca.pipeline.results import (
    DatasetSummary,
    OnlineEvaluation,
    PlanSummary,
    RunMetrics,
    TrainingSummary,
)

COMMON_TOP = ["date", "dataset", "plan", "offline", "training", "allocation", "primary_framework", "reproducibility"]
TOP = {
    "simulated_ab": [
        *COMMON_TOP,
        *("online_kind", "online_note", "ab_test", "ab_test_control", "ab_test_oracle", "timings_s", "summary"),
    ],
    "ips": [*COMMON_TOP, "online_kind", "online_note", "policy_values", "policy_reference", "timings_s", "summary"],
    "none": [*COMMON_TOP, "online_kind", "online_note", "timings_s", "summary"],
}
NESTED = {
    "dataset": ["name", "simulated", "customers", "funds", "exposures", "evaluation_customers"],
    "plan": ["K", "risk_rule", "shares_rule", "demand", "risk_levels"],
    "offline": ["model", *METRIC_KEYS, "n_exposures", "n_conversions"],
    "training": ["model", "epochs", "train_s", "score_s", "valid_decision_value"],
    "allocation": [
        *("framework", "model", "method", "objective", "pct_of_optimum", "certificate_gap", "optimal"),
        *("true_value", "pct_of_oracle_true_value", "customers_short", "funds_off_demand", "risk_rule_breaches"),
        *("wall_time_s", "peak_memory_mb"),
    ],
    "ab_test": [
        *("framework", "role", "customers", "deliveries", "conversions", "amount"),
        *("cpmd", "cpmd_ci_low", "cpmd_ci_high", "tapmd", "tapmd_ci_low", "tapmd_ci_high"),
        *("cpmd_lift_pct", "cpmd_lift_ci_low", "cpmd_lift_ci_high"),
        *("tapmd_lift_pct", "tapmd_lift_ci_low", "tapmd_lift_ci_high"),
        *("expected_value", "expected_tapmd", "expected_tapmd_lift_pct"),
        *("pct_of_oracle_realised", "pct_of_oracle_expected"),
    ],
    "policy_values": [
        *("policy", "role", "customers", "matched", "ess"),
        *("conversions_per_mille", "conversions_per_mille_ci_low", "conversions_per_mille_ci_high"),
        *("spend_per_mille", "spend_per_mille_ci_low", "spend_per_mille_ci_high"),
        *("ips_conversions_per_mille", "ips_spend_per_mille"),
        *("conversions_lift_pct", "conversions_lift_ci_low", "conversions_lift_ci_high"),
        *("spend_lift_pct", "spend_lift_ci_low", "spend_lift_ci_high"),
    ],
}


def check_keys(doc: dict[str, Any]) -> None:
    """Assert the key layout of a metrics.json document (top level, sections, and every row of the tables)."""
    assert list(doc) == TOP[doc["online_kind"]]
    for section, keys in NESTED.items():
        if section not in doc:
            continue
        value = doc[section]
        rows = value if isinstance(value, list) else [value]
        assert rows, section
        for row in rows:
            assert list(row) == keys, section


def _ab_online() -> OnlineEvaluation:
    def draw(c: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        converted = ((c + f) % 2).astype(np.int64)
        return converted, converted * (10.0 + c)

    cust = np.arange(8, dtype=np.int64)
    result = simulate_ab_test(
        {
            "m+manual": (cust, np.zeros(8, dtype=np.int64), np.full(8, 2.0)),
            "oracle+exact": (cust, cust % 2, np.full(8, 3.0)),
        },
        draw,
        control="m+manual",
        oracle="oracle+exact",
        n_bootstrap=20,
    )
    return OnlineEvaluation("simulated_ab", "simulated", ab_test=result)


def _ips_online() -> OnlineEvaluation:
    n = 12
    arm = np.arange(n) % 2
    converted = (np.arange(n) % 3 == 0).astype(float)
    log = RandomizedLog.from_arrays(arm, np.full(n, 0.5), converted, converted * 5.0, n_arms=2)
    pols = {"m+exact": constant_policy(n, 0), "best single arm (1)": constant_policy(n, 1)}
    result = evaluate_policies(log, pols, reference="best single arm (1)", n_bootstrap=20)
    return OnlineEvaluation("ips", "estimated", policy_values=result)


def _metrics(online: OnlineEvaluation) -> RunMetrics:
    return RunMetrics(
        date="2026-11-30",
        dataset=DatasetSummary("tiny", True, 8, 2, 16, 8),
        plan=PlanSummary(K=1, risk_rule=True, shares_rule="uniform", demand={"f0": 4, "f1": 4}, risk_levels=[1, 2]),
        offline={"m": OfflineMetrics(auc=0.71, logloss=0.3, mse=4.0, n_exposures=16.0, n_conversions=3.0)},
        training=(TrainingSummary("m", 2, 0.5, 0.1, None),),
        allocation=(
            AllocationValue(
                *("m+exact", "m", "exact", 12.5, 100.0, 0.0, True, None, None),
                *(0, 0, 0, 0.01, 1.0),
            ),
        ),
        primary_framework="m+exact",
        reproducibility={"train_threads": 1},
        online=online,
        timings_s={"total": 1.5},
        summary=("one finding.",),
    )


@pytest.mark.parametrize("online", [_ab_online, _ips_online, lambda: OnlineEvaluation("none", "no log")])
def test_metrics_json_round_trips_the_same_keys(online: Any, tmp_path: Path) -> None:
    metrics = _metrics(online())
    path = write_json(metrics.to_json(), tmp_path / "metrics.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    check_keys(doc)
    assert doc["offline"][0]["model"] == "m" and doc["offline"][0]["auc"] == 0.71
    assert doc["offline"][0]["gini"] is None  # a metric that does not apply stays null, not a made-up number
    assert doc["allocation"][0]["objective"] == 12.5 and doc["allocation"][0]["true_value"] is None
    assert doc["plan"]["demand"] == {"f0": 4, "f1": 4}
    assert doc["summary"] == ["one finding."] and doc["timings_s"] == {"total": 1.5}
    if doc["online_kind"] == "simulated_ab":
        assert doc["ab_test_control"] == "m+manual" and doc["ab_test_oracle"] == "oracle+exact"
        assert [r["role"] for r in doc["ab_test"]] == ["control", "oracle"]
    if doc["online_kind"] == "ips":
        assert doc["policy_reference"] == "best single arm (1)"
        assert [r["role"] for r in doc["policy_values"]] == ["", "reference"]


def test_offline_metrics_fields_follow_the_comparison_columns() -> None:
    assert list(OfflineMetrics().to_row()) == [*METRIC_KEYS, "n_exposures", "n_conversions"]
