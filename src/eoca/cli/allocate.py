"""``eoca allocate``: choose the funds each customer is shown, exactly (default) or with a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eoca.cli._engine import Engine, MemoryLimit, Scheduler, Workers, check_engine
from eoca.cli.app import app
from eoca.cli.options import Overwrite
from eoca.errors import ConfigError

console = Console(stderr=True)


@app.command("allocate")
def allocate_cmd(
    scores: Annotated[
        Path,
        typer.Option(
            "--scores",
            help="Score Parquet: long (customer_id, fund_id, etv) or wide (customer_id + one column per fund id).",
        ),
    ],
    plan: Annotated[
        Path, typer.Option("--plan", help="Delivery plan YAML: 'demands:' (counts) or 'shares:' per fund id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for allocation.parquet and summary.json.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Dataset folder: its dataset.yaml names the customers and funds tables "
            "(default customers.parquet, funds.parquet).",
        ),
    ] = None,
    customers: Annotated[
        Path | None,
        typer.Option("--customers", help="Customers Parquet (customer_id, risk_tolerance); overrides --data."),
    ] = None,
    funds: Annotated[
        Path | None, typer.Option("--funds", help="Funds Parquet (fund_id, risk_level); overrides --data.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="exact (certified optimum), ha (EOCA Alg. 1), ha_ptofa (PTOFA Eq. 7), manual, ip (HiGHS MIP), "
            "mcf (OR-Tools min-cost flow).",
        ),
    ] = "exact",
    K: Annotated[
        int | None, typer.Option("--K", help="Funds per customer (default: the plan's K, else 1).", min=1)
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the allocation against every constraint; exit 1 if broken.")
    ] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="ha / ha_ptofa / manual: re-solve stranded customers exactly.")
    ] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Seconds allowed to the ip method.")] = 60.0,
    priority: Annotated[
        str | None, typer.Option("--priority", help="manual: comma-separated fund ids, highest priority first.")
    ] = None,
    engine: Engine = "local",
    scheduler: Scheduler = None,
    workers: Workers = 2,
    memory_limit: MemoryLimit = "4GB",
    overwrite: Overwrite = False,
) -> None:
    """Allocate funds to customers maximising total expected transaction value (ETV).

    Every customer gets exactly K funds, every fund exactly its demanded number of customers, and nobody gets a
    fund above their risk tolerance. The plan is checked for feasibility first: an impossible plan stops with
    what fails and by how much. The exact method returns the optimum with a certificate (objective equal to the
    dual bound); baselines report the customers they strand and the constraints they break. Writes
    OUT/allocation.parquet (customer_id, fund_id; K rows per customer, fund_id empty for an unfilled slot) and
    OUT/summary.json (objective, certificate gap, per-fund delivered vs demanded, violations, time, memory).

    With --engine dask, --scores and --customers are folders of Parquet parts (part i of the scores holds
    the customers of part i of the customers; --data DIR means DIR/customers/ and DIR/funds.parquet), the
    exact method runs on the cluster and OUT/allocation/ is written one part per input part.
    """
    from eoca.allocation import allocate, load_problem
    from eoca.io import check_output_folder, output_folder

    check_output_folder(out, overwrite)  # before the solve, so a bad --out fails at once

    dask_engine = check_engine(engine)
    cust, fnd = customers, funds
    if data is not None and dask_engine:
        # the partitioned layout: DIR/customers/ parts beside DIR/funds.parquet
        cust = cust or data / "customers"
        fnd = fnd or data / "funds.parquet"
    elif data is not None and (cust is None or fnd is None):
        from eoca.data import load_spec
        from eoca.data.schema import SPEC_FILE

        # A dataset's spec names its table files (an imported dataset may use other names); a bare folder of
        # Parquet files is read with the default names.
        if (data / SPEC_FILE).exists():
            spec = load_spec(data)
            cust = cust or data / spec.customers.file
            fnd = fnd or data / spec.funds.file
        else:
            cust = cust or data / "customers.parquet"
            fnd = fnd or data / "funds.parquet"
    if cust is None or fnd is None:
        raise ConfigError("give --data DIR, or both --customers and --funds")
    if dask_engine:
        _allocate_dask(scores, cust, fnd, plan, out, overwrite, method, K, scheduler, workers, memory_limit)
        return
    problem = load_problem(scores, cust, fnd, plan, K=K)
    order = [p.strip() for p in priority.split(",")] if priority else None
    result = allocate(problem, method, repair=repair, time_limit=time_limit, priority=order)
    with output_folder(out, overwrite=overwrite) as work:
        written = result.write(work)
    alloc_path, summary_path = (out / p.name for p in written)
    gap = "" if result.gap is None else f", certificate gap {result.gap:.3g}"
    console.print(
        f"[bold]{method}[/]: {problem.n_customers:,} customers x {problem.n_funds} funds, K={problem.K}: "
        f"objective {result.objective:,.2f}{gap}, optimal={result.optimal}, {result.wall_time_s:.2f} s, "
        f"peak {result.peak_memory_mb:,.0f} MiB"
    )
    console.print(f"wrote {alloc_path} and {summary_path}")
    if verify or not result.feasible:
        console.print(result.verification.describe())
    if verify and not result.feasible:
        raise typer.Exit(1)


def _allocate_dask(
    scores: Path,
    customers: Path,
    funds: Path,
    plan: Path,
    out: Path,
    overwrite: bool,
    method: str,
    K: int | None,
    scheduler: str | None,
    workers: int,
    memory_limit: str,
) -> None:
    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.exact import SINGLE_MACHINE, allocate_dask
    from eoca.io import output_folder

    if method in SINGLE_MACHINE or method != "exact":
        # the same message allocate_dask gives, before a cluster is started for nothing
        allocate_dask(None, scores, customers, funds, plan, None, method=method)
    spec = ClusterSpec(scheduler=scheduler, workers=workers, memory_limit=memory_limit)
    with open_client(spec) as client, output_folder(out, overwrite=overwrite) as work:
        result = allocate_dask(client, scores, customers, funds, plan, work, K=K, method=method)
    console.print(
        f"[bold]exact[/] (dask, {result.info['partitions']} partitions): {result.n_customers:,} customers x "
        f"{len(result.fund_ids)} funds, K={result.K}: objective {result.objective:,.2f}, certificate gap "
        f"{result.certificate_gap:.3g}, optimal={result.certified}, {result.wall_time_s:.2f} s"
    )
    console.print(f"wrote {out / 'allocation'} and {out / 'summary.json'}")
