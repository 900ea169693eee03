"""``eoca run``: the product's main job, from data to an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli.app import app
from eoca.cli.options import Overwrite

console = Console()


@app.command("run")
def run_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", help="Run YAML; see src/eoca/configs/run.yaml for every key.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset folder or 'hillstrom' instead of the built-in simulated world."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder to create (default: runs/<date-time>-<name>).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config key, e.g. --set simulator.customers=20000 (repeatable)."),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved configuration as YAML and exit.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Predict, allocate and evaluate end to end, then write a run folder with report.html.

    Simulates the default fund platform (or loads --data), trains the configured ETV models (default ESMM and
    ESDPM), scores every customer x fund, builds the delivery plan, allocates with the manual rule, the
    papers' greedy heuristic and the exact certified solver, and evaluates online: a simulated A/B test with
    common random numbers on simulated data, or inverse-propensity policy values on a randomized log such as
    Hillstrom. The run folder holds config.yaml, metrics.json and CSVs, allocation.parquet, plots/ and
    report.html.
    """
    from eoca.pipeline import load_run_config, run_pipeline
    from eoca.pipeline.config import config_to_yaml

    sets = list(overrides or [])
    if not progress:
        sets.append("progress=false")
    cfg = load_run_config(config, sets, data=data)
    if print_config:
        typer.echo(config_to_yaml(cfg), nl=False)
        return
    if cfg.tamor is not None:
        from eoca.tamor.pipeline import run_tamor_pipeline

        tamor = run_tamor_pipeline(cfg.tamor, cfg.name, out=out, overwrite=overwrite)
        console.print(f"[bold]report:[/] {tamor.folder / 'report.html'}")
        for line in tamor.metrics["summary"]:
            console.print(f"  {line}")
        return
    result = run_pipeline(cfg, out=out, overwrite=overwrite)
    console.print(f"[bold]report:[/] {result.folder / 'report.html'}")
    for line in result.metrics.get("summary", []):
        console.print(f"  {line}")
