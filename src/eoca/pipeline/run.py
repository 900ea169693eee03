"""``eoca run``: predict, optimise and evaluate end to end, writing one self-contained run folder.

Steps (each timed and reported): 1. simulate or load the data; 2. train the configured models; 3. score every
evaluation customer x fund; 4. build the delivery plan; 5. allocate with every configured method, plus the
oracle (true ETV, exact) on simulated data; 6. evaluate online: a simulated A/B test with common random
numbers when the simulator's ground truth exists, else inverse-propensity policy values on the held-out
randomized log; 7. write config, metrics (JSON, CSV), allocations (Parquet), plots (PNG) and report.html.

The run folder is assembled under a hidden temporary name beside its final name and renamed only when every
file is written, so a crashed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from eoca.data import Dataset
from eoca.errors import DataValidationError
from eoca.evaluation.metrics import ORACLE
from eoca.io import check_output_folder, output_folder, partial_folder, write_csv, write_json, write_parquet, write_text
from eoca.pipeline.config import RunConfig, config_to_yaml
from eoca.pipeline.frameworks import FrameworkRun, Plan, allocation_table, build_plan, run_method
from eoca.pipeline.results import (
    DatasetSummary,
    ModelRun,
    PlanSummary,
    RunData,
    RunMetrics,
    RunResult,
    TrainingSummary,
)

console = Console(stderr=True)


def open_run_data(cfg: RunConfig) -> RunData:
    """The data a run works on: ``cfg.data`` if given, else the simulated world of ``cfg.simulator``; the true
    arrays and the world seed of simulated data are derived here, once."""
    if cfg.data is None:
        from eoca.simulate import simulate, truth_arrays

        sim = cfg.simulator.config()
        dataset = simulate(sim, progress=cfg.progress)
        return RunData(dataset, truth_arrays(dataset), sim.seed)
    from eoca.data.resolve import open_dataset

    dataset = open_dataset(cfg.data)
    if dataset.truth is None:
        return RunData(dataset)
    from eoca.simulate import recorded_seed, truth_arrays

    return RunData(dataset, truth_arrays(dataset), recorded_seed(dataset))


def _folder(cfg: RunConfig, out: Path | None, runs_root: Path) -> Path:
    if out is not None:
        return out
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root / f"{stamp}-{cfg.name}"


def run_pipeline(
    cfg: RunConfig, out: Path | None = None, runs_root: Path = Path("runs"), *, overwrite: bool = False
) -> RunResult:
    """Run every step of ``cfg`` and return the result; the run folder is ``out`` or ``runs_root/<stamp>-<name>``.

    The models train in spawned worker processes unless ``cfg.jobs`` is 1, so a script calling this needs an
    ``if __name__ == "__main__":`` guard.

    Raises:
        ConfigError: the folder exists already (and ``overwrite`` is off), or the configuration does not fit
            the data.
        DataValidationError / InfeasiblePlanError: bad data or an impossible delivery plan, with details.
    """
    final = check_output_folder(_folder(cfg, out, runs_root), overwrite)
    work = partial_folder(final)
    try:
        with output_folder(final, overwrite=overwrite, keep_on_failure=True) as work:
            result = _run(cfg, work)
    except BaseException:
        console.print(f"[red]run failed; partial outputs kept in {work}[/]")
        raise
    result.folder = final
    return result


def _step(name: str, timings: dict[str, float], t0: float) -> float:
    now = time.perf_counter()
    timings[name] = now - t0
    console.print(f"[green]done[/] {name} in {now - t0:.1f} s")
    return now


def pin_threads(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the training thread count resolved to a number.

    Training reduces sums across threads, so the thread count changes the last bits of every gradient, and
    over epochs the models' scores; deterministic kernels make a run repeatable only for a fixed count. Writing
    the resolved count into the run's config.yaml makes ``eoca run --config RUN/config.yaml`` give the same
    numbers on any machine with the same library versions (recorded in metrics.json), whatever its cores.
    """
    from eoca.threads import resolve_threads

    if cfg.train.num_threads is not None:
        return cfg
    train = cfg.train.model_copy(update={"num_threads": resolve_threads(None)})
    return cfg.model_copy(update={"train": train})


def environment() -> dict[str, Any]:
    """The library versions and platform that, with the configuration, determine a run's numbers."""
    import platform

    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        # torch picks kernels by instruction set (e.g. AVX512 vs AVX2); their last bits differ, and rare-conversion
        # training amplifies that into different models, so a run is only reproducible on the same capability.
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _run(cfg: RunConfig, work: Path) -> RunResult:
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    cfg = pin_threads(cfg)
    write_text(config_to_yaml(cfg), work / "config.yaml")

    console.rule("1. data")
    data = open_run_data(cfg)
    dataset = data.dataset
    simulated = data.truth is not None
    t0 = _step("data", timings, t0)

    console.rule("2-3. train and score")
    plan = build_plan(dataset, cfg.plan)
    models, jobs = _train_all(cfg, data, plan, work)
    t0 = _step("train and score", timings, t0)

    console.rule("4-5. plan and allocate")
    frameworks = _allocate_all(cfg, data, plan, models)
    write_parquet(allocation_table(frameworks), work / "allocations.parquet")
    primary = _primary(cfg, frameworks, models)
    write_parquet(primary.result.to_table(), work / "allocation.parquet")
    t0 = _step("allocate", timings, t0)

    console.rule("6. online evaluation")
    from eoca.pipeline.online import evaluate_online

    online = evaluate_online(cfg, data, plan, frameworks)
    t0 = _step("online evaluation", timings, t0)

    console.rule("7. report")
    from eoca.evaluation.allocation_value import allocation_values
    from eoca.pipeline.report import build_report, run_summary, write_plots

    true_value = None
    if data.truth is not None:
        true_value = {}
        for fw in frameworks:
            c, f = fw.pairs(plan)
            true_value[fw.name] = float(data.truth.etv[c, f].sum())
    allocation = allocation_values([(f.name, f.model, f.result) for f in frameworks], true_value)
    plots = write_plots(work / "plots", data, plan, models, frameworks, online, allocation)
    timings["report_inputs"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    metrics = RunMetrics(
        date=dt.date.today().isoformat(),
        dataset=DatasetSummary(
            name=dataset.spec.name,
            simulated=simulated,
            customers=dataset.n_customers,
            funds=dataset.n_funds,
            exposures=dataset.exposures.num_rows,
            evaluation_customers=int(plan.customer_pos.size),
        ),
        plan=PlanSummary(
            K=plan.K,
            risk_rule=cfg.plan.risk_rule,
            shares_rule=plan.shares_rule,
            demand={str(f): int(d) for f, d in zip(_fund_ids(dataset), plan.demand.tolist(), strict=True)},
            risk_levels=plan.risk.tolist(),
        ),
        offline={m.name: m.offline for m in models},
        training=tuple(
            TrainingSummary(
                model=m.name,
                epochs=m.epochs,
                train_s=m.train_seconds,
                score_s=m.score_seconds,
                valid_decision_value=m.valid_value if np.isfinite(m.valid_value) else None,
            )
            for m in models
        ),
        allocation=tuple(allocation),
        primary_framework=primary.name,
        reproducibility={
            **environment(),
            "train_threads": cfg.train.num_threads,
            "deterministic_kernels": cfg.train.deterministic,
            "training_jobs": jobs,
            "note": "the same config.yaml (seeds and train.num_threads included) and the same library versions "
            "give the same numbers, whatever the training_jobs",
        },
        online=online,
        timings_s=timings,
    )
    write_csv(metrics.offline_rows(), work / "offline_metrics.csv")
    write_csv(metrics.allocation_rows(), work / "allocation_value.csv")
    if online.ab_test is not None:
        write_csv(online.ab_test.to_rows(), work / "ab_test.csv")
    if online.policy_values is not None:
        write_csv(online.policy_values.to_rows(), work / "policy_values.csv")
    metrics = dataclasses.replace(metrics, summary=tuple(run_summary(metrics)))
    result = RunResult(
        folder=work,
        config=cfg,
        dataset_name=dataset.spec.name,
        models=models,
        plan=plan,
        frameworks=frameworks,
        metrics=metrics,
        timings=timings,
    )
    write_json(metrics.to_json(), work / "metrics.json")
    from eoca.report import render_report

    report = build_report(result, plots)
    if cfg.data is None and cfg.simulator.config().incentives is not None:
        from eoca.budget.run import pipeline_section

        console.rule("8. incentive budget")
        section = pipeline_section(cfg.simulator.config(), work / "budget")
        report = dataclasses.replace(report, sections=[*report.sections, section])
    render_report(work / "report.html", report)
    _step("report", timings, t0)
    return result


def _fund_ids(dataset: Dataset) -> list[Any]:
    return list(dataset.funds.column("fund_id").to_pylist())


def _train_all(cfg: RunConfig, data: RunData, plan: Plan, work: Path) -> tuple[list[ModelRun], int]:
    """Every configured model trained and scored, in ``cfg.models`` order, in this process or, when
    :func:`eoca.threads.model_jobs` gives more than one job, in that many worker processes at once; and the
    number of jobs.

    Each model's training is seeded by its own config and runs on ``train.num_threads`` threads wherever it runs,
    so the workers give the numbers this process would (tests/pipeline/test_run_e2e.py)."""
    from eoca.threads import available_cpus, model_jobs

    jobs = model_jobs(cfg.jobs, len(cfg.models), cfg.train.num_threads, exposures=data.dataset.exposures.num_rows)
    if jobs == 1:
        return [_train_and_score(cfg, data, name, plan, work) for name in cfg.models], 1
    console.print(f"training {', '.join(cfg.models)}: {jobs} at once, one process each")
    # Progress bars of several processes would overwrite each other; each worker prints its start and end.
    quiet = cfg.model_copy(update={"progress": False})
    cpus = max(1, available_cpus() // jobs)
    with tempfile.TemporaryDirectory(prefix="eoca-run-") as tmp:
        # The inputs go to the workers through a file, not as arguments of the spawn: a spawned process's
        # arguments are piped to it while the parent waits, so the workers would start one after the other
        # (measured on the default world: 166 MiB, the second worker starting 7 s after the first).
        inputs = Path(tmp) / "inputs.pkl"
        with inputs.open("wb") as fh:
            pickle.dump((data, plan), fh, protocol=pickle.HIGHEST_PROTOCOL)
        return _run_workers(jobs, quiet, work, (str(inputs), cpus))


def _run_workers(jobs: int, cfg: RunConfig, work: Path, initargs: tuple[str, int]) -> tuple[list[ModelRun], int]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the parent may hold OpenMP and torch thread pools, which a forked child inherits broken.
    ctx = multiprocessing.get_context("spawn")
    # How many workers are training or scoring right now: a worker's predictions take CPUs / busy workers.
    busy = ctx.Value("i", 0)
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(*initargs, busy)) as pool:
        futures = [pool.submit(_worker_train_and_score, cfg, name, work) for name in cfg.models]
        try:
            return [f.result() for f in futures], jobs
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "a model-training worker process died without an error: killed for lack of memory, or started "
                'from a script that calls eoca without an `if __name__ == "__main__":` guard (the workers are '
                "spawned, and re-import the calling script); rerun with --set jobs=1 (RunConfig.jobs=1) to train "
                "the models one after the other in this process"
            ) from exc
        except BaseException:
            for f in futures:
                f.cancel()
            raise


_WORKER: dict[str, Any] = {}


def _worker_init(inputs: str, cpus: int, busy: Any = None) -> None:
    """Load the run's inputs into this worker; ``busy``, a shared count of the workers at work, sets the threads
    of this worker's tree predictions."""
    with open(inputs, "rb") as fh:
        _WORKER["data"], _WORKER["plan"] = pickle.load(fh)
    # The workers share the CPUs: a tree model's predictions (eoca.threads.prediction_threads, unless
    # train.predict_threads says otherwise) take this worker's share, not every CPU, so that they do not slow the
    # model training beside them; with the count of busy workers, the share grows as the others finish.
    # Predictions are the same on any number of threads. A user's own OMP_NUM_THREADS is kept, and then fixed.
    from eoca.threads import follow_cpu_share

    _WORKER["busy"] = None
    if "OMP_NUM_THREADS" in os.environ:
        follow_cpu_share(None)
        return
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    if busy is not None:
        _WORKER["busy"] = busy
        follow_cpu_share(lambda: _busy_share(busy))


def _busy_share(busy: Any) -> int:
    """CPUs per busy worker (at least one): this worker's share while it works."""
    from eoca.threads import available_cpus

    return max(1, available_cpus() // max(1, int(busy.value)))


def _worker_train_and_score(cfg: RunConfig, name: str, work: Path) -> ModelRun:
    busy = _WORKER.get("busy")
    if busy is not None:
        with busy.get_lock():
            busy.value += 1
    try:
        run = _train_and_score(cfg, _WORKER["data"], name, _WORKER["plan"], work)
    finally:
        if busy is not None:
            with busy.get_lock():
                busy.value -= 1
    console.print(f"[green]done[/] training and scoring {name} in {run.train_seconds + run.score_seconds:.1f} s")
    return run


def _train_and_score(cfg: RunConfig, data: RunData, name: str, plan: Plan, work: Path) -> ModelRun:
    from eoca.pipeline.evaluate import exposure_predictions, offline_metrics
    from eoca.training import train
    from eoca.training.selection import MIN_MATCHED_CONVERSIONS, argmax_policy_value, has_propensities

    dataset = data.dataset
    tc = cfg.train_config(name)
    console.print(f"training [bold]{name}[/]")
    t0 = time.perf_counter()
    trained = train(dataset, tc, work / "models" / name, progress=cfg.progress)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Only the pairs a decision reads, which a tree model then scores alone: those the plan allows the customers it
    # allocates. The offline decision metrics read the test customers' pairs under the risk rule, which allows no
    # more, and the plan covers every test customer (evaluation_customers). Nobody else's pair is read.
    tolerance = np.full(dataset.n_customers, np.iinfo(np.int64).min, dtype=np.int64)
    tolerance[plan.customer_pos] = plan.tolerance
    mats = trained.score_matrix(dataset, chunk_customers=cfg.score_chunk, progress=cfg.progress, tolerance=tolerance)
    t_score = time.perf_counter() - t0
    # The metrics read the score matrix and the test predictions the report plots: scoring every pair again
    # doubled gbdt's scoring (its boosters take 10-20 s over the default world), and the test exposures twice.
    test_pred = exposure_predictions(trained, dataset, "test")
    offline = offline_metrics(trained, dataset, "test", data.truth, grid_etv=mats["etv"], exposure_pred=test_pred)
    etv = np.asarray(mats["etv"], dtype=np.float32)[plan.customer_pos]
    p = np.asarray(mats["p"], dtype=np.float32)[plan.customer_pos]
    scored = plan.eligible()
    if not np.isfinite(etv[scored]).all():
        bad = int((~np.isfinite(etv[scored])).sum())
        raise DataValidationError(f"model '{name}' produced {bad:,} non-finite ETV scores; it diverged in training")
    return ModelRun(
        name=name,
        offline=offline,
        etv=etv,
        p=p,
        test_pred={"etv": np.asarray(test_pred["etv"]), "p": np.asarray(test_pred["p"])},
        train_seconds=t_train,
        score_seconds=t_score,
        epochs=len(trained.history),
        valid_value=argmax_policy_value(trained, dataset, "valid")
        if has_propensities(dataset, "valid", MIN_MATCHED_CONVERSIONS)
        else float("nan"),
    )


def _allocate_all(cfg: RunConfig, data: RunData, plan: Plan, models: list[ModelRun]) -> list[FrameworkRun]:
    dataset = data.dataset
    sources: list[tuple[str, np.ndarray, list[str]]] = [(m.name, m.etv, list(cfg.allocation.methods)) for m in models]
    if data.truth is not None:
        sources.append((ORACLE, data.truth.etv[plan.customer_pos].astype(np.float32), ["exact"]))
    out: list[FrameworkRun] = []
    for model, scores, methods in sources:
        for method in methods:
            problem = plan.problem(scores, dataset, source=f"{model} scores")
            res = run_method(problem, method, cfg.allocation)
            gap = "" if res.gap is None else f", certificate gap {res.gap:.3g}"
            console.print(
                f"  {model}+{method}: objective {res.objective:,.0f} in {res.wall_time_s:.2f} s, "
                f"{res.unassigned_customers().size:,} customers short{gap}"
            )
            out.append(FrameworkRun(name=f"{model}+{method}", model=model, method=method, result=res))
    return out


def _primary(cfg: RunConfig, frameworks: list[FrameworkRun], models: list[ModelRun]) -> FrameworkRun:
    """The framework whose allocation is the run's answer: the configured model with the highest decision value
    on the validation split (:func:`eoca.training.selection.argmax_policy_value`, where exposures carry
    propensities and enough conversions, see ``MIN_MATCHED_CONVERSIONS``; else the last configured model) with
    the exact method, or its last method without exact."""
    valued = [m for m in models if np.isfinite(m.valid_value)]
    model = max(valued, key=lambda m: m.valid_value).name if valued else cfg.models[-1]
    mine = [f for f in frameworks if f.model == model]
    exact = [f for f in mine if f.method == "exact"]
    return exact[0] if exact else mine[-1]
