"""``eoca score``: score every customer x fund of a dataset with a trained model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli.app import app
from eoca.cli.options import DATA_HELP

console = Console(stderr=True)


@app.command("score")
def score_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by `eoca train`.")],
    data: Annotated[str, typer.Option("--data", help=DATA_HELP)],
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
