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
import statistics
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
JIT = {"cache": False, "fastmath": True, "boundscheck": False}

# Arguments are packed as the layers hold them: ``events`` = (fund, fund type, event type, amount, age) per packed
# event; ``tables`` = (fund embedding, type embedding, event-type embedding, value weight [E, 2], value bias);
# ``units`` = (events per unit, first event of each unit). The pooling has no type embedding: it is given a
# one-row zero table and type 0 for every event (row 0 is padding, which gets no gradient).


@njit(**JIT)
def _encode(events, tables, x):
    """``x[n] = fund[f] + type[g] + event_type[t] + Wv (amount, age) + bv`` for every packed event."""
    fund, grp, etype, amount, age = events
    Wf, Wg, We, Wv, bv = tables
    for n in range(x.shape[0]):
        for e in range(x.shape[1]):
            value = Wv[e, 0] * amount[n] + Wv[e, 1] * age[n] + bv[e]
            x[n, e] = Wf[fund[n], e] + Wg[grp[n], e] + We[etype[n], e] + value


@njit(**JIT)
def _encode_backward(events, gx, grads):
    """Gradients of :func:`_encode`'s tables from ``gx [N, E]``, accumulated into ``grads`` (padding rows skipped,
    as eoca's ``Embedding`` does)."""
    fund, grp, etype, amount, age = events
    gWf, gWg, gWe, gWv, gbv = grads
    for n in range(gx.shape[0]):
        for e in range(gx.shape[1]):
            v = gx[n, e]
            if fund[n] > 0:
                gWf[fund[n], e] += v
            if grp[n] > 0:
                gWg[grp[n], e] += v
            if etype[n] > 0:
                gWe[etype[n], e] += v
            gWv[e, 0] += v * amount[n]
            gWv[e, 1] += v * age[n]
            gbv[e] += v


@njit(**JIT)
def _attention_forward(events, tables, Wk, q, rows, units, m0, m1, scale, pool, x, k, out, wbuf):
    """``TargetAttention.rows``: ``rows`` = (row unit, row candidate index, candidate tokens, candidate types)."""
    fund, grp = events[0], events[1]
    row_unit, fund_index, cand, cand_grp = rows
    counts, start = units
    _encode(events, tables, x)
    dim = x.shape[1]
    for n in range(x.shape[0]):
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
            if fund[n] == cand[f]:
                sc += m0
            if grp[n] == cand_grp[f] and grp[n] > 0:
                sc += m1
            w = pool / (F32(1.0) + np.exp(-sc))
            wbuf[p] = w
            p += 1
            for e in range(dim):
                out[r, e] += w * x[n, e]


@njit(**JIT)
def _attention_backward(gout, events, Wk, q, rows, units, pool, scale, wbuf, x, k, grads, gWk, gq, gm):
    fund, grp = events[0], events[1]
    row_unit, fund_index, cand, cand_grp = rows
    counts, start = units
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
            if fund[n] == cand[f]:
                gm[0] += gsc
            if grp[n] == cand_grp[f] and grp[n] > 0:
                gm[1] += gsc
            gsc *= scale
            for e in range(dim):
                gk[n, e] += gsc * q[f, e]
                gq[f, e] += gsc * k[n, e]
    for n in range(n_events):
        for e in range(dim):
            for d in range(dim):
                gWk[e, d] += gk[n, e] * x[n, d]
                gx[n, d] += Wk[e, d] * gk[n, e]
    _encode_backward(events, gx, grads)


@njit(**JIT)
def _pooling_forward(events, tables, Ws, bs, units, x, w, pooled):
    """``BehaviourAttentionPooling`` up to its pooled sum: per head, a softmax over each unit's events."""
    counts, start = units
    _encode(events, tables, x)
    heads, dim = Ws.shape
    width = dim // heads
    for u in range(counts.shape[0]):
        for h in range(heads):
            top = F32(-np.inf)
            for n in range(start[u], start[u] + counts[u]):
                acc = bs[h]
                for e in range(dim):
                    acc += Ws[h, e] * x[n, e]
                w[n, h] = acc
                top = max(top, acc)
            total = F32(0.0)
            for n in range(start[u], start[u] + counts[u]):
                w[n, h] = np.exp(w[n, h] - top)
                total += w[n, h]
            for n in range(start[u], start[u] + counts[u]):
                w[n, h] /= total
                for e in range(h * width, (h + 1) * width):
                    pooled[u, e] += w[n, h] * x[n, e]


@njit(**JIT)
def _pooling_backward(gp, events, Ws, units, x, w, grads, gWs, gbs):
    counts, start = units
    n_events, dim = x.shape
    heads = Ws.shape[0]
    width = dim // heads
    gx = np.zeros((n_events, dim), dtype=F32)
    gw = np.empty(n_events, dtype=F32)
    for u in range(counts.shape[0]):
        for h in range(heads):
            dot = F32(0.0)
            for n in range(start[u], start[u] + counts[u]):
                g = F32(0.0)
                for e in range(h * width, (h + 1) * width):
                    g += gp[u, e] * x[n, e]
                    gx[n, e] += w[n, h] * gp[u, e]
                gw[n] = g
                dot += w[n, h] * g
            for n in range(start[u], start[u] + counts[u]):
                gs = w[n, h] * (gw[n] - dot)
                gbs[h] += gs
                for e in range(dim):
                    gWs[h, e] += gs * x[n, e]
                    gx[n, e] += Ws[h, e] * gs
    _encode_backward(events, gx, grads)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _zeros_like(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(a.shape, dtype=F32) for a in arrays)


class _FusedAttention(torch.autograd.Function):
    """``TargetAttention.rows`` on the layer's parameters (``Wf, Wg, We, Wv, bv, Wk, q, match``)."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> torch.Tensor:  # type: ignore[override]
        *params, events, rows, units, n_pairs, scale, pool = args
        tables = tuple(_np(p) for p in params[:5])
        wk, q, m = _np(params[5]), _np(params[6]), _np(params[7])
        x = np.empty((events[0].shape[0], wk.shape[0]), dtype=F32)
        k = np.empty_like(x)
        out = np.zeros((rows[0].shape[0], wk.shape[0]), dtype=F32)
        wbuf = np.empty(n_pairs, dtype=F32)
        _attention_forward(events, tables, wk, q, rows, units, m[0], m[1], F32(scale), F32(pool), x, k, out, wbuf)
        ctx.state = (tables, wk, q, events, rows, units, F32(scale), F32(pool), wbuf, x, k)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, *grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        tables, wk, q, events, rows, units, scale, pool, wbuf, x, k = ctx.state
        grads, gwk, gq, gm = _zeros_like(tables), np.zeros_like(wk), np.zeros_like(q), np.zeros(2, dtype=F32)
        _attention_backward(_np(grad_out[0]), events, wk, q, rows, units, pool, scale, wbuf, x, k, grads, gwk, gq, gm)
        return (*(torch.from_numpy(g) for g in (*grads, gwk, gq, gm)), None, None, None, None, None, None)


class _FusedPooling(torch.autograd.Function):
    """``BehaviourAttentionPooling``'s pooled sum (before its projection and LayerNorm), on ``Wf, We, Wv, bv, Ws,
    bs``."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> torch.Tensor:  # type: ignore[override]
        *params, events, units = args
        wf, we, wv, bv, ws, bs = (_np(p) for p in params)
        tables = (wf, np.zeros((1, wf.shape[1]), dtype=F32), we, wv, bv)
        x = np.empty((events[0].shape[0], wf.shape[1]), dtype=F32)
        w = np.empty((x.shape[0], ws.shape[0]), dtype=F32)
        pooled = np.zeros((units[0].shape[0], x.shape[1]), dtype=F32)
        _pooling_forward(events, tables, ws, bs, units, x, w, pooled)
        ctx.state = (tables, ws, events, units, x, w)
        return torch.from_numpy(pooled)

    @staticmethod
    def backward(ctx: Any, *grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        tables, ws, events, units, x, w = ctx.state
        grads, gws, gbs = _zeros_like(tables), np.zeros_like(ws), np.zeros(ws.shape[0], dtype=F32)
        _pooling_backward(_np(grad_out[0]), events, ws, units, x, w, grads, gws, gbs)
        gwf, _, gwe, gwv, gbv = grads
        return (*(torch.from_numpy(g) for g in (gwf, gwe, gwv, gbv, gws, gbs)), None, None)


def _units(ev: L.PackedEvents) -> tuple[np.ndarray, np.ndarray]:
    return ev.counts.numpy(), ev.start.numpy()


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
    cand_grp = self.token_group.index_select(0, cand)
    q = self.query(self.fund(cand) + self.group(cand_grp))  # [F, E]
    grp = self.token_group.index_select(0, ev.fund)
    packed = (ev.fund.numpy(), grp.numpy(), ev.etype.numpy(), ev.amount.numpy(), ev.age.numpy())
    rows = (row_unit.numpy(), fund_index.numpy(), cand.numpy(), cand_grp.numpy())
    n_pairs = int(ev.counts.index_select(0, row_unit).sum())
    params = (self.fund.weight, self.group.weight, self.etype.weight, self.value.weight, self.value.bias)
    out: torch.Tensor = _FusedAttention.apply(
        *params, self.key.weight, q, self.match, packed, rows, _units(ev), n_pairs, self._scale, self._pool
    )
    return out


def fused_pooling(self: L.BehaviourAttentionPooling, events: L.PackedEvents) -> torch.Tensor:
    """Drop-in for ``BehaviourAttentionPooling.forward``."""
    no_type = np.zeros(events.fund.shape[0], dtype=np.int64)
    packed = (events.fund.numpy(), no_type, events.etype.numpy(), events.amount.numpy(), events.age.numpy())
    params = (self.fund.weight, self.etype.weight, self.value.weight, self.value.bias, self.score.weight)
    pooled: torch.Tensor = _FusedPooling.apply(*params, self.score.bias, packed, _units(events))
    has = (events.counts > 0).unsqueeze(1).to(pooled.dtype)
    out: torch.Tensor = self.dropout(self.norm(pooled + self.proj(pooled)) * has)
    return out


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
    from eoca.training.trainer import deterministic_kernels
    from train import initial_model, training_batches  # benchmarks/train.py, beside this script

    model, bound = initial_model(data, name)
    use_graph = model.customer_arch.consumption is not None
    exposures, pasts = training_batches(model, bound, 1024, n_batches, 1)

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
    lines.sort(key=lambda line: float(line.split()[0]), reverse=True)
    return {v: statistics.median(t) for v, t in times.items()}, lines, rounding


def main() -> None:
    from train import add_step_args, add_world_args, world_from_args  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_world_args(ap)
    add_step_args(ap, models="esmm,esdpm", batches=10, repeats=7, models_help=" with both sequence branches")
    args = ap.parse_args()

    data = world_from_args(args)
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
