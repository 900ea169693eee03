"""``eoca evaluate`` and the offline step of ``eoca run``: train or load models, score the test split, and hand
the arrays to :mod:`eoca.evaluation.compare`, which computes the metrics and renders the tables.

Evaluation itself never trains a model or imports the simulator; this module is where data, training and
evaluation meet.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eoca.data import Dataset
from eoca.data.dataset import split_exposures
from eoca.errors import ConfigError
from eoca.evaluation import metrics as M
from eoca.evaluation.compare import (
    CSV_COLUMNS,
    ComparisonResult,
    OfflineMetrics,
    PairPredictor,
    metrics_from_predictor,
    plot_gain,
    plot_hits,
    render_markdown,
)
from eoca.evaluation.metrics import ORACLE
from eoca.io import write_csv, write_json, write_text, write_yaml
from eoca.training.config import TrainConfig, coerce_train_config

if TYPE_CHECKING:
    from eoca.simulate import TruthArrays
    from eoca.training import TrainedModel

__all__ = [
    "compare_models",
    "dataset_truth",
    "exposure_predictions",
    "offline_metrics",
    "oracle_metrics",
    "risk_arrays",
    "split_exposures",
    "trained_predictor",
]


def offline_metrics(
    trained: TrainedModel,
    dataset: Dataset,
    split: str = "test",
    truth: TruthArrays | None = None,
    grid_etv: np.ndarray | None = None,
    exposure_pred: Mapping[str, np.ndarray] | None = None,
) -> OfflineMetrics:
    """The comparison metrics of a trained model on ``split`` of ``dataset``.

    ``truth``: the simulator's true arrays when the caller holds them already (built from the dataset otherwise).
    ``grid_etv``: the model's (N, k) ETV matrix (:meth:`TrainedModel.score_matrix`) when the caller has scored every
    pair already, so the decision metrics do not score them again. ``exposure_pred``: the model's predictions of
    the split's exposures in file order (:func:`exposure_predictions`) when the caller needs them too.
    """
    labels = split_exposures(dataset, split)
    truth = truth if truth is not None else dataset_truth(dataset)
    tol, risk = risk_arrays(dataset)
    return metrics_from_predictor(
        tol,
        risk,
        labels,
        trained_predictor(trained, dataset),
        frozenset(trained.model.tasks),
        None if truth is None else truth.etv,
        grid_etv,
        exposure_pred,
    )


def exposure_predictions(trained: TrainedModel, dataset: Dataset, split: str = "test") -> dict[str, np.ndarray]:
    """The model's predictions of ``split``'s exposures in file order, scored as :func:`offline_metrics` scores
    them (batches of the config's ``eval_batch_size``: another batch size changes a network's last bits)."""
    labels = split_exposures(dataset, split)
    return dict(trained_predictor(trained, dataset)(labels["customer_pos"], labels["fund_pos"]))


def trained_predictor(trained: TrainedModel, dataset: Dataset) -> PairPredictor:
    """A (customer_pos, fund_pos) -> predictions function of a trained model on ``dataset``."""
    batch = int(trained.config.eval_batch_size)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return dict(trained.predict_pairs(dataset, c, f, batch_size=batch))

    return predict


def risk_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Customer risk tolerances (N,) and fund risk levels (k,) of ``dataset``, int64."""
    tol = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)
    risk = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    return tol, risk


def dataset_truth(dataset: Dataset) -> TruthArrays | None:
    """The simulator's true p, mu, sigma and ETV matrices of a simulated dataset, or None for real data."""
    if dataset.truth is None:
        return None
    from eoca.simulate import truth_arrays

    return truth_arrays(dataset)


def oracle_metrics(
    dataset: Dataset, labels: Mapping[str, np.ndarray], truth: TruthArrays | None = None
) -> OfflineMetrics:
    """The metrics of the simulator's true p and ETV: what a perfect model would score on these outcomes."""
    ta = truth if truth is not None else dataset_truth(dataset)
    if ta is None:
        raise ConfigError(f"dataset '{dataset.spec.name}' has no truth table; the oracle needs simulated data")

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return {"p": ta.p[c, f], "etv": ta.etv[c, f]}

    tol, risk = risk_arrays(dataset)
    return metrics_from_predictor(tol, risk, labels, predict, frozenset({"conversion", "etv"}), ta.etv)


def compare_models(
    dataset: Dataset,
    models: list[str],
    out: Path,
    *,
    config: TrainConfig | Mapping[str, Any] | None = None,
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
    labels = split_exposures(dataset, split)
    truth = dataset_truth(dataset)
    tol, risk = risk_arrays(dataset)
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
            predict, tasks = trained_predictor(trained, dataset), frozenset(trained.model.tasks)
            epochs = len(trained.history)
            configs[name] = trained.config.model_dump(mode="json")
        row: dict[str, Any] = {"model": name, "tasks": ",".join(sorted(tasks))}
        row.update(
            metrics_from_predictor(tol, risk, labels, predict, tasks, None if truth is None else truth.etv).to_row()
        )
        row["epochs"] = epochs
        row["train_seconds"] = round(seconds, 1)
        rows.append(row)
        if single:
            test_etv[name] = np.asarray(predict(labels["customer_pos"], labels["fund_pos"])["etv"], dtype=np.float64)
    if truth is not None:
        rows.append(
            {
                "model": ORACLE,
                "tasks": "truth",
                **oracle_metrics(dataset, labels, truth).to_row(),
                "epochs": "",
                "train_seconds": "",
            }
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
            flat,
            out / "deciles.csv",
            ("model", "decile", "customers", "mean_predicted", "mean_actual", "share_of_value"),
        )
        curves = {n: M.gain_curve(amount, e, w) for n, e in test_etv.items()}
        paths["png"] = plot_gain(
            curves, M.gain_curve(amount, amount, w), out / "gain.png", f"Cumulative gain on {title}"
        )
    else:
        paths["png"] = plot_hits(rows, out / "thc_tha.png", f"THC / THA by model on {title}")
    return ComparisonResult(dataset=dataset.spec.name, split=split, rows=rows, markdown=md, paths=paths)
