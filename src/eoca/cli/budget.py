"""``eoca budget``: train incentive response models, allocate under a budget with the exact solver, evaluate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from eoca.budget.data import ArmSpec
from eoca.cli.app import app
from eoca.cli.options import Overwrite
from eoca.errors import DataValidationError

T = TypeVar("T")

console = Console()


def _arm_specs(arms: list[str]) -> list[ArmSpec]:
    out = []
    for text in arms:
        parts = text.split(":")
        if len(parts) != 3:
            raise DataValidationError(f"--arm {text!r}: expected NAME:RULE:COST, e.g. coupon:on_conversion:20")
        try:
            cost = float(parts[2])
        except ValueError:
            raise DataValidationError(f"--arm {text!r}: the cost {parts[2]!r} is not a number") from None
        out.append(ArmSpec(parts[0], parts[1], cost))
    return out


def _name_values(items: list[str], convert: Callable[[str], T], option: str, form: str) -> dict[str, T]:
    """Parse repeated ``NAME=VALUE`` options; a malformed one names the option and the expected form."""
    out: dict[str, T] = {}
    for text in items:
        name, _, value = text.partition("=")
        try:
            out[name] = convert(value)
        except ValueError:
            raise DataValidationError(f"{option} {text!r}: expected {form}") from None
    return out


@app.command("budget")
def budget_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for allocation.parquet, tables, plots and report.md.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="'hillstrom', a dataset folder simulated with incentives, or a CSV/Parquet log (with --treatment). "
            "Default: simulate a world with the default incentive campaign.",
        ),
    ] = None,
    budget: Annotated[
        str, typer.Option("--budget", help="Budget: an amount, or a share of the treat-everyone cost like 30%.")
    ] = "30%",
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated: t_learner, t_conversion, x_learner, multi_head, e2e, e2e_perturbed, e2e_warm, "
            "peer_slearner, peer_tlearner (peers need eoca[peers]).",
        ),
    ] = "t_learner,x_learner,multi_head,e2e",
    customers: Annotated[
        int, typer.Option("--customers", help="Customers to simulate when --data is not given.")
    ] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the models and a simulated world.")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of customers held out.")] = 0.5,
    crossfit: Annotated[
        bool,
        typer.Option(
            "--crossfit/--no-crossfit",
            help="Two folds, each predicted by models trained on the other; evaluates every customer.",
        ),
    ] = False,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="How the campaign's policy is chosen among the models' solver and single-arm policies and the "
            "untargeted best arm, by cross-fitted validation on the training customers: lower_bound (largest "
            "lower bound of the gain over random targeting, the bounds holding jointly over the candidates with "
            "95% probability), value (largest estimated gain), or "
            "none (the solver on the best model by AUCC; needed with --cap).",
        ),
    ] = "lower_bound",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap replicates of the SNIPS intervals.")] = 500,
    email_cost: Annotated[
        float, typer.Option("--email-cost", help="Hillstrom: cost of one e-mail (an assumption; default 1.0).")
    ] = 1.0,
    treatment: Annotated[str | None, typer.Option("--treatment", help="Table log: the treatment column.")] = None,
    value: Annotated[str, typer.Option("--value", help="Table log: the value (amount) column.")] = "amount",
    converted: Annotated[
        str | None, typer.Option("--converted", help="Table log: 0/1 conversion column (default value > 0).")
    ] = None,
    propensity: Annotated[str | None, typer.Option("--propensity", help="Table log: propensity column.")] = None,
    design: Annotated[
        list[str] | None,
        typer.Option("--design", help="Table log: declared randomization ARM=PROB (repeatable) if no propensity."),
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option("--arm", help="Table log: NAME:RULE:COST per arm, control first (rule fixed|on_conversion)."),
    ] = None,
    numeric: Annotated[list[str] | None, typer.Option("--numeric", help="Table log: numeric feature.")] = None,
    cap: Annotated[
        list[str] | None,
        typer.Option(
            "--cap", help="At most COUNT customers on an arm, ARM=COUNT (repeatable; solver certifies the gap)."
        ),
    ] = None,
    categorical: Annotated[
        list[str] | None, typer.Option("--categorical", help="Table log: categorical feature.")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Budget-constrained incentive allocation (docs/budget.md).

    Trains response models (uplift per arm: T- and X-learner on LightGBM, a multi-head network, the end-to-end
    model) on part of a randomized incentive log, gives every held-out customer at most one incentive with the
    exact Lagrangian solver under --budget (with a certificate: dual bound and gap), and evaluates: budget
    curves and AUCC, Qini/uplift AUC, true value against the oracle on simulated data, and SNIPS with
    bootstrap intervals against random targeting, top-by-uplift and single-arm policies. The allocation
    written is the policy chosen by --select on the training customers alone.
    """
    import time

    from eoca.budget.data import load_hillstrom_incentives, load_simulated, load_table
    from eoca.budget.run import run_budget, write_budget_run
    from eoca.io import check_output_folder, output_folder

    check_output_folder(out, overwrite)  # before any training, so a bad --out fails at once
    t0 = time.perf_counter()
    if data is None:
        from eoca.budget.data import from_world
        from eoca.simulate import load_simulator_config
        from eoca.simulate.simulator import generate_world

        cfg = load_simulator_config(None, [f"world.n_customers={customers}", f"seed={seed}", "incentives={}"])
        inc_data = from_world(generate_world(cfg))
    elif data == "hillstrom":
        inc_data = load_hillstrom_incentives(email_cost=email_cost)
    elif Path(data).is_dir():
        inc_data = load_simulated(data)
    else:
        if treatment is None or not arm:
            raise DataValidationError(f"--data {data}: a table log needs --treatment and one --arm per arm")
        des = None
        if design:
            des = _name_values(design, float, "--design", "ARM=PROBABILITY")
        inc_data = load_table(
            data,
            treatment=treatment,
            arms=_arm_specs(arm),
            value=value,
            converted=converted,
            propensity=propensity,
            design=des,
            numeric=numeric or (),
            categorical=categorical or (),
        )
    caps = _name_values(cap or [], int, "--cap", "ARM=COUNT, e.g. large_coupon=1000")
    result = run_budget(
        inc_data,
        models=[m.strip() for m in models.split(",") if m.strip()],
        budget=budget,
        test_fraction=test_fraction,
        seed=seed,
        n_bootstrap=bootstrap,
        caps=caps,
        crossfit=crossfit,
        select=None if select == "none" else select,
    )
    with output_folder(out, overwrite=overwrite) as work:
        write_budget_run(result, work)
    c = result.certificate
    console.print(
        f"budget [bold]{result.budget:,.0f}[/] ({result.budget / max(result.full_cost, 1e-12):.0%} of the "
        f"treat-everyone cost) on {result.n_test:,} held-out customers of {result.data_name}: best model "
        f"{result.best_model}, gap {c['gap']:.3g} (bound {c['gap_bound']:.3g}); allocated: "
        f"{result.selected_policy or 'the solver on ' + result.best_model} in "
        f"{time.perf_counter() - t0:.1f} s -> {out}"
    )
