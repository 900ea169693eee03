"""The speed-oriented layer implementations compute what the plain formulas compute.

Each test builds a seeded batch of the simulated world, runs the fast layer (packed events, per-row target
attention, the lean GAT forward, index_select embeddings, the flat-parameter optimizer, the uniform dropout mask)
and compares it with a direct, padded, per-unit reference written here from the layer's documented formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

from eoca.data import Dataset
from eoca.models import FeatureSpace, build_model
from eoca.models.base import Batch
from eoca.models.layers import (
    MIX_ROWS,
    BehaviourAttentionPooling,
    BehaviourSelfAttention,
    Embedding,
    MMoE,
    PackedEvents,
    PairInput,
    PairLinear,
    TargetAttention,
    _gat,
    dropout_mask,
)
from eoca.training.trainer import FlatParameters


@pytest.fixture(scope="module")
def batch(sim: Dataset, space: FeatureSpace) -> Batch:
    bound = space.bind(sim)
    gen = torch.Generator().manual_seed(4)
    return next(iter(bound.exposure_batches("train", 600, shuffle=True, generator=gen)))


def test_packed_events_hold_exactly_the_real_events_grouped_by_length(batch: Batch) -> None:
    inputs = batch.inputs
    mask = inputs["seq_mask"]
    ev = PackedEvents.from_inputs(inputs)
    counts = mask.sum(dim=1)
    assert int(ev.unit.shape[0]) == int(mask.sum()) and torch.equal(ev.counts, counts)
    assert [c for c, _ in ev.runs] == sorted({int(c) for c in counts if c > 0})
    assert sum(c * n for c, n in ev.runs) == int(mask.sum())
    lengths = ev.counts.index_select(0, ev.unit)
    assert bool((lengths[1:] >= lengths[:-1]).all()), "units are ordered by their number of events"
    for u in torch.nonzero(counts).squeeze(1).tolist()[:50]:
        s, c = int(ev.start[u]), int(counts[u])
        assert torch.equal(ev.unit[s : s + c], torch.full((c,), u))
        for key, field in (("seq_fund", ev.fund), ("seq_type", ev.etype), ("seq_amount", ev.amount)):
            assert torch.equal(field[s : s + c], inputs[key][u][mask[u]]), key


def _unit_events(
    module: BehaviourSelfAttention | BehaviourAttentionPooling, inputs: dict[str, torch.Tensor], u: int
) -> torch.Tensor:
    """Unit ``u``'s real events encoded from the padded inputs, ``fund + type + Linear(amount, age)``: ``[n, E]``."""
    m = inputs["seq_mask"][u]
    amount_age = torch.stack([inputs["seq_amount"][u][m], inputs["seq_age"][u][m]], dim=1)
    return module.fund(inputs["seq_fund"][u][m]) + module.etype(inputs["seq_type"][u][m]) + module.value(amount_age)


def _reference_self_attention(module: BehaviourSelfAttention, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's formula unit by unit: attention over the unit's own events, LayerNorm(x + proj), mean."""
    mask = inputs["seq_mask"]
    out = torch.zeros(mask.shape[0], module.out_dim)
    heads = module.heads
    for u in range(mask.shape[0]):
        m = mask[u]
        if not bool(m.any()):
            continue
        x = _unit_events(module, inputs, u)
        n, e = x.shape
        q, k, v = module.qkv(x).view(n, 3, heads, e // heads).permute(1, 2, 0, 3)  # each [H, n, E/H]
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(e // heads), dim=-1)
        attended = (weights @ v).transpose(0, 1).reshape(n, e)
        out[u] = module.norm(x + module.proj(attended)).mean(dim=0)
    return out


def test_packed_self_attention_equals_the_per_unit_formula(space: FeatureSpace, batch: Batch) -> None:
    torch.manual_seed(0)
    module = BehaviourSelfAttention(space, 8, 2, dropout=0.1).eval()
    with torch.no_grad():
        got = module(PackedEvents.from_inputs(batch.inputs))
        want = _reference_self_attention(module, batch.inputs)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    no_events = ~batch.inputs["seq_mask"].any(dim=1)
    assert float(got[no_events].abs().sum()) == 0.0


@pytest.mark.parametrize("encoder", [BehaviourSelfAttention, BehaviourAttentionPooling])
def test_a_units_encoding_does_not_depend_on_the_rest_of_the_batch(
    space: FeatureSpace, batch: Batch, encoder: type[BehaviourSelfAttention] | type[BehaviourAttentionPooling]
) -> None:
    """Customer-level branches run once per unit: the same unit gives the same vector alone or in a batch."""
    torch.manual_seed(0)
    module = encoder(space, 8, 2, dropout=0.0).eval()
    inputs = batch.inputs
    with torch.no_grad():
        whole = module(PackedEvents.from_inputs(inputs))
        for u in torch.nonzero(inputs["seq_mask"].any(dim=1)).squeeze(1).tolist()[:20]:
            alone = {k: inputs[k][u : u + 1] for k in ("seq_fund", "seq_type", "seq_amount", "seq_age", "seq_mask")}
            torch.testing.assert_close(module(PackedEvents.from_inputs(alone))[0], whole[u], rtol=1e-6, atol=1e-6)


def _reference_pooling(module: BehaviourAttentionPooling, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's formula unit by unit: per head, the softmax over the unit's events of ``x . w_h + b_h`` weighs
    the head's slice of the event encodings; then LayerNorm(pooled + proj(pooled))."""
    mask = inputs["seq_mask"]
    out = torch.zeros(mask.shape[0], module.out_dim)
    heads, e = module.heads, module.out_dim
    for u in range(mask.shape[0]):
        m = mask[u]
        if not bool(m.any()):
            continue
        x = _unit_events(module, inputs, u)
        weights = torch.softmax(module.score(x), dim=0)  # [n, H]
        pooled = torch.cat(
            [weights[:, h : h + 1].t() @ x[:, h * e // heads : (h + 1) * e // heads] for h in range(heads)], 1
        )
        out[u] = module.norm(pooled + module.proj(pooled))[0]
    return out


def test_attention_pooling_equals_the_per_unit_formula(space: FeatureSpace, batch: Batch) -> None:
    torch.manual_seed(0)
    module = BehaviourAttentionPooling(space, 8, 2, dropout=0.1).eval()
    with torch.no_grad():
        # Scores far apart: the per-unit shift must keep every weight finite and the sums exact.
        module.score.weight.mul_(40.0)
        got = module(PackedEvents.from_inputs(batch.inputs))
        want = _reference_pooling(module, batch.inputs)
    assert got.shape == want.shape and bool(torch.isfinite(got).all())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    no_events = ~batch.inputs["seq_mask"].any(dim=1)
    assert bool(no_events.any()), "the batch should hold a unit without events"
    assert float(got[no_events].abs().sum()) == 0.0
    # Gradients reach every parameter and stay finite with a unit that has no events in the batch.
    module.train()
    module(PackedEvents.from_inputs(batch.inputs)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name


def _reference_target_attention(module: TargetAttention, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The padded ``[U, F, L]`` grid of the documented formula."""
    fund, mask, cand = inputs["seq_fund"], inputs["seq_mask"], inputs["f_token"]
    group = module.token_group
    x = (
        module.fund(fund)
        + module.group(group[fund])
        + module.etype(inputs["seq_type"])
        + module.value(torch.stack([inputs["seq_amount"], inputs["seq_age"]], dim=-1))
    )
    q = module.query(module.fund(cand) + module.group(group[cand]))
    scores = torch.einsum("ule,fe->ufl", module.key(x), q) / math.sqrt(module.out_dim)
    same_fund = (fund[:, None, :] == cand[None, :, None]).float()
    ev_group, cand_group = group[fund][:, None, :], group[cand][None, :, None]
    same_group = ((ev_group == cand_group) & (ev_group > 0)).float()
    scores = scores + module.match[0] * same_fund + module.match[1] * same_group
    weights = torch.sigmoid(scores) * mask[:, None, :].float() / math.sqrt(fund.shape[1])
    return torch.einsum("ufl,ule->ufe", weights, x)


def test_target_attention_per_row_equals_the_grid(space: FeatureSpace, batch: Batch) -> None:
    torch.manual_seed(0)
    module = TargetAttention(space, 8)
    with torch.no_grad():
        module.match.copy_(torch.tensor([0.7, -0.4]))
        grid = _reference_target_attention(module, batch.inputs)
        row_unit, fund = batch.inputs["row_unit"], batch.fund
        rows = module.rows(batch.inputs, row_unit, fund)
        every_pair = module(batch.inputs)
    torch.testing.assert_close(rows, grid[row_unit, fund], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(every_pair, grid, rtol=1e-5, atol=1e-6)


def test_lean_gat_equals_gatconv() -> None:
    torch.manual_seed(0)
    layer = GATConv((16, 16), 16, heads=2, concat=False, edge_dim=2, add_self_loops=False, dropout=0.3).eval()
    x_src, x_dst = torch.randn(50, 16), torch.randn(20, 16)
    dst = torch.sort(torch.randint(0, 17, (120,))).values  # destinations 17..19 have no edges
    src = torch.randint(0, 50, (120,))
    attr = torch.randn(120, 2)
    want = layer((x_src, x_dst), torch.stack([src, dst]), attr, size=(50, 20))
    got = _gat(layer, x_src, x_dst, src, dst, attr)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[17:], layer.bias.expand(3, -1))


def test_index_select_embedding_matches_nn_embedding_values_and_gradients() -> None:
    torch.manual_seed(0)
    fast = Embedding(12, 4, padding_idx=0)
    plain = torch.nn.Embedding(12, 4, padding_idx=0)
    plain.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 12, (5000, 3))  # above 3,000 indices: torch's row-at-a-time backward
    grad = torch.randn(5000, 3, 4)
    fast(idx).backward(grad)
    plain(idx).backward(grad)
    assert torch.equal(fast(idx), plain(idx))
    assert fast.weight.grad is not None and plain.weight.grad is not None
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-6, atol=1e-5)
    assert float(fast.weight.grad[0].abs().sum()) == 0.0, "the padding row gets no gradient"


def test_flat_parameter_adam_trains_the_same_model_bit_for_bit(sim: Dataset, space: FeatureSpace) -> None:
    bound = space.bind(sim)
    gen = torch.Generator().manual_seed(2)
    batches = list(bound.exposure_batches("train", 256, shuffle=True, generator=gen))[:6]
    states = []
    for flat in (False, True):
        torch.manual_seed(0)
        model = build_model("esdpm", space)
        model.train()
        holder = FlatParameters(model) if flat else None
        params = [holder.flat] if holder is not None else list(model.parameters())
        opt = torch.optim.Adam(params, lr=0.01, foreach=True)
        torch.manual_seed(1)
        for b in batches:
            if holder is not None:
                holder.zero_grad()
            else:
                opt.zero_grad(set_to_none=True)
            model.loss(b).backward()
            if holder is not None:
                holder.gather_grad()
            opt.step()
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_dropout_mask_keeps_the_rate_and_the_scale() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = dropout_mask(x, 0.25)
    kept = out != 0
    np.testing.assert_allclose(np.unique(out.numpy()), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs(float(kept.float().mean()) - 0.75) < 0.005
    assert torch.equal(dropout_mask(x, 0.0), x) and float(dropout_mask(x, 1.0).abs().sum()) == 0.0
    assert F.dropout(x, 0.25, training=False).equal(x)  # eval mode is the identity for both


def test_presence_table_unique_equals_numpy_unique() -> None:
    from eoca.models.features.graph import _unique_small

    rng = np.random.default_rng(0)
    for values in (rng.integers(0, 300, 5000), rng.integers(0, 300, 3), np.zeros(0, dtype=np.int64)):
        got_values, got_inverse = _unique_small(values, 300)
        want_values, want_inverse = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(got_values, want_values)
        np.testing.assert_array_equal(got_inverse, want_inverse.reshape(-1))


def _pair_input(n_units: int, n_funds: int, *, grid: bool, dims: tuple[int, int, int] = (6, 3, 2)) -> PairInput:
    """Random customer, fund and pair inputs of widths ``dims``, rows a grid or the same rows shuffled."""
    gen = torch.Generator().manual_seed(5)
    if grid:
        row_unit = torch.arange(n_units).repeat_interleave(n_funds)
        fund_index = torch.arange(n_funds).repeat(n_units)
    else:  # the same number of rows, in a shuffled order
        perm = torch.randperm(n_units * n_funds, generator=gen)
        row_unit, fund_index = perm // n_funds, perm % n_funds
    rows = n_units * n_funds
    return PairInput(
        customer=torch.randn(n_units, dims[0], generator=gen),
        row_unit=row_unit,
        fund=torch.randn(n_funds, dims[1], generator=gen),
        fund_index=fund_index,
        pair=torch.randn(rows, dims[2], generator=gen),
    )


def test_pair_linear_on_the_scoring_grid_equals_the_gathered_rows() -> None:
    torch.manual_seed(0)
    layer = PairLinear(6, 3, 5, pair_dim=2)
    grid, shuffled = _pair_input(7, 4, grid=True), _pair_input(7, 4, grid=False)
    assert grid.is_grid and not shuffled.is_grid
    for pair in (grid, shuffled):
        want = (
            layer.customer(pair.customer)[pair.row_unit]
            + layer.fund(pair.fund)[pair.fund_index]
            + layer.pair(pair.pair)  # type: ignore[misc]
        )
        assert torch.equal(layer(pair), want)


def test_mmoe_mixes_the_experts_with_each_tasks_softmax_gate() -> None:
    torch.manual_seed(0)
    mmoe = MMoE(6, 3, n_tasks=3, n_experts=4, expert_dim=5, dropout=0.0, pair_dim=2).eval()
    pair = _pair_input(7, 4, grid=False)
    z = mmoe.project(pair)
    experts = F.relu(z[:, :20]).view(-1, 4, 5)
    gates = torch.softmax(z[:, 20:].view(-1, 3, 4), dim=-1)
    torch.testing.assert_close(mmoe(pair), torch.bmm(gates, experts), rtol=1e-6, atol=1e-6)


ZOO_WIDTHS = (60, 12, 34)
"""Customer, fund and pair widths of the zoo's default networks."""


def test_pair_linear_without_gradients_gives_the_same_values_bit_for_bit() -> None:
    # Scoring adds the pair product into the sums in place (addmm_); training adds it as a separate tensor.
    torch.manual_seed(0)
    cases = [
        (PairLinear(60, 12, 140, pair_dim=34), _pair_input(512, 8, grid=True, dims=ZOO_WIDTHS)),
        (PairLinear(6, 3, 5, pair_dim=2), _pair_input(7, 4, grid=False)),
    ]
    for layer, pair in cases:
        with_grad = layer(pair)
        assert with_grad.requires_grad
        with torch.inference_mode():
            without = layer(pair)
        assert torch.equal(without, with_grad.detach())


def test_mmoe_without_gradients_mixes_in_blocks_with_the_same_values_bit_for_bit() -> None:
    torch.manual_seed(0)
    mmoe = MMoE(60, 12, n_tasks=3, n_experts=4, expert_dim=32, dropout=0.1, pair_dim=34).eval()
    pair = _pair_input(MIX_ROWS * 5 // 16 + 3, 8, grid=True, dims=ZOO_WIDTHS)  # 2.5 blocks and a few rows
    assert pair.n_rows > 2 * MIX_ROWS and pair.n_rows % MIX_ROWS
    in_one_pass = mmoe(pair)  # gradients on: the broadcast product over every row at once
    with torch.inference_mode():
        in_blocks = mmoe(pair)
    assert torch.equal(in_blocks, in_one_pass.detach())


def test_target_attention_on_the_scoring_grid_takes_the_grid_path_with_the_rows_values(
    sim: Dataset, space: FeatureSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = space.bind(sim)
    k = bound.n_funds
    n = 60
    batch = bound.pair_batch(np.repeat(np.arange(n), k), np.tile(np.arange(k), n))
    inputs = batch.inputs
    torch.manual_seed(0)
    module = TargetAttention(space, 8)
    with torch.no_grad():
        module.match.copy_(torch.tensor([0.7, -0.4]))
    calls: list[int] = []
    grid_path = TargetAttention._grid

    def spy(self: TargetAttention, *args: object) -> torch.Tensor:
        calls.append(1)
        return grid_path(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(TargetAttention, "_grid", spy)
    row_unit, fund = inputs["row_unit"], batch.fund
    assert torch.equal(row_unit, torch.arange(n).repeat_interleave(k)), "pair_batch of a grid is unit-major"
    with torch.no_grad():
        on_grid = module.rows(inputs, row_unit, fund)
        assert calls == [1]
        # The same rows in another order are not a grid: the per-row path, put back in grid order.
        perm = torch.randperm(n * k, generator=torch.Generator().manual_seed(1))
        per_row = torch.empty_like(on_grid)
        per_row[perm] = module.rows(inputs, row_unit[perm], fund[perm])
        assert calls == [1]
    assert bool(inputs["seq_mask"].any()) and float(on_grid.abs().sum()) > 0
    torch.testing.assert_close(on_grid, per_row, rtol=1e-6, atol=1e-8)
    assert float((on_grid == per_row).float().mean()) > 0.99, "only a vector kernel's tail may differ in last bits"
