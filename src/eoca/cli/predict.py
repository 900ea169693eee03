"""``eoca train``, ``eoca score`` and ``eoca evaluate``: fit ETV models, score every pair, compare the zoo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli.app import app
from eoca.errors import ConfigError

console = Console(stderr=True)

_DATA_HELP = "Dataset folder (from `eoca simulate` / `eoca import`), or 'hillstrom' for the real e-mail test."
_CONFIG_HELP = "Training YAML; see src/eoca/configs/train.yaml for every key."
_SET_HELP = "Override one training key, e.g. --set lr=0.02 --set params.dropout=0.3 (repeatable)."


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option("--data", help=_DATA_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.yaml, metrics.json, model.pt, checkpoint.")],
    model: Annotated[str | None, typer.Option("--model", help="Zoo model name (overrides the config's model).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=_CONFIG_HELP)] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN/checkpoint.pt after a crash.")] = False,
    grid: Annotated[
        bool, typer.Option("--grid", help="Grid search lr {0.01,0.02,0.04,0.06} x dropout {0.1,0.3,0.5}.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train one model of the zoo: Adam, early stopping on validation loss, a checkpoint every epoch.

    Precedence: train.yaml defaults < --config < --set < --model / --grid. The run folder then holds the exact
    config, the per-epoch history and test metrics (metrics.json) and the model (model.pt, loadable without
    pickle). Same data, config and seed: same model, also after --resume.
    """
    from eoca.data import open_dataset
    from eoca.evaluation.compare import offline_metrics
    from eoca.io import write_json
    from eoca.training import load_train_config, train
    from eoca.training.trainer import METRICS_FILE

    sets = list(overrides or [])
    if model is not None:
        sets.append(f"model={model}")
    if grid:
        sets.append("grid=true")
    cfg = load_train_config(config, sets)
    ds = open_dataset(data)
    start = time.perf_counter()
    trained = train(ds, cfg, out, resume=resume, progress=progress)
    test = offline_metrics(trained, ds, "test")
    metrics_path = out / METRICS_FILE
    summary = json.loads(metrics_path.read_text(encoding="utf-8"))
    summary["test"] = test
    write_json(summary, metrics_path)
    best = summary.get("best_valid_loss")
    shown = ", ".join(
        f"{k}={v:.4g}"
        for k, v in test.items()
        if v is not None and k in ("auc", "logloss", "mae", "gini", "thc", "tha")
    )
    console.print(
        f"trained [bold]{cfg.model}[/] on {ds.spec.name}: {len(trained.history)} epochs, best valid loss "
        f"{best:.5g} in {time.perf_counter() - start:.1f} s; test {shown} -> {out}"
    )


@app.command("score")
def score_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `eoca train`.")],
    data: Annotated[str, typer.Option("--data", help=_DATA_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (customer_id, fund_id, p, etv, ...).")],
    chunk: Annotated[int, typer.Option("--chunk", help="Customers per streamed chunk.", min=1)] = 65536,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Score every customer x every fund of a dataset with a trained model, streamed to one Parquet file.

    The checkpoint is loaded with torch.load(weights_only=True): files that need arbitrary pickle code are
    refused. Memory stays proportional to --chunk x funds, whatever the number of customers.
    """
    from eoca.data import open_dataset
    from eoca.training import TrainedModel, write_scores

    trained = TrainedModel.load(run)
    ds = open_dataset(data, with_truth=False)
    start = time.perf_counter()
    write_scores(trained, ds, out, chunk_customers=chunk, progress=progress)
    pairs = ds.n_customers * ds.n_funds
    secs = time.perf_counter() - start
    console.print(
        f"scored {pairs:,} pairs with {trained.name} in {secs:.1f} s ({pairs / max(secs, 1e-9):,.0f}/s) -> {out}"
    )


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[str, typer.Option("--data", help=_DATA_HELP)],
    models: Annotated[str, typer.Option("--models", help="Comma-separated zoo models, e.g. esmm,mtl_ziln,esdpm.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for comparison.md/.csv/.json, thc_tha.png, runs/.")],
    runs: Annotated[
        Path | None, typer.Option("--runs", help="Reuse RUNS/<model>/model.pt where present; train the rest there.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help=_CONFIG_HELP)] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Comma-separated seeds, e.g. 0,1,2: train each model once per seed and report every metric as "
            "mean, sd and 95% interval (seeds.md/.csv/.json; runs in RUNS/<model>/seed=<s>).",
        ),
    ] = None,
    ensemble: Annotated[
        bool, typer.Option("--ensemble", help="With --seeds: add a row per model averaging its seeds' predictions.")
    ] = False,
) -> None:
    """Train (or reuse) several models with one config and compare them on the test split (EOCA Tables 1-2,
    Figure 5): AUC, logloss, MSE, MAE, Gini, Spearman, THC, THA and, on simulated data, errors against the true
    ETV. Prints the Markdown table and writes it with CSV, JSON and a PNG of THC/THA. With --seeds, every model
    trains per seed and each metric is summarised over the seeds."""
    from eoca.data import open_dataset
    from eoca.evaluation.compare import compare_models
    from eoca.training import load_train_config

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models: give at least one model name, e.g. --models esmm,esdpm")
    cfg = load_train_config(config, list(overrides or []))
    if ensemble and seeds is None:
        raise ConfigError("--ensemble averages several seeds' predictions: give --seeds too, e.g. --seeds 0,1,2")
    if seeds is not None:
        from eoca.evaluation.seeds import evaluate_seeds, parse_seeds

        seed_list = parse_seeds(seeds)
        ds = open_dataset(data)
        start = time.perf_counter()
        summary = evaluate_seeds(
            ds, names, out, seeds=seed_list, config=cfg, runs=runs, ensemble=ensemble, progress=progress
        )
        typer.echo(summary.markdown, nl=False)
        console.print(
            f"evaluated {len(names)} models x {len(seed_list)} seeds in {time.perf_counter() - start:.1f} s -> {out}"
        )
        return
    ds = open_dataset(data)
    start = time.perf_counter()
    result = compare_models(ds, names, out, config=cfg, runs=runs, progress=progress)
    typer.echo(result.markdown, nl=False)
    console.print(f"compared {len(names)} models in {time.perf_counter() - start:.1f} s -> {out}")
