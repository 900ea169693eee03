"""The papers' HA (EOCA Algorithm 1, PTOFA Eq. 7) on hand-computed examples, stranding, and the exact repair."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoca.allocation import AllocationProblem, allocate
from eoca.allocation.heuristic import ha_eoca, ha_ptofa
from eoca.errors import ConfigError
from tests.allocation.helpers import lp_optimum, random_feasible


def _p(E: list[list[float]], tol: list[int], risk: list[int], demand: list[int], K: int = 1) -> AllocationProblem:
    return AllocationProblem(np.array(E, dtype=np.float32), np.array(tol), np.array(risk), np.array(demand), K)


def test_eoca_algorithm1_worked_example() -> None:
    # Customers u0..u3, funds f0, f1 (risk 1) and f2 (risk 2); u0 and u3 tolerate risk 1 only. d = (2, 1, 1).
    p = _p([[5, 1, 0], [4, 3, 1], [2, 2, 6], [3, 0, 1]], tol=[1, 2, 2, 1], risk=[1, 1, 2], demand=[2, 1, 1])
    # Line 1: E[u3, f2] = 1 -> 0 (u3 may not hold f2); E[u0, f2] is already 0.
    #   E = [[5,1,0], [4,3,1], [2,2,6], [3,0,0]]
    # Lines 2-4: alpha_j = sum_i E[i,j] / d_j = (14/2, 6/1, 7/1) = (7, 6, 7).
    # Lines 5-9: h_i = (alpha_a + alpha_b)/2 * (2 E_a - E_b - E_c) over each row's top three a, b, c:
    #   u0: a=f0, b=f1, c=f2: (7+6)/2 * (10-1-0) = 58.5
    #   u1: a=f0, b=f1, c=f2: (7+6)/2 * (8-3-1)  = 26
    #   u2: a=f2, b=f0, c=f1 (f0/f1 tie -> lower index first): (7+7)/2 * (12-2-2) = 56
    #   u3: a=f0, b=f1, c=f2 (tie at 0): (7+6)/2 * (6-0-0) = 39
    # Line 10: order u0, u2, u3, u1.
    # u0 -> f0 (d0 = 1); u2 -> f2 (d2 = 0: f2 fills, its column is zeroed, alpha and h recomputed over the
    # customers still waiting, u1 and u3, with the open demand d = (1, 1, 0)):
    #   alpha = ((4+3)/1, (3+0)/1, 0) = (7, 3, 0)
    #   u1: E = (4, 3, 0): (7+3)/2 * (8-3-0) = 25;   u3: E = (3, 0, 0): (7+3)/2 * (6-0-0) = 30
    # u3 -> f0 (d0 = 0: f0 fills; recompute); u1 is left with f1 only: u1 -> f1.
    # Result: u0 f0, u1 f1, u2 f2, u3 f0; objective 5 + 3 + 6 + 3 = 17.
    assign, info = ha_eoca(p)
    assert assign.ravel().tolist() == [0, 1, 2, 0]
    assert info["recomputations"] == 3 and info["stranded_customers"] == 0
    res = allocate(p, "ha")
    assert res.objective == 17.0 and res.feasible and res.optimal is None


def test_eoca_algorithm1_is_suboptimal_where_the_paper_says_it_can_be() -> None:
    # Two funds, d = (1, 1). alpha = (7.5/1, 2/1); both customers have a=f0, b=f1 and no c (counts as 0):
    #   u0 (3, 0):   h = (7.5+2)/2 * (6 - 0 - 0) = 28.5
    #   u1 (4.5, 2): h = (7.5+2)/2 * (9 - 2 - 0) = 33.25
    # u1 goes first and takes f0; u0 is left with f1: 4.5 + 0 = 4.5, while u0 f0 + u1 f1 = 5 is optimal.
    p = _p([[3, 0], [4.5, 2]], tol=[1, 1], risk=[1, 1], demand=[1, 1])
    res = allocate(p, "ha")
    assert res.assign.ravel().tolist() == [1, 0] and res.objective == 4.5
    assert allocate(p, "exact").objective == 5.0


def test_ptofa_eq7_worked_example_top2() -> None:
    # K = 2, three funds of demand 2, everyone may hold everything.
    p = _p([[4, 2, 1], [3, 3, 0], [1, 5, 2]], tol=[1, 1, 1], risk=[1, 1, 1], demand=[2, 2, 2], K=2)
    # alpha = (8/2, 10/2, 3/2) = (4, 5, 1.5). Eq. 7 over each row sorted by E:
    #   u0: f0 4, f1 2, f2 1: 4*(4-2) + 5*(2-1) = 13
    #   u1: f0 3, f1 3 (tie -> lower index first), f2 0: 4*(3-3) + 5*(3-0) = 15
    #   u2: f1 5, f2 2, f0 1: 5*(5-2) + 1.5*(2-1) = 16.5
    # Order u2, u1, u0. u2 takes its top two f1, f2 (d = 2, 1, 1); u1 takes f0, f1 (d = 1, 0, 1): f1 fills and
    # is removed; u0 takes its two best open funds f0, f2 (d = 0, 0, 0).
    assign, info = ha_ptofa(p)
    assert [sorted(r) for r in assign.tolist()] == [[0, 2], [0, 1], [1, 2]]
    assert info["stranded_customers"] == 0
    assert allocate(p, "ha_ptofa").objective == 18.0


def test_eoca_ha_refuses_k_above_one() -> None:
    p = _p([[4, 2, 1], [3, 3, 0], [1, 5, 2]], tol=[1, 1, 1], risk=[1, 1, 1], demand=[2, 2, 2], K=2)
    with pytest.raises(ConfigError, match="use 'ha_ptofa' for K > 1"):
        allocate(p, "ha")


def test_ha_strands_under_binding_risk_rules_and_repair_fixes_it() -> None:
    # u1 (t=2) has the larger h and takes f0, which fills; u0 (t=1) may not hold f1: stranded, f1 short by one.
    p = _p([[1, 0], [9, 2]], tol=[1, 2], risk=[1, 2], demand=[1, 1])
    res = allocate(p, "ha")
    assert res.info["stranded_customers"] == 1 and res.info["funds_short"] == {"1": 1}
    assert not res.feasible
    v = res.summary()["violations"]
    assert v["customers_without_all_funds"] == 1
    assert v["funds_off_demand"] == [{"fund_id": 1, "delivered": 0, "demanded": 1}]
    assert res.unassigned_customers().tolist() == [0]
    fixed = allocate(p, "ha", repair=True)
    assert fixed.feasible and fixed.assign.ravel().tolist() == [0, 1] and fixed.objective == 3.0
    assert fixed.info["repair"]["released"] == 2


@pytest.mark.parametrize("method", ["ha", "ha_ptofa", "manual"])
def test_repair_is_exact_on_the_released_customers(method: str) -> None:
    # seed 4: every method strands customers and the local re-solve suffices (no fallback to the whole problem)
    p = random_feasible(np.random.default_rng(4), 200, 5, 1, "bind")
    raw = allocate(p, method)
    assert raw.info["stranded_customers"] > 0  # binding risk rules strand customers
    fixed = allocate(p, method, repair=True)
    assert fixed.feasible
    # the documented release rule: customers lacking funds, and everyone placed in a fund one of them may hold
    lacking = (raw.assign < 0).any(axis=1)
    touched = np.flatnonzero(p.risk <= p.tolerance[lacking].max())
    release = lacking | np.isin(raw.assign, touched).any(axis=1)
    assert fixed.info["repair"]["released"] == int(release.sum())
    assert not fixed.info["repair"]["whole_problem_resolved"]
    assert np.array_equal(fixed.assign[~release], raw.assign[~release])
    kept = raw.assign[~release].ravel()
    sub = p.subset(np.flatnonzero(release), p.demand - np.bincount(kept, minlength=p.n_funds))
    kept_value = float(p.scores[np.flatnonzero(~release), raw.assign[~release, 0]].astype(np.float64).sum())
    assert fixed.objective == pytest.approx(kept_value + lp_optimum(sub), rel=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(1, 60), k=st.integers(1, 6), K=st.integers(1, 3))
def test_heuristics_never_break_a_rule_they_report_as_kept(seed: int, N: int, k: int, K: int) -> None:
    K = min(K, k)
    p = random_feasible(np.random.default_rng(seed), N, k, K, "bind" if seed % 2 else "int")
    for method in (["ha"] if K == 1 else []) + ["ha_ptofa", "manual"]:
        res = allocate(p, method)
        ver = res.verification
        # HA / manual may leave customers without funds, but never overfill, repeat or break a risk rule
        assert ver.risk_breaches == 0 and ver.repeated == 0 and ver.bad_index == 0
        assert (ver.delivered <= ver.demanded).all()
        assert res.info["stranded_customers"] == ver.short_customers
        assert res.unassigned_customers().size == ver.short_customers
        assert allocate(p, method, repair=True).feasible


def test_repair_falls_back_to_the_whole_problem() -> None:
    # seed 0: the customers released by the local rule cannot meet the open demand alone; everything is re-solved
    p = random_feasible(np.random.default_rng(0), 200, 5, 1, "bind")
    fixed = allocate(p, "ha", repair=True)
    assert fixed.info["repair"]["whole_problem_resolved"] and fixed.info["repair"]["released"] == 200
    assert fixed.feasible and fixed.objective == pytest.approx(lp_optimum(p), rel=1e-9)
