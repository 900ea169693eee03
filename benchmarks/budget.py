"""Budget allocation benchmarks (issue 12): solver speed and memory, simulator goals, Hillstrom goal.

    python benchmarks/budget.py solver                 # 10M customers x 5 arms (control + 4), fresh process
    python benchmarks/budget.py simulator --seeds 0 1 2 --customers 200000
    python benchmarks/budget.py hillstrom
    python benchmarks/budget.py hillstrom-power --models t_learner,t_conversion,x_learner --splits 10
    python benchmarks/budget.py hillstrom-select --models t_learner,t_conversion,x_learner --splits 10 --folds 2
    python benchmarks/budget.py hillstrom-visit --splits 10 --folds 2
    python benchmarks/budget.py simulator-select --seeds 0 --customers 100000 --models t_learner,x_learner
    python benchmarks/budget.py e2e-variants --seeds 0 --customers 300000 --models e2e,e2e_weight0.3,e2e_warmup6
    python benchmarks/budget.py all --json out.json    # everything; raw rows as JSON

``solver``: random instance (arm 0 free with value 0; arms 1-4 exponential value and cost), budget 30% of the
treat-everyone cost; wall time of ``solve_budget`` and the process's peak RSS (instance included), in a fresh
process per repetition, pinned to 2 threads.

``simulator``: per seed, a world with the default incentive campaign; the models train on half the customers
and allocate the other half at 10/30/50% of the treat-everyone cost; reported: the true incremental value as a
share of the oracle's (true effects + exact solver), and the end-to-end model minus the best two-stage model
(by mean share) with a 95% t-interval over the seeds.

``hillstrom``: e-mail cost 1 (an assumption), budget = one third of the customers e-mailed, two-fold
cross-fitting; SNIPS spend per customer of each policy with 95% bootstrap intervals, lift over random targeting
(paired bootstrap), and each policy minus random targeting by SNIPS and by the doubly robust estimator.

``hillstrom-select``: eoca's own choice of policy (``eoca.budget.select``), cross-fitted end to end: the customers
are split in ``--folds`` folds; for each fold the candidates (each model's solver and single-arm policies, the
untargeted best arm) are scored by a two-fold validation on the *other* folds' customers, the rule
(``lower_bound`` and ``value``, both reported) picks one, and it acts on the fold with models trained on the other
folds. The selected policy over all 64,000 customers minus random targeting, by SNIPS and DR (outcome model: the
first model, cross-fitted), paired bootstrap; repeated over ``--splits`` split seeds.

``hillstrom-visit``: targeting on a denser signal. Hillstrom's ``visit`` (15% of customers, against 0.9% who
buy) is an outcome that eoca does not import; here ``t_conversion`` is trained with visit as its conversion, so
it ranks by predicted visit uplift times the training visitors' mean spend, and the solver and men's-e-mail
policies it induces are compared with those of ``t_conversion`` on conversion: cross-fitted, minus random
targeting by DR (outcome model: ``t_conversion`` on conversion), over ``--splits`` split seeds. Also the
in-sample R^2 of an ordinary least squares fit of spend, conversion and visit on all encoded features, per arm:
an upper bound on what regression adjustment (a control variate on pre-treatment covariates) can remove from
the variance.

``simulator-select``: ``run_budget(select="lower_bound")`` on the simulator split of ``simulator`` at 10/30/50% of
the treat-everyone cost: the policy chosen on the training customers, its true share of the oracle's value, the
solver models' shares and every candidate's validation gain and lower bound.

``e2e-variants``: the share of the oracle at 10/30/50% for end-to-end settings (``--models`` from
``E2E_VARIANTS``: the regulariser's weight, the warm-up epochs, the doubly robust reward) or models by name.

``hillstrom-power`` (``--models t_learner,t_conversion,x_learner --splits 10``): the same comparison repeated
over ``--splits`` random ``--folds``-fold splits (default 2; the first model also gives the top-uplift and
single-arm policies; segment-means policies are added), once more with every model fitted and evaluated on all
customers (in-sample: optimistic), and the power analysis: the standard error of a targeted policy minus random
targeting, the smallest difference a 95% interval detects half the time / with 80% power, and the customers
needed for the differences seen.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _solver_worker(n: int, k: int, seed: int) -> dict[str, Any]:
    import resource

    import numpy as np

    from eoca.budget import solve_budget

    rng = np.random.default_rng(seed)
    value = np.empty((n, k))
    cost = np.empty((n, k))
    value[:, 0] = 0.0
    cost[:, 0] = 0.0
    value[:, 1:] = rng.exponential(1.0, size=(n, k - 1))
    cost[:, 1:] = rng.exponential(1.0, size=(n, k - 1))
    budget = 0.3 * float(cost.max(axis=1).sum())
    rss_instance = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sol = solve_budget(value, cost, budget)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    c = sol.certificate
    return {
        "n": n,
        "arms": k,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_instance_mb": rss_instance,
        "gap": c.gap,
        "gap_bound": c.gap_bound,
        "relative_gap": c.gap / c.dual_bound,
        "cost_over_budget": sol.cost / budget,
    }


def bench_solver(n: int, k: int, reps: int) -> list[dict[str, Any]]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for rep in range(reps):
        load = os.getloadavg()[0]
        here = str(Path(__file__).parent)
        code = (
            f"import json,sys; sys.path.insert(0, {here!r}); from budget import _solver_worker; "
            f"print(json.dumps(_solver_worker({n}, {k}, {rep})))"
        )
        out = subprocess.run(
            ["taskset", "-c", "0,1", sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(rep=rep, load_before=load, load_after=os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_simulator(seeds: list[int], customers: int, models: list[str]) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    from eoca.budget.data import from_world
    from eoca.budget.run import run_budget
    from eoca.simulate import SimulatorConfig
    from eoca.simulate.simulator import generate_world

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        cfg = SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": customers}, "incentives": {}})
        t0 = time.perf_counter()
        res = run_budget(from_world(generate_world(cfg)), models=models, seed=seed, n_bootstrap=200, plots=False)
        for r in res.goal_rows:
            rows.append({**r, "seed": seed})
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s, fit {res.fit_seconds}", flush=True)
    share: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        share.setdefault((r["policy"], r["fraction"]), []).append(r["share_of_oracle"])
    table = [
        {"policy": p, "fraction": f, "mean_share": float(np.mean(v)), "min_share": float(np.min(v)), "seeds": len(v)}
        for (p, f), v in share.items()
    ]
    two_stage = [m for m in models if not m.startswith("e2e") and not m.startswith("peer_")]
    diffs = []
    for f in sorted({r["fraction"] for r in rows}):
        best = max(two_stage, key=lambda m: float(np.mean(share[(m, f)])))
        # against the best two-stage model, and against the same network trained without the goal
        pairs = [(e2e, ref) for e2e in models if e2e.startswith("e2e") for ref in dict.fromkeys([best, "multi_head"])]
        for e2e, ref in pairs:
            if (ref, f) not in share:
                continue
            d = np.array(share[(e2e, f)]) - np.array(share[(ref, f)])
            half = (
                float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            )
            diffs.append(
                {
                    "fraction": f,
                    "e2e": e2e,
                    "reference": ref,
                    "diff_share": float(d.mean()),
                    "ci_low": float(d.mean()) - half,
                    "ci_high": float(d.mean()) + half,
                    "per_seed": d.tolist(),
                }
            )
    return {"rows": rows, "table": table, "e2e_vs_two_stage": diffs}


def bench_hillstrom(models: list[str], seed: int) -> dict[str, Any]:
    from eoca.budget.data import load_hillstrom_incentives
    from eoca.budget.run import run_budget

    data = load_hillstrom_incentives()
    # every arm but the control costs one e-mail, so the treat-everyone cost is the number of held-out customers
    # and a third of it e-mails one customer in three
    res = run_budget(
        data, models=models, budget=f"{100.0 / 3.0!r}%", seed=seed, n_bootstrap=1000, plots=False, crossfit=True
    )
    return {
        "budget": res.budget,
        "n_test": res.n_test,
        "best_model": res.best_model,
        "ope": res.ope_rows,
        "paired": res.paired_rows,
        "uplift": res.uplift_rows,
    }


E2E_VARIANTS: dict[str, dict[str, Any]] = {
    "e2e": {},
    "e2e_weight0.3": {"weight": 0.3},
    "e2e_weight1": {"weight": 1.0},
    "e2e_warmup6": {"warmup_epochs": 6},
    "e2e_dr": {"doubly_robust": True},
}


def bench_e2e_variants(seeds: list[int], customers: int, variants: list[str]) -> list[dict[str, Any]]:
    """Share of the oracle at 10/30/50% of the treat-everyone cost for end-to-end settings (``E2E_VARIANTS``,
    the E2EConfig fields changed) and any model by name, on the simulator split that ``simulator`` uses."""
    import torch

    from eoca.budget.data import from_world
    from eoca.budget.e2e import E2EConfig
    from eoca.budget.evaluate import allocate, true_outcome
    from eoca.budget.models import MultiHeadNet, make_model
    from eoca.budget.solver import solve_budget
    from eoca.simulate import SimulatorConfig
    from eoca.simulate.simulator import generate_world

    torch.set_num_threads(1)
    rows = []
    for seed in seeds:
        cfg = SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": customers}, "incentives": {}})
        train, test = from_world(generate_world(cfg)).split(0.5, seed)
        full = test.treat_all_cost()
        t = test.truth
        assert t is not None
        oracle = {
            f: true_outcome(test, solve_budget(t.value, t.expected_cost, f * full).arm)[0] for f in (0.1, 0.3, 0.5)
        }
        for v in variants:
            t0 = time.perf_counter()
            model = (
                MultiHeadNet(seed, e2e=E2EConfig(**E2E_VARIANTS[v]), name=v)
                if v in E2E_VARIANTS
                else make_model(v, seed)
            )
            pred = model.fit(train).predict(test.features)
            row: dict[str, Any] = {"seed": seed, "customers": customers, "variant": v}
            for f, ref in oracle.items():
                row[f"share_{f}"] = true_outcome(test, allocate(pred, test, f * full).arm)[0] / ref
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


SEGMENTATIONS = {
    "segments:history": ("history_segment=",),
    "segments:history_mens_womens_newbie": ("history_segment=", "mens=", "womens=", "newbie="),
}


class SegmentMeans:
    """Per segment (a cell of one-hot feature groups) and arm: the logged conversion rate and mean spend; a cell
    with no customer of an arm takes the arm's overall mean. The simplest uplift model, used here to bound what
    segment-level targeting can gain (fitted in-sample it is optimistic)."""

    def __init__(self, feature_names: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        self.groups = [[j for j, f in enumerate(feature_names) if f.startswith(p)] for p in prefixes]

    def cells(self, X: Any) -> Any:
        import numpy as np

        code = np.zeros(X.shape[0], dtype=np.int64)
        for cols in self.groups:
            code = code * len(cols) + X[:, cols].argmax(axis=1)
        return code

    def fit(self, data: Any) -> SegmentMeans:
        import numpy as np

        cell = self.cells(data.features)
        self.k = data.n_arms
        self.table: dict[tuple[int, int], tuple[float, float]] = {}
        self.overall = [
            (float(data.converted[data.arm == t].mean()), float(data.value[data.arm == t].mean()))
            for t in range(self.k)
        ]
        for c in np.unique(cell):
            for t in range(self.k):
                m = (cell == c) & (data.arm == t)
                if m.any():
                    self.table[(int(c), t)] = (float(data.converted[m].mean()), float(data.value[m].mean()))
        return self

    def predict(self, X: Any) -> Any:
        import numpy as np

        from eoca.budget.models import Prediction

        cell = self.cells(X)
        p = np.empty((X.shape[0], self.k))
        v = np.empty((X.shape[0], self.k))
        for c in np.unique(cell):
            for t in range(self.k):
                p[cell == c, t], v[cell == c, t] = self.table.get((int(c), t), self.overall[t])
        return Prediction(p=p, value=v)


def _over_splits(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeated splits of one policy's paired differences against random targeting."""
    import numpy as np

    return {
        "splits": len(rs),
        "median_difference": float(np.median([r["difference"] for r in rs])),
        "median_ci_low": float(np.median([r["difference_ci_low"] for r in rs])),
        "median_ci_high": float(np.median([r["difference_ci_high"] for r in rs])),
        "splits_ci_above_zero": int(sum(r["difference_ci_low"] > 0 for r in rs)),
        "median_se": float(np.median([r["difference_se"] for r in rs])),
        "median_lift_pct": float(np.median([r["lift_pct"] for r in rs])),
    }


def bench_hillstrom_power(models: list[str], splits: int, outcome_model: str, folds: int = 2) -> dict[str, Any]:
    """Repeated ``folds``-fold cross-fitting (one split per seed), an in-sample fit (optimistic), and the power of the
    policy-vs-random comparison at one third of the customers e-mailed."""
    import numpy as np

    from eoca.budget.data import load_hillstrom_incentives
    from eoca.budget.models import Prediction
    from eoca.budget.offpolicy import paired_differences, power_analysis
    from eoca.budget.run import _fit, budget_policies, crossfit_folds, crossfit_predict

    data = load_hillstrom_incentives()
    budget = data.n / 3.0
    fit_names = list(dict.fromkeys([outcome_model, *models]))

    def compare(preds: dict[str, Prediction], split: str) -> list[dict[str, Any]]:
        pols = budget_policies(data, {m: preds[m] for m in models}, models[0], budget)
        for m in models[1:]:
            pols[f"{m}:only_Mens E-Mail"] = budget_policies(data, {m: preds[m]}, m, budget)[f"{m}:only_Mens E-Mail"]
        for seg in SEGMENTATIONS:
            pols[seg] = budget_policies(data, {seg: preds[seg]}, seg, budget)[seg]
        mu = preds[outcome_model].value
        rows = []
        for d in paired_differences(
            data.arm,
            data.propensity,
            data.value,
            pols,
            n_arms=data.n_arms,
            reference="random",
            mu=mu,
            n_bootstrap=1000,
            seed=0,
        ):
            rows.append({**d.to_row(), "split": split})
        return rows

    rows: list[dict[str, Any]] = []
    r2: list[float] = []
    for split in range(splits):
        t0 = time.perf_counter()
        fold = crossfit_folds(data.n, split, folds)
        preds = {m: crossfit_predict(data, m, split, fold) for m in fit_names}
        for seg, prefixes in SEGMENTATIONS.items():
            p_all, v_all = np.empty((data.n, data.n_arms)), np.empty((data.n, data.n_arms))
            for f in range(folds):
                held = fold == f
                sm = SegmentMeans(data.feature_names, prefixes).fit(data.subset(~held))
                pred = sm.predict(data.features[held])
                p_all[held], v_all[held] = pred.p, pred.value
            preds[seg] = Prediction(p=p_all, value=v_all)
        mu_logged = preds[outcome_model].value[np.arange(data.n), data.arm]
        r2.append(float(1.0 - np.var(data.value - mu_logged) / np.var(data.value)))
        rows += compare(preds, f"crossfit seed {split}")
        print(f"split {split}: {time.perf_counter() - t0:.0f} s", flush=True)
    # in-sample: every model trained on all customers and scoring the same customers; its value is optimistic
    # (the model has seen the outcomes it is judged on), an upper bound on what these features reveal
    insample = {m: _fit(m, data, 0).predict(data.features) for m in fit_names}
    for seg, prefixes in SEGMENTATIONS.items():
        insample[seg] = SegmentMeans(data.feature_names, prefixes).fit(data).predict(data.features)
    rows += compare(insample, "in-sample (optimistic)")

    summary = []
    for est in ("snips", "dr"):
        for pol in dict.fromkeys(r["policy"] for r in rows):
            cf = [r for r in rows if r["estimator"] == est and r["policy"] == pol and r["split"].startswith("cross")]
            ins = [r for r in rows if r["estimator"] == est and r["policy"] == pol and r["split"].startswith("in-")]
            if not cf:
                continue
            summary.append(
                {
                    "estimator": est,
                    "policy": pol,
                    **_over_splits(cf),
                    "min_difference": float(np.min([r["difference"] for r in cf])),
                    "max_difference": float(np.max([r["difference"] for r in cf])),
                    "insample_difference": ins[0]["difference"] if ins else None,
                    "insample_ci_low": ins[0]["difference_ci_low"] if ins else None,
                    "insample_ci_high": ins[0]["difference_ci_high"] if ins else None,
                }
            )
    # power: the standard error of a targeted (deterministic) policy minus random targeting, by DR
    targeted = [r for r in summary if r["estimator"] == "dr" and r["policy"] in models]
    se = float(np.median([r["median_se"] for r in targeted]))
    ref_value = float(np.median([r["reference_value"] for r in rows if r["estimator"] == "dr"]))
    pa = power_analysis(se, data.n, ref_value)
    best_cf = max(targeted, key=lambda r: r["median_difference"])
    best_in = max(targeted, key=lambda r: r["insample_difference"] or -np.inf)
    segs = [r for r in summary if r["estimator"] == "dr" and r["policy"] in SEGMENTATIONS]
    untargeted = next(r for r in summary if r["estimator"] == "dr" and r["policy"].startswith("untargeted:"))
    power = {
        **pa.to_row(),
        "outcome_model_r2_logged_arm": r2,
        "best_crossfit_policy": best_cf["policy"],
        "best_crossfit_median_difference": best_cf["median_difference"],
        "customers_needed_best_crossfit": pa.customers_needed(best_cf["median_difference"]),
        "best_insample_policy": best_in["policy"],
        "best_insample_difference": best_in["insample_difference"],
        "customers_needed_best_insample": pa.customers_needed(best_in["insample_difference"]),
        "segment_insample": {r["policy"]: r["insample_difference"] for r in segs},
        "customers_needed_segment_insample": {r["policy"]: pa.customers_needed(r["insample_difference"]) for r in segs},
        "untargeted_policy": untargeted["policy"],
        "untargeted_difference": untargeted["median_difference"],
        "untargeted_se": untargeted["median_se"],
    }
    return {"rows": rows, "summary": summary, "power": power}


def bench_hillstrom_select(models: list[str], splits: int, folds: int) -> dict[str, Any]:
    """The selected policy's cross-fitted value against random targeting at one third of the customers e-mailed,
    per split seed and selection rule; the policies chosen in every fold."""
    import numpy as np

    from eoca.budget.data import load_hillstrom_incentives
    from eoca.budget.offpolicy import paired_differences
    from eoca.budget.run import _fit, crossfit_folds, crossfit_predict
    from eoca.budget.select import SELECTION_RULES, candidate_policies, crossfit_selected, untargeted_arm

    data = load_hillstrom_incentives()
    rows: list[dict[str, Any]] = []
    for split in range(splits):
        t0 = time.perf_counter()
        fold = crossfit_folds(data.n, split, folds)
        preds = {m: crossfit_predict(data, m, split, fold) for m in models}
        # the reference and the untargeted arm, each fold's from its own training customers as the product does
        pols: dict[str, np.ndarray] = {"random": np.empty((data.n, data.n_arms))}
        untargeted = np.empty((data.n, data.n_arms))
        for f in range(folds):
            held = fold == f
            train, act = data.subset(~held), data.subset(held)
            rates = np.array([train.converted[train.arm == t].mean() for t in range(data.n_arms)])
            cand = candidate_policies(act, {}, act.treat_all_cost() / 3.0, untargeted_arm(train), rates)
            pols["random"][held] = cand.pop("random")
            untargeted[held] = next(iter(cand.values()))
        pols["untargeted best arm"] = untargeted
        chosen: dict[str, list[str]] = {}
        for rule in SELECTION_RULES:
            pols[f"selected ({rule})"], sels = crossfit_selected(
                data, models, 1.0 / 3.0, _fit, fold, preds, rule=rule, seed=split
            )
            chosen[rule] = [s.chosen for s in sels]
        for d in paired_differences(
            data.arm,
            data.propensity,
            data.value,
            pols,
            n_arms=data.n_arms,
            reference="random",
            mu=preds[models[0]].value,
            n_bootstrap=1000,
            seed=0,
        ):
            rule = d.policy[len("selected (") : -1] if d.policy.startswith("selected (") else None
            row = {**d.to_row(), "split": split, "folds": folds, "chosen": chosen[rule] if rule else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
        print(f"split {split}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary = []
    for est in ("snips", "dr"):
        for pol in dict.fromkeys(r["policy"] for r in rows):
            rs = [r for r in rows if r["estimator"] == est and r["policy"] == pol]
            summary.append(
                {
                    "estimator": est,
                    "policy": pol,
                    "folds": folds,
                    **_over_splits(rs),
                }
            )
    return {"rows": rows, "summary": summary}


def bench_hillstrom_visit(splits: int, folds: int) -> dict[str, Any]:
    """Visit-uplift targeting against conversion-uplift targeting on Hillstrom, cross-fitted, per split seed."""
    from dataclasses import replace

    import numpy as np

    from eoca.budget.data import load_hillstrom_incentives
    from eoca.budget.offpolicy import paired_differences
    from eoca.budget.run import budget_policies, crossfit_folds, crossfit_predict
    from eoca.data.hillstrom import default_hillstrom_path
    from eoca.data.sources import read_inferred

    data = load_hillstrom_incentives()
    raw = read_inferred(default_hillstrom_path())
    if not np.allclose(np.asarray(raw.column("spend").to_numpy(), dtype=np.float64), data.value):
        raise RuntimeError("the raw Hillstrom rows are not in the order of the imported customers")
    visit = np.asarray(raw.column("visit").to_numpy(), dtype=np.float64)
    on_visit = replace(data, converted=visit)
    design = np.column_stack([np.ones(data.n), data.features.astype(np.float64)])
    ols_r2: dict[str, list[float]] = {}
    for name, y in (("spend", data.value), ("conversion", data.converted), ("visit", visit)):
        for t in range(data.n_arms):
            m = data.arm == t
            coef, *_ = np.linalg.lstsq(design[m], y[m], rcond=None)
            ols_r2.setdefault(name, []).append(float(1.0 - np.var(y[m] - design[m] @ coef) / np.var(y[m])))
    print(json.dumps({"insample_ols_r2_per_arm": ols_r2}), flush=True)
    rows: list[dict[str, Any]] = []
    for split in range(splits):
        fold = crossfit_folds(data.n, split, folds)
        preds = {
            "conversion": crossfit_predict(data, "t_conversion", split, fold),
            "visit": crossfit_predict(on_visit, "t_conversion", split, fold),
        }
        pols: dict[str, Any] = {}
        for name, pred in preds.items():
            got = budget_policies(data, {name: pred}, name, data.n / 3.0)
            pols[name], pols[f"{name}:only_Mens E-Mail"] = got[name], got[f"{name}:only_Mens E-Mail"]
            pols["random"] = got["random"]
        for d in paired_differences(
            data.arm,
            data.propensity,
            data.value,
            pols,
            n_arms=data.n_arms,
            reference="random",
            mu=preds["conversion"].value,
            n_bootstrap=1000,
            seed=0,
        ):
            if d.estimator == "dr":
                rows.append({**d.to_row(), "split": split, "folds": folds})
                print(json.dumps(rows[-1]), flush=True)
    summary = []
    for pol in dict.fromkeys(r["policy"] for r in rows):
        rs = [r for r in rows if r["policy"] == pol]
        summary.append(
            {
                "policy": pol,
                "folds": folds,
                **_over_splits(rs),
            }
        )
    return {"rows": rows, "summary": summary, "insample_ols_r2_per_arm": ols_r2}


def bench_simulator_select(seeds: list[int], customers: int, models: list[str]) -> list[dict[str, Any]]:
    from eoca.budget.data import from_world
    from eoca.budget.run import GOAL_FRACTIONS, run_budget
    from eoca.simulate import SimulatorConfig
    from eoca.simulate.simulator import generate_world

    rows = []
    for seed in seeds:
        cfg = SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": customers}, "incentives": {}})
        data = from_world(generate_world(cfg))
        for frac in GOAL_FRACTIONS:
            t0 = time.perf_counter()
            res = run_budget(
                data,
                models=models,
                budget=f"{100 * frac!r}%",
                seed=seed,
                n_bootstrap=50,
                plots=False,
                select="lower_bound",
            )
            goals = {r["policy"]: r for r in res.goal_rows if r["fraction"] == frac}
            row = {
                "seed": seed,
                "customers": customers,
                "fraction": frac,
                "selected": res.selected_policy,
                "selected_share_of_oracle": res.certificate["true_incremental_value"]
                / goals["oracle"]["true_incremental_value"],
                "solver_share_of_oracle": {m: goals[m]["share_of_oracle"] for m in models},
                "candidates": [
                    (r["policy"], r["validation_gain"], r["validation_lower_bound"]) for r in res.selection_rows
                ],
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "what",
        choices=[
            "solver",
            "simulator",
            "hillstrom",
            "hillstrom-power",
            "hillstrom-select",
            "hillstrom-visit",
            "simulator-select",
            "e2e-variants",
            "all",
        ],
    )
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--arms", type=int, default=5, help="columns including the free control arm")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--models", default="t_learner,x_learner,multi_head,e2e,e2e_perturbed")
    ap.add_argument("--splits", type=int, default=10, help="hillstrom-power: cross-fitting splits (seeds 0..)")
    ap.add_argument("--folds", type=int, default=2, help="hillstrom-power: cross-fitting folds per split")
    ap.add_argument("--outcome-model", default="t_learner", help="hillstrom-power: the DR outcome model")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.what in ("solver", "all"):
        out["solver"] = bench_solver(args.n, args.arms, args.reps)
    if args.what in ("simulator", "all"):
        out["simulator"] = bench_simulator(args.seeds, args.customers, models)
        for r in out["simulator"]["table"]:
            print(json.dumps(r))
        for r in out["simulator"]["e2e_vs_two_stage"]:
            print(json.dumps(r))
    if args.what in ("hillstrom", "all"):
        out["hillstrom"] = bench_hillstrom(models, args.seeds[0])
        for r in out["hillstrom"]["ope"] + out["hillstrom"]["paired"]:
            print(json.dumps(r))
    if args.what in ("hillstrom-power", "all"):
        out["hillstrom_power"] = bench_hillstrom_power(models, args.splits, args.outcome_model, args.folds)
        for r in out["hillstrom_power"]["summary"]:
            print(json.dumps(r))
        print(json.dumps(out["hillstrom_power"]["power"]))
    if args.what in ("hillstrom-select", "all"):
        out["hillstrom_select"] = bench_hillstrom_select(models, args.splits, args.folds)
        for r in out["hillstrom_select"]["summary"]:
            print(json.dumps(r))
    if args.what in ("hillstrom-visit", "all"):
        out["hillstrom_visit"] = bench_hillstrom_visit(args.splits, args.folds)
        for r in out["hillstrom_visit"]["summary"]:
            print(json.dumps(r))
    if args.what == "simulator-select":
        out["simulator_select"] = bench_simulator_select(args.seeds, args.customers, models)
    if args.what == "e2e-variants":
        out["e2e_variants"] = bench_e2e_variants(args.seeds, args.customers, models)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
