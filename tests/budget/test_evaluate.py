"""Budget evaluation: Qini/uplift numbers equal scikit-uplift's; IPS recovers a known policy value."""

from __future__ import annotations

import numpy as np
import pytest

from eoca.budget.evaluate import qini_auc_score, qini_curve, uplift_auc_score, uplift_curve

sklift = pytest.importorskip("sklift.metrics")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qini_and_uplift_match_scikit_uplift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    treated = rng.integers(0, 2, n)
    score = np.round(rng.normal(size=n), 1)  # rounded: ties exercise the distinct-threshold rule
    y = (rng.random(n) < 0.1 + 0.1 * treated * (score > 0)).astype(int)
    for ours, theirs in ((qini_curve, sklift.qini_curve), (uplift_curve, sklift.uplift_curve)):
        x1, y1 = ours(y, score, treated)
        x2, y2 = theirs(y, score, treated)
        np.testing.assert_allclose(x1, x2)
        np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-9)
    assert qini_auc_score(y, score, treated) == pytest.approx(sklift.qini_auc_score(y, score, treated), rel=1e-10)
    assert uplift_auc_score(y, score, treated) == pytest.approx(sklift.uplift_auc_score(y, score, treated), rel=1e-10)


def test_snips_recovers_a_known_policy_value() -> None:
    from eoca.budget.data import ArmSpec, IncentiveData
    from eoca.budget.evaluate import snips_policies

    rng = np.random.default_rng(0)
    n, k = 200_000, 3
    group = rng.integers(0, 2, n)
    # true mean spend per (group, arm); the evaluated policy picks arm 2 in group 0 and arm 1 in group 1
    means = np.array([[10.0, 12.0, 20.0], [10.0, 30.0, 5.0]])
    probs = np.where(group[:, None] == 0, [0.5, 0.25, 0.25], [0.2, 0.4, 0.4])
    arm = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    spend = rng.exponential(means[group, arm])
    data = IncentiveData(
        name="synthetic",
        customer_id=np.arange(n),
        features=group[:, None].astype(np.float32),
        feature_names=("group",),
        arms=tuple(ArmSpec(f"a{t}", "fixed", float(t)) for t in range(k)),
        arm=arm,
        propensity=probs[np.arange(n), arm],
        converted=(spend > 0).astype(float),
        value=spend,
        cost=arm.astype(float),
    )
    policy = np.where(group == 0, 2, 1)
    truth = float(means[group, policy].mean())
    res = snips_policies(data, {"policy": policy, "control": np.zeros(n, dtype=np.int64)}, n_bootstrap=200)
    est = res["policy"].spend_per_mille / 1000.0
    low, high = (v / 1000.0 for v in res["policy"].spend_per_mille_ci)
    assert est == pytest.approx(truth, rel=0.02)
    assert low <= truth <= high
    assert res["control"].spend_per_mille / 1000.0 == pytest.approx(10.0, rel=0.02)
