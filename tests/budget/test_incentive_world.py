"""Simulator incentive arms: off by default (worlds unchanged), a consistent truth, and the CLI round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eoca.budget.data import from_world, load_simulated
from eoca.cli import app
from eoca.simulate import SimulatorConfig, config_yaml
from eoca.simulate.incentives import generate_incentives
from eoca.simulate.simulator import generate_world


def _cfg(n: int, incentives: bool, seed: int = 3) -> SimulatorConfig:
    raw: dict[str, object] = {"seed": seed, "world": {"n_customers": n, "n_merchants": 40}}
    if incentives:
        raw["incentives"] = {}
    return SimulatorConfig.model_validate(raw)


def test_off_by_default_and_world_unchanged(tmp_path: Path) -> None:
    assert SimulatorConfig().incentives is None
    assert "incentives" not in config_yaml(SimulatorConfig())
    plain = generate_world(_cfg(1500, False)).dataset
    with_inc = generate_world(_cfg(1500, True)).dataset
    for name, table in plain.tables().items():
        assert table.equals(with_inc.tables()[name]), name
    # the files of a default world are byte-identical to those written before incentives existed: same tables,
    # and the config rendering (stored in dataset.yaml) has no incentives key
    plain.save(tmp_path / "a")
    generate_world(_cfg(1500, False)).dataset.save(tmp_path / "b")
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_campaign_truth_is_consistent_and_heterogeneous() -> None:
    world = generate_world(_cfg(20_000, True))
    cfg = world.config.incentives
    assert cfg is not None
    inc = generate_incentives(world, cfg)
    n, k = inc.p.shape
    assert k == len(cfg.arms) + 1
    np.testing.assert_allclose(inc.value, inc.p * np.expm1(inc.mu + inc.sigma**2 / 2))
    assert (inc.propensity > 0).all() and (inc.propensity <= 1).all()
    assert np.bincount(inc.arm, minlength=k).min() > 0.1 * n
    # lost causes never buy, sleeping dogs lose value under the message, persuadables need the large coupon
    assert (inc.p[inc.segment == 0] == 0).all()
    assert (inc.value[:, 1] < inc.value[:, 0]).mean() > 0.05
    assert (inc.value[:, 3] - inc.value[:, 0] > inc.value[:, 0]).mean() > 0.02
    # fixed cost for the message, p x face value for the coupons
    assert (inc.expected_cost[:, 1] == cfg.arms[0].cost).all()
    np.testing.assert_allclose(inc.expected_cost[:, 3], inc.p[:, 3] * cfg.arms[2].cost)
    again = generate_incentives(generate_world(_cfg(20_000, True)), cfg)
    np.testing.assert_array_equal(again.arm, inc.arm)
    np.testing.assert_array_equal(again.amount, inc.amount)
    # outcomes follow the truth on average
    rows = np.arange(n)
    assert inc.converted.mean() == pytest.approx(inc.p[rows, inc.arm].mean(), abs=0.01)


def test_cli_simulate_and_budget_round_trip(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "world"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(out),
            "--customers",
            "3000",
            "--seed",
            "4",
            "--set",
            "incentives={}",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    loaded = load_simulated(out)
    direct = from_world(
        generate_world(SimulatorConfig.model_validate({"seed": 4, "world": {"n_customers": 3000}, "incentives": {}}))
    )
    np.testing.assert_array_equal(loaded.arm, direct.arm)
    np.testing.assert_allclose(loaded.features, direct.features)
    assert loaded.truth is not None and direct.truth is not None
    np.testing.assert_allclose(loaded.truth.value, direct.truth.value)

    run = tmp_path / "budget"
    res = runner.invoke(
        app,
        [
            "budget",
            "--data",
            str(out),
            "--out",
            str(run),
            "--models",
            "t_learner",
            "--budget",
            "30%",
            "--bootstrap",
            "20",
            "--cap",
            "large_coupon=5",
            "--select",
            "none",
        ],
    )
    assert res.exit_code == 0, res.output
    alloc = pq.read_table(run / "allocation.parquet").column("arm").to_pylist()
    assert alloc.count("large_coupon") <= 5
    cert = json.loads((run / "certificate.json").read_text())
    assert cert["exact_within_one_customer"] is False and cert["gap"] >= 0
    for name in (
        "allocation.parquet",
        "certificate.json",
        "goals.csv",
        "ope.csv",
        "ope_paired.csv",
        "report.md",
        "budget_curves.png",
    ):
        assert (run / name).exists(), name
    report = (run / "report.md").read_text()
    assert "Certificate" in report and "doubly robust" in report
    paired = (run / "ope_paired.csv").read_text()
    assert "snips" in paired and "dr (outcome model: t_learner" in paired


def test_cli_budget_bad_budget_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["budget", "--out", str(tmp_path / "x"), "--customers", "500", "--budget", "-5"])
    assert res.exit_code != 0
    assert "budget" in str(res.exception) or "budget" in res.output


def test_cap_and_design_options_parse_and_name_a_malformed_value() -> None:
    from eoca.cli.budget import _name_values
    from eoca.errors import DataValidationError

    assert _name_values(["coupon=100", "message=5"], int, "--cap", "ARM=COUNT") == {"coupon": 100, "message": 5}
    assert _name_values(["none=0.5"], float, "--design", "ARM=PROBABILITY") == {"none": 0.5}
    with pytest.raises(DataValidationError, match=r"--cap 'coupon=many': expected ARM=COUNT"):
        _name_values(["coupon=many"], int, "--cap", "ARM=COUNT")
