"""Multi-seed model comparison: every model trained once per seed, every metric as mean, sd and a 95% interval.

One seed's result is one draw of initialisation, dropout and data order; on rare-conversion data the spread
between draws can exceed the difference between models, so a comparison that names a winner needs several.
:func:`evaluate_seeds` trains each model with each seed (``RUNS/<model>/seed=<s>``, reused when present),
scores the test split with :func:`eoca.pipeline.evaluate.offline_metrics`, and summarises every metric over
the seeds: mean, sample standard deviation and the Student-t 95% interval of the mean. With ``ensemble`` the
seeds' predictions (``p`` and ``etv``, averaged) are scored as one more row per model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.evaluation.compare import metrics_from_predictor
from eoca.evaluation.metrics import ORACLE
from eoca.io import write_csv, write_json, write_text, write_yaml
from eoca.pipeline.evaluate import dataset_truth, offline_metrics, oracle_metrics, risk_arrays

SUMMARY_METRICS: tuple[str, ...] = (
    "auc",
    "logloss",
    "gini",
    "thc",
    "tha",
    "argmax_share_of_oracle",
    "true_spearman",
)
"""Metrics shown in the Markdown table (all metrics are in the JSON and CSV)."""


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; rejects empty lists, negatives, repeats and non-integers by name."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError as exc:
        raise ConfigError(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}") from exc
    if not seeds:
        raise ConfigError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def summarise(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, float | None]:
    """Mean, sample sd and the Student-t interval of the mean of the non-missing ``values``.

    One value gives sd and interval None (a single draw says nothing about the spread).
    """
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "sd": None, "lo": None, "hi": None, "n": 0.0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "sd": None, "lo": None, "hi": None, "n": float(x.size)}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return {"mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "n": float(x.size)}


@dataclass
class SeedsResult:
    """Rows of :func:`evaluate_seeds`: per model (and ensemble) ``{"model", "seeds", "<metric>": summary}``."""

    dataset: str
    seeds: list[int]
    rows: list[dict[str, Any]]
    per_seed: dict[str, list[dict[str, float | None]]]
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def _fmt(summary: dict[str, float | None], key: str) -> str:
    mean, sd, lo, hi = summary["mean"], summary["sd"], summary["lo"], summary["hi"]
    if mean is None:
        return "—"
    scale, digits = (100.0, 1) if key == "argmax_share_of_oracle" else (1.0, 4 if abs(mean) < 10 else 0)
    text = f"{mean * scale:.{digits}f}"
    if sd is not None and lo is not None and hi is not None:
        text += f" ± {sd * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def render_seeds_markdown(dataset: str, seeds: list[int], rows: list[dict[str, Any]]) -> str:
    """The summary table: mean ± sd [95% interval] per metric; the oracle share in percent."""
    keys = [k for k in SUMMARY_METRICS if any(r[k]["mean"] is not None for r in rows)]
    header = ["model", *("% of oracle (true value)" if k == "argmax_share_of_oracle" else k for k in keys)]
    lines = [
        f"## {dataset}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± sd [95% t-interval]",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        lines.append("| " + " | ".join([str(row["model"]), *(_fmt(row[k], k) for k in keys)]) + " |")
    return "\n".join(lines) + "\n"


def evaluate_seeds(
    dataset: Dataset,
    models: list[str],
    out: Path,
    *,
    seeds: list[int],
    config: Any = None,
    runs: Path | None = None,
    ensemble: bool = False,
    progress: bool = True,
    split: str = "test",
) -> SeedsResult:
    """Train (or reuse) every model x seed; write ``seeds.md``, ``seeds.csv``, ``seeds.json``, ``config.yaml``.

    Args:
        config: a :class:`~eoca.training.TrainConfig` or mapping shared by every run (``model``/``seed`` replaced).
        runs: folder of ``<model>/seed=<s>`` run folders, reused where ``model.pt`` exists; default ``out/runs``.
        ensemble: add a row per model scoring the mean of its seeds' ``p`` and ``etv``.
    """
    from eoca.models.zoo import model_names_problem
    from eoca.training import TrainedModel, train
    from eoca.training.config import coerce_train_config

    problem = model_names_problem(models)
    if problem is not None:
        raise ConfigError(f"models: {problem}")
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    base = coerce_train_config(config)
    out = Path(out)
    run_root = Path(runs) if runs is not None else out / "runs"
    rows: list[dict[str, Any]] = []
    per_seed: dict[str, list[dict[str, float | None]]] = {}
    labels: dict[str, np.ndarray] | None = None
    truth = dataset_truth(dataset)
    for name in models:
        trained_runs = []
        results = []
        for seed in seeds:
            run_dir = run_root / name / f"seed={seed}"
            t0 = time.perf_counter()
            if (run_dir / "model.pt").exists():
                trained = TrainedModel.load(run_dir)
            else:
                cfg = base.model_copy(update={"model": name, "seed": seed})
                trained = train(dataset, cfg, run_dir, resume=True, progress=progress)
            metrics = offline_metrics(trained, dataset, split, truth).to_row()
            metrics["train_seconds"] = time.perf_counter() - t0
            metrics["epochs"] = float(len(trained.history))
            results.append(metrics)
            labels = trained.bind(dataset).exposure_labels(split)
            if ensemble:
                trained_runs.append(trained)
        per_seed[name] = results
        rows.append({"model": name, "seeds": len(seeds), **_summaries(results)})
        if ensemble and trained_runs:
            rows.append(_ensemble_row(dataset, name, trained_runs, split, truth))
    if dataset.truth is not None and labels is not None:
        oracle = oracle_metrics(dataset, labels, truth)
        rows.append({"model": ORACLE, "seeds": 0, **_summaries([oracle.to_row()])})
    md = render_seeds_markdown(dataset.spec.name, seeds, rows)
    out.mkdir(parents=True, exist_ok=True)
    flat = [_flatten(r) for r in rows]
    paths = {
        "config": write_yaml(base.model_dump(mode="json"), out / "config.yaml"),
        "markdown": write_text(md, out / "seeds.md"),
        "csv": write_csv(flat, out / "seeds.csv", list(flat[0]) if flat else None),
        "json": write_json(
            {"dataset": dataset.spec.name, "split": split, "seeds": seeds, "rows": rows, "per_seed": per_seed},
            out / "seeds.json",
        ),
    }
    return SeedsResult(dataset.spec.name, seeds, rows, per_seed, md, paths)


def _summaries(results: list[dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    keys = [k for k in results[0] if k not in ("n_exposures", "n_conversions")]
    return {k: summarise([r.get(k) for r in results]) for k in keys}


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"model": row["model"], "seeds": row["seeds"]}
    for key, value in row.items():
        if isinstance(value, dict):
            for stat in ("mean", "sd", "lo", "hi"):
                flat[f"{key}_{stat}"] = value.get(stat)
    return flat


def _ensemble_row(dataset: Dataset, name: str, trained_runs: list[Any], split: str, truth: Any) -> dict[str, Any]:
    """Metrics of the seeds' averaged ``p`` and ``etv`` (each seed's guarded prediction), as a one-draw row."""
    first = trained_runs[0]
    labels = first.bind(dataset).exposure_labels(split)
    batch = int(first.config.eval_batch_size)

    def predict(c: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        preds = [t.predict_pairs(dataset, c, f, batch_size=batch) for t in trained_runs]
        return {key: np.mean([p[key] for p in preds], axis=0) for key in ("p", "etv")}

    tasks = frozenset(first.model.tasks) - {"ctr"}
    tol, risk = risk_arrays(dataset)
    metrics = metrics_from_predictor(tol, risk, labels, predict, tasks, None if truth is None else truth.etv)
    return {
        "model": f"{name} (ensemble of {len(trained_runs)})",
        "seeds": len(trained_runs),
        **_summaries([metrics.to_row()]),
    }
