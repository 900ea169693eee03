"""Building blocks of the model zoo: small named modules with the tensor shapes they take and return.

Shapes: ``B`` rows (customer, fund pairs) of a batch, ``U`` customer units of the batch (see
:mod:`eoca.models.features`), ``F`` funds, ``L`` behaviour-sequence length, ``E`` embedding size.

Customer-side modules run per unit and fund-side modules per fund; :class:`PairLinear` is the only place the
two sides meet, as the first layer of every bottom network. It computes ``W [c ; f] + b`` as
``(W_c c)[row_unit] + (W_f f)[fund] + b``, which equals the linear layer on the concatenated row input but
costs one gather per row instead of a matrix product per row: this is what keeps scoring every customer against
every fund cheap.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eoca.models.features import CUSTOMER_SUMMARY_NAMES, PAIR_FEATURE_NAMES, FeatureSpace

if TYPE_CHECKING:
    from torch_geometric.nn import GATConv


def dropout_mask(x: Tensor, p: float) -> Tensor:
    """Inverted dropout of ``x`` with drop probability ``p``: kept entries scaled by ``1 / (1 - p)``.

    The same distribution as ``F.dropout``, with the mask drawn as ``uniform >= p``: torch's CPU Bernoulli
    sampler costs about twice as much per element as a uniform draw, and a step draws a few hundred thousand.
    """
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape, dtype=x.dtype).ge_(p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`dropout_mask`."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout_mask(x, self.p) if self.training else x


def mlp(dims: list[int], dropout: float, *, last_activation: bool = True) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per consecutive pair of ``dims``; ``[*, dims[0]] -> [*, dims[-1]]``."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class Embedding(nn.Embedding):
    """``nn.Embedding`` (same parameter, initialisation and values) whose lookup is an ``index_select``.

    torch's CPU embedding backward adds one row at a time above 3,000 indices (a batch's behaviour events are
    about ten thousand), which made it one of the largest costs of a training step; ``index_select``'s backward
    is one vectorised ``index_add`` in the same order. The padding row stays out of the gradient as in
    ``nn.Embedding``: a hook on the weight zeroes that row of its gradient (one kernel in the backward pass,
    where splicing a detached row into the table on every lookup cost five in the forward pass and three in the
    backward).

    ``forward(idx [*]) -> [*, embedding_dim]``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        if self.padding_idx is not None:
            self.weight.register_hook(self._without_padding_grad)

    def _without_padding_grad(self, grad: Tensor) -> Tensor:
        assert self.padding_idx is not None
        return grad.index_fill(0, torch.tensor([self.padding_idx]), 0.0)

    def forward(self, idx: Tensor) -> Tensor:
        return self.weight.index_select(0, idx.reshape(-1)).view(*idx.shape, self.embedding_dim)


# --- sparse arch -------------------------------------------------------------------------------------------------
class ProfileEmbedding(nn.Module):
    """A customer's profile: categorical embeddings, pooled list-feature embeddings and numeric features.

    ``forward(num [U, Dn], cat [U, Dc], lists [[U, Li] ...]) -> [U, out_dim]`` with
    ``out_dim = Dn + (Dc + n_lists) * E``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int) -> None:
        super().__init__()
        self.categorical = nn.ModuleList(Embedding(n, embedding_dim) for n in space.customer_cardinalities)
        self.lists = nn.ModuleList(
            Embedding(n, embedding_dim, padding_idx=0) for n in space.customer_list_cardinalities
        )
        self.out_dim = space.customer_numeric_dim + (len(self.categorical) + len(self.lists)) * embedding_dim

    def forward(self, num: Tensor, cat: Tensor, lists: list[Tensor] | None = None) -> Tensor:
        parts = [num]
        parts.extend(emb(cat[:, i]) for i, emb in enumerate(self.categorical))
        for emb, tokens in zip(self.lists, lists or [], strict=False):
            # Mean over real tokens; padding embeds to zero (padding_idx) and is excluded from the count.
            count = (tokens > 0).sum(dim=1, keepdim=True).clamp(min=1)
            parts.append(emb(tokens).sum(dim=1) / count)
        return torch.cat(parts, dim=1)


class FundEmbedding(nn.Module):
    """Every fund's features: ``forward(num [F, Dfn], cat [F, Dfc]) -> [F, out_dim]``."""

    def __init__(self, space: FeatureSpace, embedding_dim: int) -> None:
        super().__init__()
        self.categorical = nn.ModuleList(Embedding(n, embedding_dim) for n in space.fund_cardinalities)
        self.out_dim = space.fund_numeric_dim + len(self.categorical) * embedding_dim

    def forward(self, num: Tensor, cat: Tensor) -> Tensor:
        parts = [num, *(emb(cat[:, i]) for i, emb in enumerate(self.categorical))]
        return torch.cat(parts, dim=1)


# --- sequence arch -----------------------------------------------------------------------------------------------
@dataclass
class PackedEvents:
    """The real (unpadded) behaviour events of a batch's units, ``N`` of them, in one flat order.

    Events are grouped by unit and each unit's events keep their sequence order (oldest first); units are ordered
    by their number of events, so the units with ``c`` events occupy one contiguous run of ``n_c * c`` events
    (``runs`` lists ``(c, n_c)``). Padding never enters a kernel: every per-event layer runs over ``N`` rows
    instead of ``U x L`` slots (most customers have far fewer events than ``L``), and attention runs per run
    without a mask.

    Fields: ``unit``, ``fund``, ``etype`` int64 ``[N]``; ``amount``, ``age`` float32 ``[N]``; ``counts`` int64
    ``[U]`` (events per unit); ``start`` int64 ``[U]`` (position of each unit's first event); ``runs``.
    """

    unit: Tensor
    fund: Tensor
    etype: Tensor
    amount: Tensor
    age: Tensor
    counts: Tensor
    start: Tensor
    runs: list[tuple[int, int]]

    @property
    def n_units(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_inputs(cls, inputs: dict[str, Tensor]) -> PackedEvents:
        """Pack the padded ``seq_*`` tensors ``[U, L]`` of a batch (real events where ``seq_mask``)."""
        mask = inputs["seq_mask"]
        length = mask.shape[1]
        counts = mask.sum(dim=1)
        order = torch.argsort(counts, stable=True)
        sorted_counts = counts[order]
        rank, slot = torch.nonzero(mask.index_select(0, order), as_tuple=True)
        unit = order[rank]
        flat = unit * length + slot
        start = torch.empty_like(counts)
        start[order] = torch.cumsum(sorted_counts, 0) - sorted_counts
        values, n_units = torch.unique_consecutive(sorted_counts, return_counts=True)
        runs = [(c, n) for c, n in zip(values.tolist(), n_units.tolist(), strict=True) if c > 0]

        def take(key: str) -> Tensor:
            return inputs[key].reshape(-1).index_select(0, flat)

        return cls(
            unit=unit,
            fund=take("seq_fund"),
            etype=take("seq_type"),
            amount=take("seq_amount"),
            age=take("seq_age"),
            counts=counts,
            start=start,
            runs=runs,
        )

    def row_events(self, row_unit: Tensor) -> tuple[Tensor, Tensor]:
        """Every (row, event of the row's unit) pair: ``(row [R], event [R])``, rows in order, events in
        sequence order within a row."""
        per_row = self.counts.index_select(0, row_unit)
        total = int(per_row.sum())
        row = torch.repeat_interleave(torch.arange(row_unit.shape[0]), per_row, output_size=total)
        first = torch.cumsum(per_row, 0) - per_row
        offset = torch.arange(total) - torch.repeat_interleave(first, per_row, output_size=total)
        event = torch.repeat_interleave(self.start.index_select(0, row_unit), per_row, output_size=total) + offset
        return row, event


class _EventEncoder(nn.Module):
    """What both customer-level sequence encoders share: the per-event encoding ``fund embedding + event-type
    embedding + Linear(log amount, age)`` and the output ``LayerNorm`` / projection / dropout. The layers are
    created by two calls, before and after the encoder's own mixing layer, so that each encoder's parameters are
    created (and randomly initialised) in the same order, under the same names, as in the saved model files."""

    heads: int
    out_dim: int

    def _event_layers(self, space: FeatureSpace, embedding_dim: int, heads: int) -> None:
        if embedding_dim % heads:
            raise ValueError(f"embedding_dim ({embedding_dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.fund = Embedding(space.n_event_funds, embedding_dim, padding_idx=0)
        self.etype = Embedding(space.n_event_types, embedding_dim, padding_idx=0)
        self.value = nn.Linear(2, embedding_dim)

    def _output_layers(self, embedding_dim: int, dropout: float) -> None:
        self.proj = nn.Linear(embedding_dim, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim)
        self.dropout = Dropout(dropout)
        self.out_dim = embedding_dim

    def _encode(self, events: PackedEvents) -> Tensor:
        """``[N, E]``: one encoding per real event, in packed order."""
        value = self.value(torch.stack([events.amount, events.age], 1))
        return self.fund(events.fund) + self.etype(events.etype) + value


class BehaviourSelfAttention(_EventEncoder):
    """Multi-head self-attention over a customer's latest behaviour events, mean-pooled over real events (the
    paper's encoder, ``sequence_encoder: self_attention``; the zoo's default is :class:`BehaviourAttentionPooling`).

    Each event is ``fund embedding + event-type embedding + Linear(log amount, age)``; each event attends over
    the events of its own customer; then ``LayerNorm(event + Linear(attended))`` is averaged over the events. A
    customer with no events gets the zero vector. Attention runs through ``F.scaled_dot_product_attention`` (a
    fused kernel) once per run of customers with the same number of events (:class:`PackedEvents`), so no
    padding is attended over or masked, and without dropout on the attention weights (drawing a Bernoulli mask
    of ``U x heads x L x L`` cost as much again); dropout acts after pooling.

    ``forward(PackedEvents) -> [U, E]``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self._event_layers(space, embedding_dim, heads)
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self._output_layers(embedding_dim, dropout)

    def forward(self, events: PackedEvents) -> Tensor:
        x = self._encode(events)  # [N, E]
        qkv = self.qkv(x)  # [N, 3E]
        qkv = torch.cat([qkv, qkv.new_zeros((1, qkv.shape[1]))])  # the row padding slots read
        attended = [self._attend(qkv, width, first, runs) for width, first, runs in _width_buckets(events.runs)]
        if attended:
            h = self.norm(x + self.proj(torch.cat(attended)))
            pooled = h.new_zeros((events.n_units, self.out_dim)).index_add(0, events.unit, h)
            pooled = pooled / events.counts.clamp(min=1).unsqueeze(1).to(h.dtype)
        else:
            pooled = x.new_zeros((events.n_units, self.out_dim))
        return self.dropout(pooled)

    def _attend(self, qkv: Tensor, width: int, first: int, runs: list[tuple[int, int]]) -> Tensor:
        """Attention of the units of ``runs`` (``(count, n_units)``, at most ``width`` events each), whose events
        start at packed position ``first`` of ``qkv`` (``[N + 1, 3E]``, the last row zeros).

        Each unit is padded to ``width``, and units narrower than :data:`SEQUENCE_SLOTS` share one attention
        sequence of that length, kept apart by a block-diagonal mask: the fused kernel has a fixed cost per
        (sequence, head), which dominated for short histories. A padding slot attends to itself only (so no row
        is fully masked) and no real event attends to a padding slot. ``-> [events, E]`` in packed order.
        """
        seg = torch.repeat_interleave(torch.tensor([c for c, _ in runs]), torch.tensor([n for _, n in runs]))
        group = max(1, SEQUENCE_SLOTS // width)
        n = -(-int(seg.shape[0]) // group) * group  # whole sequences; the extra units have no events
        seg = torch.cat([seg, seg.new_zeros(n - seg.shape[0])])
        slot = torch.arange(width)
        valid = slot.unsqueeze(0) < seg.unsqueeze(1)  # [n, W]
        starts = torch.cumsum(seg, 0) - seg + first
        index = torch.where(valid, starts.unsqueeze(1) + slot, qkv.shape[0] - 1)  # padding reads the zero row
        length = group * width
        seqs = n // group
        q, k, v = qkv.index_select(0, index.reshape(-1)).view(seqs, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        flat_valid = valid.reshape(seqs, length)
        if group == 1 and bool(flat_valid.all()):
            mask = None
        else:
            unit_of = torch.arange(length) // width
            same_unit = unit_of.unsqueeze(0) == unit_of.unsqueeze(1)  # [T, T]
            mask = (same_unit & (flat_valid.unsqueeze(1) | torch.eye(length, dtype=torch.bool))).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(n * width, -1)
        return out.index_select(0, torch.nonzero(valid.reshape(-1)).squeeze(1))


class BehaviourAttentionPooling(_EventEncoder):
    """Attention pooling of a customer's latest behaviour events: one learnt query per head.

    Each event is encoded as in :class:`BehaviourSelfAttention` (``fund embedding + event-type embedding +
    Linear(log amount, age)``). Head ``h`` scores every event with its own query, ``s = x . w_h + b_h``, and
    averages the head's slice of the event encodings (``E / heads`` dimensions) with the softmax of those scores
    over the customer's events; ``LayerNorm(pooled + Linear(pooled))`` of the concatenated heads is the output.
    A customer with no events gets the zero vector; dropout acts on the output.

    Why not self-attention: every event attending to every other event of its customer costs ``L`` times the
    per-event work, and at this size (``E`` = 8, about ten events per customer) it was half of a training step
    and more than the whole per-step budget of a network within 3x of a plain MLP (benchmarks/RESULTS.md,
    issue 10). Here every per-event operation is one pass over the ``N`` real events (no padding, no ``L x L``
    scores); what varies per customer (which events matter) is kept by the softmax weights, and per-candidate
    relevance is the job of :class:`TargetAttention`.

    ``forward(PackedEvents) -> [U, E]``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self._event_layers(space, embedding_dim, heads)
        self.score = nn.Linear(embedding_dim, heads)
        self._output_layers(embedding_dim, dropout)

    def forward(self, events: PackedEvents) -> Tensor:
        n_units, heads = events.n_units, self.heads
        x = self._encode(events)  # [N, E]
        s = self.score(x)  # [N, H]
        # Softmax over each unit's events, shifted by the unit's maximum (any per-unit constant gives the same
        # weights; the maximum keeps exp finite).
        group = events.unit.unsqueeze(1).expand(-1, heads)
        top = s.new_full((n_units, heads), float("-inf")).scatter_reduce(0, group, s.detach(), "amax")
        w = (s - top.index_select(0, events.unit)).exp()  # [N, H]
        total = s.new_zeros((n_units, heads)).index_add(0, events.unit, w)
        weighted = (x.view(-1, heads, self.out_dim // heads) * w.unsqueeze(2)).view(-1, self.out_dim)
        pooled = weighted.new_zeros((n_units, self.out_dim)).index_add(0, events.unit, weighted)
        has = events.counts > 0
        # Units without events have total 0: divide by 1 there (their pooled sum is 0) and zero their output.
        pooled = pooled / torch.where(has.unsqueeze(1), total, 1.0).repeat_interleave(self.out_dim // heads, dim=1)
        out = self.norm(pooled + self.proj(pooled)) * has.unsqueeze(1).to(x.dtype)
        return self.dropout(out)


SEQUENCE_ENCODERS = ("pooling", "self_attention")
"""Values of the zoo's ``sequence_encoder`` parameter: :class:`BehaviourAttentionPooling` (the default) or the
paper's :class:`BehaviourSelfAttention`."""


SEQUENCE_SLOTS = 16
"""Length of the attention sequences that units with short histories are packed into (see ``_attend``)."""

BUCKET_WIDTHS = (4, 8, 16, 32)
"""Widths attention pads units to (each unit goes to the narrowest that holds it; longer sequences get their own
exact width): every call of the fused attention kernel has a fixed cost, so a few padded calls beat one per
distinct length, and padding to at most twice the length keeps the extra work small."""


def _width_buckets(runs: list[tuple[int, int]]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Consecutive runs ``(count, n_units)`` grouped by :data:`BUCKET_WIDTHS`: ``(width, first event, runs)``."""
    out: list[tuple[int, int, list[tuple[int, int]]]] = []
    pos = 0
    for count, n in runs:
        width = next((w for w in BUCKET_WIDTHS if count <= w), count)
        if out and out[-1][0] == width:
            out[-1][2].append((count, n))
        else:
            out.append((width, pos, [(count, n)]))
        pos += count * n
    return out


# --- graph arch --------------------------------------------------------------------------------------------------
class ConsumptionGAT(nn.Module):
    """Two graph-attention layers over a sampled customer -> merchant -> customer neighbourhood.

    Layer 1 lets each sampled merchant attend over its sampled customers (second hop); layer 2 lets each batch
    customer attend over its merchants. Payment count and total (standardised logs) are edge features of both
    layers. Customers with no merchants get only the layer bias.

    ``forward(target [U, P], c2 [C2, P], merchant [M] ids, e1_src/e1_dst [E1], e1_attr [E1, 2],
    e2_src/e2_dst [E2], e2_attr [E2, 2]) -> [U, hidden]``, where ``P`` is the profile size.
    """

    def __init__(self, space: FeatureSpace, profile_dim: int, hidden: int, heads: int, dropout: float) -> None:
        # Imported here: importing PyTorch Geometric costs a process 2-2.5 CPU-s (it registers custom operators),
        # which every command that never builds a graph branch (gbdt, Hillstrom, data without payments) would pay.
        from torch_geometric.nn import GATConv

        super().__init__()
        self.node_dim = profile_dim
        self.customer_in = nn.Linear(profile_dim, hidden)
        self.merchant = Embedding(space.n_merchants, hidden)
        self.layer1 = GATConv(
            (hidden, hidden), hidden, heads=heads, concat=False, edge_dim=2, add_self_loops=False, dropout=dropout
        )
        self.layer2 = GATConv(
            (hidden, hidden), hidden, heads=heads, concat=False, edge_dim=2, add_self_loops=False, dropout=dropout
        )
        self.out_dim = hidden

    def forward(
        self,
        target: Tensor,
        c2: Tensor,
        merchant: Tensor,
        e1_src: Tensor,
        e1_dst: Tensor,
        e1_attr: Tensor,
        e2_src: Tensor,
        e2_dst: Tensor,
        e2_attr: Tensor,
    ) -> Tensor:
        x_c2 = F.elu(self.customer_in(c2))
        x_m = self.merchant(merchant)
        x_t = F.elu(self.customer_in(target))
        h_m = F.elu(_gat(self.layer1, x_c2, x_m, e1_src, e1_dst, e1_attr))
        return F.elu(_gat(self.layer2, h_m, x_t, e2_src, e2_dst, e2_attr))


def _gat(layer: GATConv, x_src: Tensor, x_dst: Tensor, src: Tensor, dst: Tensor, attr: Tensor) -> Tensor:
    """What ``layer((x_src, x_dst), edges, attr)`` computes for this module's configuration (bipartite, edge
    features, no self loops, heads averaged), in plain tensor ops on the layer's own parameters.

    GATConv's general message-passing machinery cost more per batch than the arithmetic; here the destination
    and edge attention terms are folded into ``[in, heads]`` vectors first (``att . (W x) = (att W) . x``), so
    neither the destinations nor the edges are projected to ``heads x hidden`` only to be reduced again.
    ``x_src [Ns, D]``, ``x_dst [Nd, D]``, ``src``/``dst`` ``[E]``, ``attr [E, 2]`` ``-> [Nd, hidden]``.
    """
    heads, hidden = layer.heads, layer.out_channels
    n_dst = x_dst.shape[0]
    assert layer.lin_dst is not None and layer.lin_edge is not None and layer.att_edge is not None
    h_src = layer.lin_src(x_src).view(-1, heads, hidden)
    a_src = (h_src * layer.att_src).sum(-1)  # [Ns, H]
    w_dst = (layer.lin_dst.weight.view(heads, hidden, -1) * layer.att_dst.view(heads, hidden, 1)).sum(1)
    w_edge = (layer.lin_edge.weight.view(heads, hidden, -1) * layer.att_edge.view(heads, hidden, 1)).sum(1)
    a_dst = x_dst @ w_dst.t()  # [Nd, H]
    alpha = a_src.index_select(0, src) + a_dst.index_select(0, dst) + attr @ w_edge.t()  # [E, H]
    alpha = F.leaky_relu(alpha, layer.negative_slope)
    # Softmax over each destination's incoming edges, shifted by the group maximum as GATConv does.
    group = dst.unsqueeze(1).expand(-1, heads)
    top = alpha.new_full((n_dst, heads), float("-inf")).scatter_reduce(0, group, alpha.detach(), "amax")
    weight = (alpha - top.index_select(0, dst)).exp()
    total = alpha.new_zeros((n_dst, heads)).index_add(0, dst, weight) + 1e-16
    weight = weight / total.index_select(0, dst)
    if layer.training:
        weight = dropout_mask(weight, layer.dropout)
    message = h_src.index_select(0, src) * weight.unsqueeze(-1)  # [E, H, hidden]
    # The buffer takes the message's dtype, not x_dst's: under autocast the two differ.
    out = message.new_zeros((n_dst, heads, hidden)).index_add(0, dst, message).mean(dim=1)
    return out + layer.bias if layer.bias is not None else out


# --- customer / fund encoders ------------------------------------------------------------------------------------
@dataclass
class PairInput:
    """The factorised input of a batch: ``customer [U, Dc]``, ``row_unit [B]``, ``fund [F, Df]``, ``fund_index [B]``,
    and ``pair [B, Dp]`` (or None): what is specific to the (customer, candidate fund) pair itself."""

    customer: Tensor
    row_unit: Tensor
    fund: Tensor
    fund_index: Tensor
    pair: Tensor | None = None

    @property
    def n_rows(self) -> int:
        return int(self.row_unit.shape[0])

    @functools.cached_property
    def is_grid(self) -> bool:
        """Whether the rows are every unit x every fund, unit-major (see :func:`is_grid`)."""
        return is_grid(self.row_unit, self.fund_index, int(self.customer.shape[0]), int(self.fund.shape[0]))


def is_grid(row_unit: Tensor, fund_index: Tensor, n_units: int, n_funds: int) -> bool:
    """Whether rows ``row_unit [B]``, ``fund_index [B]`` are every unit x every fund, unit-major (row ``u * F + j``
    is unit ``u``, fund ``j``), as when scoring every customer against every fund."""
    n_rows = int(row_unit.shape[0])
    if n_rows != n_units * n_funds or n_rows == 0:
        return False
    grid = row_unit.view(n_units, n_funds), fund_index.view(n_units, n_funds)
    return torch.equal(grid[0], torch.arange(n_units).unsqueeze(1).expand(-1, n_funds)) and torch.equal(
        grid[1], torch.arange(n_funds).expand(n_units, -1)
    )


class CustomerArch(nn.Module):
    """Everything known about a customer unit: ``[profile || behaviour || consumption]``, ``-> [U, out_dim]``.

    The behaviour and consumption branches exist only when enabled *and* the feature space has the data.
    """

    def __init__(
        self,
        space: FeatureSpace,
        *,
        embedding_dim: int,
        heads: int,
        dropout: float,
        use_sequences: bool,
        use_graph: bool,
        graph_hidden: int,
        graph_heads: int,
        sequence_encoder: str = "pooling",
    ) -> None:
        super().__init__()
        if sequence_encoder not in SEQUENCE_ENCODERS:
            raise ValueError(f"sequence_encoder must be one of {SEQUENCE_ENCODERS}, got {sequence_encoder!r}")
        self.profile = ProfileEmbedding(space, embedding_dim)
        self.n_lists = len(space.customer_lists)
        self.behaviour: BehaviourAttentionPooling | BehaviourSelfAttention | None = None
        if use_sequences and space.has_sequences:
            encoder = BehaviourAttentionPooling if sequence_encoder == "pooling" else BehaviourSelfAttention
            self.behaviour = encoder(space, embedding_dim, heads, dropout)
        self.consumption: ConsumptionGAT | None = None
        if use_graph and space.has_graph:
            # Graph nodes use the profile without list features: second-hop customers do not carry them.
            node_dim = self.profile.out_dim - self.n_lists * embedding_dim
            self.consumption = ConsumptionGAT(space, node_dim, graph_hidden, graph_heads, dropout)
        self._embedding_dim = embedding_dim
        self.out_dim = (
            self.profile.out_dim
            + (self.behaviour.out_dim if self.behaviour is not None else 0)
            + (self.consumption.out_dim if self.consumption is not None else 0)
        )

    def forward(self, inputs: dict[str, Tensor], events: PackedEvents | None = None) -> Tensor:
        """``events``: the batch's :class:`PackedEvents` when the caller has packed them already."""
        lists = [inputs[f"c_list_{i}"] for i in range(self.n_lists)]
        profile = self.profile(inputs["c_num"], inputs["c_cat"], lists)
        parts = [profile]
        if self.behaviour is not None:
            parts.append(self.behaviour(events if events is not None else PackedEvents.from_inputs(inputs)))
        if self.consumption is not None:
            # Graph nodes use the profile without list features (second-hop customers do not carry them), which
            # is the leading part of the unit's profile.
            target = profile[:, : self.consumption.node_dim]
            c2 = self.profile(inputs["g_c2_num"], inputs["g_c2_cat"])
            parts.append(
                self.consumption(
                    target,
                    c2,
                    inputs["g_merchant"],
                    inputs["g_e1_src"],
                    inputs["g_e1_dst"],
                    inputs["g_e1_attr"],
                    inputs["g_e2_src"],
                    inputs["g_e2_dst"],
                    inputs["g_e2_attr"],
                )
            )
        return torch.cat(parts, dim=1)


# --- candidate-aware pair features -------------------------------------------------------------------------------
class TargetAttention(nn.Module):
    """DIN-style target attention: the candidate fund (and its type) queries the customer's behaviour events.

    Each event key is ``fund embedding + type-of-fund embedding + event-type embedding + Linear(amount, age)``;
    the query is the candidate's ``fund embedding + type embedding``. The score of event ``l`` for candidate
    ``f`` is a scaled dot product plus learnt biases for "same fund" and "same fund type"; its weight is
    ``sigmoid(score)`` (padding weighs 0) and the output is the weighted sum of the event encodings scaled by
    ``1 / sqrt(L)``. Beside the paper's self-attention (one vector per customer) this gives one vector per
    (customer, candidate fund), so "keeps buying bond funds" raises bond funds only. Computed per unit and fund
    (``U x F x L``, no per-row work), then gathered per row.

    ``forward(inputs) -> [U, F, E]`` from ``seq_fund``, ``seq_type``, ``seq_amount``, ``seq_age``, ``seq_mask``
    (``[U, L]``) and ``f_token`` (``[F]``, the candidate funds' event tokens).
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int) -> None:
        super().__init__()
        groups = [0, 0, *(g + 1 for g in space.fund_groups)]  # padding and unknown fund: no type
        self.register_buffer("token_group", torch.tensor(groups, dtype=torch.int64), persistent=False)
        self.fund = Embedding(space.n_event_funds, embedding_dim, padding_idx=0)
        self.group = Embedding(space.n_fund_groups + 1, embedding_dim, padding_idx=0)
        self.etype = Embedding(space.n_event_types, embedding_dim, padding_idx=0)
        self.value = nn.Linear(2, embedding_dim)
        self.query = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.key = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.match = nn.Parameter(torch.zeros(2))
        self.out_dim = embedding_dim
        self._scale = 1.0 / math.sqrt(embedding_dim)
        self._pool = 1.0 / math.sqrt(space.sequence_length)

    token_group: Tensor

    def forward(self, inputs: dict[str, Tensor], events: PackedEvents | None = None) -> Tensor:
        """Every (unit, candidate fund) pair: ``-> [U, F, E]`` (what :meth:`rows` gives the rows of)."""
        n_units, n_funds = inputs["seq_mask"].shape[0], inputs["f_token"].shape[0]
        ev = events if events is not None else PackedEvents.from_inputs(inputs)
        return self._grid(inputs, ev, *self._keys(inputs, ev)).view(n_units, n_funds, -1)

    def _keys(self, inputs: dict[str, Tensor], ev: PackedEvents) -> tuple[Tensor, Tensor, Tensor]:
        """``(x [N, E], kq [N, F], ev_group [N])``: each real event's encoding, its key's product with every
        candidate's query, and its fund's type."""
        cand_all = inputs["f_token"]
        groups = self.token_group
        ev_group = groups.index_select(0, ev.fund)
        x = (
            self.fund(ev.fund)
            + self.group(ev_group)
            + self.etype(ev.etype)
            + self.value(torch.stack([ev.amount, ev.age], dim=1))
        )
        q = self.query(self.fund(cand_all) + self.group(groups.index_select(0, cand_all)))  # [F, E]
        return x, self.key(x) @ q.t(), ev_group

    def rows(
        self, inputs: dict[str, Tensor], row_unit: Tensor, fund_index: Tensor, events: PackedEvents | None = None
    ) -> Tensor:
        """The output for each row's (unit, candidate fund): ``-> [B, E]``.

        Work is per real event: each event is encoded once, its key is multiplied with every candidate's query
        once (``[N, F]``), and the weighting and the weighted sum run over the (row, event of the row's unit)
        pairs, with no padding and no ``U x F`` grid (a training batch has about one row per unit). When the rows
        are every unit x every fund (scoring), they run over the ``[N, F]`` table itself, without gathering
        each row's events (see :meth:`_grid`).
        """
        ev = events if events is not None else PackedEvents.from_inputs(inputs)
        x, kq, ev_group = self._keys(inputs, ev)
        if is_grid(row_unit, fund_index, ev.n_units, int(kq.shape[1])):
            return self._grid(inputs, ev, x, kq, ev_group)
        cand_all = inputs["f_token"]
        groups = self.token_group
        row, event = ev.row_events(row_unit)
        fund_of = fund_index.index_select(0, row)
        cand = cand_all.index_select(0, fund_of)
        ev_fund, ev_grp = ev.fund.index_select(0, event), ev_group.index_select(0, event)
        same_fund = (ev_fund == cand).to(kq.dtype)
        same_group = ((ev_grp == groups.index_select(0, cand)) & (ev_grp > 0)).to(kq.dtype)
        weights = self._weights(kq.reshape(-1).index_select(0, event * kq.shape[1] + fund_of), same_fund, same_group)
        weighted = x.index_select(0, event) * weights.unsqueeze(1)
        return weighted.new_zeros((row_unit.shape[0], self.out_dim)).index_add(0, row, weighted)

    def _weights(self, kq: Tensor, same_fund: Tensor, same_group: Tensor) -> Tensor:
        """Each (row or fund, event) weight from its key-query product and its "same fund" / "same fund type"
        flags (all of one shape)."""
        scores = kq * self._scale + self.match[0] * same_fund + self.match[1] * same_group
        # As in DIN the weights are not softmax-normalised: a customer with one event on a bond fund must still
        # give bond candidates a stronger signal than equity ones, which a softmax over one event cannot.
        return torch.sigmoid(scores) * self._pool

    def _grid(self, inputs: dict[str, Tensor], ev: PackedEvents, x: Tensor, kq: Tensor, ev_group: Tensor) -> Tensor:
        """:meth:`rows` for every unit x every fund, unit-major, ``-> [U * F, E]``: the same formula on the
        ``[N, F]`` scores as they are, each event's weighted encodings added to its unit's ``F`` rows in the
        events' sequence order as in :meth:`rows`. The values equal the per-row path's but for the last bits of
        the few scores that torch's element-wise kernels reach in another position (a vector kernel's scalar
        tail): on one scoring batch, 4 of 131,072 outputs differed, by at most 7.5e-9."""
        cand_all = inputs["f_token"]
        groups = self.token_group
        n_funds = int(kq.shape[1])
        ev_group = ev_group.unsqueeze(1)
        same_fund = (ev.fund.unsqueeze(1) == cand_all.unsqueeze(0)).to(kq.dtype)
        same_group = ((ev_group == groups.index_select(0, cand_all).unsqueeze(0)) & (ev_group > 0)).to(kq.dtype)
        weights = self._weights(kq, same_fund, same_group)  # [N, F]
        weighted = (x.unsqueeze(1) * weights.unsqueeze(2)).view(-1, self.out_dim)  # [N * F, E], event-major
        dest = (ev.unit.unsqueeze(1) * n_funds + torch.arange(n_funds)).view(-1)
        return weighted.new_zeros((ev.n_units * n_funds, self.out_dim)).index_add(0, dest, weighted)


class CandidateArch(nn.Module):
    """Per-row candidate-aware input ``[B, out_dim]``: the pair counts of (customer, candidate fund / type)
    (``pair_x``, purchase totals scaled to the range of the counts), the customer's behaviour summary
    (``cust_x``: event counts and the mean and sd of the past purchases' ``log1p(amount)``, the mean scaled
    like the totals; unless ``use_summary`` is off) and the target attention's output.

    The summary is what places a customer's ticket size and spread (the simulator's per-customer dispersion is
    visible nowhere else); it is the same input ``gbdt`` reads, so both model families see the same features.

    ``forward(inputs, row_unit [B], fund_index [B], events) -> [B, out_dim]``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int, *, use_summary: bool = True) -> None:
        super().__init__()
        amount_scale = max(1.0, float(space.label_stats.get("log1p_mu", 1.0)))
        scale = [1.0 / amount_scale if n == "purchase_amount" else 1.0 for n in PAIR_FEATURE_NAMES] * 2
        summary = [1.0 / amount_scale if n == "purchase_log_mean" else 1.0 for n in CUSTOMER_SUMMARY_NAMES]
        self.use_summary = use_summary
        if not use_summary:
            summary = []
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("summary_scale", torch.tensor(summary, dtype=torch.float32), persistent=False)
        self.attention = TargetAttention(space, embedding_dim)
        self.out_dim = space.pair_dim + len(summary) + self.attention.out_dim

    scale: Tensor
    summary_scale: Tensor

    def forward(
        self, inputs: dict[str, Tensor], row_unit: Tensor, fund_index: Tensor, events: PackedEvents | None = None
    ) -> Tensor:
        pair_x = inputs["pair_x"]  # [U, F, D]
        n_funds = pair_x.shape[1]
        counts = pair_x.reshape(-1, pair_x.shape[2]).index_select(0, row_unit * n_funds + fund_index) * self.scale
        attended = self.attention.rows(inputs, row_unit, fund_index, events)
        if not self.use_summary:
            return torch.cat([counts, attended], dim=1)
        summary = (inputs["cust_x"] * self.summary_scale).index_select(0, row_unit)
        return torch.cat([counts, summary, attended], dim=1)


# --- interaction networks -----------------------------------------------------------------------------------------
class PairLinear(nn.Module):
    """``Linear([customer[row_unit] || fund[fund_index] || pair])`` computed per unit, per fund and (only for the
    narrow candidate-aware part) per row; ``-> [B, out_dim]``."""

    def __init__(self, customer_dim: int, fund_dim: int, out_dim: int, pair_dim: int = 0) -> None:
        super().__init__()
        self.customer = nn.Linear(customer_dim, out_dim)
        self.fund = nn.Linear(fund_dim, out_dim, bias=False)
        self.pair = nn.Linear(pair_dim, out_dim, bias=False) if pair_dim else None
        self.out_dim = out_dim

    def forward(self, pair: PairInput) -> Tensor:
        c, f = self.customer(pair.customer), self.fund(pair.fund)
        out: Tensor
        if pair.is_grid:
            # Every unit x every fund, unit-major (scoring): the same sums as a broadcast, without two per-row
            # gathers of the full width.
            out = (c.unsqueeze(1) + f.unsqueeze(0)).view(-1, self.out_dim)
        else:
            # index_select rather than t[index]: its backward is one index_add, where advanced indexing's backward
            # is a sorting accumulate under deterministic kernels.
            out = c.index_select(0, pair.row_unit) + f.index_select(0, pair.fund_index)
        if self.pair is not None and pair.pair is not None:
            # Without gradients, the product is added into the sums in place: the same values as the separate add
            # (bit for bit, tests/models/test_fast_layers.py) without a second pass over the [B, out] sums.
            grad = torch.is_grad_enabled()
            out = out + self.pair(pair.pair) if grad else out.addmm_(pair.pair, self.pair.weight.t())
        return out


class PairMLP(nn.Module):
    """An MLP on the row input ``[customer || fund]`` whose first layer is a :class:`PairLinear`.

    ``forward(PairInput) -> [B, hidden[-1]]``; ``hidden`` lists the layer widths (at least one).
    """

    def __init__(self, customer_dim: int, fund_dim: int, hidden: list[int], dropout: float, pair_dim: int = 0) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("PairMLP needs at least one hidden layer")
        self.first = PairLinear(customer_dim, fund_dim, hidden[0], pair_dim)
        self.dropout = Dropout(dropout)
        self.rest = mlp(hidden, dropout)
        self.out_dim = hidden[-1]

    def forward(self, pair: PairInput) -> Tensor:
        return self.rest(self.dropout(F.relu(self.first(pair))))


MIX_ROWS = 1024
"""Rows per block of :class:`MMoE`'s mixing without gradients: 1,024 rows' ``[T, n_e, K]`` products (1.5 MB at
the zoo's 3 x 4 x 32) fit a core's L2 cache."""


class MMoE(nn.Module):
    """Multi-gate mixture of experts (Ma et al. 2018): shared experts, one softmax gate per task.

    Each expert is one ``ReLU(Linear)`` layer on the row input, and the experts and gates of all tasks share a
    single :class:`PairLinear` (one gather per row for all of them). One-layer experts keep the per-row work to
    a gather, a ReLU and a small mixing product: at scoring time the per-row width is what memory bandwidth
    pays for, and the towers above add the second non-linear layer.

    ``forward(PairInput) -> [B, n_tasks, expert_dim]``, one mixed representation per task.
    """

    def __init__(
        self,
        customer_dim: int,
        fund_dim: int,
        *,
        n_tasks: int,
        n_experts: int,
        expert_dim: int,
        dropout: float,
        pair_dim: int = 0,
    ) -> None:
        super().__init__()
        self.n_experts, self.expert_dim, self.n_tasks = n_experts, expert_dim, n_tasks
        self.project = PairLinear(customer_dim, fund_dim, n_experts * expert_dim + n_tasks * n_experts, pair_dim)
        self.dropout = Dropout(dropout)
        self.out_dim = expert_dim

    def forward(self, pair: PairInput) -> Tensor:
        b = pair.n_rows
        z = self.project(pair)
        width = self.n_experts * self.expert_dim
        experts = self.dropout(F.relu(z[:, :width])).view(b, self.n_experts, self.expert_dim)  # [B, n_e, K]
        # Softmax written out: torch's kernel is slow for a last dimension of a few experts (5x at scoring).
        logits = z[:, width:].reshape(b, self.n_tasks, self.n_experts)
        # The shift is the experts' maximum taken pairwise (exact, so the same value as amax): torch's reduction
        # over a last dimension of a few elements cost 5 times as much at scoring.
        top = functools.reduce(torch.maximum, logits.detach().unbind(-1)).unsqueeze(-1)
        gates = (logits - top).exp()
        gates = gates / gates.sum(dim=-1, keepdim=True)  # [B, T, n_e]
        # The mixing as a broadcast product summed over the experts: torch's CPU bmm over B tiny [T, n_e] x
        # [n_e, K] products costs about twice as much, at training and at scoring batch sizes alike.
        if torch.is_grad_enabled() or b <= MIX_ROWS:
            return (gates.unsqueeze(3) * experts.unsqueeze(1)).sum(dim=2)
        # Without gradients (scoring, validation), in blocks of rows: the [B, T, n_e, K] product of a scoring
        # batch (25 MB at 16,384 rows) does not fit a core's cache and made the mixing memory-bound. Each row's
        # sum is the same whatever the block (tests/models/test_fast_layers.py).
        mixed = experts.new_empty((b, self.n_tasks, self.expert_dim))
        for start in range(0, b, MIX_ROWS):
            stop = min(b, start + MIX_ROWS)
            torch.sum(gates[start:stop].unsqueeze(3) * experts[start:stop].unsqueeze(1), dim=2, out=mixed[start:stop])
        return mixed


class Tower(nn.Module):
    """A task tower: MLP ``[B, D] -> [B, out]`` (``out`` 1 for a logit or a scalar, 2 for ``(mu, raw sigma)``).

    ``bias_init`` sets the output bias so training starts at the base rate / mean amount instead of having to
    travel there (with a 0.4% conversion rate that first stretch dominates a short training run).
    """

    def __init__(self, in_dim: int, hidden: int, out: int, dropout: float, bias_init: list[float] | None = None):
        super().__init__()
        self.body = mlp([in_dim, hidden], dropout)
        self.head = nn.Linear(hidden, out)
        if bias_init is not None:
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor(bias_init, dtype=self.head.bias.dtype))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.body(x))
        return out


def run_towers(towers: list[Tower], inputs: list[Tensor]) -> list[Tensor]:
    """``[tower(x) for tower, x in zip(towers, inputs)]``, the same numbers with one dropout draw for all.

    Towers run one after the other draw their dropout masks one after the other, and torch's CPU generator gives
    ``rand(T, B, H)`` exactly the values of ``T`` consecutive ``rand(B, H)``; so one draw, one comparison and one
    scaling replace ``T`` of each (a tower's Linear and head are a few small kernels, the mask was a third of
    them). Towers of another shape (a deeper body, another rate or width, inputs of unequal rows) run one by one.
    ``inputs[t]`` ``[B, D_t]`` ``-> [B, out_t]`` per tower.
    """
    bodies = [list(t.body) for t in towers]
    drops = [b[2] if len(b) == 3 and isinstance(b[2], Dropout) else None for b in bodies]
    shapes = {(int(x.shape[0]), t.head.in_features) for t, x in zip(towers, inputs, strict=True)}
    fusable = (
        len(towers) > 1
        and all(len(b) == 3 and isinstance(b[0], nn.Linear) and isinstance(b[1], nn.ReLU) for b in bodies)
        and all(d is not None and d.training and 0.0 < d.p < 1.0 for d in drops)
        and len({d.p for d in drops if d is not None}) == 1
        and len(shapes) == 1
    )
    if not fusable:
        return [t(x) for t, x in zip(towers, inputs, strict=True)]
    hidden = [F.relu(b[0](x)) for b, x in zip(bodies, inputs, strict=True)]
    p = float(drops[0].p) if drops[0] is not None else 0.0
    keep = torch.rand((len(towers), *hidden[0].shape), dtype=hidden[0].dtype).ge_(p)
    keep = keep.to(hidden[0].dtype).mul_(1.0 / (1.0 - p))
    return [t.head(h * keep[i]) for i, (t, h) in enumerate(zip(towers, hidden, strict=True))]
