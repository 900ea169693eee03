"""Delivery plans, run configuration errors and the online step, without training any model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eoca.allocation import DeliveryPlan, allocate
from eoca.errors import ConfigError
from eoca.pipeline.config import load_run_config
from eoca.pipeline.frameworks import FrameworkRun, build_plan, evaluation_customers, logged_shares
from eoca.pipeline.online import simulated_ab
from eoca.pipeline.results import RunData
from eoca.simulate import load_simulator_config, simulate, truth_arrays


@pytest.fixture(scope="module")
def world():
    return simulate(load_simulator_config(None, ["world.n_customers=1500", "world.n_funds=5", "seed=3"]))


def test_logged_plan_sums_exactly_and_follows_the_log(world) -> None:
    plan = build_plan(world, DeliveryPlan())
    assert plan.customer_pos.size == 1500  # a simulated world allocates every customer
    assert plan.demand.sum() == 1500
    shares = logged_shares(world)
    assert np.abs(plan.demand / 1500 - shares).max() <= 1 / 1500 + 1e-12
    assert "largest remainder" in plan.shares_rule


def test_uniform_and_explicit_shares(world) -> None:
    plan = build_plan(world, DeliveryPlan(shares="uniform", K=2))
    assert plan.demand.tolist() == [600, 600, 600, 600, 600]
    ids = [str(f) for f in world.funds.column("fund_id").to_pylist()]
    given = dict(zip(ids, [0.5, 0.2, 0.1, 0.1, 0.1], strict=True))
    plan = build_plan(world, DeliveryPlan(shares=given, K=2))
    # K = 2: a fund reaches a customer at most once, so 0.5 of 3,000 slots is capped at 1,500 = every customer
    assert plan.demand.sum() == 3000
    assert plan.demand.max() <= 1500


def test_plan_errors_name_the_problem(world) -> None:
    ids = [str(f) for f in world.funds.column("fund_id").to_pylist()]
    with pytest.raises(ConfigError, match=r"plan: shares: no demand for fund\(s\) \['" + ids[-1]):
        build_plan(world, DeliveryPlan(shares={i: 0.25 for i in ids[:-1]}))
    with pytest.raises(ValueError, match="shares sum to 0.5; they must sum to 1"):
        build_plan(world, DeliveryPlan(shares={i: 0.1 for i in ids}))
    with pytest.raises(ConfigError, match=r"plan: demands: fund\(s\) \['x'\] are not in the funds table"):
        build_plan(world, DeliveryPlan(demands={**{i: 300 for i in ids}, "x": 1}))
    with pytest.raises(ConfigError, match="plan.K = 9 but the dataset has only 5 funds"):
        build_plan(world, DeliveryPlan(K=9))


def test_risk_rule_off_lifts_every_tolerance(world) -> None:
    plan = build_plan(world, DeliveryPlan(risk_rule=False))
    assert (plan.tolerance >= plan.risk.max()).all()


def test_unscored_forbidden_pairs_allocate_as_scored_ones_and_an_unscored_allowed_pair_is_named(world) -> None:
    from eoca.errors import DataValidationError

    plan = build_plan(world, DeliveryPlan())
    allowed = plan.eligible()
    assert 0 < allowed.sum() < allowed.size
    scores = np.random.default_rng(1).gamma(2.0, 50.0, size=allowed.shape).astype(np.float32)
    unscored = np.where(allowed, scores, np.float32(np.nan))
    solved = allocate(plan.problem(scores, world, "scored"), "exact")
    again = allocate(plan.problem(unscored, world, "unscored"), "exact")
    np.testing.assert_array_equal(again.assign, solved.assign)
    assert again.objective == solved.objective
    row, fund = map(int, np.argwhere(allowed)[7])
    unscored[row, fund] = np.nan
    cid = world.customers.column("customer_id")[row].as_py()
    with pytest.raises(
        DataValidationError, match=rf"unscored: scores must be finite.*customer {cid} \(row {row}\), fund"
    ):
        plan.problem(unscored, world, "unscored")


def test_config_errors_point_at_the_key() -> None:
    with pytest.raises(ConfigError, match="models.*unknown model"):
        load_run_config(overrides=["models=[esmm,nope]"])
    with pytest.raises(ConfigError, match="ab_test.control 'esdpm\\+ip' is not one of the frameworks"):
        load_run_config(overrides=["ab_test.control=esdpm+ip"])
    with pytest.raises(ConfigError, match=r"plan: unknown key\(s\) \['Kay'\]"):
        load_run_config(overrides=["plan.Kay=2"])
    cfg = load_run_config(overrides=["simulator.customers=123"], data="somewhere")
    assert cfg.simulator.customers == 123 and cfg.data == "somewhere"
    assert cfg.simulator.config().world.n_customers == 123


def test_every_section_is_validated_at_load_time() -> None:
    # A typo in the train or simulator section fails when the file is read, not minutes into a run.
    with pytest.raises(ConfigError, match="train.learning_rate: Extra inputs are not permitted"):
        load_run_config(overrides=["train.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="train.lr: Input should be greater than 0"):
        load_run_config(overrides=["train.lr=-1"])
    with pytest.raises(ConfigError, match="conversion.target_per_mil"):
        load_run_config(overrides=["simulator.params.conversion.target_per_mil=3"])
    cfg = load_run_config(overrides=["simulator.params.conversion.target_per_mille=3", "train.lr=0.02"])
    assert cfg.simulator.config().conversion.target_per_mille == 3
    assert cfg.train_config("esmm").lr == 0.02 and cfg.train_config("esmm").model == "esmm"


def test_ha_with_several_funds_per_customer_is_refused_as_in_allocate() -> None:
    # One rule in `eoca run` and `eoca allocate`: EOCA's HA gives one fund each; never a silent switch.
    with pytest.raises(ConfigError, match="use 'ha_ptofa' for K > 1"):
        load_run_config(overrides=["plan.K=2"])
    cfg = load_run_config(overrides=["plan.K=2", "allocation.methods=[manual,ha_ptofa,exact]"])
    assert cfg.plan.K == 2


def test_hillstrom_like_evaluation_customers_are_the_test_split(world) -> None:
    # Without a truth table only customers with test exposures can be evaluated on the log.
    no_truth = type(world)(
        spec=world.spec, customers=world.customers, funds=world.funds, exposures=world.exposures, truth=None
    )
    cust = evaluation_customers(no_truth)
    test_cust = no_truth.customer_index(no_truth.exposures.column("customer_id"))[no_truth.split_mask("test")]
    assert cust.tolist() == np.unique(test_cust).tolist()


def test_identical_allocations_have_identical_ab_metrics(world) -> None:
    """Common random numbers: the same allocation under two names gets the same draws and a zero lift."""
    cfg = load_run_config(overrides=["models=[esmm]", "allocation.methods=[manual,exact]", "ab_test.n_bootstrap=50"])
    plan = build_plan(world, DeliveryPlan())
    problem = plan.problem(truth_arrays(world).etv.astype(np.float32), world, "truth")
    exact = allocate(problem, "exact")
    manual = allocate(problem, "manual")
    fws = [
        FrameworkRun("esmm+manual", "esmm", "manual", manual),
        FrameworkRun("esmm+exact", "esmm", "exact", exact),
        FrameworkRun("copy+exact", "copy", "exact", exact),
    ]
    out = simulated_ab(cfg, RunData(world, truth_arrays(world), 3), plan, fws)
    assert out.kind == "simulated_ab" and out.ab_test is not None
    rows = {r["framework"]: r for r in out.ab_test.to_rows()}
    a, b = rows["esmm+exact"], rows["copy+exact"]
    for key in ("conversions", "amount", "cpmd", "tapmd", "cpmd_lift_pct", "tapmd_lift_pct", "expected_value"):
        assert a[key] == b[key], key
    assert rows["esmm+manual"]["role"] == "control"
    assert rows["esmm+manual"]["tapmd_lift_pct"] in (None, 0.0)
    # exact on the true ETV must be worth at least as much, in expectation, as manual on the same scores
    assert a["expected_value"] >= rows["esmm+manual"]["expected_value"]


def test_models_trained_at_once_fill_the_cpus_within_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from eoca import threads
    from eoca.threads import JOB_MEMORY_FACTOR, model_jobs

    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    gib = 2**30
    plenty = {"available": 64 * gib, "resident": gib}
    assert model_jobs(None, 3, None, **plenty) == 3  # one thread each: a process per model, up to the CPUs
    assert model_jobs(None, 6, None, **plenty) == 4
    assert model_jobs(None, 6, 2, **plenty) == 2  # two threads each: half as many processes
    assert model_jobs(None, 1, None, **plenty) == 1
    # Each worker is expected to need JOB_MEMORY_FACTOR times this process's memory.
    assert model_jobs(None, 3, None, available=int(2 * JOB_MEMORY_FACTOR * gib), resident=gib) == 2
    assert model_jobs(None, 3, None, available=gib, resident=gib) == 1
    # An explicit count is taken as given, capped at the models.
    assert model_jobs(1, 3, None, **plenty) == 1
    assert model_jobs(8, 3, None, available=gib, resident=gib) == 3
    # The machine's own figures where none are given (Linux: /proc), at least one job either way.
    assert 1 <= model_jobs(None, 3) <= 3
    # Small data: a worker's start would cost about what the training it takes over does.
    from eoca.threads import PARALLEL_MIN_EXPOSURES

    assert model_jobs(None, 3, None, exposures=PARALLEL_MIN_EXPOSURES - 1, **plenty) == 1
    assert model_jobs(None, 3, None, exposures=PARALLEL_MIN_EXPOSURES, **plenty) == 3
    assert model_jobs(2, 3, None, exposures=10, **plenty) == 2  # as asked
    # A daemonic process (a Dask worker's) may not start processes: one job, in that process.
    monkeypatch.setattr(threads, "_daemonic", lambda: True)
    assert model_jobs(None, 3, None, **plenty) == 1
    with pytest.raises(ConfigError, match="jobs"):
        load_run_config(None, ["jobs=0"])


def test_training_workers_predict_on_their_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os
    import pickle

    from eoca import threads
    from eoca.pipeline import run as run_module
    from eoca.threads import prediction_threads

    inputs = tmp_path / "inputs.pkl"
    inputs.write_bytes(pickle.dumps(("data", "plan")))
    monkeypatch.setattr(run_module, "_WORKER", {})
    monkeypatch.setattr(threads, "_CPU_SHARE", None)
    monkeypatch.setattr(os, "environ", {})
    run_module._worker_init(str(inputs), 1)
    assert run_module._WORKER == {"data": "data", "plan": "plan", "busy": None}
    # Without the share, a worker's tree predictions would take every CPU beside the other workers' training.
    assert prediction_threads() == 1
    assert prediction_threads(2) == 2  # train.predict_threads still wins
    monkeypatch.setattr(os, "environ", {"OMP_NUM_THREADS": "2"})
    run_module._worker_init(str(inputs), 1)
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the user's own setting is kept


def test_a_worker_predicts_on_more_cpus_as_the_others_finish(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import multiprocessing
    import os
    import pickle

    from eoca import threads
    from eoca.pipeline import run as run_module
    from eoca.threads import prediction_threads

    inputs = tmp_path / "inputs.pkl"
    inputs.write_bytes(pickle.dumps(("data", "plan")))
    monkeypatch.setattr(run_module, "_WORKER", {})
    monkeypatch.setattr(threads, "_CPU_SHARE", None)  # restored after the test, whatever _worker_init registers
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(os, "environ", {})
    busy = multiprocessing.get_context("spawn").Value("i", 0)
    run_module._worker_init(str(inputs), 2, busy)
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the rest of the worker's OpenMP keeps its fixed share
    seen = []

    def fake_train_and_score(cfg: object, data: object, name: str, plan: object, work: Path) -> object:
        seen.append((name, busy.value, prediction_threads()))
        if name == "broken":
            raise ValueError("a model that fails")
        return type("Run", (), {"train_seconds": 1.0, "score_seconds": 1.0})()

    monkeypatch.setattr(run_module, "_train_and_score", fake_train_and_score)
    busy.value = 1  # another worker is at work
    run_module._worker_train_and_score(None, "gbdt", tmp_path)  # type: ignore[arg-type]
    assert busy.value == 1  # this worker's count is given back when it finishes
    busy.value = 0  # the other finished
    run_module._worker_train_and_score(None, "esmm", tmp_path)  # type: ignore[arg-type]
    busy.value = 3
    with pytest.raises(ValueError, match="fails"):
        run_module._worker_train_and_score(None, "broken", tmp_path)  # type: ignore[arg-type]
    assert busy.value == 3  # given back when the model fails too
    # Two busy workers on 4 CPUs: 2 threads each; alone: all 4; four busy: 1 each.
    assert seen == [("gbdt", 2, 2), ("esmm", 1, 4), ("broken", 4, 1)]
    assert prediction_threads(3) == 3  # train.predict_threads still wins
    # A user's own OMP_NUM_THREADS is kept and fixes the count: no share is followed.
    monkeypatch.setattr(os, "environ", {"OMP_NUM_THREADS": "3"})
    run_module._worker_init(str(inputs), 2, busy)
    assert prediction_threads() == 3


def test_a_dead_training_worker_fails_the_run_with_what_to_do(tmp_path: Path) -> None:
    from eoca.pipeline import run as run_module

    cfg = load_run_config(None, ["models=[esmm,gbdt]", "progress=false"])
    # The workers cannot read their inputs: the pool breaks, and the error names the way out.
    with pytest.raises(RuntimeError, match="jobs=1"):
        run_module._run_workers(2, cfg, tmp_path, (str(tmp_path / "missing.pkl"), 1))


@pytest.mark.parametrize("data", ["simulated", "log"])
def test_a_run_scores_and_reads_only_the_pairs_its_plan_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: str
) -> None:
    import dataclasses

    from eoca.pipeline.run import run_pipeline
    from eoca.report import plots
    from eoca.training import TrainedModel

    scored: list[dict[str, np.ndarray]] = []
    score_matrix = TrainedModel.score_matrix

    def recording(self: TrainedModel, *args: object, **kwargs: object) -> dict[str, np.ndarray]:
        scored.append(score_matrix(self, *args, **kwargs))  # type: ignore[arg-type]
        return scored[-1]

    drawn: dict[str, np.ndarray] = {}
    chart = plots.etv_distribution_chart

    def drawing(etv_by_model: dict[str, np.ndarray], **kwargs: object) -> bytes:
        drawn.update(etv_by_model)
        return chart(etv_by_model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TrainedModel, "score_matrix", recording)
    monkeypatch.setattr(plots, "etv_distribution_chart", drawing)
    sets = ["simulator.customers=900", "simulator.funds=5", "models=[gbdt]", "jobs=1", "progress=false"]
    sets += ["ab_test.control=gbdt+manual", "ab_test.n_bootstrap=50", "ope.n_bootstrap=50", "train.num_threads=1"]
    if data == "log":
        # A log without truth whose first 300 customers have no test exposure: the plan covers the other 600.
        ds = simulate(load_simulator_config(None, ["world.n_customers=900", "world.n_funds=5"]))
        late = ds.customer_index(ds.exposures.column("customer_id")) < 300
        keep = ~(ds.split_mask("test") & late)
        log = dataclasses.replace(
            ds, spec=ds.spec.model_copy(update={"truth": None}), truth=None, exposures=ds.exposures.filter(keep)
        )
        log.save(tmp_path / "log")
        sets.append(f"data={tmp_path / 'log'}")
    result = run_pipeline(load_run_config(None, sets), out=tmp_path / "run")
    plan = result.plan
    allowed = plan.eligible()
    assert 0 < allowed.sum() < allowed.size
    (mats,) = scored
    outside = np.setdiff1d(np.arange(900), plan.customer_pos)
    assert outside.tolist() == ([] if data == "simulated" else list(range(300)))
    for values in mats.values():
        mine = values[plan.customer_pos]
        assert np.isfinite(mine[allowed]).all() and np.isnan(mine[~allowed]).all()
        assert np.isnan(values[outside]).all()  # nobody outside the plan is scored
    # The histogram draws the allowed pairs only; the exact allocation meets the plan on scores with holes.
    assert drawn["gbdt"].size == allowed.sum() and np.isfinite(drawn["gbdt"]).all()
    if data == "simulated":
        assert drawn["true ETV"].size == allowed.sum()
    exact = next(fw for fw in result.frameworks if fw.name == "gbdt+exact")
    assert exact.result.unassigned_customers().size == 0
