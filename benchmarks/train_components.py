"""Where a zoo model's training step spends its CPU time: each component timed forward and backward on its own.

    python benchmarks/train_components.py --customers 100000 --models esdpm,esmm --workdir W

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), one torch thread, the
model at its initial weights in training mode, ``--batches`` training batches of 1,024 rows (and, for a model that
learns its amount from past purchases, as many batches of past purchases of the size the trainer pairs with each
step). Every figure is CPU milliseconds per step, the median over ``--repeats`` passes over those batches:

* the whole exposure step (``loss`` forward and backward) and the past-purchase step (``amount_history_loss``),
  and for such a model the joint step the trainer runs (``loss_with_history``: both batches in one pass);
* each component on the inputs it received in that step, forward and backward (a fixed random output
  gradient): the profile embedding, the behaviour encoder, the consumption GAT, the candidate-aware inputs (pair
  counts, summary, target attention), the fund embedding, the MMoE and the towers;
* batching: cutting the step's exposure batch and past-purchase batch from the bound dataset (numpy, outside
  autograd); and Adam's update of the flat parameters.

The components do not add up to the step exactly: the step also concatenates the branches, runs autograd's
bookkeeping for the whole graph and accumulates every parameter's gradient. Prints a Markdown table per model.

``--profile N`` also runs the trainer's step (the joint step for a model that learns from past purchases) over
the same batches under ``torch.profiler`` for ``--repeats`` passes and prints the N operators with the most self
CPU time, forward and backward together, each as a share of all operators' self CPU time (a second table):

    python benchmarks/train_components.py --customers 100000 --models esdpm --workdir W --profile 12
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _ms(fn: Callable[[Any], None], items: list[Any], repeats: int) -> float:
    """Median over ``repeats`` passes of the CPU milliseconds per item of ``fn``."""
    for item in items[:1]:
        fn(item)
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        for item in items:
            fn(item)
        times.append((time.process_time() - c0) / len(items) * 1e3)
    return statistics.median(times)


def _component_rows(model: Any, batches: list[Any], repeats: int) -> dict[str, float]:
    """Forward + backward CPU ms of each top-level component, on the inputs it gets in the model's own step."""
    import torch

    from eoca.models.layers import PairInput

    parts = {
        "profile embedding (units)": model.customer_arch.profile,
        "behaviour encoder": model.customer_arch.behaviour,
        "consumption GAT": model.customer_arch.consumption,
        "candidate-aware inputs (pair counts, summary, target attention)": model.candidate_arch,
        "fund embedding": model.fund_arch,
        "MMoE": getattr(model, "mmoe", None),
    }
    captured: dict[str, list[tuple[Any, tuple[Any, ...], dict[str, Any]]]] = {k: [] for k in parts}

    def hook(name: str) -> Callable[..., None]:
        def record(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
            # The first call per step only: the profile embedding runs again for the graph's second-hop customers.
            if len(captured[name]) < n_step[0]:
                captured[name].append((module, args, kwargs))

        return record

    n_step = [0]
    handles = [m.register_forward_hook(hook(k), with_kwargs=True) for k, m in parts.items() if m is not None]
    for b in batches:
        n_step[0] += 1
        model.loss(b)
    for h in handles:
        h.remove()

    def leaf(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().requires_grad_(x.is_floating_point())
        if isinstance(x, PairInput):
            pair = leaf(x.pair) if x.pair is not None else None
            return PairInput(leaf(x.customer), x.row_unit, leaf(x.fund), x.fund_index, pair)
        return x

    out: dict[str, float] = {}
    for name, calls in captured.items():
        if not calls:
            continue
        prepared = []
        for module, args, kwargs in calls:
            args2 = tuple(leaf(a) for a in args)
            grad = torch.randn_like(module(*args2, **kwargs))
            prepared.append((module, args2, kwargs, grad))

        def run(item: tuple[Any, tuple[Any, ...], dict[str, Any], Any]) -> None:
            module, args2, kwargs, grad = item
            module(*args2, **kwargs).backward(grad)

        out[name] = _ms(run, prepared, repeats)
    return out


def _heads_rows(model: Any, batches: list[Any], repeats: int) -> dict[str, float]:
    """Towers and loss, forward + backward, on the MMoE output of each batch (models with an ``mmoe``)."""
    import torch

    if not hasattr(model, "mmoe") or not hasattr(model, "heads"):
        return {}
    with torch.no_grad():
        hs = [model.mmoe(model.encode(b)) for b in batches]

    def towers(h: Any) -> None:
        h = h.detach().requires_grad_()
        logit_ctr, logit_cvr = model.heads(h[:, 0], h[:, 1])
        total = logit_cvr.sum() + (logit_ctr.sum() if logit_ctr is not None else 0.0)
        if hasattr(model, "lognormal"):
            total = total + model.lognormal(h[:, 2]).sum()
        total.backward()

    return {"towers": _ms(towers, hs, repeats)}


def _operator_rows(step: Callable[[Any], None], items: list[Any], repeats: int, top: int) -> list[tuple[str, float]]:
    """The ``top`` operators by self CPU time over ``repeats`` passes of ``step`` (after one untimed pass), each
    as a percentage of every operator's self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    for item in items:
        step(item)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            for item in items:
                step(item)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, 100.0 * e.self_cpu_time_total / total) for e in events[:top]]


def measure(
    data: Path, name: str, n_batches: int, repeats: int, profile_top: int = 0
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """``(components, operators)``: CPU ms per step of each part, and (``profile_top`` > 0) the step's top
    operators by share of self CPU time (:func:`_operator_rows`)."""
    import numpy as np
    import torch

    from eoca.training.trainer import FlatParameters, adam_step, deterministic_kernels
    from train import initial_model  # benchmarks/train.py, beside this script

    model, bound = initial_model(data, name)
    gen = torch.Generator().manual_seed(1)
    batches = [
        b
        for _, b in zip(
            range(n_batches), bound.exposure_batches("train", 1024, shuffle=True, generator=gen), strict=False
        )
    ]
    n_train = bound.n_exposures("train")
    history: list[Any] = []
    per_step = 0
    if model.learns_amount_from_history and bound.n_purchase_history():
        per_step = math.ceil(bound.n_purchase_history() * 1024 / n_train)
        history = [
            (b, torch.from_numpy(a).to(torch.float32))
            for _, (b, a) in zip(range(n_batches), bound.purchase_history(per_step, generator=gen), strict=False)
        ]
    rows: list[tuple[str, float]] = []
    operators: list[tuple[str, float]] = []
    with deterministic_kernels(True):

        def exposure_step(b: Any) -> None:
            model.zero_grad(set_to_none=True)
            model.loss(b).backward()

        rows.append(("exposure step: loss forward + backward (1,024 rows)", _ms(exposure_step, batches, repeats)))
        trainer_step: Callable[[Any], None] = exposure_step
        trainer_items: list[Any] = batches
        if history:

            def history_step(item: Any) -> None:
                model.zero_grad(set_to_none=True)
                model.amount_history_loss(*item).backward()

            rows.append(
                (f"past-purchase step: forward + backward ({per_step:,} rows)", _ms(history_step, history, repeats))
            )

            def joint_step(item: Any) -> None:
                b, (past, amount) = item
                model.zero_grad(set_to_none=True)
                model.loss_with_history(b, past, amount).backward()

            trainer_step, trainer_items = joint_step, list(zip(batches, history, strict=False))
            rows.append(
                (
                    f"joint step (what the trainer runs): both batches in one pass ({1024 + per_step:,} rows)",
                    _ms(joint_step, trainer_items, repeats),
                )
            )
        if profile_top > 0:
            operators = _operator_rows(trainer_step, trainer_items, repeats, profile_top)
        rows.extend((f"  {k}", v) for k, v in _component_rows(model, batches, repeats).items())
        rows.extend((f"  {k}", v) for k, v in _heads_rows(model, batches, repeats).items())

    # Iterators made once, as the trainer makes them once per epoch (the shuffle's permutation is not per step).
    gen2 = torch.Generator().manual_seed(2)
    exposures = bound.exposure_batches("train", 1024, shuffle=True, generator=gen2)
    purchases = bound.purchase_history(per_step, generator=gen2) if per_step else None

    def cut(_: Any) -> None:
        next(exposures)
        if purchases is not None:
            next(purchases)

    rows.append(("batching: the step's exposure and past-purchase batches", _ms(cut, list(range(n_batches)), repeats)))
    flat = FlatParameters(model)
    opt = torch.optim.Adam([flat.flat], lr=1e-3, foreach=True)
    flat.flat.grad = torch.from_numpy(np.full(flat.flat.numel(), 1e-3, dtype=np.float32))

    def adam(_: Any) -> None:
        adam_step(opt, flat.flat)  # the trainer's step (torch's own creates the state on the first call)

    rows.append(("Adam step (flat parameters)", _ms(adam, list(range(n_batches)), repeats)))
    return rows, operators


def main() -> None:
    from train import add_step_args, add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    add_step_args(ap, models="esdpm,esmm", batches=8, repeats=5)
    ap.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also print the step's N top operators (torch.profiler)"
    )
    args = ap.parse_args()

    data = world_from_args(args)
    for name in args.models.split(","):
        rows, operators = measure(data, name, args.batches, args.repeats, args.profile)
        print(f"\n| {name}: component | CPU ms per step |\n|---|---:|")
        for label, ms in rows:
            print(f"| {label} | {ms:.2f} |", flush=True)
        if operators:
            print(f"\n| {name}: operator (the trainer's step) | share of self CPU time |\n|---|---:|")
            for op, share in operators:
                print(f"| `{op}` | {share:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
