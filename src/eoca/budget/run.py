"""The budget job: train the response models on part of a randomized incentive log, allocate under budgets with
the exact solver, evaluate on the held-out customers, and write tables, plots and a Markdown report.

Used by ``eoca budget``, by ``eoca run`` when the simulator config has incentives, and by benchmarks/budget.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eoca.budget.data import IncentiveData
from eoca.budget.evaluate import (
    DEFAULT_FRACTIONS,
    CurvePoint,
    allocate,
    aucc,
    budget_curve,
    oracle_curve,
    qini_auc_score,
    random_policy,
    single_arm_policy,
    snips_policies,
    top_uplift_policy,
    true_outcome,
    uplift_auc_score,
)
from eoca.budget.models import Prediction, make_model
from eoca.budget.offpolicy import paired_differences
from eoca.budget.select import (
    DEFAULT_SELECTION,
    SELECTION_RULES,
    apply_selection,
    candidate_policies,
    crossfit_selected,
    logged_means,
    select_policy,
    untargeted_arm,
)
from eoca.errors import DataValidationError
from eoca.io import write_bytes, write_csv, write_json, write_parquet, write_text

__all__ = ["BudgetRunResult", "parse_budget", "run_budget"]

DEFAULT_MODELS = ("t_learner", "x_learner", "multi_head", "e2e")
GOAL_FRACTIONS = (0.1, 0.3, 0.5)


def parse_budget(text: str, full: float) -> float:
    """``"30%"`` -> 0.3 x ``full`` (the treat-everyone cost); a plain number is an absolute budget."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100.0 * full if s.endswith("%") else float(s)
    except ValueError:
        raise DataValidationError(
            f"--budget {text!r}: give an amount (e.g. 5000) or a share of the treat-everyone cost (e.g. 30%)"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise DataValidationError(f"--budget {text!r}: the budget must be a number >= 0")
    return value


@dataclass
class BudgetRunResult:
    """What the job measured; every table is a list of flat rows (CSV-ready)."""

    data_name: str
    n_train: int
    n_test: int
    budget: float
    full_cost: float
    simulated: bool
    fit_seconds: dict[str, float]
    curves: list[CurvePoint]
    goal_rows: list[dict[str, Any]]
    uplift_rows: list[dict[str, Any]]
    ope_rows: list[dict[str, Any]]
    paired_rows: list[dict[str, Any]]
    certificate: dict[str, Any]
    best_model: str
    allocation: pa.Table
    plots: dict[str, bytes] = field(default_factory=dict)
    selection_rows: list[dict[str, Any]] = field(default_factory=list)
    selected_policy: str | None = None

    def curve_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "policy": p.policy,
                "fraction": p.fraction,
                "budget": p.budget,
                "value": p.value,
                "cost": p.cost,
                "value_ci_low": p.value_ci[0],
                "value_ci_high": p.value_ci[1],
            }
            for p in self.curves
        ]


def _fit(name: str, train: IncentiveData, seed: int) -> Any:
    if name.startswith("peer_"):
        from eoca.budget.peers import make_peer

        return make_peer(name, seed).fit(train)
    return make_model(name, seed).fit(train)


def crossfit_folds(n: int, seed: int, folds: int = 2) -> np.ndarray:
    """Random fold of each of ``n`` customers, int64 (n,) in 0..folds-1."""
    if folds < 2:
        raise DataValidationError(f"cross-fitting needs at least 2 folds, got {folds}")
    if folds == 2:
        # the two-fold split that runs before repeated cross-fitting existed used this draw; kept so that their
        # results reproduce
        return (np.random.default_rng(seed).random(n) >= 0.5).astype(np.int64)
    return np.random.default_rng(seed).integers(0, folds, n)


def crossfit_predict(data: IncentiveData, name: str, seed: int, fold: np.ndarray) -> Prediction:
    """Predictions (n, k) of model ``name`` for every customer by the model trained on the other folds, so that
    no customer is scored by a model that saw them."""
    p_all = np.empty((data.n, data.n_arms))
    v_all = np.empty((data.n, data.n_arms))
    for f in np.unique(fold):
        held = fold == f
        pred = _fit(name, data.subset(~held), seed).predict(data.features[held])
        p_all[held], v_all[held] = pred.p, pred.value
    return Prediction(p=p_all, value=v_all)


def run_budget(
    data: IncentiveData,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    budget: str = "30%",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    test_fraction: float = 0.5,
    seed: int = 0,
    n_bootstrap: int = 500,
    plots: bool = True,
    caps: Mapping[str, int] | None = None,
    crossfit: bool = False,
    select: str | None = None,
) -> BudgetRunResult:
    """Train ``models`` on a random part of ``data``, evaluate on the rest (see the module docstring).

    ``caps`` (arm name -> most customers) applies to the allocation written at ``budget``; the curves are
    uncapped. With ``crossfit`` the customers are split in two folds, each predicted by models trained on the
    other, and every customer is evaluated (``test_fraction`` is then unused). With ``select`` (a rule of
    :mod:`eoca.budget.select`) the campaign's policy is chosen among the candidates by validation on the
    training customers only (per fold when cross-fitting); it is evaluated beside the others as
    ``selected (RULE): NAME`` and is the allocation written.
    """
    if not models:
        raise DataValidationError("run_budget needs at least one model")
    if select is not None and select not in SELECTION_RULES:
        raise DataValidationError(f"selection rule {select!r} is not one of {SELECTION_RULES} (or none)")
    if select is not None and caps:
        raise DataValidationError(
            "per-arm caps apply to the solver's allocation, not to a selected policy: run without a selection "
            "rule (--select none) to allocate with caps"
        )
    preds: dict[str, Prediction] = {}
    fit_s: dict[str, float] = {}
    fold = crossfit_folds(data.n, seed) if crossfit else None
    if fold is not None:
        train, test = data.subset(fold != 0), data
        for name in models:
            t0 = time.perf_counter()
            preds[name] = crossfit_predict(data, name, seed, fold)
            fit_s[name] = time.perf_counter() - t0
    else:
        train, test = data.split(test_fraction, seed)
        for name in models:
            t0 = time.perf_counter()
            preds[name] = _fit(name, train, seed).predict(test.features)
            fit_s[name] = time.perf_counter() - t0
    full = test.treat_all_cost()
    b_abs = parse_budget(budget, full)
    simulated = test.truth is not None
    curves: list[CurvePoint] = []
    goal_rows: list[dict[str, Any]] = []
    ope_rows: list[dict[str, Any]] = []
    if simulated:
        oracle = oracle_curve(test, fractions)
        curves += oracle
        for name, pred in preds.items():
            curves += budget_curve(name, pred, test, fractions)
        goal_rows = _simulated_goals(test, preds, full, seed)
        ref = oracle[-1].value
    else:
        curves += _snips_curves(test, preds, fractions, full, seed)
        ref = max((p.value for p in curves if p.fraction == max(fractions)), default=0.0)
    aucc_by = {
        name: aucc([p for p in curves if p.policy == name], ref) for name in dict.fromkeys(p.policy for p in curves)
    }
    best = max(preds, key=lambda m: aucc_by.get(m, -np.inf))
    pols = budget_policies(test, preds, best, b_abs)
    selection_rows: list[dict[str, Any]] = []
    selected: str | None = None
    if select is not None:
        frac = b_abs / full if full > 0 else 0.0
        if fold is not None:
            probs, sels = crossfit_selected(data, models, frac, _fit, fold, preds, rule=select, seed=seed)
        else:
            sel = select_policy(train, models, frac, _fit, rule=select, seed=seed)
            probs, sels = apply_selection(sel.chosen, train, test, frac, _fit, preds, seed=seed), [sel]
        for i, s in enumerate(sels):
            selection_rows += [{"fold": i if fold is not None else "train", **r} for r in s.to_rows()]
        selected = f"selected ({select}): " + " / ".join(dict.fromkeys(s.chosen for s in sels))
        pols[selected] = probs
    ope_rows = _ope_at_budget(test, pols, n_bootstrap, seed)
    mu_name = f"{best}, {'cross-fitted' if crossfit else 'fitted on the training part'}"
    paired = paired_rows(test, pols, preds[best].value, mu_name, n_bootstrap, seed)
    cap_idx = {}
    for arm_name, m in (caps or {}).items():
        if arm_name not in test.arm_names:
            raise DataValidationError(f"cap on unknown arm '{arm_name}'; arms are {test.arm_names}")
        cap_idx[test.arm_names.index(arm_name)] = int(m)
    sol = allocate(preds[best], test, b_abs, caps=cap_idx or None)
    cert = {**sol.certificate.to_dict(), "model": best, "budget": b_abs, "predicted_cost": sol.cost}
    chosen_arm, policy_name = sol.arm, best
    if selected is not None:
        chosen_arm, policy_name = realise_policy(pols[selected], seed), selected
        cert["allocation_policy"] = selected
        cert["note"] = (
            f"the dual bound, value and gap certify the solver's allocation on {best}'s predictions; "
            "allocation.parquet holds the selected policy"
        )
    if simulated:
        true_v, true_c = true_outcome(test, chosen_arm)
        cert.update(true_incremental_value=true_v, true_cost=true_c)
    cost_m = test.cost_matrix(preds[best].p)
    rows = np.arange(test.n)
    allocation = pa.table(
        {
            "customer_id": test.customer_id,
            "arm": pa.array([test.arms[a].name for a in chosen_arm]),
            "policy": pa.array([policy_name] * test.n),
            "predicted_value": preds[best].value[rows, chosen_arm],
            "predicted_uplift": preds[best].uplift[rows, chosen_arm],
            "predicted_cost": cost_m[rows, chosen_arm],
        }
    )
    uplift_rows = _uplift_rows(test, preds)
    for r in uplift_rows:
        r["aucc"] = aucc_by.get(r["model"])
    result = BudgetRunResult(
        data_name=data.name,
        n_train=train.n,
        n_test=test.n,
        budget=b_abs,
        full_cost=full,
        simulated=simulated,
        fit_seconds=fit_s,
        curves=curves,
        goal_rows=goal_rows,
        uplift_rows=uplift_rows,
        ope_rows=ope_rows,
        paired_rows=paired,
        certificate=cert,
        best_model=best,
        allocation=allocation,
        selection_rows=selection_rows,
        selected_policy=selected,
    )
    if plots:
        result.plots["budget_curves.png"] = budget_curve_chart(result)
    return result


def realise_policy(probs: np.ndarray, seed: int) -> np.ndarray:
    """One arm per customer, int64 (n,), from policy probabilities (n, k): a deterministic row keeps its arm;
    among the other rows each incentive arm t >= 1 goes to round(sum of its probabilities) customers, drawn
    without replacement with chances proportional to them (Efraimidis-Spirakis keys), so a policy that sends an
    arm to a random share of customers sends it to exactly that many; the rest get the control."""
    k = probs.shape[1]
    out = probs.argmax(axis=1).astype(np.int64)
    frac = np.flatnonzero(probs.max(axis=1) < 1.0)
    if frac.size == 0:
        return out
    out[frac] = 0
    free = np.ones(frac.size, dtype=bool)
    rng = np.random.default_rng(seed)
    for t in range(1, k):
        p = probs[frac, t]
        m = min(round(float(p.sum())), int((free & (p > 0)).sum()))
        if m <= 0:
            continue
        with np.errstate(divide="ignore"):
            key = np.where(free & (p > 0), np.log(rng.random(frac.size)) / p, -np.inf)
        take = np.argpartition(-key, m - 1)[:m]
        out[frac[take]] = t
        free[take] = False
    return out


def _simulated_goals(test: IncentiveData, preds: dict[str, Prediction], full: float, seed: int) -> list[dict[str, Any]]:
    """True incremental value at the goal budgets: each model, the baselines, and the share of the oracle."""
    assert test.truth is not None
    t = test.truth
    rows_out: list[dict[str, Any]] = []
    from eoca.budget.solver import solve_budget

    for f in GOAL_FRACTIONS:
        b = f * full
        orc_v, orc_c = true_outcome(test, solve_budget(t.value, t.expected_cost, b).arm)
        entries: list[tuple[str, float, float]] = [("oracle", orc_v, orc_c)]
        for name, pred in preds.items():
            entries.append((name, *true_outcome(test, allocate(pred, test, b).arm)))
            entries.append((f"{name}:top_uplift", *true_outcome(test, top_uplift_policy(pred, test, b))))
        probs = random_policy(test, b, t.expected_cost)
        rand_v = float(((probs * t.value).sum(axis=1) - t.value[:, 0]).sum())
        rand_c = float((probs * t.expected_cost).sum())
        entries.append(("random", rand_v, rand_c))
        for name, v, c in entries:
            rows_out.append(
                {
                    "fraction": f,
                    "budget": b,
                    "policy": name,
                    "true_incremental_value": v,
                    "true_cost": c,
                    "cost_over_budget": c / b if b > 0 else None,
                    "share_of_oracle": v / orc_v if orc_v > 0 else None,
                }
            )
    del seed
    return rows_out


def _snips_curves(
    test: IncentiveData, preds: dict[str, Prediction], fractions: Sequence[float], full: float, seed: int
) -> list[CurvePoint]:
    """SNIPS incremental value (x n customers) along the budgets, with bootstrap intervals of the difference to
    giving nobody an incentive."""
    out: list[CurvePoint] = []
    control = np.zeros(test.n, dtype=np.int64)
    for f in fractions:
        b = f * full
        pols = {name: allocate(pred, test, b).arm for name, pred in preds.items()}
        res = snips_policies(test, {**pols, "control": control}, n_bootstrap=200, seed=seed)
        base = res["control"].spend_per_mille / 1000.0
        for name, arm in pols.items():
            pv = res[name]
            v = (pv.spend_per_mille / 1000.0 - base) * test.n
            lo, hi = ((x / 1000.0 - base) * test.n for x in pv.spend_per_mille_ci)
            cost = float(test.cost_matrix(preds[name].p)[np.arange(test.n), arm].sum())
            out.append(CurvePoint(name, f, b, v, cost, (lo, hi)))
    return out


def budget_policies(
    test: IncentiveData, preds: Mapping[str, Prediction], best: str, budget: float
) -> dict[str, np.ndarray]:
    """The policies compared at ``budget``: each model's solver allocation (arms, (n,)), the best model's
    top-uplift and single-arm policies, and as probabilities (n, k): random targeting, the best incentive arm
    (by its logged mean value) sent to random customers at the same expected cost ("untargeted"), and giving
    nobody anything ("control")."""
    pols: dict[str, np.ndarray] = {name: allocate(pred, test, budget).arm for name, pred in preds.items()}
    pb = preds[best]
    pols[f"{best}:top_uplift"] = top_uplift_policy(pb, test, budget)
    for t in range(1, test.n_arms):
        pols[f"{best}:only_{test.arms[t].name}"] = single_arm_policy(pb, test, budget, t)
    # random targeting and the untargeted best arm from the evaluated customers' own logged rates and means
    # (a baseline row; the selected policy takes them from its training customers)
    baselines = candidate_policies(test, {}, budget, untargeted_arm(test), logged_means(test, test.converted))
    pols["random"] = baselines.pop("random")
    pols.update(baselines)
    pols["control"] = np.zeros(test.n, dtype=np.int64)
    return pols


def _ope_at_budget(
    test: IncentiveData, pols: Mapping[str, np.ndarray], n_bootstrap: int, seed: int
) -> list[dict[str, Any]]:
    """SNIPS at the budget of every policy; lifts against random targeting with paired bootstrap intervals."""
    res = snips_policies(test, pols, reference="random", n_bootstrap=n_bootstrap, seed=seed)
    rows = []
    for r in res.to_rows():
        rows.append(
            {
                "policy": r["policy"],
                "spend_per_customer": r["spend_per_mille"] / 1000.0,
                "spend_ci_low": r["spend_per_mille_ci_low"] / 1000.0,
                "spend_ci_high": r["spend_per_mille_ci_high"] / 1000.0,
                "lift_vs_random_pct": r["spend_lift_pct"],
                "lift_ci_low": r["spend_lift_ci_low"],
                "lift_ci_high": r["spend_lift_ci_high"],
                "matched": r["matched"],
            }
        )
    return rows


def paired_rows(
    test: IncentiveData,
    pols: Mapping[str, np.ndarray],
    mu: np.ndarray,
    mu_name: str,
    n_bootstrap: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Every policy minus random targeting, by SNIPS and by the doubly robust estimator with ``mu`` (n, k) as
    the outcome model (held-out or cross-fitted predictions), on the same bootstrap resamples."""
    diffs = paired_differences(
        test.arm,
        test.propensity,
        test.value,
        pols,
        n_arms=test.n_arms,
        reference="random",
        mu=mu,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    rows = []
    for d in diffs:
        row = d.to_row()
        row["estimator"] = "snips" if d.estimator == "snips" else f"dr (outcome model: {mu_name})"
        rows.append(row)
    return rows


def _uplift_rows(test: IncentiveData, preds: dict[str, Prediction]) -> list[dict[str, Any]]:
    """Qini coefficient and uplift AUC (conversion) per model and arm vs control, scikit-uplift's definitions."""
    out = []
    for name, pred in preds.items():
        for t in range(1, test.n_arms):
            sel = (test.arm == t) | (test.arm == 0)
            y = test.converted[sel]
            tr = (test.arm[sel] == t).astype(int)
            score = pred.p[sel, t] - pred.p[sel, 0]
            ok = y.min() != y.max() and tr.min() != tr.max()
            out.append(
                {
                    "model": name,
                    "arm": test.arms[t].name,
                    "qini_auc": qini_auc_score(y, score, tr) if ok else None,
                    "uplift_auc": uplift_auc_score(y, score, tr) if ok else None,
                }
            )
    return out


# --- report ---------------------------------------------------------------------------------------------------


def budget_curve_chart(result: BudgetRunResult) -> bytes:
    """Incremental value against the budget (share of the treat-everyone cost), one line per policy."""
    import matplotlib.pyplot as plt

    from eoca.report import plots  # selects the headless backend before pyplot is used

    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    try:
        names = list(dict.fromkeys(p.policy for p in result.curves))
        for i, name in enumerate(names):
            pts = [p for p in result.curves if p.policy == name]
            x = np.array([p.fraction for p in pts]) * 100
            y = np.array([p.value for p in pts])
            color = "#1c2733" if name == "oracle" else plots.PALETTE[i % len(plots.PALETTE)]
            ax.plot(
                x, y, marker="o", markersize=3, label=name, color=color, linestyle="--" if name == "oracle" else "-"
            )
            lo = np.array([p.value_ci[0] for p in pts])
            hi = np.array([p.value_ci[1] for p in pts])
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(x, lo, hi, alpha=0.15, color=color)
        ax.set_xlabel("budget, % of the treat-everyone cost")
        what = "true expected" if result.simulated else "SNIPS (95% bootstrap band)"
        ax.set_ylabel(f"incremental value, {what}")
        ax.set_title(f"Budget curves on {result.data_name} ({result.n_test:,} held-out customers)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=144)
        return buf.getvalue()
    finally:
        plt.close(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not np.isfinite(v):
            return ""
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def report_markdown(result: BudgetRunResult) -> str:
    """The report section (Markdown) of a budget run."""
    c = result.certificate
    parts = [
        f"## Budget allocation: {result.data_name}\n",
        f"Trained on {result.n_train:,} customers, evaluated on {result.n_test:,} held out. Treat-everyone cost "
        f"{result.full_cost:,.0f}; budget {result.budget:,.0f}. Best model by AUCC: **{result.best_model}**.\n",
        *(
            [
                "Policy chosen by validation on the training customers (docs/budget.md): "
                f"**{result.selected_policy}**; it is the allocation written.\n"
            ]
            if result.selected_policy
            else []
        ),
        "### Certificate of the allocation at the budget\n",
        f"price lambda = {c['price']:.6g}; dual bound {c['dual_bound']:,.2f}; integer value {c['value']:,.2f}; "
        f"gap {c['gap']:.4g} (at most one customer's value: bound {c['gap_bound']:.4g}); "
        f"proven optimal: {c['optimal']}.\n",
    ]
    if result.simulated:
        parts += [
            "### True incremental value at 10/30/50% of the treat-everyone cost\n",
            markdown_table(result.goal_rows),
        ]
    if result.selection_rows:
        parts += [
            "### Policy selection: cross-fitted validation gain over random targeting (training customers only)\n",
            markdown_table(result.selection_rows),
        ]
    parts += [
        "### Off-policy value at the budget (SNIPS, lifts against random targeting)\n",
        markdown_table(result.ope_rows),
        "### Each policy minus random targeting (paired bootstrap; SNIPS and doubly robust)\n",
        markdown_table(result.paired_rows),
        "### Uplift ranking (conversion, per arm vs control) and AUCC\n",
        markdown_table(result.uplift_rows),
        "### Fit and predict time (s)\n",
        markdown_table([{"model": k, "seconds": v} for k, v in result.fit_seconds.items()]),
    ]
    if "budget_curves.png" in result.plots:
        parts.append("![budget curves](budget_curves.png)\n")
    return "\n".join(parts)


def write_budget_run(result: BudgetRunResult, out: str | Path) -> Path:
    """Write allocation.parquet, certificate.json, curves/goals/ope/uplift CSVs, plots and report.md."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(result.allocation, folder / "allocation.parquet")
    write_json(result.certificate, folder / "certificate.json")
    write_csv(result.curve_rows(), folder / "budget_curves.csv")
    if result.goal_rows:
        write_csv(result.goal_rows, folder / "goals.csv")
    write_csv(result.ope_rows, folder / "ope.csv")
    write_csv(result.paired_rows, folder / "ope_paired.csv")
    write_csv(result.uplift_rows, folder / "uplift.csv")
    if result.selection_rows:
        write_csv(result.selection_rows, folder / "selection.csv")
    for name, png in result.plots.items():
        write_bytes(png, folder / name)
    write_text(report_markdown(result), folder / "report.md")
    return folder


def report_section(result: BudgetRunResult) -> Any:
    """The HTML report section of a budget run (for ``eoca run``)."""
    from eoca.report.render import Facts, Image, Note, Section, Table

    c = result.certificate
    blocks: list[Any] = [
        Facts(
            [
                ("customers (train / held out)", f"{result.n_train:,} / {result.n_test:,}"),
                ("treat-everyone cost", f"{result.full_cost:,.0f}"),
                ("budget", f"{result.budget:,.0f}"),
                ("best model (AUCC)", result.best_model),
                *([("policy chosen by validation", result.selected_policy)] if result.selected_policy else []),
                ("price lambda", f"{c['price']:.6g}"),
                ("dual bound / integer value", f"{c['dual_bound']:,.2f} / {c['value']:,.2f}"),
                ("gap (bound: one customer's value)", f"{c['gap']:.4g} ({c['gap_bound']:.4g})"),
            ]
        )
    ]
    if "budget_curves.png" in result.plots:
        blocks.append(Image(result.plots["budget_curves.png"], "budget curves", "Incremental value by budget."))
    if result.goal_rows:
        blocks.append(Table(result.goal_rows, caption="True incremental value at 10/30/50% of the treat-everyone cost"))
    blocks.append(Table(result.ope_rows, caption="SNIPS value at the budget; lifts against random targeting"))
    blocks.append(
        Table(
            result.paired_rows,
            caption="Each policy minus random targeting at the budget, SNIPS and doubly robust, paired bootstrap",
        )
    )
    blocks.append(Table(result.uplift_rows, caption="Qini coefficient and uplift AUC per arm (conversion), AUCC"))
    blocks.append(
        Note(
            "The allocation is exact up to the reported gap, which is at most one customer's value; values and "
            "costs of the models' allocations are predictions, the tables score them with the truth (simulated "
            "data) or by SNIPS on the randomized log.",
            kind="approximation",
        )
    )
    return Section(
        "Incentive budget allocation",
        "Which incentive, if any, each customer gets so that the campaign's incremental value is highest within the "
        "budget (docs/budget.md).",
        blocks,
    )


def pipeline_section(sim_config: Any, folder: Path, models: Sequence[str] | None = None) -> Any:
    """Run the budget job on the incentive campaign of a simulated world, write it to ``folder`` and return the
    report section. The world is regenerated from its config (deterministic), so ``eoca run`` need not keep it."""
    from eoca.budget.data import from_world
    from eoca.simulate.simulator import generate_world

    chosen = DEFAULT_MODELS if models is None else models
    # the same policy choice as `eoca budget`'s default, so that both commands answer alike for one campaign
    result = run_budget(
        from_world(generate_world(sim_config)), models=chosen, seed=sim_config.seed, select=DEFAULT_SELECTION
    )
    write_budget_run(result, folder)
    return report_section(result)
