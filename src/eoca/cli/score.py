"""``eoca score``: score every customer x fund of a dataset with a trained model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli._engine import Engine, MemoryLimit, Scheduler, Workers, check_engine
from eoca.cli.app import app
from eoca.cli.options import DATA_HELP
from eoca.errors import ConfigError

console = Console(stderr=True)


@app.command("score")
def score_cmd(
    run: Annotated[
        list[Path],
        typer.Option("--run", help="Run folder written by `eoca train`; repeat to score several models at once."),
    ],
    data: Annotated[str, typer.Option("--data", help=DATA_HELP)],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Parquet file to write (customer_id, fund_id, p, etv, ...); with several --run, a folder that "
            "receives <run folder name>.parquet per run.",
        ),
    ],
    chunk: Annotated[int, typer.Option("--chunk", help="Customers per streamed chunk.", min=1)] = 65536,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    engine: Engine = "local",
    scheduler: Scheduler = None,
    workers: Workers = 2,
    memory_limit: MemoryLimit = "4GB",
    part_size: Annotated[int, typer.Option("--part-size", help="--engine dask: customers per written part.", min=1)] = 1
    << 20,
) -> None:
    """Score every customer x every fund of a dataset with one or several trained models, each streamed to
    one Parquet file. The dataset is read and validated once for all runs.

    The checkpoint is loaded with torch.load(weights_only=True): files that need arbitrary pickle code are
    refused. Memory stays proportional to --chunk x funds, whatever the number of customers. Ids are written
    exactly as the dataset holds them.

    With --engine dask, OUT is a folder (with several --run, OUT/<run folder name>/): the workers write
    scores/ and customers/ in it as Parquet parts of --part-size customers (the input of `eoca allocate
    --engine dask`); each model is sent to each worker once.
    """
    from eoca.data import open_dataset
    from eoca.io import remove_stale_temporaries
    from eoca.training import TrainedModel, write_scores

    names = [r.name for r in run]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"--run: several run folders share a name ({', '.join(names)}); their score files would collide"
        )
    if len(run) == 1 and out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected the path of the Parquet file to write")
    if len(run) > 1 and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the score files of {len(run)} runs")
    trained = [TrainedModel.load(r) for r in run]  # every checkpoint checked before any work
    if check_engine(engine):
        from eoca.distributed import ClusterSpec, open_client
        from eoca.distributed.scoring import score_dask

        with open_client(ClusterSpec(scheduler=scheduler, workers=workers, memory_limit=memory_limit)) as client:
            for folder, model in zip(run, trained, strict=True):
                target = out if len(run) == 1 else out / folder.name
                start = time.perf_counter()
                parts, pairs = score_dask(client, model, data, target, part_size=part_size, chunk=chunk)
                console.print(
                    f"scored {pairs:,} pairs with {model.name} on Dask in {time.perf_counter() - start:.1f} s, "
                    f"{parts} parts -> {target / 'scores'} and {target / 'customers'}"
                )
        return
    ds = open_dataset(data, with_truth=False)
    for folder, model in zip(run, trained, strict=True):
        target = out if len(run) == 1 else out / f"{folder.name}.parquet"
        start = time.perf_counter()
        # A killed earlier run leaves its hidden temporary file beside the target; nothing else would remove it.
        for stale in remove_stale_temporaries(target):
            console.print(f"removed {stale}, left by an interrupted earlier run")
        write_scores(model, ds, target, chunk_customers=chunk, progress=progress)
        pairs = ds.n_customers * ds.n_funds
        secs = time.perf_counter() - start
        console.print(
            f"scored {pairs:,} pairs with {model.name} in {secs:.1f} s ({pairs / max(secs, 1e-9):,.0f}/s) -> {target}"
        )
