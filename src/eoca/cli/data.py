"""``eoca import`` and ``eoca inspect``: bring data in and look at it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from eoca.cli.app import app
from eoca.cli.options import Overwrite
from eoca.data.resolve import open_dataset
from eoca.io import output_folder, write_json

console = Console()


@app.command("import")
def import_cmd(
    spec: Annotated[Path, typer.Option("--spec", help="YAML mapping your files' columns to eoca's roles.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to.")],
    overwrite: Overwrite = False,
) -> None:
    """Import your own CSV or Parquet files as an eoca dataset.

    The spec names each file and maps its columns to eoca's canonical ones (customer_id, risk_tolerance,
    fund_id, risk_level, time, converted, amount, ...) and declares every feature with its type (numeric,
    categorical, sequence). A single customer-value table (one row per customer with a spend label) imports
    through a `customer_value:` section. See docs/data.md for the format. The data are validated; any problem
    stops the import with the file, column and rows at fault.
    """
    from eoca.data.importer import import_dataset

    with output_folder(out, overwrite=overwrite) as work:
        ds = import_dataset(spec, None)
        ds.save(work)
    console.print(
        f"imported [bold]{ds.spec.name}[/]: {ds.n_customers:,} customers, {ds.n_funds:,} fund(s), "
        f"{ds.exposures.num_rows:,} exposures -> {out}",
        soft_wrap=True,
    )
    for key, note in ds.spec.notes.items():
        if key != "imported_from":
            console.print(f"  {key}: {note}", highlight=False, soft_wrap=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


@app.command("inspect")
def inspect_cmd(
    data: Annotated[str, typer.Argument(help="Dataset folder, or 'hillstrom'.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the statistics to this JSON file.")
    ] = None,
) -> None:
    """Show a dataset's statistics: rows per table, conversion rate, amount quantiles among converters,
    per-fund exposure and conversion, train/valid/test split, and risk histograms."""
    from eoca.data.inspect import describe

    ds = open_dataset(data)
    stats = describe(ds)
    console.rule(f"[bold]{stats['name']}")
    head = Table(show_header=False, box=None)
    for key in (
        "rows",
        "exposures",
        "conversions",
        "conversion_per_mille",
        "click_per_mille",
        "cvr_given_click",
        "amount_per_mille_exposures",
        "amount_mean_converters",
        "amount_p99_over_median",
        "split",
        "events_per_customer",
        "consumption_edges_per_customer",
        "merchants",
        "truth_mean_p_per_mille",
        "truth_mean_etv",
    ):
        if key in stats:
            val = stats[key]
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in val.items()) if isinstance(val, dict) else _fmt(val)
            head.add_row(key.replace("_", " "), shown)
    console.print(head)
    if "amount_quantiles_converters" in stats:
        q = Table(title="amount among converters")
        for k in stats["amount_quantiles_converters"]:
            q.add_column(k, justify="right")
        q.add_row(*(_fmt(v) for v in stats["amount_quantiles_converters"].values()))
        console.print(q)
    pf = Table(title="per fund")
    for col in ("fund_id", "risk_level", "exposures", "conversions", "conversion_per_mille", "amount"):
        pf.add_column(col.replace("_", " "), justify="right")
    for row in stats["per_fund"]:
        pf.add_row(
            *(
                _fmt(row[c])
                for c in ("fund_id", "risk_level", "exposures", "conversions", "conversion_per_mille", "amount")
            )
        )
    console.print(pf)
    rh = Table(title="risk histograms")
    rh.add_column("level", justify="right")
    rh.add_column("customers with this tolerance", justify="right")
    rh.add_column("funds at this level", justify="right")
    for k, v in stats["risk_tolerance_histogram"].items():
        rh.add_row(k, _fmt(v), _fmt(stats["fund_risk_level_histogram"][k]))
    console.print(rh)
    if json_out is not None:
        write_json(stats, json_out)
        console.print(f"statistics written to {json_out}")
