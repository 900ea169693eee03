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

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from eoca.models.features import PAIR_FEATURE_NAMES, FeatureSpace


def mlp(dims: list[int], dropout: float, *, last_activation: bool = True) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per consecutive pair of ``dims``; ``[*, dims[0]] -> [*, dims[-1]]``."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# --- sparse arch -------------------------------------------------------------------------------------------------
class ProfileEmbedding(nn.Module):
    """A customer's profile: categorical embeddings, pooled list-feature embeddings and numeric features.

    ``forward(num [U, Dn], cat [U, Dc], lists [[U, Li] ...]) -> [U, out_dim]`` with
    ``out_dim = Dn + (Dc + n_lists) * E``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int) -> None:
        super().__init__()
        self.categorical = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in space.customer_cardinalities)
        self.lists = nn.ModuleList(
            nn.Embedding(n, embedding_dim, padding_idx=0) for n in space.customer_list_cardinalities
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
        self.categorical = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in space.fund_cardinalities)
        self.out_dim = space.fund_numeric_dim + len(self.categorical) * embedding_dim

    def forward(self, num: Tensor, cat: Tensor) -> Tensor:
        parts = [num, *(emb(cat[:, i]) for i, emb in enumerate(self.categorical))]
        return torch.cat(parts, dim=1)


# --- sequence arch -----------------------------------------------------------------------------------------------
class BehaviourSelfAttention(nn.Module):
    """Multi-head self-attention over a customer's latest behaviour events, mean-pooled over real events.

    Each event is ``fund embedding + event-type embedding + Linear(log amount, age)``; padding is masked out of
    attention and of the pooling. A customer with no events gets the zero vector. Attention runs through
    ``F.scaled_dot_product_attention`` (a fused kernel: on CPU the unfused ``bmm``/``softmax`` path of
    ``nn.MultiheadAttention`` was the largest cost of a training step) and without dropout on the attention
    weights (drawing a Bernoulli mask of ``U x heads x L x L`` cost as much again); dropout acts after pooling.

    ``forward(fund [U, L], etype [U, L], amount [U, L], age [U, L], mask [U, L] bool) -> [U, E]``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if embedding_dim % heads:
            raise ValueError(f"embedding_dim ({embedding_dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.fund = nn.Embedding(space.n_event_funds, embedding_dim, padding_idx=0)
        self.etype = nn.Embedding(space.n_event_types, embedding_dim, padding_idx=0)
        self.value = nn.Linear(2, embedding_dim)
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.proj = nn.Linear(embedding_dim, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = embedding_dim

    def forward(self, fund: Tensor, etype: Tensor, amount: Tensor, age: Tensor, mask: Tensor) -> Tensor:
        u, length = fund.shape
        counts = mask.sum(dim=1)
        # Events are right-aligned (latest last), so a unit with n events only needs its last n slots. Units are
        # bucketed by length (<=4, <=8, <=16, ...) and each bucket attends over its own width: attention costs
        # L^2 per unit and most customers have far fewer events than L, so this cuts the branch's cost several
        # times over with identical results. Units without events stay at the zero vector.
        index: list[Tensor] = []
        encoded: list[Tensor] = []
        low, width = 0, min(4, length)
        while low < length:
            rows = torch.nonzero((counts > low) & (counts <= width)).squeeze(1)
            if rows.numel():
                tail = slice(length - width, length)
                index.append(rows)
                encoded.append(
                    self._encode(
                        fund[rows, tail], etype[rows, tail], amount[rows, tail], age[rows, tail], mask[rows, tail]
                    )
                )
            low, width = width, min(2 * width, length)
        out = fund.new_zeros((u, self.out_dim), dtype=self.value.weight.dtype)
        if encoded:
            out = out.index_put((torch.cat(index),), torch.cat(encoded))
        return self.dropout(out)

    def _encode(self, fund: Tensor, etype: Tensor, amount: Tensor, age: Tensor, mask: Tensor) -> Tensor:
        """Attention + pooling for units with at least one event: ``[n, W]`` inputs ``-> [n, E]``."""
        n, width = fund.shape
        x = self.fund(fund) + self.etype(etype) + self.value(torch.stack([amount, age], dim=-1))  # [n, W, E]
        q, k, v = self.qkv(x).view(n, width, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each [n, H, W, E/H]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        h = self.norm(x + self.proj(attended.transpose(1, 2).reshape(n, width, -1)))
        weights = mask.to(h.dtype).unsqueeze(-1)
        pooled: Tensor = (h * weights).sum(dim=1) / weights.sum(dim=1)
        return pooled


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
        super().__init__()
        self.customer_in = nn.Linear(profile_dim, hidden)
        self.merchant = nn.Embedding(space.n_merchants, hidden)
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
        e1 = torch.stack([e1_src, e1_dst])
        h_m = F.elu(self.layer1((x_c2, x_m), e1, e1_attr, size=(x_c2.shape[0], x_m.shape[0])))
        e2 = torch.stack([e2_src, e2_dst])
        out: Tensor = self.layer2((h_m, x_t), e2, e2_attr, size=(h_m.shape[0], x_t.shape[0]))
        return F.elu(out)


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
    ) -> None:
        super().__init__()
        self.profile = ProfileEmbedding(space, embedding_dim)
        self.n_lists = len(space.customer_lists)
        self.behaviour: BehaviourSelfAttention | None = None
        if use_sequences and space.has_sequences:
            self.behaviour = BehaviourSelfAttention(space, embedding_dim, heads, dropout)
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

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        lists = [inputs[f"c_list_{i}"] for i in range(self.n_lists)]
        profile = self.profile(inputs["c_num"], inputs["c_cat"], lists)
        parts = [profile]
        if self.behaviour is not None:
            parts.append(
                self.behaviour(
                    inputs["seq_fund"], inputs["seq_type"], inputs["seq_amount"], inputs["seq_age"], inputs["seq_mask"]
                )
            )
        if self.consumption is not None:
            # Graph nodes use the profile without list features: second-hop customers do not carry them.
            target = self.profile(inputs["c_num"], inputs["c_cat"])
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
        self.fund = nn.Embedding(space.n_event_funds, embedding_dim, padding_idx=0)
        self.group = nn.Embedding(space.n_fund_groups + 1, embedding_dim, padding_idx=0)
        self.etype = nn.Embedding(space.n_event_types, embedding_dim, padding_idx=0)
        self.value = nn.Linear(2, embedding_dim)
        self.query = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.key = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.match = nn.Parameter(torch.zeros(2))
        self.out_dim = embedding_dim
        self._scale = 1.0 / math.sqrt(embedding_dim)
        self._pool = 1.0 / math.sqrt(space.sequence_length)

    token_group: Tensor

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        fund, mask = inputs["seq_fund"], inputs["seq_mask"]
        cand = inputs["f_token"]
        ev_group = self.token_group[fund]
        cand_group = self.token_group[cand]
        x = (
            self.fund(fund)
            + self.group(ev_group)
            + self.etype(inputs["seq_type"])
            + self.value(torch.stack([inputs["seq_amount"], inputs["seq_age"]], dim=-1))
        )  # [U, L, E]
        q = self.query(self.fund(cand) + self.group(cand_group))  # [F, E]
        scores = torch.einsum("ule,fe->ufl", self.key(x), q) * self._scale
        same_fund = (fund[:, None, :] == cand[None, :, None]).to(scores.dtype)
        same_group = ((ev_group[:, None, :] == cand_group[None, :, None]) & (ev_group[:, None, :] > 0)).to(scores.dtype)
        scores = scores + self.match[0] * same_fund + self.match[1] * same_group
        # As in DIN the weights are not softmax-normalised: a customer with one event on a bond fund must still
        # give bond candidates a stronger signal than equity ones, which a softmax over one event cannot.
        weights = torch.sigmoid(scores) * mask[:, None, :].to(scores.dtype) * self._pool
        return torch.einsum("ufl,ule->ufe", weights, x)


class CandidateArch(nn.Module):
    """Per-row candidate-aware input ``[B, out_dim]``: the pair counts of (customer, candidate fund / type)
    (``pair_x``, purchase totals scaled to the range of the counts) and the target attention's output.

    ``forward(inputs, row_unit [B], fund_index [B]) -> [B, out_dim]``.
    """

    def __init__(self, space: FeatureSpace, embedding_dim: int) -> None:
        super().__init__()
        amount_scale = max(1.0, float(space.label_stats.get("log1p_mu", 1.0)))
        scale = [1.0 / amount_scale if n == "purchase_amount" else 1.0 for n in PAIR_FEATURE_NAMES] * 2
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.attention = TargetAttention(space, embedding_dim)
        self.out_dim = space.pair_dim + self.attention.out_dim

    scale: Tensor

    def forward(self, inputs: dict[str, Tensor], row_unit: Tensor, fund_index: Tensor) -> Tensor:
        counts = inputs["pair_x"][row_unit, fund_index] * self.scale
        attended = self.attention(inputs)[row_unit, fund_index]
        return torch.cat([counts, attended], dim=1)


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
        out: Tensor = self.customer(pair.customer)[pair.row_unit] + self.fund(pair.fund)[pair.fund_index]
        if self.pair is not None and pair.pair is not None:
            out = out + self.pair(pair.pair)
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
        self.dropout = nn.Dropout(dropout)
        self.rest = mlp(hidden, dropout)
        self.out_dim = hidden[-1]

    def forward(self, pair: PairInput) -> Tensor:
        return self.rest(self.dropout(F.relu(self.first(pair))))


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
        self.dropout = nn.Dropout(dropout)
        self.out_dim = expert_dim

    def forward(self, pair: PairInput) -> Tensor:
        b = pair.n_rows
        z = self.project(pair)
        width = self.n_experts * self.expert_dim
        experts = self.dropout(F.relu(z[:, :width])).view(b, self.n_experts, self.expert_dim)  # [B, n_e, K]
        gates = torch.softmax(z[:, width:].reshape(b, self.n_tasks, self.n_experts), dim=-1)  # [B, T, n_e]
        return torch.bmm(gates, experts)


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
