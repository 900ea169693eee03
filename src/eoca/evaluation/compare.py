"""Offline comparison of ETV models, after EOCA Tables 1-2 (prediction metrics) and Figure 5 (THC / THA).

What each number means (all on the test split's logged exposures, computed by :mod:`eoca.evaluation.metrics`):

* ``auc``, ``logloss``: conversion (``p`` = pCTCVR over the entire exposure space) against ``converted``.
  ``ctr_auc``, ``ctr_logloss``: pCTR against ``clicked``, for models with a click head on data with clicks.
* ``mse``, ``mae``: predicted ETV against the realised amount (0 for non-converters) over the entire test space,
  in currency units. This is EOCA's definition (section 5.1: "ETV prediction task", evaluated "on the entire
  sample space", which is what penalises ZILN's selection bias); it is *not* restricted to converters.
* ``gini``, ``spearman``: normalised Gini and Spearman rank correlation of ETV against the realised amount
  (the ZILN paper's ranking metrics).
* ``thc``, ``tha`` (EOCA Eq. 15-16): each test customer is given the risk-eligible fund with the highest
  predicted ETV; THC counts that customer's test exposures *on that fund* that converted, THA sums their
  amounts. Logged data only reveal outcomes of the funds actually shown, so ``hits`` (exposures whose fund
  is the chosen one) is reported too; compare THC/THA between models on the same data only.
* Simulated data only (the dataset has a truth table): ``true_mae`` and ``true_spearman`` of the predicted
  ETV matrix against the true ETV over every (test customer, eligible fund) pair, and ``true_value_argmax``:
  the total true ETV of giving each test customer its argmax fund, with ``argmax_share_of_oracle`` (the same
  for the true ETV's argmax = 1). An ``oracle`` row computes every metric from the truth itself: the ceiling
  the logged outcomes' noise allows.

Conversion metrics of a model that does not declare the ``conversion`` task in ``EtvModel.tasks`` are ``None``
(shown "—"), e.g. DNN-V's. ETV metrics are computed for **every** model, since every model scores an ETV (for
conversion-only models such as DNN-C and ESMM it is ``p`` times the train converters' constant amount): the
table then shows what the ETV a user would get from ``eoca score`` is worth. THC/THA and the true value of the
argmax are decisions, computed for every model from its ``etv`` output.

Single-item (customer-value) data: THC/THA are the same for every model when there is one item, so they are
left out; instead the comparison writes a **decile table** per model (mean predicted vs mean actual value per
predicted decile, with the decile's share of the total value) and a **cumulative-gain chart** (``gain.png``).

Sampling weights (an oversampled design, see docs/data.md) make every metric weighted: each test exposure
counts as ``weight`` population exposures. Peers that are not neural zoo models (``bgnbd``, see
:mod:`eoca.peers`) are fitted on the same train split and scored on the same test rows, into the same table.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.evaluation import metrics as M
from eoca.io import atomic_path, write_csv, write_json, write_text, write_yaml

ORACLE = "oracle"

# (key, header, task the metric belongs to or None for decisions every model makes, format)
COLUMNS: tuple[tuple[str, str, str | None, str], ...] = (
    ("auc", "AUC", "conversion", "{:.4f}"),
    ("logloss", "logloss", "conversion", "{:.5f}"),
    ("ctr_auc", "CTR AUC", "ctr", "{:.4f}"),
    ("ctr_logloss", "CTR logloss", "ctr", "{:.4f}"),
    ("mse", "MSE", "etv", "{:.4g}"),
    ("mae", "MAE", "etv", "{:.2f}"),
    ("gini", "Gini", "etv", "{:.4f}"),
    ("spearman", "Spearman", "etv", "{:.4f}"),
    ("thc", "THC", None, "{:,.0f}"),
    ("tha", "THA", None, "{:,.0f}"),
    ("hits", "hits", None, "{:,.0f}"),
    ("true_mae", "true-ETV MAE", "etv", "{:.3f}"),
    ("true_spearman", "true-ETV Spearman", "etv", "{:.4f}"),
    ("true_value_argmax", "true value of argmax", None, "{:,.0f}"),
    ("argmax_share_of_oracle", "% of oracle", None, "{:.2%}"),
)
METRIC_KEYS: tuple[str, ...] = tuple(c[0] for c in COLUMNS)
_PREDICTION_KEYS = ("auc", "logloss", "ctr_auc", "ctr_logloss", "mse", "mae", "gini", "spearman")
_DECISION_KEYS = ("thc", "tha", "hits", "true_mae", "true_spearman", "true_value_argmax", "argmax_share_of_oracle")
_TRUTH_KEYS = ("true_mae", "true_spearman", "true_value_argmax", "argmax_share_of_oracle")
DASH = "—"

PairPredictor = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class ComparisonResult:
    """One row of metrics per model (plus the oracle on simulated data) and the files written."""

    dataset: str
    split: str
    rows: list[dict[str, Any]]
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def _eligible(dataset: Dataset, customers: np.ndarray) -> np.ndarray:
    """(len(customers), k) mask of the funds each customer may be shown (risk level <= tolerance)."""
    tol = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[customers]
    lvl = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    return np.asarray(lvl[None, :] <= tol[:, None])


def _safe(fn: Callable[[], float]) -> float | None:
    v = fn()
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def metrics_from_predictor(
    dataset: Dataset,
    labels: Mapping[str, np.ndarray],
    predict: PairPredictor,
    tasks: frozenset[str],
    truth_etv: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Every comparison metric of one predictor on the exposures in ``labels`` (see the module docstring).

    Args:
        labels: ``customer_pos``, ``fund_pos``, ``converted``, ``amount`` (and ``clicked``), shape (m,).
        predict: maps (customer_pos, fund_pos) arrays to at least ``p`` and ``etv`` arrays.
        tasks: which task families apply; metrics of other tasks are None.
        truth_etv: the (N, k) true ETV of a simulated dataset, or None.
    """
    cust = np.asarray(labels["customer_pos"], dtype=np.int64)
    fund = np.asarray(labels["fund_pos"], dtype=np.int64)
    conv = np.asarray(labels["converted"], dtype=np.float64)
    amount = np.asarray(labels["amount"], dtype=np.float64)
    w = np.asarray(labels["weight"], dtype=np.float64) if "weight" in labels else None
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    out["n_exposures"] = float(cust.size)
    out["n_conversions"] = float(conv.sum())
    if cust.size == 0:
        return out
    pred = predict(cust, fund)
    if "conversion" in tasks:
        out["auc"] = _safe(lambda: M.auc(conv, pred["p"], w))
        out["logloss"] = _safe(lambda: M.logloss(conv, np.clip(pred["p"], 0.0, 1.0), weight=w))
    if "ctr" in tasks and "clicked" in labels and "pctr" in pred:
        clicked = np.asarray(labels["clicked"], dtype=np.float64)
        out["ctr_auc"] = _safe(lambda: M.auc(clicked, pred["pctr"], w))
        out["ctr_logloss"] = _safe(lambda: M.logloss(clicked, np.clip(pred["pctr"], 0.0, 1.0), weight=w))
    etv = np.asarray(pred["etv"], dtype=np.float64)
    out["mse"] = M.mse(amount, etv, w)
    out["mae"] = M.mae(amount, etv, w)
    out["gini"] = _safe(lambda: M.normalized_gini(amount, etv, w))
    out["spearman"] = _safe(lambda: M.spearman(amount, etv, w))
    if dataset.n_funds == 1:
        return out  # one item: no choice between items, so no decision metrics

    # Decisions: every test customer x every fund, argmax among the funds the risk rule allows.
    customers = np.unique(cust)
    k = dataset.n_funds
    grid = predict(np.repeat(customers, k), np.tile(np.arange(k, dtype=np.int64), customers.size))
    etv_matrix = grid["etv"].astype(np.float64).reshape(customers.size, k)
    eligible = _eligible(dataset, customers)
    chosen = np.full(dataset.n_customers, -1, dtype=np.int64)
    chosen[customers] = M.argmax_fund(etv_matrix, eligible)
    hits = M.hit_totals(chosen, cust, fund, conv, amount)
    out.update({"thc": hits["thc"], "tha": hits["tha"], "hits": hits["hits"]})
    if truth_etv is not None:
        true = truth_etv[customers]
        tm = M.true_etv_metrics(etv_matrix, true, eligible)
        # Errors over eligible pairs only: ineligible pairs are never shown, so their predictions do not matter.
        out["true_mae"] = M.mae(true[eligible], etv_matrix[eligible])
        out["true_spearman"] = _safe(lambda: M.spearman(true[eligible], etv_matrix[eligible]))
        out["true_value_argmax"] = tm["true_value_argmax"]
        out["argmax_share_of_oracle"] = _safe(lambda: tm["argmax_share_of_oracle"])
    return out


def offline_metrics(trained: Any, dataset: Dataset, split: str = "test") -> dict[str, float | None]:
    """The comparison metrics of a :class:`~eoca.training.TrainedModel` on ``split`` of ``dataset``."""
    labels = split_labels(dataset, split)
    batch = int(trained.config.eval_batch_size)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return dict(trained.predict_pairs(dataset, c, f, batch_size=batch))

    return metrics_from_predictor(dataset, labels, predict, frozenset(trained.model.tasks), _truth_etv(dataset))


def split_labels(dataset: Dataset, split: str) -> dict[str, np.ndarray]:
    """The exposures of ``split`` (in file order): ``customer_pos``, ``fund_pos``, ``converted``, ``amount``,
    and ``clicked`` / ``weight`` where the dataset has them; every array has shape (m,)."""
    rows = np.flatnonzero(dataset.split_mask(split))
    exp = dataset.exposures
    out = {
        "customer_pos": dataset.customer_index(exp.column("customer_id"))[rows],
        "fund_pos": dataset.fund_index(exp.column("fund_id"))[rows],
        "converted": np.asarray(exp.column("converted").to_numpy(), dtype=np.float64)[rows],
        "amount": np.asarray(exp.column("amount").to_numpy(), dtype=np.float64)[rows],
    }
    for extra in ("clicked", "weight"):
        if extra in exp.column_names:
            out[extra] = np.asarray(exp.column(extra).to_numpy(), dtype=np.float64)[rows]
    return out


def _truth_etv(dataset: Dataset) -> np.ndarray | None:
    if dataset.truth is None:
        return None
    from eoca.simulate import truth_arrays

    return truth_arrays(dataset).etv


def oracle_metrics(dataset: Dataset, labels: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """The metrics of the simulator's true p and ETV: what a perfect model would score on these outcomes."""
    from eoca.simulate import truth_arrays

    ta = truth_arrays(dataset)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return {"p": ta.p[c, f], "etv": ta.etv[c, f]}

    return metrics_from_predictor(dataset, labels, predict, frozenset({"conversion", "etv"}), ta.etv)


# --- rendering -----------------------------------------------------------------------------------------------
def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    fmt = next(c[3] for c in COLUMNS if c[0] == key)
    return fmt.format(value)


def _table(rows: list[dict[str, Any]], keys: list[str], extra: list[tuple[str, str]]) -> str:
    headers = ["Model"] + [next(c[1] for c in COLUMNS if c[0] == k) for k in keys] + [h for _, h in extra]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for r in rows:
        cells = [r["model"]] + [_fmt(k, r.get(k)) for k in keys] + [str(r.get(k, "")) for k, _ in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    dataset_name: str,
    split: str,
    rows: list[dict[str, Any]],
    notes: list[str],
    decile_tables: Mapping[str, list[dict[str, float]]] | None = None,
) -> str:
    """Prediction quality (EOCA Tables 1-2) and decisions (Figure 5 plus the true-ETV columns); for
    single-item data (``decile_tables`` given) the decile table of each model instead of the decisions."""
    present = [k for k in METRIC_KEYS if any(r.get(k) is not None for r in rows)]
    pred_keys = [k for k in _PREDICTION_KEYS if k in present]
    dec_keys = [k for k in _DECISION_KEYS if k in present]
    parts = [
        f"## Model comparison on `{dataset_name}` ({split} split)",
        "",
        "### Prediction (EOCA Tables 1-2)",
        "",
    ]
    if decile_tables is not None:
        parts += [_table(rows, pred_keys, [("epochs", "epochs"), ("train_seconds", "train s")]), ""]
        parts += ["### Deciles of predicted value (mean predicted vs mean actual; share of the total value)", ""]
        for name, table in decile_tables.items():
            parts += [f"**{name}**", "", "| decile | customers | mean predicted | mean actual | share of value |",
                      "|---:|---:|---:|---:|---:|"]
            parts += [
                f"| {int(d['decile'])} | {d['customers']:,.0f} | {d['mean_predicted']:,.2f} | "
                f"{d['mean_actual']:,.2f} | {d['share_of_value']:.1%} |"
                for d in table
            ]
            parts.append("")
    else:
        parts += [
            _table(rows, pred_keys, []),
            "",
            "### Decisions: THC / THA (EOCA Eq. 15-16, Figure 5)" + (" and true ETV" if "true_mae" in present else ""),
            "",
            _table(rows, dec_keys, [("epochs", "epochs"), ("train_seconds", "train s")]),
            "",
        ]
    parts += [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


CSV_COLUMNS = ("model", "tasks", *METRIC_KEYS, "n_exposures", "n_conversions", "epochs", "train_seconds")


def plot_hits(rows: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> Path:
    """Bar charts of THC and THA per model (EOCA Figure 5), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(names) + 4), 4.2))
    for ax, key, label in ((axes[0], "thc", "THC (hit conversions)"), (axes[1], "tha", "THA (hit amount)")):
        vals = [float(r.get(key) or 0.0) for r in rows]
        colors = ["#999999" if n == ORACLE else "#3b6ea5" for n in names]
        ax.bar(range(len(names)), vals, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def plot_gain(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], perfect: tuple[np.ndarray, np.ndarray],
              path: str | os.PathLike[str], title: str) -> Path:
    """Cumulative-gain chart (share of customers targeted, best predicted first, vs share of the total value
    captured) of every model, with the perfect ranking and the random diagonal; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    ax.plot(*perfect, color="#999999", linestyle="--", label="perfect")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":", label="random")
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name)
    ax.set_xlabel("share of customers targeted (highest predicted first)")
    ax.set_ylabel("share of total realised value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _trained_predictor(trained: Any, dataset: Dataset) -> PairPredictor:
    batch = int(trained.config.eval_batch_size)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return dict(trained.predict_pairs(dataset, c, f, batch_size=batch))

    return predict


# --- the comparison ------------------------------------------------------------------------------------------
def compare_models(
    dataset: Dataset,
    models: list[str],
    out: Path,
    *,
    config: Any = None,
    runs: Path | None = None,
    progress: bool = True,
    split: str = "test",
) -> ComparisonResult:
    """Train (or reuse) each model; write ``comparison.md``, ``.csv``, ``.json``, ``config.yaml`` and
    ``thc_tha.png`` (several items) or ``gain.png`` plus ``deciles.csv`` (one item).

    Args:
        dataset: the data; models train on its train split, early-stop on valid and are scored on ``split``.
        models: zoo names or peers (:data:`eoca.peers.PEER_NAMES`), in table order.
        config: a :class:`~eoca.training.TrainConfig` or mapping shared by every model (``model`` is replaced).
        runs: folder of run folders ``runs/<model>``; a model whose ``model.pt`` exists there is loaded instead
            of trained, the others train into it. Default ``out/runs``, where interrupted runs resume.
    """
    from eoca.models.zoo import model_names_problem
    from eoca.peers import PEER_NAMES, make_peer
    from eoca.training import TrainedModel, train
    from eoca.training.config import coerce_train_config

    zoo = [m for m in models if m not in PEER_NAMES]
    problem = model_names_problem(zoo) if zoo else None
    if problem is None and len(set(models)) != len(models):
        problem = f"a model is listed twice in {','.join(models)}"
    if problem is not None:
        raise ConfigError(f"models: {problem} (peers: {', '.join(PEER_NAMES)})")
    base = coerce_train_config(config)
    out = Path(out)
    run_root = Path(runs) if runs is not None else out / "runs"
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    configs: dict[str, Any] = {}
    labels = split_labels(dataset, split)
    truth = _truth_etv(dataset)
    single = dataset.n_funds == 1
    test_etv: dict[str, np.ndarray] = {}
    for name in models:
        run_dir = run_root / name
        t0 = time.perf_counter()
        if name in PEER_NAMES:
            peer = make_peer(name)
            peer.fit(dataset)
            predict: PairPredictor = peer.predict_pairs_for(dataset)
            tasks, seconds = frozenset(peer.tasks), time.perf_counter() - t0
            epochs: int | str = ""
            configs[name] = peer.describe()
            notes.append(f"{name}: {peer.describe()['method']}")
        else:
            if runs is not None and (run_dir / "model.pt").exists():
                trained = TrainedModel.load(run_dir)
                notes.append(f"{name}: reused {run_dir}")
            else:
                trained = train(
                    dataset, base.model_copy(update={"model": name}), run_dir, resume=True, progress=progress
                )
            seconds = sum(float(h.get("seconds", 0.0)) for h in trained.history) or time.perf_counter() - t0
            predict, tasks, epochs = _trained_predictor(trained, dataset), frozenset(trained.model.tasks), len(
                trained.history
            )
            configs[name] = trained.config.model_dump(mode="json")
        row: dict[str, Any] = {"model": name, "tasks": ",".join(sorted(tasks))}
        row.update(metrics_from_predictor(dataset, labels, predict, tasks, truth))
        row["epochs"] = epochs
        row["train_seconds"] = round(seconds, 1)
        rows.append(row)
        if single:
            test_etv[name] = np.asarray(predict(labels["customer_pos"], labels["fund_pos"])["etv"], dtype=np.float64)
    if dataset.truth is not None:
        rows.append(
            {"model": ORACLE, "tasks": "truth", **oracle_metrics(dataset, labels), "epochs": "", "train_seconds": ""}
        )
        notes.append(
            f"{ORACLE}: the simulator's true p and ETV scored like a model "
            "(the expected ceiling; on a sample metric a model can beat it by chance)"
        )
    first = rows[0]
    weighted = "weight" in labels
    notes.insert(
        0,
        f"{int(first['n_exposures'] or 0):,} test exposures, {int(first['n_conversions'] or 0):,} "
        "conversions; MSE/MAE of ETV against the realised amount over the entire test space; "
        "— = the model has no such task"
        + ("; metrics weighted by the sampling weights (population, not sample)" if weighted else ""),
    )
    w = labels.get("weight")
    amount = labels["amount"]
    decile_tables = {n: M.deciles(amount, e, w) for n, e in test_etv.items()} if single else None
    md = render_markdown(dataset.spec.name, split, rows, notes, decile_tables)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "config": write_yaml(base.model_dump(mode="json"), out / "config.yaml"),
        "markdown": write_text(md, out / "comparison.md"),
        "csv": write_csv(rows, out / "comparison.csv", CSV_COLUMNS),
        "json": write_json(
            {
                "dataset": dataset.spec.name,
                "split": split,
                "models": models,
                "rows": rows,
                "notes": notes,
                "configs": configs,
                **({"deciles": decile_tables} if decile_tables is not None else {}),
            },
            out / "comparison.json",
        ),
    }
    title = f"{dataset.spec.name} ({split})"
    if decile_tables is not None:
        flat = [{"model": n, **d} for n, table in decile_tables.items() for d in table]
        paths["deciles"] = write_csv(
            flat, out / "deciles.csv", ("model", "decile", "customers", "mean_predicted", "mean_actual",
                                         "share_of_value")
        )
        curves = {n: M.gain_curve(amount, e, w) for n, e in test_etv.items()}
        paths["png"] = plot_gain(curves, M.gain_curve(amount, amount, w), out / "gain.png",
                                 f"Cumulative gain on {title}")
    else:
        paths["png"] = plot_hits(rows, out / "thc_tha.png", f"THC / THA by model on {title}")
    return ComparisonResult(dataset=dataset.spec.name, split=split, rows=rows, markdown=md, paths=paths)
