"""``eoca train``: fit one ETV model of the zoo into a run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli.app import app
from eoca.cli.options import CONFIG_HELP, DATA_HELP, SET_HELP, Overwrite

console = Console(stderr=True)


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option("--data", help=DATA_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.yaml, metrics.json, model.pt, checkpoint.")],
    model: Annotated[str | None, typer.Option("--model", help="Zoo model name (overrides the config's model).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a crashed or killed run of the same --out from its checkpoint.")
    ] = False,
    grid: Annotated[
        bool, typer.Option("--grid", help="Grid search lr {0.01,0.02,0.04,0.06} x dropout {0.1,0.3,0.5}.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Train one model of the zoo: Adam, early stopping on validation loss, a checkpoint every epoch.

    Precedence: train.yaml defaults < --config < --set < --model / --grid. The run folder then holds the exact
    config, the per-epoch history and test metrics (metrics.json) and the model (model.pt, loadable without
    pickle). Same data, config and seed: same model, also after --resume. The folder is built under a hidden
    temporary name beside OUT and renamed when complete; a killed run's checkpoint stays there for --resume.
    """
    from eoca.data import open_dataset
    from eoca.io import output_folder, write_json
    from eoca.pipeline.evaluate import offline_metrics
    from eoca.training import load_train_config, train
    from eoca.training.trainer import METRICS_FILE

    sets = list(overrides or [])
    if model is not None:
        sets.append(f"model={model}")
    if grid:
        sets.append("grid=true")
    # Everything that can be checked without training is checked before the run folder is created, so a
    # typo in a model name or a bad --data leaves nothing behind.
    cfg = load_train_config(config, sets)
    ds = open_dataset(data)
    start = time.perf_counter()
    with output_folder(out, overwrite=overwrite, resume=resume, keep_on_failure=True) as work:
        trained = train(ds, cfg, work, resume=resume, progress=progress)
        test = offline_metrics(trained, ds, "test").to_row()
        metrics_path = work / METRICS_FILE
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
