"""How a training step's CPU time splits into a fixed part per step and a part per row, for zoo models and their
same-size plain MLPs: which kind of speed-up can reach which ratio.

    python benchmarks/train_scaling.py --customers 100000 --models esdpm,esmm --workdir W

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), one torch thread, each model
at its initial weights in training mode. For every batch size of ``--batch-sizes`` it times the trainer's step on
``--batches`` training batches (the model's ``loss``, or ``loss_with_history`` with the proportional number of past
purchases for a model that learns its amount from them; backward; the trainer's Adam on the flat parameters) and,
separately, cutting those batches from the bound dataset. Every figure is CPU milliseconds per step, the median of
``--repeats`` passes. The plain-MLP reference is ``benchmarks/train.py``'s (two equal hidden layers sized to the
model's parameter count, as wide an input as the model's row representation, BCE, torch's Adam, rows gathered
from a dense matrix), timed at the same batch sizes.

A least-squares line ``ms = fixed + per_row x rows`` is fitted to each (batch size, ms) series. ``fixed`` is what
fewer kernels, less Python per step or less per-batch bookkeeping can remove at most; ``per_row`` is the work that
grows with the data. The table's last column, ``per_row`` of the MLP over ``per_row`` of the model, is the
model's ratio to its MLP if every fixed cost of both were zero: the best any per-step saving can give. Prints the
raw points and one Markdown table.

``--autocast bf16`` runs every timed step, the model's and the MLP's, under ``torch.autocast("cpu", bfloat16)``
(a change of numerics, timing only): whether 16-bit activations pay on the CPU at hand, whose instruction set
(``torch.backends.cpu.get_cpu_capability()``) is printed first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any


def _precision(autocast: str) -> AbstractContextManager[Any]:
    """The context every timed step runs in: nothing for ``"none"``, CPU autocast to bfloat16 for ``"bf16"``."""
    import torch

    if autocast == "none":
        return nullcontext()
    if autocast == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"--autocast must be 'none' or 'bf16', not {autocast!r}")


def _ms(fn: Callable[[int], None], n: int, repeats: int, autocast: str = "none") -> float:
    """Median over ``repeats`` passes of the CPU milliseconds per call of ``fn(i)``, ``i`` in ``range(n)``, each pass
    under :func:`_precision` of ``autocast``."""
    with _precision(autocast):
        fn(0)
    times = []
    for _ in range(repeats):
        with _precision(autocast):
            c0 = time.process_time()
            for i in range(n):
                fn(i)
            times.append((time.process_time() - c0) / n * 1e3)
    return statistics.median(times)


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of ``y = intercept + slope x`` through ``(x, y)`` points (at least two
    distinct ``x``)."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    if len(set(xs)) < 2:
        raise ValueError("fit_line needs at least two distinct batch sizes")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def _trainer_step(model: Any, flat: Any, opt: Any, exposures: list[Any], pasts: list[Any]) -> Callable[[int], None]:
    """The trainer's step on batch ``i``: loss (joint with the past purchases where the model has them), backward,
    Adam on the flat parameters."""
    from eoca.training.trainer import adam_step

    def step(i: int) -> None:
        model.zero_grad(set_to_none=True)
        loss = model.loss_with_history(exposures[i], *pasts[i]) if pasts else model.loss(exposures[i])
        loss.backward()
        adam_step(opt, flat.flat)

    return step


def _mlp_step(net: Any, opt: Any, bce: Any, x: Any, y: Any, perm: Any, size: int) -> Callable[[int], None]:
    def step(i: int) -> None:
        idx = perm[i * size : (i + 1) * size]
        opt.zero_grad(set_to_none=True)
        bce(net(x[idx]).squeeze(-1), y[idx]).backward()
        opt.step()

    return step


def model_points(
    data: Path, name: str, sizes: list[int], n_batches: int, repeats: int, autocast: str = "none"
) -> tuple[dict[str, list[tuple[int, float]]], int, int]:
    """``({"step": [(rows, ms)], "batching": [...]}, parameters, row width)`` of zoo model ``name``."""
    import torch

    from eoca.training.trainer import FlatParameters, deterministic_kernels
    from train import initial_model, training_batches

    model, bound = initial_model(data, name)
    flat = FlatParameters(model)
    opt = torch.optim.Adam([flat.flat], lr=1e-3, foreach=True)
    out: dict[str, list[tuple[int, float]]] = {"step": [], "batching": []}
    for size in sizes:
        exposures, pasts = training_batches(model, bound, size, n_batches, 1)
        with deterministic_kernels(True):
            step = _trainer_step(model, flat, opt, exposures, pasts)
            out["step"].append((size, _ms(step, n_batches, repeats, autocast)))
        training_batches(model, bound, size, n_batches, 2)  # fills the past-purchase memo, as epoch 1 does
        c_times = []
        for r in range(repeats):
            c0 = time.process_time()
            training_batches(model, bound, size, n_batches, 3 + r)
            c_times.append((time.process_time() - c0) / n_batches * 1e3)
        out["batching"].append((size, statistics.median(c_times)))
    arch: Any = model
    width = int(arch.customer_arch.out_dim + arch.fund_arch.out_dim)
    return out, sum(p.numel() for p in model.parameters()), width


def mlp_points(
    width: int, parameters: int, sizes: list[int], n_batches: int, repeats: int, autocast: str = "none"
) -> list[tuple[int, float]]:
    """``[(rows, ms per step)]`` of the same-size plain MLP (``benchmarks/train.py``'s reference)."""
    import torch

    from eoca.training.trainer import deterministic_kernels
    from train import mlp_hidden  # benchmarks/train.py, beside this script: one definition of the reference

    torch.set_num_threads(1)
    torch.manual_seed(0)
    h = mlp_hidden(width, parameters)
    net = torch.nn.Sequential(
        torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01, foreach=True)
    bce = torch.nn.BCEWithLogitsLoss()
    n = max(sizes) * n_batches
    x = torch.randn(n, width)
    y = (torch.rand(n) < 0.01).to(torch.float32)
    out = []
    for size in sizes:
        step = _mlp_step(net, opt, bce, x, y, torch.randperm(n), size)
        with deterministic_kernels(True):
            out.append((size, _ms(step, n_batches, repeats, autocast)))
    return out


def main() -> None:
    from train import add_step_args, add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    add_step_args(ap, models="esdpm,esmm", batches=8, repeats=5)
    ap.add_argument("--batch-sizes", default="128,256,512,1024,2048", help="exposure rows per step")
    ap.add_argument(
        "--autocast", choices=("none", "bf16"), default="none", help="precision of every timed step (timing only)"
    )
    args = ap.parse_args()

    sizes = sorted({int(s) for s in args.batch_sizes.split(",")})
    if len(sizes) < 2 or sizes[0] < 1:
        raise SystemExit("--batch-sizes needs at least two distinct positive sizes")
    import torch

    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; autocast: {args.autocast}", flush=True)
    data = world_from_args(args)
    rows_md = []
    for name in args.models.split(","):
        points, parameters, width = model_points(data, name, sizes, args.batches, args.repeats, args.autocast)
        total = [(s, a + b) for (s, a), (_, b) in zip(points["step"], points["batching"], strict=True)]
        mlp = mlp_points(width, parameters, sizes, args.batches, args.repeats, args.autocast)
        for label, series in (("step", points["step"]), ("batching", points["batching"]), ("MLP step", mlp)):
            print(f"{name} {label}: " + ", ".join(f"{s}: {ms:.2f}" for s, ms in series), flush=True)
        fixed, per_row = fit_line(total)
        m_fixed, m_per_row = fit_line(mlp)
        at = 1024 if 1024 in sizes else sizes[len(sizes) // 2]
        model_at = dict(total)[at]
        mlp_at = dict(mlp)[at]
        rows_md.append(
            f"| {name} ({parameters:,}) | {fixed:.2f} | {per_row * 1024:.2f} | {m_fixed:.2f} | {m_per_row * 1024:.2f} "
            f"| 1/{model_at / mlp_at:.1f} | 1/{per_row / m_per_row:.1f} |"
        )
    print(
        "\n| model (parameters) | fixed ms/step | ms per 1,024 rows | MLP fixed | MLP per 1,024 rows "
        f"| ratio at {at:,} rows | ratio with no fixed cost |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(rows_md))


if __name__ == "__main__":
    main()
