"""Incentive data loaders: a user's table with a declared design, errors that name the problem, Hillstrom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from eoca.budget.data import ArmSpec, load_hillstrom_incentives, load_table
from eoca.data.hillstrom import default_hillstrom_path
from eoca.errors import DataValidationError

ARMS = [ArmSpec("none", "fixed", 0.0), ArmSpec("sms", "fixed", 0.1), ArmSpec("coupon", "on_conversion", 5.0)]


def _csv(tmp_path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    arm = rng.choice(["none", "sms", "coupon"], size=n)
    spend = np.where(rng.random(n) < 0.2, rng.exponential(50.0, n), 0.0)
    table = pa.table({"group": arm, "spend": spend, "age": rng.integers(18, 80, n), "city": rng.choice(["a", "b"], n)})
    path = tmp_path / "log.csv"
    pacsv.write_csv(table, path)
    return path


def test_table_with_declared_design(tmp_path: Path) -> None:
    data = load_table(
        _csv(tmp_path),
        treatment="group",
        arms=ARMS,
        value="spend",
        design={"none": 1 / 3, "sms": 1 / 3, "coupon": 1 / 3},
        numeric=["age"],
        categorical=["city"],
    )
    assert data.n == 300 and data.n_arms == 3
    assert data.feature_names == ("age", "city=a", "city=b")
    np.testing.assert_allclose(data.propensity, 1 / 3)
    # realised cost: fixed for sms, face value on conversion for the coupon
    sms = data.arm == 1
    np.testing.assert_allclose(data.cost[sms], 0.1)
    coupon = data.arm == 2
    np.testing.assert_allclose(data.cost[coupon], 5.0 * (data.value[coupon] > 0))
    p = np.full((data.n, 3), 0.2)
    np.testing.assert_allclose(data.cost_matrix(p)[0], [0.0, 0.1, 1.0])


def test_table_errors_name_the_problem(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    with pytest.raises(DataValidationError, match="propensity column or a declared randomized design"):
        load_table(path, treatment="group", arms=ARMS, value="spend", numeric=["age"])
    with pytest.raises(DataValidationError, match="name no declared arm"):
        load_table(path, treatment="group", arms=ARMS[:2], value="spend", design={"none": 0.5, "sms": 0.5})
    with pytest.raises(DataValidationError, match="column 'nope' not found"):
        load_table(path, treatment="nope", arms=ARMS, value="spend", design={"none": 1.0})
    bad = [ArmSpec("none", "fixed", 0.0), ArmSpec("sms", "per_click", 0.1), ArmSpec("coupon", "fixed", 1.0)]
    with pytest.raises(DataValidationError, match="cost rule"):
        load_table(path, treatment="group", arms=bad, value="spend", design={"none": 1.0})
    nocost = [ArmSpec("none", "fixed", 0.0), ArmSpec("sms", "fixed", float("nan")), ArmSpec("coupon", "fixed", 1.0)]
    with pytest.raises(DataValidationError, match="needs a cost"):
        load_table(path, treatment="group", arms=nocost, value="spend", design={"none": 1.0})


def test_hillstrom_as_incentive_data() -> None:
    path = default_hillstrom_path()
    if not path.exists():
        pytest.skip(f"Hillstrom data not found at {path}")
    data = load_hillstrom_incentives(email_cost=0.25)
    assert data.n == 64_000 and data.n_arms == 3
    assert np.bincount(data.arm).min() > 21_000
    np.testing.assert_allclose(data.propensity, 1 / 3)
    assert set(np.unique(data.cost)) == {0.0, 0.25}
    assert data.treat_all_cost() == pytest.approx(64_000 * 0.25)
