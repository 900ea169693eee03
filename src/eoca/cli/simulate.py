"""``eoca simulate``: generate the built-in fund-platform world with ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from eoca.cli.app import app
from eoca.cli.options import Overwrite
from eoca.io import output_folder, write_text

console = Console()


@app.command("simulate")
def simulate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to (created if missing).")],
    customers: Annotated[
        int | None, typer.Option("--customers", help="Number of customers N (overrides world.n_customers).")
    ] = None,
    funds: Annotated[int | None, typer.Option("--funds", help="Number of funds K (overrides world.n_funds).")] = None,
    periods: Annotated[
        int | None, typer.Option("--periods", help="Delivery periods; the last is the test (world.n_periods).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (overrides seed).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML config; see src/eoca/configs/simulator.yaml for every key."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config key, e.g. --set world.n_merchants=500 (repeatable)."),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")
    ] = False,
    parts: Annotated[
        int | None,
        typer.Option(
            "--parts",
            help="Write the world partitioned, one part per block of this many customers (sets "
            "world.block_customers; memory of one block, for worlds of 10M+ customers).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Simulate a fund-marketing platform with ground truth and write it as an eoca dataset.

    The world (docs/simulator.md): customers with latent capital, risk appetite and fund-type preferences and
    noisy profile features; funds with risk level, type and return features; behaviour events before the
    first period; a customer-merchant consumption graph; one logged exposure per customer per period from an
    exploring policy (propensities recorded) with click, conversion (a few per mille) and heavy-tailed,
    heteroscedastic amounts; and the truth table of every pair's p, mu, sigma and ETV. Same seed and config,
    same tables. Precedence: defaults < --config < --set < the explicit flags (--customers, --funds,
    --periods, --seed). An ``incentives`` section (e.g. --set 'incentives={}') adds the incentive campaign of
    docs/budget.md (incentive_*.parquet/yaml beside the dataset). ``world.block_customers`` generates the world
    in independent blocks (docs/scale.md); with ``--parts`` each block is written as one part of every table.
    """
    from eoca.simulate import config_yaml, load_simulator_config
    from eoca.simulate.simulator import generate_world

    sets = list(overrides or [])
    for key, value in (
        ("world.n_customers", customers),
        ("world.n_funds", funds),
        ("world.n_periods", periods),
        ("seed", seed),
        ("world.block_customers", parts),
    ):
        if value is not None:
            sets.append(f"{key}={value}")
    cfg = load_simulator_config(config, sets)
    if print_config:
        typer.echo(config_yaml(cfg), nl=False)
        return
    start = time.perf_counter()
    if cfg.world.block_customers is not None:
        from eoca.simulate.writer import write_blocked_world

        with output_folder(out, overwrite=overwrite) as work:
            summary = write_blocked_world(cfg, work, partitioned=parts is not None, progress=progress)
            write_text(config_yaml(cfg), work / "simulator.yaml")
        console.print(
            f"simulated [bold]{cfg.name}[/]: {summary.n_customers:,} customers in {summary.parts} block(s)"
            f"{' (one part each)' if parts is not None else ''}, {summary.n_funds} funds, "
            f"{summary.exposures:,} exposures ({1000 * summary.conversions / summary.exposures:.2f} conversions "
            f"per mille), {summary.events:,} events, {summary.edges:,} consumption edges "
            f"in {time.perf_counter() - start:.1f} s -> {out}"
        )
        return
    with output_folder(out, overwrite=overwrite) as work:
        world = generate_world(cfg, progress=progress)
        ds = world.dataset
        ds.save(work)
        if cfg.incentives is not None:
            from eoca.simulate.incentives import generate_incentives, write_incentives

            write_incentives(generate_incentives(world, cfg.incentives), np.arange(ds.n_customers), work)
        write_text(config_yaml(cfg), work / "simulator.yaml")
    exp = ds.exposures
    conv = int(exp.column("converted").to_numpy().sum())
    console.print(
        f"simulated [bold]{ds.spec.name}[/]: {ds.n_customers:,} customers, {ds.n_funds} funds, "
        f"{exp.num_rows:,} exposures ({1000 * conv / exp.num_rows:.2f} conversions per mille), "
        f"{0 if ds.events is None else ds.events.num_rows:,} events, "
        f"{0 if ds.consumption is None else ds.consumption.num_rows:,} consumption edges "
        f"in {time.perf_counter() - start:.1f} s -> {out}"
    )
