"""Training and scoring throughput of the ETV zoo, with a same-size plain MLP as the reference.

    python benchmarks/train.py            # 200k customers x 8 funds; 10M x 8 streamed scoring
    python benchmarks/train.py --quick    # 20k customers; 200k x 8 scoring (a smoke run, a few minutes)
    python benchmarks/train.py --large 1000000   # choose the size of the large scoring run (0: none)
    python benchmarks/train.py --customers 100000 --train-rows 32768 --large 0 --busy 1 --threads 2
        # the default `eoca run` world, with one CPU-bound process competing, torch on 2 threads
    python benchmarks/train.py --customers 100000 --train-rows 32768 --large 0 --params '{"use_sequences": false}'
        # the same models without their sequence branches (what the rest of the network costs)
    python benchmarks/train.py --customers 100000 --train-rows 32768 --large 0 --models esdpm \
        --set sequence_length=4 --set graph_neighbours=4 --params '{"amount_from_history": false}'
        # training-config overrides (--set, repeatable): fewer events and graph edges, no past purchases
    python benchmarks/train.py --customers 100000 --train-rows 32768 --large 0 --timed-epochs 5
        # each training figure the median of 5 timed epochs (a 32-step epoch of the MLP is ~60 CPU-ms: noisy)
    python benchmarks/train.py --customers 100000 --train-rows 32768 --large 0 --timed-epochs 5 --compile
        # also each model and its MLP reference with the training loss under torch.compile (extra rows)

Each measurement runs in its own Python process so its peak resident memory (``ru_maxrss``) is its own:

* training: the second of two epochs (``--timed-epochs N``: the median of epochs 2 to N + 1) of each
  ``--models`` model (default ``esdpm`` and ``esmm``) over (at most ``--train-rows`` of) the simulated world's
  training exposures (samples/s = training rows / wall seconds of the optimisation steps, validation excluded),
  samples per CPU-second (the same rows over the CPU seconds of every thread of the process, which another job
  sharing the machine disturbs far less than wall time), peak RSS of the whole process (data, features and
  validation included). Samples are exposure rows only: the past purchases a model with ``amount_from_history``
  also fits in every step (618 per 1,024-row step on the default world) are extra work, not counted;
* the plain-MLP reference of each trained model: an MLP with two equal hidden layers sized to the model's
  parameter count (within 1%), on a dense float input as wide as the model's row representation (customer
  encoding + fund encoding), trained the same way (Adam, batch size, shuffled rows gathered per batch, BCE on the
  conversion labels, the same epochs timed; its Adam is torch's stock ``step``): what the hardware gives a
  network of that size without the sparse, sequence and graph inputs. The ratio model / MLP in samples per
  CPU-second is the figure of merit;
* scoring: ``write_scores`` of every customer x fund of the simulated world to Parquet (pairs/s and pairs per
  CPU-second);
* large scoring: the simulated customers' profiles tiled to 10M (ids renamed) x 8 funds, streamed to Parquet. Only
  the first copy keeps behaviour events and consumption edges (replicating the world's 50x would need tens of GB
  before scoring starts); the attention and graph layers still run over the others' padded, empty inputs.

``--compile`` adds, after each model's eager rows, the same model trained with its training loss
(``loss`` / ``loss_with_history``, in training mode only; validation stays eager) under ``torch.compile``
(inductor, default mode, automatic dynamic shapes), and its MLP reference with the loss under ``torch.compile``
(static shapes). eoca has no compile option (benchmarks/RESULTS.md, issue 10, seventh pass, says why): the
benchmark wraps the methods itself. Compilation runs in the worker process (``compile_threads = 1``), so a
recompilation inside a timed epoch is counted in its CPU seconds; the first, untimed epoch pays the first
compilation. Each compiled row is compared with both MLP references (eager and compiled).

``--busy N`` runs N CPU-bound processes (a Python loop each) for the whole benchmark, to measure the
"another job shares the machine" case under known conditions. Prints one JSON line per measurement and a
Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _params() -> dict[str, Any]:
    # Model parameters of every trained model (``--params``), passed like the thread count.
    raw = os.environ.get("EOCA_BENCH_PARAMS", "")
    return dict(json.loads(raw)) if raw else {}


def _with_sets(cfg: dict[str, Any]) -> dict[str, Any]:
    # Training-config overrides of every trained model (``--set``), e.g. ``graph_neighbours=4``.
    from eoca.config import apply_overrides

    raw = os.environ.get("EOCA_BENCH_SET", "")
    return apply_overrides(cfg, json.loads(raw)) if raw else cfg


def _timed_epochs() -> int:
    # Epochs timed after the first (``--timed-epochs``); each figure is their median.
    return max(1, int(os.environ.get("EOCA_BENCH_EPOCHS", "1") or 1))


def _compiled() -> bool:
    # Set per worker process by the parent for the ``--compile`` rows.
    return os.environ.get("EOCA_BENCH_COMPILE", "") == "1"


def _setup_compile() -> None:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1  # compile in this process: its CPU time is in the process's figures
    torch._dynamo.config.cache_size_limit = 64


def _compile_training_loss(model: Any) -> Any:
    """``model`` with its training loss methods under ``torch.compile`` while it is in training mode."""
    import torch

    for name in ("loss", "loss_with_history"):
        eager = getattr(model, name, None)
        if eager is None:
            continue
        compiled = torch.compile(eager)

        def loss(*args: Any, _eager: Any = eager, _compiled: Any = compiled, **kwargs: Any) -> Any:
            return _compiled(*args, **kwargs) if model.training else _eager(*args, **kwargs)

        setattr(model, name, loss)
    return model


def _threads() -> int | None:
    # Passed to the worker processes through the environment so the worker command line stays positional.
    raw = os.environ.get("EOCA_BENCH_THREADS", "")
    return int(raw) if raw else None


def _peak_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _world(n_customers: int, out: Path) -> Path:
    from eoca.simulate import load_simulator_config, simulate

    if not (out / "dataset.yaml").exists():
        simulate(load_simulator_config(None, [f"world.n_customers={n_customers}", "world.n_funds=8"])).save(out)
    return out


def add_world_args(ap: argparse.ArgumentParser) -> None:
    """``--customers`` and ``--workdir``: the simulated world the per-step benchmarks beside this script share."""
    ap.add_argument("--customers", type=int, default=100_000, help="customers of the simulated world (8 funds)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the simulated world is kept (reused)")


def add_step_args(
    ap: argparse.ArgumentParser, *, models: str, batches: int, repeats: int | None, models_help: str = ""
) -> None:
    """``--models``, ``--batches`` and (unless ``repeats`` is None) ``--repeats`` of the per-step benchmarks beside
    this script, with each benchmark's own defaults."""
    ap.add_argument("--models", default=models, help="comma-separated zoo models" + models_help)
    ap.add_argument("--batches", type=int, default=batches, help="training batches timed per pass")
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats, help="passes; the median is reported")


def world_from_args(args: argparse.Namespace) -> Path:
    """The world of :func:`add_world_args`' options, simulated on first use and reused after."""
    work = args.workdir or Path(tempfile.gettempdir()) / f"eoca_bench_world_{args.customers}"
    return _world(args.customers, work)


def add_set_args(ap: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable): training-config overrides of every trained model; see :func:`check_sets`."""
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"training-config override for every trained model (repeatable), {example}",
    )


def check_sets(ap: argparse.ArgumentParser, sets: list[str]) -> None:
    """Exit through ``ap.error`` naming the key when an override of :func:`add_set_args` is not a valid config."""
    from eoca.errors import ConfigError
    from eoca.training import load_train_config

    try:
        load_train_config(None, sets)
    except ConfigError as exc:
        ap.error(f"--set: {exc}")


def initial_model(data: Path, name: str) -> tuple[Any, Any]:
    """``(model, bound)``: zoo model ``name`` at its initial weights (seed 0) in training mode on one torch thread,
    and the world at ``data`` bound to its feature space; what the per-step benchmarks beside this script time."""
    import torch

    from eoca.data import Dataset
    from eoca.models import FeatureSpace, build_model, model_defaults

    torch.set_num_threads(1)
    ds = Dataset.load(data, with_truth=False)
    space = FeatureSpace.fit(ds, use_graph=bool(model_defaults(name).get("use_graph", False)))
    torch.manual_seed(0)
    model = build_model(name, space, model_defaults(name))
    model.train()
    return model, space.bind(ds)


def training_batches(model: Any, bound: Any, size: int, n_batches: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``(exposures, pasts)``: ``n_batches`` shuffled training batches of ``size`` exposure rows and, for a model
    that learns its amount from past purchases, as many ``(batch, amount)`` past-purchase batches of the size the
    trainer pairs with such a step (else ``[]``), drawn from ``seed``."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    n_past = bound.n_purchase_history() if model.learns_amount_from_history else 0
    per_step = math.ceil(n_past * size / bound.n_exposures("train")) if n_past else 0
    ex = bound.exposure_batches("train", size, shuffle=True, generator=gen)
    hi = bound.purchase_history(per_step, generator=gen) if per_step else None
    exposures, pasts = [], []
    for _ in range(n_batches):
        exposures.append(next(ex))
        if hi is not None:
            b, a = next(hi)
            pasts.append((b, torch.from_numpy(a).to(torch.float32)))
    return exposures, pasts


def worker_train(data: Path, model: str, max_rows: int | None) -> dict[str, Any]:
    from eoca.data import Dataset
    from eoca.training import train

    ds = Dataset.load(data, with_truth=False)
    if _compiled():
        import eoca.training.trainer as trainer_module

        _setup_compile()
        build = trainer_module.build_model
        trainer_module.build_model = lambda *a, **k: _compile_training_loss(build(*a, **k))  # type: ignore[assignment]
    # The first epoch untimed: it pays one-off costs (TorchScript compilation of the graph layers, allocator
    # warm-up, filling the past-purchase memo) that a real training run amortises over many epochs. Patience as
    # long as the run, so early stopping never cuts the timed epochs short.
    epochs = 1 + _timed_epochs()
    cfg = {
        "model": model,
        "max_epochs": epochs,
        "patience": epochs,
        "batch_size": 1024,
        "max_train_rows": max_rows,
        "num_threads": _threads(),
        "params": _params(),
    }
    t0 = time.perf_counter()
    trained = train(ds, _with_sets(cfg), None, progress=False)
    total = time.perf_counter() - t0
    timed = trained.history[1:] or trained.history[-1:]
    h = trained.history[-1]
    arch: Any = trained.model
    # Models fitted in one call (gbdt) have no epochs to time per CPU-second and no row representation to size an
    # MLP reference by; their row reports wall figures only.
    cpu = h.get("train_cpu_seconds", 0.0)
    width = int(arch.customer_arch.out_dim + arch.fund_arch.out_dim) if hasattr(arch, "customer_arch") else 0
    return {
        "kind": "train",
        "model": model + (" (compiled)" if _compiled() else ""),
        "threads": _torch_threads(),
        "customers": ds.n_customers,
        "funds": ds.n_funds,
        "rows": int(h.get("rows", 0)),
        "parameters": sum(p.numel() for p in arch.parameters()),
        "row_width": width,
        "epoch_s": round(h.get("train_seconds", total), 2),
        "epoch_cpu_s": round(cpu, 2),
        "samples_per_s": round(_median([r.get("samples_per_s", int(h.get("rows", 0)) / total) for r in timed])),
        "samples_per_cpu_s": round(_median([r.get("samples_per_cpu_s", 0.0) for r in timed])),
        "samples_per_cpu_s_each_epoch": [round(r.get("samples_per_cpu_s", 0.0)) for r in timed],
        "total_s_incl_features_and_validation": round(total, 2),
        "peak_rss_mib": round(_peak_mib()),
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def mlp_hidden(width: int, parameters: int) -> int:
    """Hidden width ``h`` of ``Linear(width, h) -> Linear(h, h) -> Linear(h, 1)`` closest to ``parameters``."""
    # width*h + h + h*h + h + h + 1 = parameters
    b = width + 3
    return max(1, round((-b + (b * b + 4 * (parameters - 1)) ** 0.5) / 2))


def worker_mlp(data: Path, like: str, max_rows: int | None, parameters: int, width: int) -> dict[str, Any]:
    """The plain-MLP reference of model ``like`` (see the module docstring)."""
    import numpy as np
    import torch

    from eoca.data import Dataset
    from eoca.models import FeatureSpace
    from eoca.training.trainer import deterministic_kernels, epoch_seed, set_threads

    set_threads(_threads())
    ds = Dataset.load(data, with_truth=False)
    labels = FeatureSpace.fit(ds).bind(ds).exposure_labels("train")
    y = torch.from_numpy(labels["converted"].astype(np.float32))
    n = int(y.shape[0])
    rows = min(n, max_rows or n)
    torch.manual_seed(0)
    x = torch.randn(n, width)
    h = mlp_hidden(width, parameters)
    net = torch.nn.Sequential(
        torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01, foreach=True)
    bce = torch.nn.BCEWithLogitsLoss()

    def step_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return bce(net(xb).squeeze(-1), yb)

    if _compiled():
        _setup_compile()
        step_loss = torch.compile(step_loss, dynamic=False)
    batch = 1024
    walls: list[float] = []
    cpus: list[float] = []
    with deterministic_kernels(True):
        for epoch in range(1 + _timed_epochs()):
            gen = torch.Generator().manual_seed(epoch_seed(0, epoch))
            t0, c0 = time.perf_counter(), time.process_time()
            perm = torch.randperm(n, generator=gen)[:rows]
            for s in range(0, rows, batch):
                idx = perm[s : s + batch]
                opt.zero_grad(set_to_none=True)
                loss = step_loss(x[idx], y[idx])
                loss.backward()
                opt.step()
            if epoch:  # the first epoch warms up, as the model's
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
    wall, cpu = _median(walls), _median(cpus)
    return {
        "kind": "mlp",
        "model": f"mlp like {like}" + (" (compiled)" if _compiled() else ""),
        "threads": _torch_threads(),
        "rows": rows,
        "parameters": sum(p.numel() for p in net.parameters()),
        "row_width": width,
        "hidden": h,
        "epoch_s": round(wall, 2),
        "epoch_cpu_s": round(cpu, 2),
        "samples_per_s": round(rows / wall),
        "samples_per_cpu_s": round(rows / cpu),
        "samples_per_cpu_s_each_epoch": [round(rows / c) for c in cpus],
        "peak_rss_mib": round(_peak_mib()),
    }


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _trained(ds: Any, model: str) -> Any:
    from eoca.training import train

    # A few thousand rows are enough: scoring speed does not depend on how well the weights fit.
    cfg = {"model": model, "max_epochs": 1, "max_train_rows": 20000, "num_threads": _threads(), "params": _params()}
    return train(ds, _with_sets(cfg), None, progress=False)


def _tile(ds: Any, n_target: int) -> Any:
    """A dataset whose customers are ``ds``'s repeated to ``n_target`` rows (new ids, same features)."""
    import numpy as np
    import pyarrow as pa

    from eoca.data import Dataset

    reps = -(-n_target // ds.n_customers)
    idx = np.tile(np.arange(ds.n_customers), reps)[:n_target]
    customers = ds.customers.take(pa.array(idx))
    ids = pa.array(np.arange(n_target, dtype=np.int64))
    customers = customers.set_column(
        customers.column_names.index("customer_id"), "customer_id", ids.cast(customers.schema.field("customer_id").type)
    )
    # Simulated ids are 0..N-1, so the first copy keeps its own ids, exposures, events and consumption edges.
    return Dataset(
        spec=ds.spec,
        customers=customers,
        funds=ds.funds,
        exposures=ds.exposures,
        events=ds.events,
        consumption=ds.consumption,
    )


def worker_score(data: Path, model: str, n_customers: int | None, out_dir: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from eoca.data import Dataset
    from eoca.training import write_scores

    ds = Dataset.load(data, with_truth=False)
    trained = _trained(ds, model)
    target = _tile(ds, n_customers) if n_customers else ds
    path = out_dir / f"scores_{model}_{target.n_customers}.parquet"
    t0, c0 = time.perf_counter(), time.process_time()
    write_scores(trained, target, path, chunk_customers=65536, progress=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    pairs = target.n_customers * target.n_funds
    rows = pq.read_metadata(path).num_rows
    size = path.stat().st_size
    path.unlink()
    return {
        "kind": "score",
        "model": model,
        "threads": _torch_threads(),
        "customers": target.n_customers,
        "funds": target.n_funds,
        "pairs": pairs,
        "rows_written": rows,
        "seconds": round(secs, 1),
        "cpu_seconds": round(cpu, 1),
        "pairs_per_s": round(pairs / secs),
        "pairs_per_cpu_s": round(pairs / cpu),
        "parquet_mib": round(size / 2**20),
        "peak_rss_mib": round(_peak_mib()),
    }


def _run_worker(args: list[str], *, compiled: bool = False) -> dict[str, Any]:
    env = {**os.environ, "EOCA_BENCH_COMPILE": "1" if compiled else ""}
    if compiled:  # a fresh on-disk kernel cache: each compiled worker pays a first compilation
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="eoca_inductor_")
    res = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False, env=env
    )
    if res.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{res.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(out), flush=True)
    return out


def _burn() -> None:
    """A CPU-bound job competing for the machine (``--busy``)."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def _rows_arg(raw: str) -> int | None:
    return int(raw) if raw != "all" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20k customers and a 200k-customer scoring run")
    ap.add_argument("--customers", type=int, default=None, help="customers of the simulated world (8 funds)")
    ap.add_argument("--models", default="esdpm,esmm", help="comma-separated zoo models to train")
    ap.add_argument("--train-rows", type=int, default=None, help="training rows timed per model (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: eoca's automatic policy)")
    ap.add_argument("--large", type=int, default=None, help="customers of the large scoring run (0: skip it)")
    ap.add_argument(
        "--timed-epochs",
        type=int,
        default=1,
        help="epochs timed after the untimed first one, for the models and their MLP references alike; each "
        "figure is the median over them (1: the second epoch only)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also train each model and its MLP reference with the training loss under torch.compile",
    )
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound processes competing during the benchmark")
    ap.add_argument(
        "--params",
        default="",
        help="model parameters (JSON) for every trained model, e.g. '{\"use_sequences\": false}' to time a model "
        "without its sequence branches",
    )
    add_set_args(ap, "e.g. --set graph_neighbours=4 --set sequence_length=4")
    ap.add_argument("--workdir", type=Path, default=None, help="where the simulated world is kept (reused)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "train":
            result = worker_train(Path(rest[0]), rest[1], _rows_arg(rest[2]))
        elif kind == "mlp":
            result = worker_mlp(Path(rest[0]), rest[1], _rows_arg(rest[2]), int(rest[3]), int(rest[4]))
        else:
            n = int(rest[2]) if rest[2] != "none" else None
            result = worker_score(Path(rest[0]), rest[1], n, Path(rest[3]))
        print(json.dumps(result))
        return

    if args.threads:
        os.environ["EOCA_BENCH_THREADS"] = str(args.threads)
    os.environ["EOCA_BENCH_EPOCHS"] = str(max(1, args.timed_epochs))
    if args.params:
        os.environ["EOCA_BENCH_PARAMS"] = json.dumps(json.loads(args.params))
    if args.sets:
        check_sets(ap, args.sets)  # a bad key or value fails here, naming it, before any world is built
        os.environ["EOCA_BENCH_SET"] = json.dumps(args.sets)
    n_world = args.customers or (20_000 if args.quick else 200_000)
    n_large = args.large if args.large is not None else (200_000 if args.quick else 10_000_000)
    rows = str(args.train_rows) if args.train_rows else "all"
    work = args.workdir or Path(tempfile.gettempdir()) / f"eoca_bench_world_{n_world}"
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.busy)]
    for b in burners:
        b.start()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        data = _world(n_world, work)
        print(json.dumps({"kind": "world", "customers": n_world, "seconds": round(time.perf_counter() - t0, 1)}))
        results: list[dict[str, Any]] = []
        for m in args.models.split(","):
            for compiled in (False, True) if args.compile else (False,):
                r = _run_worker(["train", str(data), m, rows], compiled=compiled)
                results.append(r)
                if r["row_width"] and r["samples_per_cpu_s"]:
                    ref = ["mlp", str(data), m, rows, str(r["parameters"]), str(r["row_width"])]
                    results.append(_run_worker(ref, compiled=compiled))
        results.append(_run_worker(["score", str(data), "esdpm", "none", str(work)]))
        if n_large:
            results.append(_run_worker(["score", str(data), "esdpm", str(n_large), str(work)]))
    finally:
        for b in burners:
            b.terminate()
    load_after = os.getloadavg()
    import torch

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, torch "
        f"{torch.__version__}; {args.busy} competing CPU-bound process(es); load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)}; wall "
        f"{time.perf_counter() - t0:.0f} s\n"
    )
    n_timed = _timed_epochs()
    timed = "2nd epoch" if n_timed == 1 else f"median of epochs 2-{n_timed + 1}"
    print(_table(results, timed, with_compiled=args.compile))


def _table(results: list[dict[str, Any]], timed: str, *, with_compiled: bool) -> str:
    """The Markdown table of the results. "vs MLP": a model's samples per CPU-second over its MLP reference's,
    trained the same way (eager or compiled); "vs eager MLP" (with ``--compile``): over the eager reference's,
    and for a compiled MLP its speed over the eager MLP's."""
    head = "| measurement | model (parameters) | threads | size | samples or pairs per CPU-s | per wall s | vs MLP |"
    lines = [head + (" vs eager MLP |" if with_compiled else ""), "|---|---|---:|---|---:|---:|---:|"]
    lines[-1] += "---:|" if with_compiled else ""
    mlp = {r["model"].removeprefix("mlp like "): r for r in results if r["kind"] == "mlp"}
    for r in results:
        if r["kind"] not in ("train", "mlp"):
            lines.append(
                f"| scoring to Parquet | {r['model']} | {r['threads']} | {r['customers']:,} x {r['funds']} = "
                f"{r['pairs']:,} pairs | {r['pairs_per_cpu_s']:,} | {r['pairs_per_s']:,} | |"
                + (" |" if with_compiled else "")
            )
            continue
        per_cpu = r["samples_per_cpu_s"]
        base = r["model"].removeprefix("mlp like ").removesuffix(" (compiled)")
        if r["kind"] == "mlp":
            eager = mlp.get(base)
            cells = ["", f"{per_cpu / eager['samples_per_cpu_s']:.2f}x" if eager and per_cpu else ""]
        else:
            refs = [mlp.get(r["model"]), mlp.get(base)]
            cells = [f"1/{ref['samples_per_cpu_s'] / per_cpu:.1f}" if ref and per_cpu else "" for ref in refs]
        lines.append(
            f"| training ({timed}) | {r['model']} ({r['parameters']:,}) | {r['threads']} | {r['rows']:,} rows "
            f"| {per_cpu:,} | {r['samples_per_s']:,} | " + " | ".join(cells[: 2 if with_compiled else 1]) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
