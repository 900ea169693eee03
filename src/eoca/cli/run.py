"""``eoca run``: the product's main job, from data to an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from eoca.cli._engine import Engine, MemoryLimit, Scheduler, Workers, check_engine
from eoca.cli.app import app
from eoca.cli.options import Overwrite
from eoca.errors import ConfigError

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
    engine: Engine = "local",
    scheduler: Scheduler = None,
    workers: Workers = 2,
    memory_limit: MemoryLimit = "4GB",
    overwrite: Overwrite = False,
) -> None:
    """Predict, allocate and evaluate end to end, then write a run folder with report.html.

    Simulates the default fund platform (or loads --data), trains the configured ETV models (default ESMM and
    ESDPM), scores every customer x fund, builds the delivery plan, allocates with the manual rule, the
    papers' greedy heuristic and the exact certified solver, and evaluates online: a simulated A/B test with
    common random numbers on simulated data, or inverse-propensity policy values on a randomized log such as
    Hillstrom. The run folder holds config.yaml, metrics.json and CSVs, allocation.parquet, plots/ and
    report.html.

    With --engine dask every exact allocation of the run is solved on a Dask cluster (the scores written as
    Parquet parts in a temporary folder beside the run folder); manual and HA are sequential and stay on one
    machine, so the run's allocation.methods must then be [exact].
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
    dask_engine = check_engine(engine)
    if cfg.tamor is not None:
        if dask_engine:
            raise ConfigError("--engine dask runs the fund-allocation pipeline's exact allocations; TAMOR runs locally")
        from eoca.tamor.pipeline import run_tamor_pipeline

        tamor = run_tamor_pipeline(cfg.tamor, cfg.name, out=out, overwrite=overwrite)
        console.print(f"[bold]report:[/] {tamor.folder / 'report.html'}")
        for line in tamor.metrics["summary"]:
            console.print(f"  {line}")
        return
    if dask_engine:
        result = _run_on_dask(cfg, out, overwrite, scheduler, workers, memory_limit)
    else:
        result = run_pipeline(cfg, out=out, overwrite=overwrite)
    console.print(f"[bold]report:[/] {result.folder / 'report.html'}")
    for line in result.metrics.summary:
        console.print(f"  {line}")


def _run_on_dask(
    cfg: Any, out: Path | None, overwrite: bool, scheduler: str | None, workers: int, memory_limit: str
) -> Any:
    import tempfile

    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.exact import SINGLE_MACHINE, allocate_problem_dask
    from eoca.errors import ConfigError
    from eoca.pipeline import run_pipeline
    from eoca.pipeline.frameworks import EXACT_ENGINE

    local_only = [m for m in cfg.allocation.methods if m in SINGLE_MACHINE or m != "exact"]
    if local_only:
        raise ConfigError(
            f"allocation methods {local_only} are sequential by nature and run on one machine only; with --engine "
            "dask use --set allocation.methods=[exact] (or --engine local for the baselines)"
        )
    base = (out.parent if out is not None else Path("runs")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    with (
        open_client(ClusterSpec(scheduler=scheduler, workers=workers, memory_limit=memory_limit)) as client,
        tempfile.TemporaryDirectory(prefix=".eoca-dask-", dir=base) as tmp,
    ):
        calls = [0]

        def solve(problem: Any) -> Any:
            calls[0] += 1
            return allocate_problem_dask(client, problem, Path(tmp) / f"solve{calls[0]}")

        token = EXACT_ENGINE.set(solve)
        try:
            return run_pipeline(cfg, out=out, overwrite=overwrite)
        finally:
            EXACT_ENGINE.reset(token)
