"""``eoca run`` end to end on a small simulated world and on Hillstrom (CI budget: a few minutes in all)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from eoca.cli import app
from eoca.data.hillstrom import default_hillstrom_path
from eoca.simulate import load_simulator_config, simulate
from eoca.training.trainer import safe_torch_load
from tests.pipeline.test_metrics_json import check_keys

N = 1200  # customers of the small world: enough for every step to have something to do, quick to train

SMALL = [
    f"simulator.customers={N}",
    "simulator.funds=5",
    "models=[esmm,esdpm]",
    "train.max_epochs=1",
    "train.batch_size=256",
    "train.num_threads=1",
    "ab_test.n_bootstrap=100",
    "progress=false",
    "jobs=2",  # the two models in two worker processes; test_models_trained_at_once_give_the_numbers_of_one_by_one
]

SECTIONS = (
    "Data and delivery plan",
    "Offline model comparison",
    "Simulated online A/B test",
    "Allocation value against the optimum",
    "Delivered versus demanded",
    "Predicted ETV",
    "Calibration",
    "Run details",
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "small"
    args = ["run", "--out", str(out)]
    for s in SMALL:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out


def test_run_folder_has_every_artefact(small_run: Path) -> None:
    for name in (
        "config.yaml",
        "metrics.json",
        "offline_metrics.csv",
        "allocation_value.csv",
        "ab_test.csv",
        "allocation.parquet",
        "allocations.parquet",
        "report.html",
        "plots/calibration.png",
        "plots/etv_distribution.png",
        "plots/delivered_vs_demanded.png",
        "plots/allocation_value.png",
        "plots/ab_lift.png",
        "models/esmm",
        "models/esdpm",
    ):
        assert (small_run / name).exists(), name
    assert not list(small_run.parent.glob(".*partial")), "the temporary run folder must be renamed away"


def test_report_has_every_section_and_is_self_contained(small_run: Path) -> None:
    html = (small_run / "report.html").read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert heading in html, heading
    assert "data:image/png;base64," in html
    # offline: no external scripts, styles or images
    assert not re.search(r"""(src|href)=["']https?://""", html)


def test_metrics_are_consistent(small_run: Path) -> None:
    m = json.loads((small_run / "metrics.json").read_text())
    check_keys(m)
    assert m["dataset"]["customers"] == N
    names = {r["framework"] for r in m["allocation"]}
    assert names == {f"{a}+{b}" for a in ("esmm", "esdpm") for b in ("manual", "ha", "exact")} | {"oracle+exact"}
    for r in m["allocation"]:
        if r["method"] == "exact":
            assert r["pct_of_optimum"] == pytest.approx(100.0)
            assert r["customers_short"] == 0 and r["funds_off_demand"] == 0 and r["risk_rule_breaches"] == 0
            assert abs(r["certificate_gap"]) <= 1e-6 * max(1.0, abs(r["objective"]))
        else:
            assert r["pct_of_optimum"] <= 100.0 + 1e-9
        assert r["pct_of_oracle_true_value"] <= 100.0 + 1e-9
    ab = {r["framework"]: r for r in m["ab_test"]}
    assert ab["esmm+manual"]["role"] == "control"
    assert ab["oracle+exact"]["role"] == "oracle"
    assert ab["oracle+exact"]["pct_of_oracle_expected"] == pytest.approx(100.0)
    assert all(r["deliveries"] <= N for r in m["ab_test"])
    assert {r["model"] for r in m["offline"]} == {"esmm", "esdpm"}
    # The answer is the configured model with the highest validation decision value (the simulator logs
    # propensities; a tiny validation split may have no conversion, then the last configured model), with exact.
    values = {r["model"]: r["valid_decision_value"] for r in m["training"] if r["valid_decision_value"] is not None}
    best = max(values, key=values.__getitem__) if values else "esdpm"
    assert m["summary"] and m["primary_framework"] == f"{best}+exact"


def test_allocation_parquet_covers_every_customer_once(small_run: Path) -> None:
    t = pq.read_table(small_run / "allocation.parquet")
    ids = t.column("customer_id").to_pylist()
    assert len(ids) == N and len(set(ids)) == N
    assert t.column("fund_id").null_count == 0


def test_existing_run_folder_is_refused(small_run: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--out", str(small_run), "--set", "simulator.customers=100"])
    assert res.exit_code != 0
    assert "exists already" in str(res.exception)


def test_models_trained_at_once_give_the_numbers_of_one_by_one(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "one_by_one"
    args = ["run", "--out", str(out)]
    for s in [*SMALL, "jobs=1"]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    at_once = json.loads((small_run / "metrics.json").read_text())
    one_by_one = json.loads((out / "metrics.json").read_text())
    assert at_once["reproducibility"]["training_jobs"] == 2
    assert one_by_one["reproducibility"]["training_jobs"] == 1
    # Byte for byte: every score, metric and allocation, whichever process trained the model.
    for name in ("offline_metrics.csv", "ab_test.csv", "allocation.parquet", "allocations.parquet"):
        assert (small_run / name).read_bytes() == (out / name).read_bytes(), name
    assert at_once["primary_framework"] == one_by_one["primary_framework"]
    # The workers saved the same networks into the run folder.
    for model in ("esmm", "esdpm"):
        a = safe_torch_load(small_run / "models" / model / "model.pt")["state_dict"]
        b = safe_torch_load(out / "models" / model / "model.pt")["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model


@pytest.fixture(scope="module")
def randomized_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated world with its truth table removed: a randomized log whose exposures carry the logging
    policy's propensities, as Hillstrom's do, so `eoca run` takes its inverse-propensity branch."""
    ds = simulate(load_simulator_config(None, ["world.n_customers=900", "world.n_funds=3", "seed=5"]))
    log = dataclasses.replace(ds, spec=ds.spec.model_copy(update={"truth": None}), truth=None)
    root = tmp_path_factory.mktemp("log") / "log"
    log.save(root)
    return root


def test_randomized_log_run_estimates_policy_values(randomized_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "ips"
    args = ["run", "--data", str(randomized_log), "--out", str(out)]
    for s in ("models=[esmm]", "train.max_epochs=1", "train.num_threads=1", "ope.n_bootstrap=50", "progress=false"):
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    check_keys(m)
    assert m["online_kind"] == "ips" and "ab_test" not in m
    pols = {r["policy"]: r for r in m["policy_values"]}
    assert "random" in pols and any(p.startswith("best single arm") for p in pols)
    assert {"esmm+manual", "esmm+ha", "esmm+exact"} <= set(pols)
    assert all(r["matched"] >= 0 for r in pols.values())
    # Every customer has one exposure in the last (test) period, so the plan covers all of them.
    assert m["dataset"]["evaluation_customers"] == 900
    assert sum(m["plan"]["demand"].values()) == 900
    assert "oracle+exact" not in {r["framework"] for r in m["allocation"]}
    for name in ("policy_values.csv", "plots/ope_lift.png", "report.html"):
        assert (out / name).exists(), name
    assert "Policy value on the randomized log" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.skipif(not default_hillstrom_path().exists(), reason="Hillstrom data not found beside the checkout")
def test_hillstrom_run_estimates_policy_values(tmp_path: Path) -> None:
    out = tmp_path / "hill"
    args = ["run", "--data", "hillstrom", "--out", str(out)]
    sets = ("train.max_epochs=1", "train.max_train_rows=16384", "ope.n_bootstrap=100", "progress=false")
    sets += ("models=[esmm]",)
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert m["online_kind"] == "ips"
    pols = {r["policy"]: r for r in m["policy_values"]}
    assert "random" in pols and any(p.startswith("best single arm") for p in pols)
    assert {"esmm+manual", "esmm+ha", "esmm+exact"} <= set(pols)
    # The plan covers the held-out 30% of 64,000 customers with shares of about one third per arm.
    assert m["dataset"]["evaluation_customers"] == pytest.approx(19_200, rel=0.02)
    demand = list(m["plan"]["demand"].values())
    assert max(demand) - min(demand) <= 0.05 * sum(demand)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Policy value on the randomized log" in html
