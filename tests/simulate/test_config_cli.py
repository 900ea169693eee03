"""Simulator configuration (YAML, overrides, errors naming the key) and ``eoca simulate`` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.simulate import SimulatorConfig, config_yaml, default_config_path, load_simulator_config


def eoca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from eoca.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_packaged_yaml_is_the_model_defaults() -> None:
    path = default_config_path()
    assert path.read_text(encoding="utf-8") == config_yaml(SimulatorConfig())
    assert load_simulator_config(path) == SimulatorConfig()


def test_yaml_then_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sim.yaml"
    cfg_file.write_text(yaml.safe_dump({"seed": 4, "world": {"n_customers": 700, "n_merchants": 30}}))
    cfg = load_simulator_config(cfg_file, ["world.n_merchants=50", "amount.median_ticket=5000"])
    assert (cfg.seed, cfg.world.n_customers, cfg.world.n_merchants) == (4, 700, 50)
    assert cfg.amount.median_ticket == 5000


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("world.n_merchnts=5", "world.n_merchnts"),
        ("world.n_customers=-3", "world.n_customers"),
        ("policy.epsilon=0", "policy.epsilon"),
        ("amount.sigma_min=3", "amount"),
        ("conversion.target_per_mille=abc", "conversion.target_per_mille"),
    ],
)
def test_config_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_simulator_config(None, [override])
    assert key in str(err.value)


def test_unreachable_conversion_target_is_explained() -> None:
    from eoca.simulate import simulate

    cfg = load_simulator_config(None, ["world.n_customers=200", "conversion.target_per_mille=900"])
    with pytest.raises(ValueError, match=r"conversion\.target_per_mille"):
        simulate(cfg)


def test_fund_type_rules() -> None:
    with pytest.raises(ConfigError, match="funds"):
        load_simulator_config(
            None,
            ["funds.fund_types=[{name: a, risk_level: 2, annual_return: 1, volatility: 1, management_fee: 0}]"],
        )


def test_cli_simulate_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "world"
    r = eoca(
        "simulate",
        "--customers",
        "600",
        "--funds",
        "5",
        "--seed",
        "2",
        "--out",
        str(out),
        "--set",
        "world.n_merchants=40",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert "600 customers" in r.stdout
    ds = Dataset.load(out)
    assert (ds.n_customers, ds.n_funds) == (600, 5)
    assert ds.truth is not None and ds.truth.num_rows == 3000
    assert ds.consumption is not None and max(ds.consumption.column("merchant_id").to_pylist()) < 40
    saved = load_simulator_config(out / "simulator.yaml")
    assert (saved.seed, saved.world.n_customers, saved.world.n_merchants) == (2, 600, 40)
    r = eoca("inspect", str(out))
    assert r.returncode == 0, r.stderr


def test_cli_reports_bad_key(tmp_path: Path) -> None:
    r = eoca("simulate", "--out", str(tmp_path / "x"), "--set", "world.n_merchnts=5")
    assert r.returncode == 2
    assert "world.n_merchnts" in r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_help_explains() -> None:
    r = eoca("simulate", "--help")
    assert r.returncode == 0
    for word in ("--customers", "--funds", "--seed", "--out", "--config", "--set", "truth"):
        assert word in r.stdout


def _dotted_keys(model: BaseModel, prefix: str = "") -> list[str]:
    keys = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            keys += _dotted_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_docs_list_every_config_key() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "simulator.md").read_text(encoding="utf-8")
    keys = _dotted_keys(SimulatorConfig())
    assert len(keys) > 50
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"docs/simulator.md does not document {missing}"
