"""How much of a training step fused kernels could remove: both behaviour-sequence branches as compiled loops.

    pip install numba          # or: pip install -e ".[bench]"
    python benchmarks/train_fused.py --customers 100000 --models esmm,esdpm --workdir W

A measurement of a route, not a part of eoca: the product trains with torch's eager kernels only. The question it
answers (issue 10): the zoo's step costs are per row, not per kernel launch (``benchmarks/train_scaling.py``), so
would one compiled kernel per layer, touching each behaviour event once forward and once backward instead of once
per torch operation, bring ``esmm`` to 1/3 and ``esdpm`` to 1/4 of their same-size MLPs?

Two of the zoo's layers are rewritten here as numba loops with hand-derived gradients, on the layers' own
parameters: :class:`~eoca.models.layers.TargetAttention`'s ``rows`` (event encoding, key projection, per-(row,
event) sigmoid weights with the same-fund and same-type biases, weighted sum) and
:class:`~eoca.models.layers.BehaviourAttentionPooling`'s per-event part (event encoding, per-head scores, softmax
over each unit's events, pooling; its projection, LayerNorm and dropout stay in torch). On the simulated world
(reused from ``--workdir``), one thread, each model at its initial weights in training mode:

* gradients: one step of the trainer's loss (``loss_with_history`` where the model learns from past purchases)
  with the eager layers and with the fused ones, the same batch and the same dropout draws; the largest
  difference per parameter tensor relative to that tensor's largest eager gradient. A tensor whose gradient is
  zero in exact arithmetic (the pooling scores' bias: a softmax does not change when every score of a head moves
  by the same amount) is listed apart, since both sides hold only rounding there;
* CPU ms per step (forward and backward of that loss, batching and Adam excluded), the median over ``--repeats``
  passes over ``--batches`` batches, the variants alternating pass by pass so that load falls on all alike:
  ``eager``; ``target attention fused``; ``both sequence branches fused``; and, for a model with the consumption
  graph, ``both fused, graph free``: the graph branch replaced by zeros of its output's shape, which costs
  nothing. That row is a lower bound for any implementation of the graph layers, not a model.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - exercised by hand
    raise SystemExit("benchmarks/train_fused.py needs numba: pip install numba (or pip install -e '.[bench]')") from exc

from eoca.models import layers as L

F32 = np.float32


@njit(cache=False, fastmath=True, boundscheck=False)
def _attention_forward(
    ev_fund,
    ev_grp,
    ev_type,
    amount,
    age,
    Wf,
    Wg,
    We,
    Wv,
    bv,
    Wk,
    q,
    row_unit,
    fund_index,
    counts,
    start,
    cand,
    cand_grp,
    m0,
    m1,
    scale,
    pool,
    x,
    k,
    out,
    wbuf,
):
    n_events, dim = x.shape
    for n in range(n_events):
        fu, gr, et, a, ag = ev_fund[n], ev_grp[n], ev_type[n], amount[n], age[n]
        for e in range(dim):
            x[n, e] = Wf[fu, e] + Wg[gr, e] + We[et, e] + (Wv[e, 0] * a + Wv[e, 1] * ag + bv[e])
        for e in range(dim):
            acc = F32(0.0)
            for d in range(dim):
                acc += Wk[e, d] * x[n, d]
            k[n, e] = acc
    p = 0
    for r in range(row_unit.shape[0]):
        u, f = row_unit[r], fund_index[r]
        for j in range(counts[u]):
            n = start[u] + j
            sc = F32(0.0)
            for e in range(dim):
                sc += k[n, e] * q[f, e]
            sc *= scale
            if ev_fund[n] == cand[f]:
                sc += m0
            if ev_grp[n] == cand_grp[f] and ev_grp[n] > 0:
                sc += m1
            w = pool / (F32(1.0) + np.exp(-sc))
            wbuf[p] = w
            p += 1
            for e in range(dim):
                out[r, e] += w * x[n, e]


@njit(cache=False, fastmath=True, boundscheck=False)
def _attention_backward(
    gout,
    ev_fund,
    ev_grp,
    ev_type,
    amount,
    age,
    Wk,
    q,
    x,
    k,
    row_unit,
    fund_index,
    counts,
    start,
    cand,
    cand_grp,
    pool,
    scale,
    wbuf,
    gWf,
    gWg,
    gWe,
    gWv,
    gbv,
    gWk,
    gq,
    gm,
):
    n_events, dim = x.shape
    gx = np.zeros((n_events, dim), dtype=F32)
    gk = np.zeros((n_events, dim), dtype=F32)
    p = 0
    for r in range(row_unit.shape[0]):
        u, f = row_unit[r], fund_index[r]
        for j in range(counts[u]):
            n = start[u] + j
            w = wbuf[p]
            p += 1
            gw = F32(0.0)
            for e in range(dim):
                gw += gout[r, e] * x[n, e]
                gx[n, e] += w * gout[r, e]
            s = w / pool
            gsc = gw * pool * s * (F32(1.0) - s)
            if ev_fund[n] == cand[f]:
                gm[0] += gsc
            if ev_grp[n] == cand_grp[f] and ev_grp[n] > 0:
                gm[1] += gsc
            gsc *= scale
            for e in range(dim):
                gk[n, e] += gsc * q[f, e]
                gq[f, e] += gsc * k[n, e]
    for n in range(n_events):
        for e in range(dim):
            ge = gk[n, e]
            for d in range(dim):
                gWk[e, d] += ge * x[n, d]
                gx[n, d] += Wk[e, d] * ge
        fu, gr, et, a, ag = ev_fund[n], ev_grp[n], ev_type[n], amount[n], age[n]
        for e in range(dim):
            v = gx[n, e]
            if fu > 0:  # padding rows of the embeddings get no gradient, as in eoca's Embedding
                gWf[fu, e] += v
            if gr > 0:
                gWg[gr, e] += v
            if et > 0:
                gWe[et, e] += v
            gWv[e, 0] += v * a
            gWv[e, 1] += v * ag
            gbv[e] += v


@njit(cache=False, fastmath=True, boundscheck=False)
def _pooling_forward(ev_fund, ev_type, amount, age, Wf, We, Wv, bv, Ws, bs, counts, start, x, w, pooled):
    n_events, dim = x.shape
    heads = Ws.shape[0]
    width = dim // heads
    for n in range(n_events):
        fu, et, a, ag = ev_fund[n], ev_type[n], amount[n], age[n]
        for e in range(dim):
            x[n, e] = Wf[fu, e] + We[et, e] + (Wv[e, 0] * a + Wv[e, 1] * ag + bv[e])
    for u in range(counts.shape[0]):
        for h in range(heads):
            top = F32(-np.inf)
            for j in range(counts[u]):
                n = start[u] + j
                acc = bs[h]
                for e in range(dim):
                    acc += Ws[h, e] * x[n, e]
                w[n, h] = acc
                top = max(top, acc)
            total = F32(0.0)
            for j in range(counts[u]):
                n = start[u] + j
                w[n, h] = np.exp(w[n, h] - top)
                total += w[n, h]
            for j in range(counts[u]):
                n = start[u] + j
                w[n, h] /= total
                for e in range(h * width, (h + 1) * width):
                    pooled[u, e] += w[n, h] * x[n, e]


@njit(cache=False, fastmath=True, boundscheck=False)
def _pooling_backward(gp, ev_fund, ev_type, amount, age, Ws, counts, start, x, w, gWf, gWe, gWv, gbv, gWs, gbs):
    n_events, dim = x.shape
    heads = Ws.shape[0]
    width = dim // heads
    gx = np.zeros((n_events, dim), dtype=F32)
    gw = np.empty(n_events, dtype=F32)
    for u in range(counts.shape[0]):
        for h in range(heads):
            dot = F32(0.0)
            for j in range(counts[u]):
                n = start[u] + j
                g = F32(0.0)
                for e in range(h * width, (h + 1) * width):
                    g += gp[u, e] * x[n, e]
                    gx[n, e] += w[n, h] * gp[u, e]
                gw[n] = g
                dot += w[n, h] * g
            for j in range(counts[u]):
                n = start[u] + j
                gs = w[n, h] * (gw[n] - dot)
                gbs[h] += gs
                for e in range(dim):
                    gWs[h, e] += gs * x[n, e]
                    gx[n, e] += Ws[h, e] * gs
    for n in range(n_events):
        fu, et, a, ag = ev_fund[n], ev_type[n], amount[n], age[n]
        for e in range(dim):
            v = gx[n, e]
            if fu > 0:
                gWf[fu, e] += v
            if et > 0:
                gWe[et, e] += v
            gWv[e, 0] += v * a
            gWv[e, 1] += v * ag
            gbv[e] += v


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _FusedAttention(torch.autograd.Function):
    """``TargetAttention.rows`` on the layer's parameters; ``idx`` holds the batch's integer and float inputs."""

    @staticmethod
    def forward(ctx: Any, Wf, Wg, We, Wv, bv, Wk, q, match, idx, scale, pool):  # type: ignore[override]
        ev_fund, ev_grp, ev_type, amount, age, row_unit, fund_index, counts, start, cand, cand_grp, pairs = idx
        n_events, dim = ev_fund.shape[0], Wf.shape[1]
        x = np.empty((n_events, dim), dtype=F32)
        k = np.empty((n_events, dim), dtype=F32)
        out = np.zeros((row_unit.shape[0], dim), dtype=F32)
        wbuf = np.empty(pairs, dtype=F32)
        m = _np(match)
        _attention_forward(
            ev_fund,
            ev_grp,
            ev_type,
            amount,
            age,
            _np(Wf),
            _np(Wg),
            _np(We),
            _np(Wv),
            _np(bv),
            _np(Wk),
            _np(q),
            row_unit,
            fund_index,
            counts,
            start,
            cand,
            cand_grp,
            m[0],
            m[1],
            F32(scale),
            F32(pool),
            x,
            k,
            out,
            wbuf,
        )
        ctx.state = (idx, scale, pool, wbuf, x, k, (Wf.shape, Wg.shape, We.shape))
        ctx.save_for_backward(Wk, q)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, gout: torch.Tensor):  # type: ignore[override]
        wk, q = ctx.saved_tensors
        idx, scale, pool, wbuf, x, k, shapes = ctx.state
        ev_fund, ev_grp, ev_type, amount, age, row_unit, fund_index, counts, start, cand, cand_grp, _ = idx
        dim = wk.shape[0]
        grads = [np.zeros(s, dtype=F32) for s in shapes]
        grads += [np.zeros((dim, 2), F32), np.zeros(dim, F32), np.zeros((dim, dim), F32), np.zeros(q.shape, F32)]
        gm = np.zeros(2, dtype=F32)
        _attention_backward(
            _np(gout),
            ev_fund,
            ev_grp,
            ev_type,
            amount,
            age,
            _np(wk),
            _np(q),
            x,
            k,
            row_unit,
            fund_index,
            counts,
            start,
            cand,
            cand_grp,
            F32(pool),
            F32(scale),
            wbuf,
            *grads,
            gm,
        )
        return (*(torch.from_numpy(g) for g in grads), torch.from_numpy(gm), None, None, None)


class _FusedPooling(torch.autograd.Function):
    """``BehaviourAttentionPooling``'s pooled sum (before its projection and LayerNorm)."""

    @staticmethod
    def forward(ctx: Any, Wf, We, Wv, bv, Ws, bs, idx):  # type: ignore[override]
        ev_fund, ev_type, amount, age, counts, start = idx
        n_events, dim = ev_fund.shape[0], Wf.shape[1]
        x = np.empty((n_events, dim), dtype=F32)
        w = np.empty((n_events, Ws.shape[0]), dtype=F32)
        pooled = np.zeros((counts.shape[0], dim), dtype=F32)
        _pooling_forward(
            ev_fund,
            ev_type,
            amount,
            age,
            _np(Wf),
            _np(We),
            _np(Wv),
            _np(bv),
            _np(Ws),
            _np(bs),
            counts,
            start,
            x,
            w,
            pooled,
        )
        ctx.state = (idx, x, w, (Wf.shape, We.shape))
        ctx.save_for_backward(Ws)
        return torch.from_numpy(pooled)

    @staticmethod
    def backward(ctx: Any, gp: torch.Tensor):  # type: ignore[override]
        (ws,) = ctx.saved_tensors
        idx, x, w, shapes = ctx.state
        ev_fund, ev_type, amount, age, counts, start = idx
        dim = x.shape[1]
        grads = [np.zeros(s, dtype=F32) for s in shapes]
        grads += [np.zeros((dim, 2), F32), np.zeros(dim, F32), np.zeros(ws.shape, F32), np.zeros(ws.shape[0], F32)]
        _pooling_backward(_np(gp), ev_fund, ev_type, amount, age, _np(ws), counts, start, x, w, *grads)
        return (*(torch.from_numpy(g) for g in grads), None)


def fused_rows(
    self: L.TargetAttention,
    inputs: dict[str, torch.Tensor],
    row_unit: torch.Tensor,
    fund_index: torch.Tensor,
    events: L.PackedEvents | None = None,
) -> torch.Tensor:
    """Drop-in for ``TargetAttention.rows``: the candidates' queries in torch, everything per event fused."""
    ev = events if events is not None else L.PackedEvents.from_inputs(inputs)
    cand = inputs["f_token"]
    groups = self.token_group
    cand_grp = groups.index_select(0, cand)
    q = self.query(self.fund(cand) + self.group(cand_grp))  # [F, E]
    counts, ru = ev.counts.numpy(), row_unit.numpy()
    idx = (
        ev.fund.numpy(),
        groups.index_select(0, ev.fund).numpy(),
        ev.etype.numpy(),
        ev.amount.numpy(),
        ev.age.numpy(),
        ru,
        fund_index.numpy(),
        counts,
        ev.start.numpy(),
        cand.numpy(),
        cand_grp.numpy(),
        int(counts[ru].sum()),
    )
    out: torch.Tensor = _FusedAttention.apply(
        self.fund.weight,
        self.group.weight,
        self.etype.weight,
        self.value.weight,
        self.value.bias,
        self.key.weight,
        q,
        self.match,
        idx,
        self._scale,
        self._pool,
    )
    return out


def fused_pooling(self: L.BehaviourAttentionPooling, events: L.PackedEvents) -> torch.Tensor:
    """Drop-in for ``BehaviourAttentionPooling.forward``."""
    idx = (
        events.fund.numpy(),
        events.etype.numpy(),
        events.amount.numpy(),
        events.age.numpy(),
        events.counts.numpy(),
        events.start.numpy(),
    )
    pooled: torch.Tensor = _FusedPooling.apply(
        self.fund.weight,
        self.etype.weight,
        self.value.weight,
        self.value.bias,
        self.score.weight,
        self.score.bias,
        idx,
    )
    has = (events.counts > 0).unsqueeze(1).to(pooled.dtype)
    return self.dropout(self.norm(pooled + self.proj(pooled)) * has)  # type: ignore[no-any-return]


def free_graph(self: L.ConsumptionGAT, target: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """The graph branch's output shape at no cost: a lower bound for any implementation, not a model."""
    return target.new_zeros((target.shape[0], self.out_dim))


EAGER = (L.TargetAttention.rows, L.BehaviourAttentionPooling.forward, L.ConsumptionGAT.forward)
VARIANTS = {
    "eager": EAGER,
    "target attention fused": (fused_rows, EAGER[1], EAGER[2]),
    "both sequence branches fused": (fused_rows, fused_pooling, EAGER[2]),
    "both fused, graph free (bound)": (fused_rows, fused_pooling, free_graph),
}


def _use(variant: str) -> None:
    rows, pooling, graph = VARIANTS[variant]
    L.TargetAttention.rows = rows  # type: ignore[method-assign]
    L.BehaviourAttentionPooling.forward = pooling  # type: ignore[method-assign]
    L.ConsumptionGAT.forward = graph  # type: ignore[method-assign]


def measure(data: Path, name: str, n_batches: int, repeats: int) -> tuple[dict[str, float], list[str], list[str]]:
    """``({variant: CPU ms per step}, gradient lines, rounding-only tensors)`` of zoo model ``name``."""
    from eoca.data import Dataset
    from eoca.models import FeatureSpace, build_model, model_defaults
    from eoca.training.trainer import deterministic_kernels

    torch.set_num_threads(1)
    ds = Dataset.load(data, with_truth=False)
    use_graph = bool(model_defaults(name).get("use_graph", False))
    space = FeatureSpace.fit(ds, use_graph=use_graph)
    bound = space.bind(ds)
    torch.manual_seed(0)
    model = build_model(name, space, model_defaults(name))
    model.train()
    gen = torch.Generator().manual_seed(1)
    exposures = [
        b
        for _, b in zip(
            range(n_batches), bound.exposure_batches("train", 1024, shuffle=True, generator=gen), strict=False
        )
    ]
    pasts: list[Any] = []
    if model.learns_amount_from_history and bound.n_purchase_history():
        per_step = math.ceil(bound.n_purchase_history() * 1024 / bound.n_exposures("train"))
        pasts = [
            (b, torch.from_numpy(a).to(torch.float32))
            for _, (b, a) in zip(range(n_batches), bound.purchase_history(per_step, generator=gen), strict=False)
        ]

    def step(i: int) -> None:
        model.zero_grad(set_to_none=True)
        loss = model.loss_with_history(exposures[i], *pasts[i]) if pasts else model.loss(exposures[i])
        loss.backward()

    variants = [v for v in VARIANTS if use_graph or "graph" not in v]
    with deterministic_kernels(True):
        grads: dict[str, dict[str, torch.Tensor]] = {}
        for v in ("eager", "both sequence branches fused"):
            _use(v)
            torch.manual_seed(5)  # the same dropout draws on both sides
            step(0)
            grads[v] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        eager, fused = grads["eager"], grads["both sequence branches fused"]
        largest = max(float(g.abs().max()) for g in eager.values())
        lines, rounding = [], []
        for k, g in eager.items():
            scale = float(g.abs().max())
            if scale < 1e-6 * largest:
                rounding.append(f"{k} (largest eager |grad| {scale:.1e}, fused {float(fused[k].abs().max()):.1e})")
                continue
            lines.append(f"{float((g - fused[k]).abs().max()) / scale:.1e} {k}")
        times: dict[str, list[float]] = {v: [] for v in variants}
        for v in variants:  # compile every kernel before timing
            _use(v)
            step(0)
        for _ in range(repeats):
            for v in variants:
                _use(v)
                c0 = time.process_time()
                for i in range(n_batches):
                    step(i)
                times[v].append((time.process_time() - c0) / n_batches * 1e3)
        _use("eager")
    lines.sort(reverse=True)
    return {v: statistics.median(t) for v, t in times.items()}, lines, rounding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000, help="customers of the simulated world (8 funds)")
    ap.add_argument("--models", default="esmm,esdpm", help="comma-separated zoo models with both sequence branches")
    ap.add_argument("--batches", type=int, default=10, help="training batches timed per pass")
    ap.add_argument("--repeats", type=int, default=7, help="passes; the median is reported")
    ap.add_argument("--workdir", type=Path, default=None, help="where the simulated world is kept (reused)")
    args = ap.parse_args()
    from train import _world  # benchmarks/train.py, beside this script: the same world, the same folder

    work = args.workdir or Path(tempfile.gettempdir()) / f"eoca_bench_world_{args.customers}"
    data = _world(args.customers, work)
    for name in args.models.split(","):
        ms, lines, rounding = measure(data, name, args.batches, args.repeats)
        print(f"\n{name}: largest gradient difference, fused vs eager, relative to the tensor's largest gradient:")
        print("  " + "\n  ".join(lines[:3]) + f"\n  ... ({len(lines)} tensors)")
        if rounding:
            print("  zero in exact arithmetic (rounding on both sides): " + "; ".join(rounding))
        base = ms["eager"]
        print(f"\n| {name}: variant | CPU ms per step | vs eager |\n|---|---:|---:|")
        for v, t in ms.items():
            print(f"| {v} | {t:.2f} | {t / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
