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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from eoca.evaluation import metrics as M
from eoca.evaluation.metrics import ORACLE
from eoca.io import atomic_path
from eoca.risk import eligible_mask

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


@dataclass(frozen=True)
class OfflineMetrics:
    """Every comparison metric of one predictor on one split (see the module docstring and :data:`COLUMNS`);
    ``None`` where the metric does not apply to the model or the data. Fields follow :data:`METRIC_KEYS`, then
    the sample counts."""

    auc: float | None = None
    logloss: float | None = None
    ctr_auc: float | None = None
    ctr_logloss: float | None = None
    mse: float | None = None
    mae: float | None = None
    gini: float | None = None
    spearman: float | None = None
    thc: float | None = None
    tha: float | None = None
    hits: float | None = None
    true_mae: float | None = None
    true_spearman: float | None = None
    true_value_argmax: float | None = None
    argmax_share_of_oracle: float | None = None
    n_exposures: float | None = None  # test exposures scored
    n_conversions: float | None = None  # of which converted

    def to_row(self) -> dict[str, float | None]:
        """The metrics as a flat dict in column order (CSV, JSON and the comparison tables)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ComparisonResult:
    """One row of metrics per model (plus the oracle on simulated data) and the files written."""

    dataset: str
    split: str
    rows: list[dict[str, Any]]
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def _safe(fn: Callable[[], float]) -> float | None:
    v = fn()
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def metrics_from_predictor(
    tolerance: np.ndarray,
    risk: np.ndarray,
    labels: Mapping[str, np.ndarray],
    predict: PairPredictor,
    tasks: frozenset[str],
    truth_etv: np.ndarray | None = None,
    grid_etv: np.ndarray | None = None,
    exposure_pred: Mapping[str, np.ndarray] | None = None,
) -> OfflineMetrics:
    """Every comparison metric of one predictor on the exposures in ``labels`` (see the module docstring).

    Args:
        tolerance: int (N,) risk tolerance of every customer of the dataset (positions index it).
        risk: int (k,) risk level of every fund.
        labels: ``customer_pos``, ``fund_pos``, ``converted``, ``amount`` (and ``clicked``, ``weight``), shape (m,).
        predict: maps (customer_pos, fund_pos) arrays to at least ``p`` and ``etv`` arrays.
        tasks: which task families apply; metrics of other tasks are None.
        truth_etv: the (N, k) true ETV of a simulated dataset, or None.
        grid_etv: the predictor's (N, k) ETV of every customer x fund when the caller holds it already (a run's
            score matrix); the decision metrics then read it instead of predicting every pair a second time.
        exposure_pred: the predictor's output for the exposures in ``labels`` (same order, at least ``p`` and
            ``etv``) when the caller holds it already; ``predict`` is then not asked for them.
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
        return OfflineMetrics(**out)
    pred: Mapping[str, np.ndarray]
    if exposure_pred is None:
        pred = predict(cust, fund)
    else:
        pred = exposure_pred
        wrong = {k: np.asarray(v).shape for k, v in pred.items() if np.asarray(v).shape != cust.shape}
        if wrong:
            raise ValueError(f"exposure_pred must hold one value per exposure ({cust.size}); got shapes {wrong}")
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
    k = int(np.asarray(risk).size)
    if k == 1:
        return OfflineMetrics(**out)  # one item: no choice between items, so no decision metrics

    # Decisions: every test customer x every fund, argmax among the funds the risk rule allows.
    customers = np.unique(cust)
    if grid_etv is not None:
        grid_matrix = np.asarray(grid_etv)
        n_customers = int(np.asarray(tolerance).size)
        if grid_matrix.shape != (n_customers, k):
            raise ValueError(
                f"grid_etv must hold every customer x fund, shape ({n_customers}, {k}); got {grid_matrix.shape}"
            )
        etv_matrix = grid_matrix[customers].astype(np.float64)
    else:
        grid = predict(np.repeat(customers, k), np.tile(np.arange(k, dtype=np.int64), customers.size))
        etv_matrix = grid["etv"].astype(np.float64).reshape(customers.size, k)
    eligible = eligible_mask(np.asarray(tolerance)[customers], risk)
    if grid_etv is not None and not np.isfinite(etv_matrix[eligible]).all():
        row, fund_pos = np.argwhere(eligible & ~np.isfinite(etv_matrix))[0]
        raise ValueError(
            f"grid_etv has no finite ETV for customer position {customers[row]}, fund position {fund_pos}, a pair "
            "the risk rule allows: score every pair the decisions read"
        )
    chosen = np.full(np.asarray(tolerance).size, -1, dtype=np.int64)
    chosen[customers] = M.argmax_fund(etv_matrix, eligible)
    hits = M.hit_totals(chosen, cust, fund, conv, amount)
    out.update({"thc": hits["thc"], "tha": hits["tha"], "hits": hits["hits"]})
    if truth_etv is not None:
        true = truth_etv[customers]
        # Errors over eligible pairs only: ineligible pairs are never shown (and a run's grid leaves them NaN).
        tm = M.true_etv_metrics(etv_matrix, true, eligible)
        out["true_mae"] = _safe(lambda: tm["true_mae"])
        out["true_spearman"] = _safe(lambda: tm["true_spearman"])
        out["true_value_argmax"] = tm["true_value_argmax"]
        out["argmax_share_of_oracle"] = _safe(lambda: tm["argmax_share_of_oracle"])
    return OfflineMetrics(**out)


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
            parts += [
                f"**{name}**",
                "",
                "| decile | customers | mean predicted | mean actual | share of value |",
                "|---:|---:|---:|---:|---:|",
            ]
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


def plot_gain(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    perfect: tuple[np.ndarray, np.ndarray],
    path: str | os.PathLike[str],
    title: str,
) -> Path:
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
