"""The budget solver against an exact integer program (HiGHS through scipy.optimize.milp)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix, vstack

from eoca.budget import dual_bound, solve_budget
from eoca.errors import DataValidationError, InfeasiblePlanError


def exact_ip(value: np.ndarray, cost: np.ndarray, budget: float, caps: dict[int, int] | None = None) -> float:
    """Optimal value of the multiple-choice knapsack by HiGHS branch and bound (-inf if infeasible)."""
    n, k = value.shape
    nv = n * k
    ii = np.repeat(np.arange(n), k)
    choose = csr_matrix((np.ones(nv), (ii, np.arange(nv))), shape=(n, nv))
    rows = [choose, csr_matrix(cost.reshape(1, -1))]
    lo = [np.ones(n), np.array([-np.inf])]
    hi = [np.ones(n), np.array([budget])]
    for t, m in (caps or {}).items():
        sel = np.zeros(nv)
        sel[t::k] = 1.0
        rows.append(csr_matrix(sel.reshape(1, -1)))
        lo.append(np.array([-np.inf]))
        hi.append(np.array([float(m)]))
    res = milp(
        -value.ravel(),
        constraints=LinearConstraint(vstack(rows).tocsr(), np.concatenate(lo), np.concatenate(hi)),
        integrality=np.ones(nv),
        bounds=Bounds(0.0, 1.0),
        options={"disp": False, "mip_rel_gap": 0.0},
    )
    return -math.inf if res.x is None else -float(res.fun)


def _instance(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray, float]:
    n = int(rng.integers(1, 9))
    k = int(rng.integers(1, 5))
    if kind % 3 == 0:  # integers: many ties in value, cost and slope
        value = rng.integers(-2, 5, size=(n, k)).astype(float)
        cost = rng.integers(0, 4, size=(n, k)).astype(float)
    else:
        value = np.round(rng.normal(1.0, 2.0, size=(n, k)), 2)
        cost = np.round(rng.exponential(1.0, size=(n, k)), 2)
        cost[rng.random((n, k)) < 0.2] = 0.0  # zero-cost arms
    if kind % 5 == 0:
        cost[:, 0] = 0.0  # a free "no treatment" arm
    if kind % 7 == 0:
        value[:] = value[0]  # identical customers: ties across customers
        cost[:] = cost[0]
    lo = float(cost.min(axis=1).sum())
    hi = float(cost.max(axis=1).sum())
    choice = kind % 4
    budget = {0: lo, 1: hi + 1.0, 2: lo + rng.random() * (hi - lo), 3: float(rng.integers(0, 6))}[choice]
    return value, cost, budget


def test_matches_exact_ip_on_small_random_instances() -> None:
    rng = np.random.default_rng(12)
    checked = optimal = 0
    for kind in range(600):
        value, cost, budget = _instance(rng, kind)
        best = exact_ip(value, cost, budget)
        if best == -math.inf:
            with pytest.raises(InfeasiblePlanError):
                solve_budget(value, cost, budget)
            continue
        sol = solve_budget(value, cost, budget)
        cert = sol.certificate
        tol = 1e-7 * max(1.0, abs(best))
        assert sol.cost <= budget + 1e-9
        assert sol.arm.shape == (value.shape[0],)
        assert sol.value == pytest.approx(value[np.arange(value.shape[0]), sol.arm].sum())
        assert cert.gap >= 0.0
        # weak duality around the exact optimum, and the one-customer guarantee of the LP rounding
        assert sol.value <= best + tol
        assert cert.dual_bound >= best - tol
        assert cert.lp_value == pytest.approx(cert.dual_bound, rel=1e-9, abs=1e-9)
        assert cert.dual_bound - sol.value <= cert.gap_bound + tol
        assert cert.gap_bound <= np.ptp(value, axis=1).max(initial=0.0) + tol
        if cert.optimal:
            assert sol.value == pytest.approx(best, abs=tol)
        optimal += sol.value >= best - tol
        checked += 1
    assert checked >= 500
    # most small instances are solved to optimality by the rounding plus the greedy fill
    assert optimal >= 0.8 * checked


def test_budget_zero_free_arm_and_budget_above_total() -> None:
    value = np.array([[0.0, 3.0, 5.0], [1.0, 2.0, 2.5]])
    cost = np.array([[0.0, 1.0, 3.0], [0.0, 1.0, 2.0]])
    sol = solve_budget(value, cost, 0.0)
    assert sol.arm.tolist() == [0, 0] and sol.certificate.optimal
    sol = solve_budget(value, cost, 100.0)
    assert sol.arm.tolist() == [2, 2] and sol.certificate.optimal and sol.certificate.price == 0.0


def test_exact_on_ties() -> None:
    # 10 identical customers, budget for exactly 4 treatments: every tie-break gives the same optimum
    value = np.tile([0.0, 2.0], (10, 1))
    cost = np.tile([0.0, 1.0], (10, 1))
    sol = solve_budget(value, cost, 4.0)
    assert sol.value == 8.0 and sol.cost == 4.0 and sol.certificate.optimal


def test_caps_respected_and_bound_holds() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        n, k = 7, 3
        value = np.round(rng.normal(1, 2, size=(n, k)), 2)
        cost = np.round(rng.exponential(1, size=(n, k)), 2)
        cost[:, 0] = 0.0
        caps = {1: int(rng.integers(0, 4))}
        budget = float(cost.max(axis=1).sum() * rng.random())
        best = exact_ip(value, cost, budget, caps)
        sol = solve_budget(value, cost, budget, caps=caps)
        assert sol.arm_counts[1] <= caps[1]
        assert sol.cost <= budget + 1e-9
        assert not sol.certificate.exact_within_one_customer
        assert sol.value <= best + 1e-7
        assert sol.certificate.dual_bound >= best - 1e-7
        assert sol.certificate.gap >= 0.0


@pytest.mark.parametrize("budget", [-1.0, float("nan")])
def test_bad_budget_is_a_clear_error(budget: float) -> None:
    with pytest.raises(DataValidationError, match="budget"):
        solve_budget(np.ones((2, 2)), np.ones((2, 2)), budget)


def test_arm_without_cost_is_a_clear_error() -> None:
    cost = np.array([[0.0, np.nan], [0.0, np.nan]])
    with pytest.raises(DataValidationError, match="arm 1"):
        solve_budget(np.ones((2, 2)), cost, 1.0)
    with pytest.raises(DataValidationError, match="every arm needs a cost"):
        solve_budget(np.ones((2, 3)), np.ones((2, 2)), 1.0)
    with pytest.raises(DataValidationError, match="negative"):
        solve_budget(np.ones((2, 2)), -np.ones((2, 2)), 1.0)


def test_infeasible_budget() -> None:
    with pytest.raises(InfeasiblePlanError, match="cheapest arm"):
        solve_budget(np.ones((3, 2)), np.ones((3, 2)), 2.0)


def test_dual_bound_is_an_upper_bound_at_any_price() -> None:
    rng = np.random.default_rng(5)
    value = rng.normal(size=(6, 3))
    cost = rng.exponential(size=(6, 3))
    best = exact_ip(value, cost, 3.0)
    for price in (0.0, 0.3, 1.0, 10.0):
        assert dual_bound(value, cost, 3.0, price) >= best - 1e-9


def test_large_instance_uses_band_selection() -> None:
    # more segments than the band threshold, so the pivot narrowing runs; checked against the LP optimum
    rng = np.random.default_rng(0)
    n = 150_000
    value = np.concatenate([np.zeros((n, 1)), rng.exponential(1.0, size=(n, 3))], axis=1)
    cost = np.concatenate([np.zeros((n, 1)), rng.exponential(1.0, size=(n, 3))], axis=1)
    budget = 0.3 * float(cost.max(axis=1).sum())
    sol = solve_budget(value, cost, budget)
    cert = sol.certificate
    assert sol.cost <= budget
    assert cert.lp_value == pytest.approx(cert.dual_bound, rel=1e-9)
    assert 0.0 <= cert.gap <= cert.gap_bound + 1e-6


@pytest.mark.parametrize("integer", [False, True])
def test_bracketed_path_equals_direct(monkeypatch: pytest.MonkeyPatch, integer: bool) -> None:
    from eoca.budget import solver

    rng = np.random.default_rng(1)
    n = 20_000
    if integer:  # many exact ties at the price
        value = rng.integers(0, 4, size=(n, 4)).astype(float)
        cost = rng.integers(0, 3, size=(n, 4)).astype(float)
    else:
        value = rng.exponential(1.0, size=(n, 4))
        cost = rng.exponential(1.0, size=(n, 4))
    value[:, 0] = 0.0
    cost[:, 0] = 0.0
    for frac in (0.05, 0.3, 0.8, 1.2):
        budget = frac * float(cost.max(axis=1).sum())
        direct = solve_budget(value, cost, budget)
        monkeypatch.setattr(solver, "_DIRECT", 1_000)
        monkeypatch.setattr(solver, "_SAMPLE", 2_000)
        fast = solve_budget(value, cost, budget)
        monkeypatch.undo()
        assert fast.certificate.dual_bound == pytest.approx(direct.certificate.dual_bound, rel=1e-12)
        assert fast.certificate.lp_value == pytest.approx(direct.certificate.lp_value, rel=1e-9)
        assert fast.cost <= budget
        assert fast.certificate.gap <= fast.certificate.gap_bound + 1e-9
