"""The exact solver against independent optima (HiGHS LP, OR-Tools min-cost flow) and its certificate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoca.allocation import AllocationProblem, allocate, solve_exact, verify_allocation
from eoca.allocation.exact import MANY_FUNDS_ABOVE
from eoca.allocation.generate import synthetic_instance
from tests.allocation.helpers import KINDS, dual_bound, lp_optimum, mcf_optimum_int, random_feasible


def _check(p: AllocationProblem, **kw: object) -> None:
    out = solve_exact(p.scores, p.tolerance, p.risk, p.demand, p.K, **kw)  # type: ignore[arg-type]
    ver = verify_allocation(p, out.assign)
    assert ver.ok, ver.describe()
    ref = lp_optimum(p)
    scale = max(1.0, abs(ref))
    assert out.certified
    assert abs(ver.objective - ref) <= 1e-6 * scale
    # the certificate: the solver's dual bound, recomputed here from its prices alone, equals the primal value
    g = dual_bound(p, out.prices)
    assert abs(g - out.dual) <= 1e-9 * scale
    assert abs(g - ver.objective) <= 1e-9 * scale
    assert abs(out.primal - ver.objective) <= 1e-9 * scale


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.integers(1, 40),
    k=st.integers(1, 7),
    K=st.integers(1, 3),
    kind=st.sampled_from(KINDS),
    target=st.sampled_from([None, 1, 3]),
)
def test_exact_matches_lp_optimum(seed: int, N: int, k: int, K: int, kind: str, target: int | None) -> None:
    K = min(K, k)
    p = random_feasible(np.random.default_rng(seed), N, k, K, kind)
    # a tiny candidate_target forces the candidate-growth and certificate-retry paths
    _check(p, candidate_target=target)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.integers(1, 60),
    k=st.integers(2, 6),
    K=st.integers(1, 3),
    kind=st.sampled_from(["int", "equal", "dup", "bind"]),
)
def test_exact_matches_min_cost_flow_on_integer_scores(seed: int, N: int, k: int, K: int, kind: str) -> None:
    # integer scores: OR-Tools min-cost flow is exact in integer arithmetic and full of ties
    K = min(K, k)
    rng = np.random.default_rng(seed)
    p = random_feasible(rng, N, k, K, kind)
    if kind == "bind":
        p.scores[:] = rng.integers(0, 3, size=p.scores.shape).astype(np.float32)
    out = solve_exact(p.scores, p.tolerance, p.risk, p.demand, p.K)
    ver = verify_allocation(p, out.assign)
    assert ver.ok and out.certified
    assert ver.objective == mcf_optimum_int(p)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("K", [1, 2])
def test_degenerate_medium(kind: str, K: int) -> None:
    p = random_feasible(np.random.default_rng(7), 400, 6, K, kind)
    _check(p, candidate_target=25)


def test_single_fund() -> None:
    p = random_feasible(np.random.default_rng(1), 50, 1, 1, "float")
    _check(p)


def test_all_zero_scores_and_many_identical_rows() -> None:
    p = random_feasible(np.random.default_rng(4), 2000, 5, 2, "dup")
    p.scores[:, [1, 3]] = 0.0
    _check(p)
    p.scores[:] = 0.0
    _check(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.integers(20, 150),
    k=st.integers(MANY_FUNDS_ABOVE + 1, 40),
    K=st.integers(1, 3),
    kind=st.sampled_from(KINDS),
    target=st.sampled_from([None, 5]),
)
def test_many_funds_path_matches_lp_optimum(seed: int, N: int, k: int, K: int, kind: str, target: int | None) -> None:
    # above MANY_FUNDS_ABOVE funds the flow uses the dense edge table and the windowed Newton step
    p = random_feasible(np.random.default_rng(seed), N, k, K, kind)
    _check(p, candidate_target=target)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.integers(20, 120),
    k=st.integers(MANY_FUNDS_ABOVE + 1, 30),
    K=st.integers(1, 3),
    kind=st.sampled_from(["int", "equal", "dup", "bind"]),
)
def test_many_funds_path_matches_min_cost_flow_with_ties(seed: int, N: int, k: int, K: int, kind: str) -> None:
    # integer scores in 0..2: nearly every edge minimum is tied, so many customers move in one augmentation
    rng = np.random.default_rng(seed)
    p = random_feasible(rng, N, k, K, kind)
    p.scores[:] = rng.integers(0, 3, size=p.scores.shape).astype(np.float32)
    out = solve_exact(p.scores, p.tolerance, p.risk, p.demand, p.K)
    ver = verify_allocation(p, out.assign)
    assert ver.ok and out.certified
    assert ver.objective == mcf_optimum_int(p)


def test_many_funds_synthetic_with_binding_risk_against_min_cost_flow() -> None:
    # the regime that used to misplace 15 % of the customers after the full scans (k = 100, risk rules bind)
    p = synthetic_instance(4000, 60, 1, seed=3)
    exact = allocate(p, "exact")
    ref = allocate(p, "mcf")
    assert exact.optimal and exact.feasible and ref.feasible
    assert abs(exact.objective - ref.objective) <= 1e-6 * exact.objective
    assert exact.gap is not None and abs(exact.gap) <= 1e-9 * exact.objective


def test_hundreds_of_funds() -> None:
    p = random_feasible(np.random.default_rng(2), 300, 200, 2, "int")
    _check(p)


def test_negative_and_identical_scores() -> None:
    rng = np.random.default_rng(3)
    p = random_feasible(rng, 120, 5, 1, "float")
    p.scores[:] = np.float32(-2.5)
    p.scores[::7, 2] = np.float32(1.0)
    _check(p, candidate_target=10)


def test_sampled_prices_path_against_min_cost_flow() -> None:
    # above 200k customers the solver starts from prices fitted on samples; compare with OR-Tools
    p = synthetic_instance(210_000, 8, 1, seed=5)
    exact = allocate(p, "exact")
    ref = allocate(p, "mcf")
    assert exact.optimal and exact.feasible and ref.feasible
    assert exact.objective >= ref.objective - ref.info["max_rounding_loss"] - 1e-6 * exact.objective
    assert abs(exact.objective - ref.objective) <= 1e-6 * exact.objective
    assert exact.gap is not None and abs(exact.gap) <= 1e-9 * exact.objective


def test_k2_synthetic_against_lp() -> None:
    p = synthetic_instance(1000, 6, 2, seed=9)
    res = allocate(p, "exact")
    assert res.optimal and res.feasible
    assert res.objective == pytest.approx(lp_optimum(p), rel=1e-9)
    assert res.summary()["violations"]["funds_off_demand"] == []


@pytest.mark.slow
@pytest.mark.parametrize(("K", "limit_s"), [(1, 30.0), (2, 60.0)])
def test_ten_million_within_limits(K: int, limit_s: float) -> None:
    p = synthetic_instance(10_000_000, 8, K, seed=1)
    res = allocate(p, "exact")
    assert res.optimal and res.feasible
    assert res.wall_time_s <= limit_s
    assert res.peak_memory_mb <= 3 * 1024
