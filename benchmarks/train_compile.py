"""What ``torch.compile`` does to a zoo model's training step, measured in one process against eager steps.

    python benchmarks/train_compile.py --customers 100000 --models esmm,esdpm --workdir W
    python benchmarks/train_compile.py --customers 100000 --models esmm --workdir W --no-deterministic --no-dropout
        # the best case of the dense part: no dropout draws, torch's non-deterministic scatter kernels
    python benchmarks/train_compile.py --customers 100000 --models esmm --workdir W --dynamic true
        # symbolic shapes from the start (--mode max-autotune-no-cudagraphs: inductor's autotuned mode)
    python benchmarks/train_compile.py --customers 100000 --models esmm,esdpm --workdir W --explain
        # where compilation splits each model's loss into graphs (torch._dynamo.explain), and why

On the simulated world (reused from ``--workdir``, as ``benchmarks/train.py`` keeps it), one torch thread, each
model at its initial weights in training mode steps over the first ``--batches`` training batches of 1,024 rows
of epoch 1 as the trainer cuts them (with the past purchases the trainer pairs with each step, for a model that
learns its amount from them), with the trainer's own step (``FlatParameters``, ``adam_step``, one read of the
loss; batching excluded). Three ways of computing the loss are timed in blocks of one pass over those batches
that alternate (the machine is shared: only figures of the same process and the same minutes are compared):

* ``eager``: the model's ``loss`` (``loss_with_history`` with past purchases), as the trainer runs it;
* ``compiled loss``: the same method under ``torch.compile`` (inductor, default mode, automatic dynamic shapes;
  the model's data-dependent packing of behaviour events splits it into many graphs);
* ``compiled dense part``: the customer / fund / candidate encoders eager, then the MMoE, the towers and the loss
  compiled as one graph (the part of the step whose shapes do not depend on the data). Its eager form is
  checked equal to the model's loss bit for bit before timing, so it computes the same thing.

Also the plain-MLP reference of ``benchmarks/train.py`` (two equal hidden layers sized to the model's parameter
count, torch's Adam) eager and compiled, in alternating blocks of 32 steps. Compilation runs in this process
(``compile_threads = 1``) and the C++ compiler as its child, whose CPU time is added to the first compiled pass,
reported as the compile cost. Inductor's on-disk cache is a fresh temporary folder per run, so that cost is a
first compilation's (a second process with the same shapes would read the kernels from the cache). Prints one
JSON line per measurement and a Markdown table. ``--mode`` passes inductor's mode (e.g.
``max-autotune-no-cudagraphs``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Step = Callable[[Any], None]


def _items(data: Path, name: str, n_batches: int) -> tuple[Any, list[tuple[Any, Any]]]:
    """The model at its initial weights and the first ``n_batches`` steps' (exposure batch, past purchases or
    None) of epoch 1, drawn as the trainer draws them."""
    import torch

    from eoca.data import Dataset
    from eoca.models import build_model
    from eoca.training.config import coerce_train_config
    from eoca.training.trainer import _fit_features, _history_batches, epoch_seed

    ds = Dataset.load(data, with_truth=False)
    cfg = coerce_train_config({"model": name, "batch_size": 1024, "num_threads": 1})
    features = _fit_features(ds, cfg)
    bound = features.bind(ds)
    torch.manual_seed(cfg.seed)
    model = build_model(name, features, cfg.params)
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, 0))
    n_train = bound.n_exposures("train")
    batches = bound.exposure_batches("train", cfg.batch_size, shuffle=True, generator=gen)
    history = _history_batches(model, bound, gen, n_batches * cfg.batch_size, n_train, cfg.batch_size)
    items: list[tuple[Any, Any]] = []
    for batch in batches:
        if len(items) == n_batches:
            break
        past = next(history, None)
        items.append((batch, None if past is None else (past[0], torch.from_numpy(past[1]).to(torch.float32))))
    return model, items


def _dense_part(model: Any) -> Callable[..., Any] | None:
    """The loss from the encoded inputs on (MMoE, towers, loss) as one function of tensors, for ``esmm`` and the
    ESDPM family; None for other models."""
    from eoca.models.layers import PairInput
    from eoca.models.losses import bce_loss, positive_sigma
    from eoca.models.zoo.common import ConversionHeads
    from eoca.models.zoo.esdpm import EsdpmFamily
    from eoca.models.zoo.esmm import Esmm

    def pair_input(customer: Any, row_unit: Any, fund: Any, fund_index: Any, pair: Any) -> Any:
        pi = PairInput(customer, row_unit, fund, fund_index, pair)
        # Training rows are never the scoring grid; the check is data-dependent and would split the graph.
        pi.__dict__["is_grid"] = False
        return pi

    if isinstance(model, Esmm):

        def esmm(customer: Any, row_unit: Any, fund: Any, fund_index: Any, pair: Any, batch: Any) -> Any:
            h = model.mmoe(pair_input(customer, row_unit, fund, fund_index, pair))
            logit_ctr, logit_cvr = model.heads(h[:, 0], h[:, 1])
            ctcvr = bce_loss(*ConversionHeads.log_probs(logit_ctr, logit_cvr), batch.converted)
            return ctcvr + ConversionHeads.click_loss(logit_ctr, batch)

        return esmm
    if isinstance(model, EsdpmFamily):

        def esdpm(
            customer: Any, row_unit: Any, fund: Any, fund_index: Any, pair: Any, batch: Any, amount: Any, n: int
        ) -> Any:
            h = model.mmoe(pair_input(customer, row_unit, fund, fund_index, pair))
            logit_ctr, logit_cvr, (out,) = model.heads.forward_with(h[:, 0], h[:, 1], [(model.lognormal, h[:, 2])])
            mu, sigma = out[:, 0], positive_sigma(out[:, 1])
            ctr = logit_ctr[:n] if logit_ctr is not None else None
            exposure = model._exposure_loss(batch, ctr, logit_cvr[:n], mu[:n], sigma[:n])
            return exposure + model._history_nll(mu[n:], sigma[n:], amount) / n

        return esdpm
    return None


def _dense_loss(model: Any, dense: Callable[..., Any]) -> Callable[..., Any]:
    """The model's training loss with the encoders eager and ``dense`` (eager or compiled) for the rest."""
    from eoca.models.features.batching import concat_batches

    def loss(batch: Any, past: Any = None, amount: Any = None) -> Any:
        rows = batch if past is None else concat_batches(batch, past)
        pi = model.encode(rows)
        args = (pi.customer, pi.row_unit, pi.fund, pi.fund_index, pi.pair, batch)
        return dense(*args) if past is None else dense(*args, amount, len(batch))

    return loss


def _trainer_step(model: Any) -> Callable[[Callable[..., Any]], Step]:
    """The trainer's step around a loss function (flat parameters, ``adam_step``, one read of the loss)."""
    import torch

    from eoca.training.trainer import FlatParameters, adam_step

    flat = FlatParameters(model)
    opt = torch.optim.Adam([flat.flat], lr=0.01, foreach=True)

    def make(loss_fn: Callable[..., Any]) -> Step:
        def step(item: Any) -> None:
            batch, past = item
            flat.zero_grad()
            loss = loss_fn(batch) if past is None else loss_fn(batch, *past)
            float(loss.detach())
            loss.backward()
            flat.gather_grad()
            adam_step(opt, flat.flat)

        return step

    return make


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (inductor runs the C++ compiler as a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _pass_ms(step: Step, items: list[Any]) -> float:
    """CPU milliseconds per item of one pass of ``step`` over ``items``."""
    c0 = time.process_time()
    for item in items:
        step(item)
    return (time.process_time() - c0) / len(items) * 1e3


def _compare(steps: dict[str, Step], items: list[Any], blocks: int) -> dict[str, dict[str, float]]:
    """Warm every step (the first pass of a compiled one is its compile cost), then ``blocks`` alternating passes
    of each; the median CPU ms per step."""
    out: dict[str, dict[str, float]] = {}
    for name, step in steps.items():
        w0, c0 = time.perf_counter(), _cpu_seconds()
        step(items[0])
        for item in items:
            step(item)
        out[name] = {"first_pass_cpu_s": _cpu_seconds() - c0, "first_pass_wall_s": time.perf_counter() - w0}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(blocks):
        for name, step in steps.items():
            times[name].append(_pass_ms(step, items))
    for name, ts in times.items():
        out[name].update(ms=statistics.median(ts), ms_min=min(ts), ms_max=max(ts))
    return out


def _mlp_steps(width: int, parameters: int, mode: str | None) -> tuple[dict[str, Step], list[Any]]:
    """The MLP reference of ``benchmarks/train.py`` (same sizing, loss and Adam), eager and compiled."""
    import torch

    from train import mlp_hidden  # benchmarks/train.py, beside this script

    h = mlp_hidden(width, parameters)
    torch.manual_seed(0)
    n = 32 * 1024
    x, y = torch.randn(n, width), (torch.rand(n) < 0.01).to(torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01, foreach=True)
    bce = torch.nn.BCEWithLogitsLoss()

    def loss(xb: Any, yb: Any) -> Any:
        return bce(net(xb).squeeze(-1), yb)

    compiled = torch.compile(loss, dynamic=False, **({"mode": mode} if mode else {}))

    def make(fn: Callable[..., Any]) -> Step:
        def step(idx: Any) -> None:
            opt.zero_grad(set_to_none=True)
            fn(x[idx], y[idx]).backward()
            opt.step()

        return step

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return {"eager": make(loss), "compiled": make(compiled)}, list(perm.split(1024))


def explain(data: Path, name: str) -> None:
    """Print where ``torch.compile`` splits the model's training loss (``torch._dynamo.explain`` on the first
    batch): the number of graphs, and each graph break's reason and the line of eoca's code it happened at."""
    import torch._dynamo

    from eoca.training.trainer import deterministic_kernels, set_threads

    set_threads(1)
    model, items = _items(data, name, 1)
    model.train()
    batch, past = items[0]
    own = model.loss if past is None else model.loss_with_history
    with deterministic_kernels(True):
        report = torch._dynamo.explain(own)(batch) if past is None else torch._dynamo.explain(own)(batch, *past)
    print(json.dumps({"model": name, "graphs": report.graph_count, "graph_breaks": report.graph_break_count}))
    for reason in report.break_reasons:
        frames = [f for f in reason.user_stack if "/eoca/" in f.filename]
        where = f"{frames[-1].filename.split('/eoca/')[-1]}:{frames[-1].lineno} {frames[-1].line}" if frames else ""
        print(f"- {reason.reason.splitlines()[0]} at {where}")


def measure(data: Path, name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor_config

    from eoca.training.trainer import deterministic_kernels, set_threads

    set_threads(1)
    inductor_config.compile_threads = 1  # compile in this process, so its CPU time is counted
    inductor_config.fallback_random = bool(args.fallback_random)
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.reset()
    model, items = _items(data, name, args.batches)
    model.train()
    if args.no_dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    kw: dict[str, Any] = {"mode": args.mode} if args.mode else {}
    kw["dynamic"] = {"auto": None, "true": True, "false": False}[args.dynamic]
    own = model.loss if items[0][1] is None else model.loss_with_history
    rows: list[dict[str, Any]] = []
    with deterministic_kernels(not args.no_deterministic):
        make = _trainer_step(model)
        steps = {"eager": make(own), "compiled loss": make(torch.compile(own, **kw))}
        dense = _dense_part(model)
        if dense is not None:
            batch, past = items[0]
            state = torch.get_rng_state()
            want = own(batch) if past is None else own(batch, *past)
            torch.set_rng_state(state)
            got = _dense_loss(model, dense)(batch) if past is None else _dense_loss(model, dense)(batch, *past)
            if not torch.equal(want.detach(), got.detach()):
                raise SystemExit(
                    f"{name}: the dense part's eager loss {float(got)} differs from the model's {float(want)}"
                )
            steps["compiled dense part"] = make(_dense_loss(model, torch.compile(dense, **kw)))
        result = _compare(steps, items, args.blocks)
        graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        width = int(model.customer_arch.out_dim + model.fund_arch.out_dim)
        n_params = sum(p.numel() for p in model.parameters())
        torch._dynamo.reset()
        mlp_steps, mlp_items = _mlp_steps(width, n_params, args.mode)
        mlp = _compare(mlp_steps, mlp_items, args.blocks)
    for variant, r in result.items():
        rows.append({"model": name, "variant": variant, "parameters": n_params, **_rounded(r)})
    for variant, r in mlp.items():
        rows.append({"model": f"mlp like {name}", "variant": variant, "parameters": n_params, **_rounded(r)})
    rows[0]["unique_graphs_all_compiled"] = graphs
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def _rounded(r: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3 if k.startswith("ms") else 1) for k, v in r.items()}


def main() -> None:
    from train import add_step_args, add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    add_step_args(ap, models="esmm,esdpm", batches=32, repeats=None)
    ap.add_argument("--blocks", type=int, default=5, help="alternating timed passes of each variant")
    ap.add_argument("--mode", default=None, help="torch.compile mode (default: inductor's default)")
    ap.add_argument(
        "--dynamic",
        choices=("auto", "true", "false"),
        default="auto",
        help="torch.compile's dynamic: auto (static, then dynamic after a shape changes), true, false (one graph "
        "per shape)",
    )
    ap.add_argument("--no-deterministic", action="store_true", help="torch's non-deterministic kernels")
    ap.add_argument("--no-dropout", action="store_true", help="dropout rates set to 0 (not what training does)")
    ap.add_argument("--fallback-random", action="store_true", help="inductor draws random numbers with aten")
    ap.add_argument("--explain", action="store_true", help="only print where compilation splits each loss")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="eoca_inductor_")

    data = world_from_args(args)
    if args.explain:
        for name in args.models.split(","):
            explain(data, name)
        return
    load_before = os.getloadavg()
    rows = [r for name in args.models.split(",") for r in measure(data, name, args)]
    import torch

    print(
        f"\ntorch {torch.__version__}, one thread; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print("| model | variant | first pass (compile) CPU s / wall s | CPU ms per step (min-max) | vs eager |")
    print("|---|---|---:|---:|---:|")
    eager = {r["model"]: r["ms"] for r in rows if r["variant"] == "eager"}
    for r in rows:
        print(
            f"| {r['model']} | {r['variant']} | {r['first_pass_cpu_s']} / {r['first_pass_wall_s']} | "
            f"{r['ms']:.2f} ({r['ms_min']:.2f}-{r['ms_max']:.2f}) | {eager[r['model']] / r['ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
