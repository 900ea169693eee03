"""``eoca run`` with a tamor section, and the opt-in: configs and datasets without it are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from eoca.cli import app
from eoca.errors import ConfigError
from eoca.pipeline import load_run_config
from eoca.simulate import load_simulator_config, simulate
from eoca.tamor.config import load_tamor_config

EXAMPLE = Path(__file__).parents[2] / "src" / "eoca" / "configs" / "tamor.yaml"


def test_run_config_is_unchanged_without_a_tamor_section() -> None:
    assert load_run_config(None).tamor is None
    cfg = load_run_config(EXAMPLE)
    assert cfg.tamor is not None and cfg.tamor == load_tamor_config(None)  # the example shows the defaults


def test_fund_datasets_do_not_gain_tamor_keys(tmp_path: Path) -> None:
    ds = simulate(load_simulator_config(overrides=["world.n_customers=50", "world.n_merchants=5"]))
    ds.save(tmp_path / "d")
    spec = yaml.safe_load((tmp_path / "d" / "dataset.yaml").read_text())
    assert "tier_column" not in spec and "scenario_column" not in spec
    assert all("scenarios" not in f for f in spec["funds"]["features"])


def test_bad_framework_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown framework"):
        load_tamor_config(None, ["frameworks=[tamor,nope]"])
    with pytest.raises(ConfigError, match="control"):
        load_tamor_config(None, ["frameworks=[tamor]", "control=pooled"])


def test_eoca_run_with_a_multi_scenario_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = ["tamor.world.n_customers=400", "tamor.train.epochs=1", "tamor.evaluation.n_bootstrap=50", "progress=false"]
    args = ["run", "--config", str(EXAMPLE), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "config.yaml",
        "metrics.json",
        "report.html",
        "tamor_offline.csv",
        "tamor_period.csv",
    }
    html = (out / "report.html").read_text()
    assert "Offline metrics per tier and per scenario" in html and "new high-holding" in html
    # one world and one training per framework: the report must say its intervals omit the training variance
    assert "do not hold the variance between trainings" in html
    period = (out / "tamor_period.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in period[1:]] == ["tamor", "pooled", "per_tier", "star", "oracle"]
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, ConfigError) and "not empty" in str(again.exception)
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
