from __future__ import annotations

import math

import numpy as np
import pytest

from eoca.errors import EocaError
from eoca.evaluation.online import (
    FrameworkAllocation,
    bootstrap_counts,
    percentile_interval,
    simulate_ab_test,
)


def table_draw(conv: np.ndarray, amt: np.ndarray):
    """Outcome source reading fixed (customer x fund) tables; records every call it gets."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def draw(c: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append((c.copy(), f.copy()))
        return conv[c, f].astype(np.int8), amt[c, f].astype(np.float64)

    draw.calls = calls  # type: ignore[attr-defined]
    return draw


def random_world(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 0.2, size=(n, k))
    mean_amt = rng.lognormal(6.0, 1.0, size=(n, k))
    conv = (rng.random((n, k)) < p).astype(np.int8)
    amt = np.where(conv == 1, rng.exponential(mean_amt), 0.0)
    return conv, amt, p * mean_amt


def test_hand_example_metrics_and_lifts() -> None:
    # 4 customers x 2 funds. Control shows fund 0 to everyone, "b" shows fund 1.
    conv = np.array([[1, 1], [0, 1], [0, 0], [1, 0]])
    amt = np.array([[100.0, 300.0], [0.0, 500.0], [0.0, 0.0], [200.0, 0.0]])
    cust = np.arange(4)
    result = simulate_ab_test(
        {"ctrl": (cust, np.zeros(4, dtype=int)), "b": (cust, np.ones(4, dtype=int))},
        table_draw(conv, amt),
        control="ctrl",
        n_bootstrap=200,
    )
    ctrl, b = result["ctrl"], result["b"]
    assert (ctrl.deliveries, ctrl.conversions, ctrl.amount) == (4, 2, 300.0)
    assert (b.deliveries, b.conversions, b.amount) == (4, 2, 800.0)
    assert ctrl.cpmd == pytest.approx(500.0)
    assert ctrl.tapmd == pytest.approx(75_000.0)
    assert b.tapmd == pytest.approx(200_000.0)
    assert b.cpmd_lift_pct == pytest.approx(0.0)
    assert b.tapmd_lift_pct == pytest.approx((800.0 / 300.0 - 1.0) * 100.0)
    assert ctrl.role == "control" and ctrl.cpmd_lift_pct is None and ctrl.tapmd_lift_ci is None


def test_identical_allocations_give_identical_metrics_and_zero_lift() -> None:
    conv, amt, etv = random_world(3000, 5, seed=1)
    rng = np.random.default_rng(2)
    cust = np.arange(3000)
    fund = rng.integers(0, 5, size=3000)
    perm = rng.permutation(3000)  # same pairs in another order: still the same allocation
    draw = table_draw(conv, amt)
    result = simulate_ab_test(
        {
            "esmm+manual": FrameworkAllocation(cust, fund, etv[cust, fund]),
            "copy": FrameworkAllocation(cust[perm], fund[perm], etv[cust[perm], fund[perm]]),
        },
        draw,
        control="esmm+manual",
        n_bootstrap=300,
    )
    a, b = result["esmm+manual"], result["copy"]
    assert (a.conversions, a.deliveries) == (b.conversions, b.deliveries)
    assert a.amount == pytest.approx(b.amount, rel=1e-12)
    assert a.cpmd_ci == pytest.approx(b.cpmd_ci) and a.tapmd_ci == pytest.approx(b.tapmd_ci)
    assert b.cpmd_lift_pct == pytest.approx(0.0, abs=1e-9)
    assert b.tapmd_lift_pct == pytest.approx(0.0, abs=1e-9)
    assert b.tapmd_lift_ci == pytest.approx((0.0, 0.0), abs=1e-9)
    assert b.expected_tapmd_lift_pct == pytest.approx(0.0, abs=1e-9)
    # Common random numbers by construction: one draw over the distinct pairs, shared by both frameworks.
    assert len(draw.calls) == 1 and draw.calls[0][0].size == 3000


def test_crn_holds_even_for_a_non_crn_outcome_source() -> None:
    # An outcome source that returns fresh noise on every call would break the comparison if each
    # framework drew separately; drawing the union once keeps identical allocations identical.
    rng = np.random.default_rng(0)

    def noisy(c: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        conv = (rng.random(c.size) < 0.3).astype(np.int8)
        return conv, np.where(conv == 1, rng.exponential(1000.0, c.size), 0.0)

    cust = np.repeat(np.arange(500), 2)
    fund = np.tile([0, 3], 500)  # K = 2 funds per customer
    result = simulate_ab_test({"x": (cust, fund), "y": (cust[::-1], fund[::-1])}, noisy, control="x", n_bootstrap=50)
    assert result["x"].conversions == result["y"].conversions
    assert result["y"].tapmd_lift_pct == pytest.approx(0.0, abs=1e-9)
    assert result["x"].customers == 500 and result.n_customers == 500


def test_intervals_contain_point_estimates_and_oracle_shares() -> None:
    n, k = 4000, 4
    conv, amt, etv = random_world(n, k, seed=3)
    rng = np.random.default_rng(4)
    cust = np.arange(n)
    frameworks = {
        "control": FrameworkAllocation(cust, rng.integers(0, k, n), None),
        "oracle": FrameworkAllocation(cust, etv.argmax(axis=1), None),
        "half": FrameworkAllocation(cust, np.where(cust % 2 == 0, etv.argmax(axis=1), 0), None),
    }
    frameworks = {
        name: FrameworkAllocation(a.customer_pos, a.fund_pos, etv[a.customer_pos, a.fund_pos])
        for name, a in frameworks.items()
    }
    result = simulate_ab_test(
        frameworks, table_draw(conv, amt), control="control", oracle="oracle", n_bootstrap=400, seed=7
    )
    for fw in result.frameworks:
        assert fw.cpmd_ci[0] <= fw.cpmd <= fw.cpmd_ci[1]
        assert fw.tapmd_ci[0] <= fw.tapmd <= fw.tapmd_ci[1]
        if fw.tapmd_lift_ci is not None:
            assert fw.tapmd_lift_pct is not None and fw.cpmd_lift_pct is not None
            assert fw.tapmd_lift_ci[0] <= fw.tapmd_lift_pct <= fw.tapmd_lift_ci[1]
            assert fw.cpmd_lift_ci is not None
            assert fw.cpmd_lift_ci[0] <= fw.cpmd_lift_pct <= fw.cpmd_lift_ci[1]
    oracle, half, control = result["oracle"], result["half"], result["control"]
    assert oracle.role == "oracle" and oracle.pct_of_oracle_expected == pytest.approx(100.0)
    assert oracle.pct_of_oracle_realised == pytest.approx(100.0)
    expected_share = etv[cust, frameworks["half"].fund_pos].sum() / etv.max(axis=1).sum() * 100.0
    assert half.pct_of_oracle_expected == pytest.approx(expected_share)
    assert control.pct_of_oracle_expected is not None and half.pct_of_oracle_expected is not None
    assert control.pct_of_oracle_expected < half.pct_of_oracle_expected < 100.0
    # The argmax-ETV allocation is far better than random in expectation; the realised lift must say so.
    assert oracle.tapmd_lift_ci is not None and oracle.tapmd_lift_ci[0] > 0.0
    rows = result.to_rows()
    assert [r["framework"] for r in rows] == ["control", "oracle", "half"]
    assert rows[0]["tapmd_lift_pct"] is None and rows[2]["pct_of_oracle_expected"] == half.pct_of_oracle_expected


def test_lift_interval_covers_zero_when_frameworks_are_equally_good() -> None:
    # Two frameworks showing different funds with identical outcome distributions: the true lift is 0,
    # so a valid 95% interval should cover it in most repetitions.
    covered = 0
    seeds = range(30)
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        n = 1500
        conv = (rng.random((n, 2)) < 0.1).astype(np.int8)
        amt = np.where(conv == 1, rng.lognormal(7.0, 1.0, (n, 2)), 0.0)
        cust = np.arange(n)
        result = simulate_ab_test(
            {"a": (cust, np.zeros(n, dtype=int)), "b": (cust, np.ones(n, dtype=int))},
            table_draw(conv, amt),
            control="a",
            n_bootstrap=200,
            seed=seed,
        )
        ci = result["b"].tapmd_lift_ci
        assert ci is not None
        covered += ci[0] <= 0.0 <= ci[1]
    assert covered >= 24


def test_stranded_customers_count_against_oracle_share() -> None:
    conv = np.ones((4, 2), dtype=np.int8)
    amt = np.full((4, 2), 10.0)
    cust = np.arange(4)
    etv = np.ones(4)
    result = simulate_ab_test(
        {
            "exact": (cust, np.zeros(4, dtype=int), etv),
            "ha": (cust[:3], np.zeros(3, dtype=int), etv[:3]),  # one customer left unassigned
        },
        table_draw(conv, amt),
        control="exact",
        oracle="exact",
        n_bootstrap=20,
    )
    ha = result["ha"]
    assert ha.deliveries == 3 and ha.tapmd == pytest.approx(result["exact"].tapmd)
    assert ha.pct_of_oracle_expected == pytest.approx(75.0)
    assert ha.pct_of_oracle_realised == pytest.approx(75.0)
    assert result["exact"].role == "control"  # control takes precedence when one framework is both


def test_zero_bootstrap_gives_nan_intervals() -> None:
    conv = np.array([[1], [0]])
    amt = np.array([[5.0], [0.0]])
    result = simulate_ab_test(
        {"a": (np.arange(2), np.zeros(2, dtype=int))}, table_draw(conv, amt), control="a", n_bootstrap=0
    )
    assert all(math.isnan(v) for v in result["a"].cpmd_ci)


@pytest.mark.parametrize(
    ("frameworks", "kwargs", "message"),
    [
        ({"a": (np.arange(3), np.zeros(3, dtype=int))}, {"control": "zz"}, "control framework 'zz'"),
        (
            {"a": (np.arange(3), np.zeros(3, dtype=int))},
            {"control": "a", "oracle": "o"},
            "oracle framework 'o'",
        ),
        ({"a": (np.arange(3), np.zeros(2, dtype=int))}, {"control": "a"}, "fund_pos has 2"),
        ({"a": (np.array([0, 0]), np.array([1, 1]))}, {"control": "a"}, "same (customer, fund) pair"),
        ({"a": (np.array([0.5]), np.array([1]))}, {"control": "a"}, "integer positions"),
        ({"a": (np.array([-1]), np.array([1]))}, {"control": "a"}, "negative position"),
        ({"a": (np.array([], dtype=int), np.array([], dtype=int))}, {"control": "a"}, "delivers nothing"),
        ({"a": (np.arange(3), np.zeros(3, dtype=int), np.ones(2))}, {"control": "a"}, "true_etv has shape"),
        ({"a": (np.arange(3), np.zeros(3, dtype=int))}, {"control": "a", "confidence": 1.0}, "confidence"),
    ],
)
def test_invalid_inputs_raise_clear_errors(frameworks, kwargs, message) -> None:
    draw = table_draw(np.zeros((5, 5), dtype=np.int8), np.zeros((5, 5)))
    with pytest.raises(EocaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        simulate_ab_test(frameworks, draw, **kwargs)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ((np.zeros(2, dtype=np.int8),), "tuple"),
        ((np.zeros(3, dtype=np.int8), np.zeros(3)), "must have shape"),
        ((np.array([2, 0]), np.zeros(2)), "other than 0 and 1"),
        ((np.array([1, 0]), np.array([-1.0, 0.0])), "negative or non-finite"),
        ((np.array([0, 0]), np.array([3.0, 0.0])), "did not convert"),
    ],
)
def test_bad_outcome_source_is_reported(outcome, message) -> None:
    with pytest.raises(EocaError, match=message):
        simulate_ab_test({"a": (np.arange(2), np.zeros(2, dtype=int))}, lambda c, f: outcome, control="a")


def test_bootstrap_counts_are_resamples() -> None:
    chunks = list(bootstrap_counts(50, 23, np.random.default_rng(0), max_cells=500))
    assert [c.shape for c in chunks] == [(10, 50), (10, 50), (3, 50)]
    stacked = np.vstack(chunks)
    assert np.all(stacked.sum(axis=1) == 50) and np.all(stacked >= 0)
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == pytest.approx((1.5, 2.5))
