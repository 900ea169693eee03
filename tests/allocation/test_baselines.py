"""Manual priority, the IP and min-cost-flow baselines, the verification function and the result's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from eoca.allocation import AllocationProblem, allocate, solve_exact, verify_allocation
from eoca.allocation.generate import synthetic_instance
from eoca.errors import ConfigError, DataValidationError
from tests.allocation.helpers import lp_optimum, random_feasible


def _manual_problem() -> AllocationProblem:
    E = np.array([[5, 4], [4, 1.5], [2, 6]], dtype=np.float32)
    return AllocationProblem(E, np.ones(3, int), np.ones(2, int), np.array([1, 2]), 1, fund_ids=np.array(["A", "B"]))


def test_manual_priority_given_and_by_mean() -> None:
    p = _manual_problem()
    # order A, B: A takes its best customer u0 (5); B gets the two left, u1 (1.5) and u2 (6): 12.5
    res = allocate(p, "manual", priority=["A", "B"])
    assert res.assign.ravel().tolist() == [0, 1, 1] and res.objective == 12.5
    assert res.info["priority"] == ["A", "B"]
    # by mean score B (11.5/3) comes before A (11/3): B takes u2 (6) and u0 (4); A gets u1 (4): 14
    res = allocate(p, "manual")
    assert res.info["priority"] == ["B", "A"]
    assert res.assign.ravel().tolist() == [1, 0, 1] and res.objective == 14.0 and res.feasible


def test_manual_priority_must_list_every_fund() -> None:
    with pytest.raises(ConfigError, match=r"missing \['B'\]"):
        allocate(_manual_problem(), "manual", priority=["A"])


def test_ip_reports_proved_optimality() -> None:
    p = random_feasible(np.random.default_rng(3), 60, 4, 2, "float")
    res = allocate(p, "ip", time_limit=60)
    assert res.optimal is True and res.info["optimal"] and res.feasible
    assert res.objective == pytest.approx(lp_optimum(p), rel=1e-9)
    assert res.dual_bound == pytest.approx(res.objective, rel=1e-9)


def test_ip_out_of_time_says_so() -> None:
    p = synthetic_instance(3000, 8, 1, seed=0)
    res = allocate(p, "ip", time_limit=0.01)
    assert res.optimal is False and not res.info["optimal"]
    assert res.info["time_limit_s"] == 0.01
    # whatever it returned is checked like any other allocation
    assert res.verification.risk_breaches == 0


def test_mcf_reference_matches_exact() -> None:
    p = random_feasible(np.random.default_rng(5), 500, 6, 2, "float")
    ref, ex = allocate(p, "mcf"), allocate(p, "exact")
    assert ref.feasible and ex.optimal
    assert abs(ref.objective - ex.objective) <= ref.info["max_rounding_loss"] + 1e-9 * ex.objective


def test_unknown_method() -> None:
    with pytest.raises(ConfigError, match="unknown allocation method 'greedy'"):
        allocate(_manual_problem(), "greedy")


# --- verify_allocation: one case per violation kind ------------------------------------------------------------


@pytest.fixture
def solved() -> tuple[AllocationProblem, np.ndarray]:
    rng = np.random.default_rng(11)
    p = random_feasible(rng, 30, 4, 2, "float")
    p.tolerance[0] = 1  # customer 0 may hold only risk-1 funds
    p.risk[:] = [1, 1, 5, 1]
    p.tolerance[1:] = 5
    out = solve_exact(p.scores, p.tolerance, p.risk, p.demand, p.K)
    assert verify_allocation(p, out.assign).ok
    return p, out.assign.copy()


def test_verify_accepts_the_optimum(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    ver = verify_allocation(p, a)
    assert ver.ok and ver.describe() == "allocation verified: every constraint holds"
    assert ver.violations()["funds_off_demand"] == []


def test_verify_empty_slot(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    a[3, 1] = -1
    ver = verify_allocation(p, a)
    assert not ver.ok and ver.short_customers == 1 and ver.examples["customers_without_all_funds"] == [3]
    assert "1 customers lack funds" in ver.describe() and "1 funds off their demand" in ver.describe()


def test_verify_repeated_fund(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    a[4, 1] = a[4, 0]
    ver = verify_allocation(p, a)
    assert ver.repeated == 1 and "hold a fund twice" in ver.describe()


def test_verify_risk_breach(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    a[0, 0] = 2 if a[0, 1] != 2 else 0  # customer 0 tolerates 1, fund 2 has risk 5
    a[0, 1] = 2 if a[0, 0] != 2 else a[0, 1]
    ver = verify_allocation(p, a)
    assert ver.risk_breaches >= 1 and ver.examples["risk_rule_breaches"] == [0]


def test_verify_invalid_index(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    a[5, 0] = 4
    a[6, 1] = -7
    ver = verify_allocation(p, a)
    assert ver.bad_index == 2 and ver.violations()["invalid_fund_index"] == 2


def test_verify_fund_counts(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    # move one customer from one risk-1 fund to another it does not hold yet
    i = next(i for i in range(1, p.n_customers) if 3 not in a[i] and a[i, 0] in (0, 1))
    old = int(a[i, 0])
    a[i, 0] = 3
    ver = verify_allocation(p, a)
    off = {d["fund_id"]: (d["delivered"], d["demanded"]) for d in ver.violations()["funds_off_demand"]}
    assert off == {old: (p.demand[old] - 1, p.demand[old]), 3: (p.demand[3] + 1, p.demand[3])}


def test_verify_shape(solved: tuple[AllocationProblem, np.ndarray]) -> None:
    p, a = solved
    with pytest.raises(ValueError, match=r"expected \(30, 2\)"):
        verify_allocation(p, a[:, :1])


# --- the Python API used by the pipeline ----------------------------------------------------------------------


def test_problem_from_arrays_and_result_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = rng.gamma(1.0, 5.0, size=(12, 3)).astype(np.float32)
    p = AllocationProblem(
        scores=scores,
        tolerance=np.array([1, 2, 3] * 4),
        risk=np.array([1, 1, 3]),
        demand=np.array([8, 12, 4]),
        K=2,
        customer_ids=np.array([f"u{i}" for i in range(12)], dtype=object),
        fund_ids=np.array(["low", "mid", "high"], dtype=object),
    )
    res = allocate(p, "exact")
    assert res.assign.shape == (12, 2) and res.optimal
    assert res.delivered.tolist() == [8, 12, 4]
    alloc, summary = res.write(tmp_path / "out")
    table = pq.read_table(alloc)
    assert table.column_names == ["customer_id", "fund_id"] and table.num_rows == 24
    rows = table.to_pylist()
    assert rows[0]["customer_id"] == "u0" and rows[1]["customer_id"] == "u0"
    got = sum(float(scores[int(r["customer_id"][1:]), ["low", "mid", "high"].index(r["fund_id"])]) for r in rows)
    assert got == pytest.approx(res.objective, rel=1e-6)
    s = json.loads(summary.read_text())
    assert s["method"] == "exact" and s["optimal"] is True and s["violations"]["funds_off_demand"] == []
    assert abs(s["certificate_gap"]) <= 1e-9 * s["objective"]
    assert [f["delivered"] for f in s["per_fund"]] == [8, 12, 4]
    assert s["wall_time_s"] > 0 and s["peak_memory_mb"] > 0
    assert not list((tmp_path / "out").glob("*.tmp"))  # written under a temporary name, then renamed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": np.array([[1.0, np.nan]])}, "scores must be finite numbers; first bad entries at customer 0"),
        ({"tolerance": np.array([1.5])}, "tolerance (customers.risk_tolerance): non-integer values at rows 0"),
        ({"demand": np.array([2, -1])}, "negative demand for fund(s) 1"),
        ({"K": 3}, "K=3 funds per customer but only 2 funds exist"),
        ({"risk": np.array([1])}, "risk (funds.risk_level): expected 2 values"),
    ],
)
def test_problem_validation_names_the_array(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "scores": np.array([[1.0, 2.0]], dtype=np.float32),
        "tolerance": np.array([1]),
        "risk": np.array([1, 1]),
        "demand": np.array([1, 0]),
        "K": 1,
    }
    base.update(kwargs)
    with pytest.raises((DataValidationError, ConfigError)) as exc:
        AllocationProblem(**base)  # type: ignore[arg-type]
    assert message in str(exc.value)
