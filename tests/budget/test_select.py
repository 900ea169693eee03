"""Choosing the campaign's policy by cross-fitted validation on the training customers: it picks a real targeting
signal, falls back on the untargeted best arm when the targeting is noise, never looks at the customers it acts
on, and its stochastic policies are realised with exact counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eoca.budget.data import ArmSpec, IncentiveData
from eoca.budget.models import Prediction
from eoca.budget.run import crossfit_folds, realise_policy, run_budget
from eoca.budget.select import (
    apply_selection,
    candidate_policies,
    crossfit_selected,
    select_policy,
    simultaneous_z,
    untargeted_arm,
)
from eoca.errors import DataValidationError

ARMS = (ArmSpec("none", "fixed", 0.0), ArmSpec("a", "fixed", 1.0), ArmSpec("b", "fixed", 1.0))


def _effects(x: np.ndarray) -> np.ndarray:
    """True mean value (n, 3): arm a helps a lot where x > 0.7 only, arm b a little for everyone."""
    base = 5.0 + 0.0 * x
    return np.stack([base, base + np.where(x > 0.7, 4.0, -2.0), base + 0.6], axis=1)


def _log(n: int, seed: int, noise: float) -> IncentiveData:
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    arm = rng.integers(0, 3, n)
    y = np.maximum(_effects(x)[np.arange(n), arm] + rng.normal(0.0, noise, n), 0.0)
    return IncentiveData(
        name="synthetic",
        customer_id=np.arange(n),
        features=np.stack([x, rng.random(n)], axis=1).astype(np.float32),
        feature_names=("x", "junk"),
        arms=ARMS,
        arm=arm.astype(np.int64),
        propensity=np.full(n, 1.0 / 3.0),
        converted=(y > 0).astype(np.float64),
        value=y,
        cost=np.array([a.cost for a in ARMS])[arm],
    )


class _Informed:
    """Predicts the true effects from the feature x (what a good uplift model learns)."""

    def predict(self, features: np.ndarray) -> Prediction:
        v = _effects(features[:, 0].astype(np.float64))
        return Prediction(p=np.full(v.shape, 0.5), value=v)


class _Noise:
    """Predicts effects unrelated to the customer: a targeting model with no signal."""

    def predict(self, features: np.ndarray) -> Prediction:
        rng = np.random.default_rng(int(features[0, 1] * 1e6))
        v = 5.0 + rng.normal(0.0, 1.0, (features.shape[0], 3))
        return Prediction(p=np.full(v.shape, 0.5), value=v)


def _fit(name: str, data: IncentiveData, seed: int) -> Any:
    del data, seed
    return {"informed": _Informed(), "noise": _Noise()}[name]


def test_a_real_targeting_signal_is_chosen() -> None:
    train = _log(6000, 0, noise=3.0)
    for rule in ("lower_bound", "value"):
        sel = select_policy(train, ["informed", "noise"], 1.0 / 3.0, _fit, rule=rule, seed=0)
        # the solver's policy or arm a alone: both send arm a exactly where it helps
        assert sel.chosen in ("informed", "informed:only_a"), sel.to_rows()
        by = {s.policy: s for s in sel.scores}
        assert by[sel.chosen].gain > by["untargeted:b"].gain + 0.5


def test_without_a_signal_the_lower_bound_prefers_the_untargeted_best_arm() -> None:
    train = _log(6000, 1, noise=25.0)
    sel = select_policy(train, ["noise"], 1.0 / 3.0, _fit, rule="lower_bound", seed=0)
    by = {s.policy: s for s in sel.scores}
    assert set(by) == {"noise", "noise:only_a", "noise:only_b", "untargeted:b"}
    # the untargeted policy differs from random targeting only in which arm the treated get: a far smaller
    # standard error than any targeted policy's
    assert all(by["untargeted:b"].se < 0.6 * s.se for name, s in by.items() if name != "untargeted:b")
    # Bonferroni over the 4 candidates: one-sided 95% bounds that hold jointly
    assert all(s.z == pytest.approx(2.2414027) for s in sel.scores)
    assert by[sel.chosen].lower_bound == max(s.gain - s.z * s.se for s in sel.scores)
    value = select_policy(train, ["noise"], 1.0 / 3.0, _fit, rule="value", seed=0)
    assert value.chosen == max(value.scores, key=lambda s: s.gain).policy
    # over 20 logs the pessimistic rule settles on the arm that is better on average far more often than the
    # rule that follows the noisy estimated gains of targeting by noise
    picks = {"lower_bound": 0, "value": 0}
    for seed in range(20):
        log = _log(6000, seed, noise=25.0)
        for rule in picks:
            picks[rule] += select_policy(log, ["noise"], 1.0 / 3.0, _fit, rule=rule).chosen == "untargeted:b"
    assert picks["lower_bound"] >= 12 and picks["lower_bound"] >= picks["value"] + 4, picks


def test_the_choice_never_sees_the_customers_it_acts_on() -> None:
    data = _log(4000, 2, noise=25.0)
    fold = crossfit_folds(data.n, 0, 2)
    policy, sels = crossfit_selected(data, ["informed", "noise"], 1.0 / 3.0, _fit, fold)
    # scramble the outcomes of fold 0: fold 1's choice, made on fold 0's customers, may change; fold 0's may not
    rng = np.random.default_rng(9)
    held = fold == 0
    value = data.value.copy()
    value[held] = rng.permutation(value[held]) * 3.0
    scrambled = replace(data, value=value)
    policy2, sels2 = crossfit_selected(scrambled, ["informed", "noise"], 1.0 / 3.0, _fit, fold)
    assert [s.n_train for s in sels] == [int((~held).sum()), int(held.sum())]
    assert sels[0].scores == sels2[0].scores
    np.testing.assert_array_equal(policy[held], policy2[held])
    assert sels[1].scores != sels2[1].scores


def test_candidates_spend_the_budget_and_untargeted_uses_the_training_arm() -> None:
    data = _log(3000, 3, noise=1.0)
    assert untargeted_arm(data) == 2
    rates = np.ones(3)
    pols = candidate_policies(data, {"informed": _Informed().predict(data.features)}, 1000.0, 2, rates)
    for name, probs in pols.items():
        assert probs.shape == (3000, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        assert probs[:, 1:].sum() <= 1000.0 + 1e-9, name
    assert pols["untargeted:b"][:, 2] == pytest.approx(1000.0 / 3000.0)
    assert pols["random"][:, 1] == pytest.approx(pols["random"][:, 2])
    chosen = apply_selection("untargeted:b", data, data, 1.0 / 3.0, _fit)
    assert chosen[:, 2].sum() == pytest.approx(1000.0)


def test_realised_policy_has_exact_counts_and_keeps_deterministic_rows() -> None:
    probs = np.zeros((1000, 3))
    probs[:600, 0], probs[:600, 2] = 0.75, 0.25
    probs[600:, 1] = 1.0
    arm = realise_policy(probs, seed=4)
    assert (arm[600:] == 1).all()
    assert int((arm[:600] == 2).sum()) == 150 and int((arm[:600] == 0).sum()) == 450
    assert not np.array_equal(arm, realise_policy(probs, seed=5))


def test_bad_selection_requests_are_clear_errors() -> None:
    data = _log(600, 4, noise=1.0)
    with pytest.raises(DataValidationError, match="selection rule"):
        select_policy(data, ["informed"], 0.3, _fit, rule="best")
    with pytest.raises(DataValidationError, match="at least 2 folds"):
        select_policy(data, ["informed"], 0.3, _fit, folds=1)
    with pytest.raises(DataValidationError, match="budget fraction"):
        select_policy(data, ["informed"], float("nan"), _fit)
    with pytest.raises(DataValidationError, match="not a candidate"):
        apply_selection("informed:only_zzz", data, data, 0.3, _fit)
    with pytest.raises(DataValidationError, match="caps"):
        run_budget(data, models=["t_learner"], select="lower_bound", caps={"a": 5})

    class _Broken:
        def predict(self, features: np.ndarray) -> Prediction:
            v = np.full((features.shape[0], 3), np.nan)
            return Prediction(p=np.full(v.shape, 0.5), value=v)

    with pytest.raises(DataValidationError, match="model 'broken' predicted non-finite values"):
        select_policy(data, ["broken"], 0.3, lambda name, d, seed: _Broken())


def test_run_budget_evaluates_and_writes_the_selected_policy() -> None:
    data = _log(3000, 5, noise=3.0)
    res = run_budget(data, models=["t_learner"], budget="33.3%", seed=0, n_bootstrap=50, plots=False, select="value")
    assert res.selected_policy is not None and res.selected_policy.startswith("selected (value): ")
    names = {r["policy"] for r in res.selection_rows}
    assert {"t_learner", "t_learner:only_a", "t_learner:only_b"} <= names
    assert any(n.startswith("untargeted:") for n in names)
    assert sum(r["chosen"] for r in res.selection_rows) == 1
    assert any(r["policy"] == res.selected_policy for r in res.paired_rows)
    assert set(res.allocation.column("policy").to_pylist()) == {res.selected_policy}
    assert res.certificate["allocation_policy"] == res.selected_policy
    # the informative feature is learnt: the chosen policy gives arm a mostly where it helps
    arm = np.array(res.allocation.column("arm").to_pylist())
    x = np.asarray(res.allocation.column("customer_id").to_numpy())
    got_a = data.features[x, 0][arm == "a"]
    assert got_a.size > 0 and (got_a > 0.7).mean() > 0.8


def test_cli_budget_selects_by_default_and_writes_the_choice(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from eoca.cli import app

    data = _log(3000, 6, noise=3.0)
    log = tmp_path / "log.csv"
    pacsv.write_csv(
        pa.table(
            {
                "group": [ARMS[a].name for a in data.arm],
                "amount": data.value,
                "x": data.features[:, 0],
                "junk": data.features[:, 1],
            }
        ),
        log,
    )
    run = tmp_path / "run"
    args = ["budget", "--data", str(log), "--treatment", "group", "--value", "amount", "--out", str(run)]
    args += ["--arm", "none:fixed:0", "--arm", "a:fixed:1", "--arm", "b:fixed:1", "--numeric", "x", "--numeric", "junk"]
    args += ["--design", "none=0.3333333333", "--design", "a=0.3333333333", "--design", "b=0.3333333334"]
    args += ["--models", "t_learner", "--budget", "33%", "--bootstrap", "20"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    policy = pq.read_table(run / "allocation.parquet").column("policy").to_pylist()
    assert set(policy) == {policy[0]} and policy[0].startswith("selected (lower_bound): ")
    assert (run / "selection.csv").exists()
    assert "Policy selection" in (run / "report.md").read_text()
    assert "allocated: selected (lower_bound)" in " ".join(res.output.split())


def test_simultaneous_bounds_widen_with_the_number_of_candidates() -> None:
    assert simultaneous_z(1) == pytest.approx(1.6448536)
    assert simultaneous_z(10) == pytest.approx(2.5758293)
    with pytest.raises(DataValidationError, match="at least one"):
        simultaneous_z(0)
