"""Feasibility diagnosis (each failure names what fails, with numbers) and the delivery plan's rounding rule."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, vstack

from eoca.allocation import (
    AllocationProblem,
    allocate,
    check_feasibility,
    feasibility_issues,
    load_plan,
    shares_to_counts,
)
from eoca.errors import ConfigError, InfeasiblePlanError


def _problem(tol: list[int], risk: list[int], demand: list[int], K: int = 1) -> AllocationProblem:
    N, k = len(tol), len(risk)
    scores = np.arange(N * k, dtype=np.float32).reshape(N, k)
    return AllocationProblem(
        scores, np.array(tol), np.array(risk), np.array(demand), K, fund_ids=np.array([f"F{j}" for j in range(k)])
    )


def _only_issue(p: AllocationProblem) -> str:
    issues = feasibility_issues(p)
    assert len(issues) == 1, issues
    with pytest.raises(InfeasiblePlanError, match=re.escape(issues[0])):
        check_feasibility(p)
    return issues[0]


def test_demands_must_sum_to_n_times_k() -> None:
    p = _problem([1, 1, 1, 1, 1], [1, 1], [4, 5], K=2)
    assert _only_issue(p) == "demands sum to 9 but 5 customers x K=2 need exactly 10 fund slots (too few by 1)"
    p = _problem([1, 1, 1], [1, 1], [3, 1])
    issues = feasibility_issues(p)
    # too many slots also overfills the risk-1 threshold; both are reported, the sum first
    assert issues[0] == "demands sum to 4 but 3 customers x K=1 need exactly 3 fund slots (too many by 1)"


def test_single_fund_with_too_few_eligible_customers() -> None:
    # F1 (risk 4) wants 3 customers, only customers 3 and 4 tolerate risk 4
    p = _problem([1, 2, 3, 4, 5], [1, 4], [2, 3])
    assert _only_issue(p) == "fund F1 (risk level 4) needs 3 customers; only 2 have risk tolerance >= 4"


def test_risk_threshold_hall_shortfall_k1() -> None:
    # each of F1, F2 alone is fillable (2 <= 3 eligible), together they need 4 of the 3 customers with t >= 3
    p = _problem([1, 1, 3, 4, 5], [1, 3, 3], [1, 2, 2])
    assert _only_issue(p) == "funds with risk level >= 3 need 4 customers; only 3 have risk tolerance >= 3"


def test_risk_threshold_hall_shortfall_k2() -> None:
    # funds at risk >= 3 (F2, F3, F4) need 3 + 2 + 1 = 6 slots. Of the customers tolerating 3: customer 1 (t=3)
    # may hold only F2 of them, customers 2 and 3 (t=4, 5) at most K=2 each: 1 + 2 + 2 = 5 < 6. Every fund alone
    # is fillable and the risk->=4 threshold is fine (3 slots, 2 customers x 2).
    p = _problem([1, 3, 4, 5, 1, 1], [1, 1, 3, 4, 4], [5, 1, 3, 2, 1], K=2)
    assert _only_issue(p) == (
        "funds with risk level >= 3 need 6 fund slots; the 3 customers with risk tolerance >= 3 can fill at "
        "most 5 of them (K=2, one slot per fund)"
    )


def test_customers_with_fewer_than_k_eligible_funds() -> None:
    p = _problem([1, 1, 3], [1, 3, 3], [1, 2, 3], K=2)
    issues = feasibility_issues(p)
    assert (
        "2 customer(s) with risk tolerance 1 are eligible for only 1 fund(s) (risk level <= 1) but must each get K=2"
        in issues
    )


def test_max_flow_catches_what_the_counting_checks_miss() -> None:
    # K=2: customer 0 (t=1) can only hold F1 and F2, so F1 needs it although F1's demand is 0; the counting
    # checks all pass, only the flow sees that at most 3 of the 4 slots can be filled.
    p = _problem([1, 3], [2, 1, 1, 2], [1, 0, 2, 1], K=2)
    msg = _only_issue(p)
    assert msg.startswith("no allocation meets the plan: at most 3 of the 4 fund slots can be filled")
    assert "short by 1" in msg


@pytest.mark.parametrize("method", ["exact", "ha_ptofa", "manual", "ip", "mcf"])
def test_every_method_refuses_an_infeasible_plan(method: str) -> None:
    p = _problem([1, 2, 3, 4, 5], [1, 4], [2, 3])
    with pytest.raises(InfeasiblePlanError, match="only 2 have risk tolerance >= 4"):
        allocate(p, method)


def _lp_feasible(p: AllocationProblem) -> bool:
    N, k = p.scores.shape
    ii, jj = np.nonzero(p.eligible())
    nv = ii.size
    if nv == 0:
        return N * p.K == 0 and not p.demand.any()
    a1 = coo_matrix((np.ones(nv), (ii, np.arange(nv))), shape=(N, nv))
    a2 = coo_matrix((np.ones(nv), (jj, np.arange(nv))), shape=(k, nv))
    b = np.r_[np.full(N, p.K), p.demand].astype(float)
    res = linprog(np.zeros(nv), A_eq=vstack([a1, a2]), b_eq=b, bounds=(0, 1), method="highs")
    return bool(res.status == 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(1, 8), k=st.integers(1, 5), K=st.integers(1, 3))
def test_diagnosis_agrees_with_lp_feasibility(seed: int, N: int, k: int, K: int) -> None:
    # random plans summing to N*K, feasible or not: no issue exactly when an allocation exists
    K = min(K, k)
    rng = np.random.default_rng(seed)
    demand = rng.multinomial(N * K, np.ones(k) / k)
    p = _problem(rng.integers(1, 4, size=N).tolist(), rng.integers(1, 4, size=k).tolist(), demand.tolist(), K)
    issues = feasibility_issues(p)
    assert (not issues) == _lp_feasible(p), issues
    for msg in issues:
        assert re.search(r"\d", msg), msg  # every message carries its numbers


# --- delivery plan: counts, shares and the rounding rule -----------------------------------------------------


def test_shares_rounding_is_largest_remainder() -> None:
    # quotas 3.85, 1.75, 1.4 of 7 slots: floors 3, 1, 1; the 2 missing slots go to the largest fractions
    assert shares_to_counts(np.array([0.55, 0.25, 0.2]), 7).tolist() == [4, 2, 1]
    # equal fractions: the larger share wins (0.5 -> 2.5 vs 0.25 -> 1.25, 1.25: fractions .5, .25, .25)
    assert shares_to_counts(np.array([0.5, 0.25, 0.25]), 5).tolist() == [3, 1, 1]
    # all equal: lower position first
    assert shares_to_counts(np.array([1, 1, 1]) / 3, 10).tolist() == [4, 3, 3]
    # fractions tie between the second and third fund; the larger share (third) takes the slot
    assert shares_to_counts(np.array([0.2, 0.3, 0.5]), 2).tolist() == [0, 1, 1]


@settings(max_examples=200, deadline=None)
@given(
    w=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12).filter(lambda v: sum(v) > 1e-3),
    total=st.integers(0, 10**7),
)
def test_shares_rounding_sums_exactly_and_stays_within_one(w: list[float], total: int) -> None:
    shares = np.array(w) / sum(w)
    counts = shares_to_counts(shares, total)
    assert counts.sum() == total
    assert (np.abs(counts - shares * total) < 1.0 + 1e-6).all()


def _plan(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "plan.yaml"
    f.write_text(text)
    return f


def test_plan_counts_and_shares(tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path, "K: 2\ndemands:\n  A: 3\n  B: 1\n"))
    assert plan.K == 2 and plan.demand_vector(np.array(["A", "B"]), 2, 2).tolist() == [3, 1]
    plan = load_plan(_plan(tmp_path, "shares:\n  A: 0.55\n  B: 0.25\n  C: 0.2\n"))
    assert plan.demand_vector(np.array(["A", "B", "C"]), 7, 1).tolist() == [4, 2, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shares:\n  A: 0.5\n  B: 0.4\n", "shares sum to 0.9; they must sum to 1"),
        ("demands:\n  A: 1\nshares:\n  A: 1\n", "give exactly one of 'demands' (counts) or 'shares'"),
        ("demands:\n  A: -1\n  B: 1\n", "demands.A must be a whole number >= 0, got -1"),
        ("demands:\n  A: 1.5\n  B: 1\n", "demands.A must be a whole number >= 0, got 1.5"),
        ("demands:\n  A: x\n", "demands.A must be a number, got 'x'"),
        ("K: 0\ndemands:\n  A: 1\n", "K must be an integer >= 1, got 0"),
        ("fund: 1\n", "unknown key(s) ['fund']"),
    ],
)
def test_plan_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = _plan(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_plan(f)
    assert str(f) in str(exc.value)


def test_plan_fund_mismatch_names_the_funds(tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path, "demands:\n  A: 1\n  Z: 1\n"))
    with pytest.raises(ConfigError, match=re.escape("fund(s) ['Z'] are not in the funds table")):
        plan.demand_vector(np.array(["A", "B"]), 2, 1)
    plan = load_plan(_plan(tmp_path, "demands:\n  A: 2\n"))
    with pytest.raises(ConfigError, match=re.escape("no demand for fund(s) ['B']")):
        plan.demand_vector(np.array(["A", "B"]), 2, 1)
