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
from eoca.errors import ConfigError
from eoca.evaluation.compare import (
    CSV_COLUMNS,
    ComparisonResult,
    metrics_from_predictor,
    plot_hits,
    render_markdown,
)
from eoca.evaluation.metrics import ORACLE
from eoca.io import write_csv, write_json, write_text, write_yaml
from eoca.training.config import TrainConfig, coerce_train_config

if TYPE_CHECKING:
    from eoca.simulate import TruthArrays
    from eoca.training import TrainedModel

__all__ = ["compare_models", "dataset_truth", "offline_metrics", "oracle_metrics", "risk_arrays"]


def offline_metrics(
    trained: TrainedModel, dataset: Dataset, split: str = "test", truth: TruthArrays | None = None
) -> dict[str, float | None]:
    """The comparison metrics of a trained model on ``split`` of ``dataset``.

    ``truth``: the simulator's true arrays when the caller holds them already (built from the dataset otherwise).
    """
    bound = trained.bind(dataset)
    labels = bound.exposure_labels(split)
    batch = int(trained.config.eval_batch_size)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        return dict(trained.predict_pairs(dataset, c, f, batch_size=batch))

    truth = truth if truth is not None else dataset_truth(dataset)
    tol, risk = risk_arrays(dataset)
    return metrics_from_predictor(
        tol, risk, labels, predict, frozenset(trained.model.tasks), None if truth is None else truth.etv
    )


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
) -> dict[str, float | None]:
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
    """Train (or reuse) each model; write ``comparison.md``, ``.csv``, ``.json``, ``thc_tha.png``, ``config.yaml``.

    Args:
        dataset: the data; models train on its train split, early-stop on valid and are scored on ``split``.
        models: zoo names, in table order.
        config: a :class:`~eoca.training.TrainConfig` or mapping shared by every model (``model`` is replaced).
        runs: folder of run folders ``runs/<model>``; a model whose ``model.pt`` exists there is loaded instead
            of trained, the others train into it. Default ``out/runs``, where interrupted runs resume.
    """
    from eoca.models.zoo import model_names_problem
    from eoca.training import TrainedModel, train

    problem = model_names_problem(models)
    if problem is not None:
        raise ConfigError(f"models: {problem}")
    base = coerce_train_config(config)
    out = Path(out)
    run_root = Path(runs) if runs is not None else out / "runs"
    truth = dataset_truth(dataset)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    configs: dict[str, Any] = {}
    for name in models:
        run_dir = run_root / name
        t0 = time.perf_counter()
        if runs is not None and (run_dir / "model.pt").exists():
            trained = TrainedModel.load(run_dir)
            notes.append(f"{name}: reused {run_dir}")
        else:
            trained = train(dataset, base.model_copy(update={"model": name}), run_dir, resume=True, progress=progress)
        seconds = sum(float(h.get("seconds", 0.0)) for h in trained.history) or time.perf_counter() - t0
        row: dict[str, Any] = {"model": name, "tasks": ",".join(sorted(trained.model.tasks))}
        row.update(offline_metrics(trained, dataset, split, truth))
        row["epochs"] = len(trained.history)
        row["train_seconds"] = round(seconds, 1)
        rows.append(row)
        configs[name] = trained.config.model_dump(mode="json")
    if truth is not None:
        labels = trained.bind(dataset).exposure_labels(split)
        rows.append(
            {
                "model": ORACLE,
                "tasks": "truth",
                **oracle_metrics(dataset, labels, truth),
                "epochs": "",
                "train_seconds": "",
            }
        )
        notes.append(
            f"{ORACLE}: the simulator's true p and ETV scored like a model "
            "(the expected ceiling; on a sample metric a model can beat it by chance)"
        )
    first = rows[0]
    notes.insert(
        0,
        f"{int(first['n_exposures'] or 0):,} test exposures, {int(first['n_conversions'] or 0):,} "
        "conversions; MSE/MAE of ETV against the realised amount over the entire test space; "
        "— = the model has no such task",
    )
    md = render_markdown(dataset.spec.name, split, rows, notes)
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
            },
            out / "comparison.json",
        ),
        "png": plot_hits(rows, out / "thc_tha.png", f"THC / THA by model on {dataset.spec.name} ({split})"),
    }
    return ComparisonResult(dataset=dataset.spec.name, split=split, rows=rows, markdown=md, paths=paths)
