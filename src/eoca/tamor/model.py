"""TAMOR's network and the baselines it is compared with, as variants of one configurable module.

Inputs (one row per (customer, item) exposure), see :class:`TamorBatch`:
user features ``[B, Du]``, tier ``[B]``, customer key ``[B]``, shared item features ``[B, Ds]``, scenario
``[B]`` and the concatenated scenario-specific item features ``[B, Dx]``, NaN where a feature does not belong to
the item's scenario.

Building blocks and where they come from:

* :class:`PriorGate` -- PEPNet's gate (Chang et al., KDD 2023): ``2 * sigmoid(MLP([prior, stop_grad(x)]))``
  rescales a representation element-wise, driven by prior features. Here the priors are the tier (user side)
  and the tier and scenario (item side): the *tier-aware* representations of the TAMOR abstract.
* :class:`ScenarioItemEncoder` -- our design: one linear encoder per scenario over that scenario's own features
  only, all mapping into the same space, so an item never reads features that are missing by design.
* :class:`CGC` -- PLE's customised gate control (Tang et al., RecSys 2020): shared experts plus experts per task,
  each task mixing the shared experts and its own through a softmax gate.
* :class:`StarLayer` -- STAR (Sheng et al., CIKM 2021): a layer whose weight is the element-wise product of a
  shared and a domain-specific matrix (domain = tier here), used by the ``star`` baseline.
* :class:`UserBias` -- our reading of the abstract's "user bias learning": a per-customer vector from a hashed
  table, L2-regularised, mapped to a shift of the user-specific tasks' logits (click, conversion). Customers not
  seen in training get the prior (zeros), whatever bucket their key hashes to.
* Tier-specific towers (``Variant.tier_towers``): one set of task towers per tier over the shared experts, so the
  heads of a tier are its own while the representation and experts are learned from every tier.
* Multi-task heads: click, conversion after click (ESMM's entire-space product), amount given conversion
  (lognormal ``(mu, sigma)`` as PTOFA/ZILN, ETV ``p * exp(mu + sigma^2 / 2)``) and tier upgrade given purchase,
  chained after pCTCVR the same way (an upgrade needs a purchase).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eoca.models.layers import mlp
from eoca.models.losses import (
    bce_loss,
    expected_transaction_value,
    lognormal_logpdf,
    positive_sigma,
    product_log_probs,
)
from eoca.models.zoo.common import logit
from eoca.tamor.config import FRAMEWORK_NAMES

TASK_NAMES: tuple[str, ...] = ("click", "conversion", "amount", "upgrade")


@dataclass(frozen=True)
class Variant:
    """Which parts a network has. ``bottom``: ``ple`` (shared + task experts), ``mmoe`` (shared experts only)
    or ``star`` (shared x tier-specific weights). ``per_tier``: one separate network per tier.
    ``amount_to_upgrade``: the upgrade tower reads the predicted amount distribution. ``upgrade_link``: the
    upgrade logit adds ``1.702 a (mu + rho[scenario] - log_gap) / sigma``, the logistic form of the chance that
    the predicted lognormal amount, times a learned retention ``exp(rho)`` per scenario, covers the gap to the
    threshold (every framework's upgrade tower reads the gap itself). ``bias_mode``: how the user-bias vector
    enters the click and conversion tasks: ``logit``, a linear map of it added to their logits (a per-customer
    level shift, the form of the world's own propensity), or ``tower``, concatenated to their tower inputs (can
    interact with the item; the design before 2026-11-30 evening, kept in ``tamor_previous``). ``tier_towers``:
    one set of task towers per tier over the shared experts (needs ``tier_aware``). ``tier_balance``: every task's
    loss is the mean over the tiers present in the batch of that tier's mean loss, so each tier moves the shared
    part equally whatever its size (towers per tier barely notice: Adam rescales their gradients). ``tier_init``:
    each tier's towers start at that tier's own base rates (needs ``tier_towers``), as a per-tier network's do."""

    tier_aware: bool = True
    scenario_encoders: bool = True
    user_bias: bool = True
    bias_mode: Literal["logit", "tower"] = "logit"
    tier_towers: bool = False
    bottom: Literal["ple", "mmoe", "star"] = "ple"
    per_tier: bool = False
    amount_to_upgrade: bool = True
    upgrade_link: bool = True
    tier_balance: bool = False
    tier_init: bool = False
    towers_read_item: bool = False

    def __post_init__(self) -> None:
        if self.tier_towers and not self.tier_aware:
            raise ValueError("tier_towers needs tier_aware: towers per tier read the tier")
        if self.tier_init and not self.tier_towers:
            raise ValueError("tier_init needs tier_towers: only towers per tier can start at their tier's rates")


_POOLED = Variant(
    tier_aware=False,
    scenario_encoders=False,
    user_bias=False,
    bottom="mmoe",
    amount_to_upgrade=False,
    upgrade_link=False,
)
_TAMOR = Variant(tier_towers=True, tier_init=True)
VARIANTS: dict[str, Variant] = {
    "tamor": _TAMOR,
    "tamor_no_tier": replace(_TAMOR, tier_aware=False, tier_towers=False, tier_init=False),
    "tamor_no_scenario": replace(_TAMOR, scenario_encoders=False),
    "tamor_no_bias": replace(_TAMOR, user_bias=False),
    "tamor_no_link": replace(_TAMOR, upgrade_link=False),
    "tamor_shared_towers": replace(_TAMOR, tier_towers=False, tier_init=False),
    "tamor_previous": Variant(bias_mode="tower"),
    "tamor_pooled_init": replace(_TAMOR, tier_init=False),
    "tamor_balanced": replace(_TAMOR, tier_init=False, tier_balance=True),
    "tamor_item_towers": replace(_TAMOR, towers_read_item=True),
    "pooled": _POOLED,
    "per_tier": replace(_POOLED, per_tier=True),
    "star": replace(_POOLED, bottom="star"),
}
"""Every network of the comparison: TAMOR, its ablations and the three baselines (pooled, per-tier, STAR-style)."""
assert tuple(VARIANTS) == FRAMEWORK_NAMES, "eoca.tamor.config.FRAMEWORK_NAMES must list VARIANTS in order"


@dataclass
class TamorBatch:
    """One batch; every tensor has leading dimension ``B``.

    Attributes:
        user_x: float32 ``[B, Du]``; tier: int64 ``[B]`` in 0..n_tiers-1; user_key: int64 ``[B]`` customer key.
        item_shared: float32 ``[B, Ds]``; scenario: int64 ``[B]``; item_specific: float32 ``[B, Dx]`` (NaN allowed).
        log_gap: float32 ``[B]``, log of the holdings the customer lacks to reach the high-holding threshold.
        click, convert, amount, upgrade: float32 ``[B]`` labels (upgrade -1 where the task does not apply);
            None for scoring.
    """

    user_x: Tensor
    tier: Tensor
    user_key: Tensor
    item_shared: Tensor
    scenario: Tensor
    item_specific: Tensor
    log_gap: Tensor
    click: Tensor | None = None
    convert: Tensor | None = None
    amount: Tensor | None = None
    upgrade: Tensor | None = None

    def __len__(self) -> int:
        return int(self.tier.shape[0])

    def rows(self, index: Tensor) -> TamorBatch:
        """The batch restricted to ``index`` (int64 ``[b]``)."""
        taken: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out: dict[str, Any] = {k: None if v is None else v.index_select(0, index) for k, v in taken.items()}
        return TamorBatch(**out)


@dataclass
class TamorOutput:
    """Predictions, each float32 ``[B]``: pctr, pcvr, p (= pCTCVR), mu, sigma, amount ``E[amount | convert]``,
    etv, p_upgrade (P(this exposure makes the customer high-holding))."""

    pctr: Tensor
    pcvr: Tensor
    p: Tensor
    mu: Tensor
    sigma: Tensor
    amount: Tensor
    etv: Tensor
    p_upgrade: Tensor


class _Heads(NamedTuple):
    """Raw tower outputs, each ``[B]`` except ``bias`` ``[B, bias_dim]`` (``[B, 0]`` without a user bias):
    click / conversion logits, lognormal ``mu`` / ``sigma``, the upgrade-given-purchase logit and the click /
    conversion logits at the prior (zero) user bias that the upgrade chain uses."""

    click: Tensor
    cvr: Tensor
    mu: Tensor
    sigma: Tensor
    upgrade: Tensor
    base_click: Tensor
    base_cvr: Tensor
    bias: Tensor


class PriorGate(nn.Module):
    """PEPNet gate: ``x * 2 sigmoid(W2 relu(W1 [prior, stop_grad(x)]))``; ``x [B, D]``, ``prior [B, P]``.

    The output layer starts at zero so the gate is the identity (factor 1) at initialisation.
    """

    def __init__(self, dim: int, prior_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim + prior_dim, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, prior: Tensor) -> Tensor:
        g = 2.0 * torch.sigmoid(self.out(F.relu(self.hidden(torch.cat([prior, x.detach()], dim=1)))))
        return x * g


class ScenarioItemEncoder(nn.Module):
    """Scenario-specific encoders into one space: ``[B, Dx] -> [B, D]``.

    ``columns[s]`` lists the columns of ``item_specific`` owned by scenario ``s``; row ``b`` is encoded by the
    linear encoder of ``scenario[b]`` from its own columns only (a fixed mask zeroes every other column's weights,
    so missing values of other scenarios are never read; a missing value of its own is read as 0 with a missing
    indicator). All scenarios are evaluated in one batched product and each row keeps its own scenario's output.
    """

    mask: Tensor

    def __init__(self, columns: list[list[int]], dim: int) -> None:
        super().__init__()
        n_in = max((max(c) + 1 for c in columns if c), default=0)
        mask = torch.zeros(len(columns), 2 * n_in)
        for s, cols in enumerate(columns):
            for c in cols:
                mask[s, c] = mask[s, n_in + c] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        fan_in = mask.sum(1).clamp(min=1.0)[:, None, None]
        self.weight = nn.Parameter(torch.randn(len(columns), 2 * n_in, dim) / fan_in.sqrt())
        self.bias = nn.Parameter(torch.zeros(len(columns), dim))
        self.n_in = n_in

    def forward(self, specific: Tensor, scenario: Tensor) -> Tensor:
        x = specific[:, : self.n_in]
        missing = torch.isnan(x)
        feats = torch.cat([torch.where(missing, torch.zeros_like(x), x), missing.to(x.dtype)], dim=1)
        every = torch.einsum("bi,sid->bsd", feats, self.weight * self.mask.unsqueeze(2)) + self.bias  # [B, S, D]
        return every[torch.arange(feats.shape[0]), scenario]


class GenericItemEncoder(nn.Module):
    """One encoder over every scenario's features, missing values read as 0 plus an indicator: ``[B, Dx] ->
    [B, D]``. This is what a pooled model does with heterogeneous items (the ablation of the scenario encoders)."""

    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * n_features, dim)

    def forward(self, specific: Tensor, scenario: Tensor) -> Tensor:
        missing = torch.isnan(specific)
        x = torch.where(missing, torch.zeros_like(specific), specific)
        out: Tensor = self.linear(torch.cat([x, missing.to(x.dtype)], dim=1))
        return out


class CGC(nn.Module):
    """PLE's customised gate control: ``[B, Din] -> [B, T, D]``; with ``task_experts=0`` it is MMoE."""

    def __init__(self, in_dim: int, dim: int, n_tasks: int, shared_experts: int, task_experts: int) -> None:
        super().__init__()
        self.n_tasks, self.n_shared, self.n_task = n_tasks, shared_experts, task_experts
        n_all = shared_experts + n_tasks * task_experts
        # All experts as one batched matmul: [B, Din] x [E, Din, D] is much faster than E small Linear calls.
        self.w = nn.Parameter(torch.randn(n_all, in_dim, dim) * (2.0 / in_dim) ** 0.5)
        self.b = nn.Parameter(torch.zeros(n_all, dim))
        self.gates = nn.Linear(in_dim, n_tasks * (shared_experts + task_experts))

    def forward(self, x: Tensor) -> Tensor:
        experts = F.relu(torch.einsum("bi,eid->bed", x, self.w) + self.b)  # [B, E, D]
        weights = self.gates(x).view(x.shape[0], self.n_tasks, self.n_shared + self.n_task).softmax(-1)
        shared = experts[:, : self.n_shared]
        outs = []
        for t in range(self.n_tasks):
            own = experts[:, self.n_shared + t * self.n_task : self.n_shared + (t + 1) * self.n_task]
            pool = torch.cat([shared, own], dim=1)
            outs.append(torch.einsum("be,bed->bd", weights[:, t], pool))
        return torch.stack(outs, dim=1)


class StarLayer(nn.Module):
    """STAR's star topology layer: ``y = relu(x (W_shared * W_domain[d]) + b_shared + b_domain[d])``;
    ``x [B, Din]``, ``domain [B]`` -> ``[B, D]``. Domain matrices start at 1 (pure shared model)."""

    def __init__(self, in_dim: int, dim: int, n_domains: int) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.randn(in_dim, dim) * (2.0 / in_dim) ** 0.5)
        self.specific = nn.Parameter(torch.ones(n_domains, in_dim, dim))
        self.b_shared = nn.Parameter(torch.zeros(dim))
        self.b_specific = nn.Parameter(torch.zeros(n_domains, dim))

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        out = x.new_empty((x.shape[0], self.shared.shape[1]))
        for d in range(self.specific.shape[0]):
            rows = torch.nonzero(domain == d).squeeze(1)
            if rows.numel():
                w = self.shared * self.specific[d]
                out = out.index_copy(0, rows, x.index_select(0, rows) @ w + self.b_specific[d])
        return F.relu(out + self.b_shared)


class UserBias(nn.Module):
    """Per-customer learned vector from a hashed table: ``key [B] -> [B, dim]``.

    Keys are hashed into ``buckets`` rows (memory independent of the number of customers). Only customers
    registered with :meth:`register` (the training customers) read their row; any other key gets zeros, the
    prior, even when it hashes to a bucket a training customer uses. Rows start at zero. ``sparse``: sparse
    gradients for the table (train it with ``torch.optim.SparseAdam``).
    """

    seen: Tensor

    def __init__(self, buckets: int, dim: int, sparse: bool = False) -> None:
        super().__init__()
        self.buckets = buckets
        # sparse: only the rows a batch touches get gradients (train with SparseAdam); a dense update of a large
        # table every step costs more than the rest of the network.
        self.table = nn.Embedding(buckets, dim, sparse=sparse)
        nn.init.zeros_(self.table.weight)
        self.register_buffer("seen", torch.zeros(0, dtype=torch.int64))

    def register(self, keys: np.ndarray | Tensor) -> None:
        """Mark ``keys`` (int64 ``(n,)``) as known customers."""
        new = torch.as_tensor(np.asarray(keys, dtype=np.int64)) if isinstance(keys, np.ndarray) else keys.long()
        self.seen = torch.unique(torch.cat([self.seen, new.detach().cpu()]))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The set of known customers grows with training: take the saved one's size before copying it in.
        saved = state_dict.get(prefix + "seen")
        if saved is not None:
            self.seen = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bucket(self, key: Tensor) -> Tensor:
        """Multiplicative hash of ``key`` into ``0..buckets-1`` (int64 ``[B]``)."""
        return ((key * 0x9E3779B1) % 2_147_483_647) % self.buckets

    def known(self, key: Tensor) -> Tensor:
        """bool ``[B]``: the key was registered."""
        if self.seen.numel() == 0:
            return torch.zeros_like(key, dtype=torch.bool)
        pos = torch.searchsorted(self.seen, key).clamp(max=self.seen.numel() - 1)
        return self.seen[pos] == key

    def forward(self, key: Tensor) -> Tensor:
        vec = self.table(self.bucket(key))
        return vec * self.known(key).unsqueeze(1).to(vec.dtype)


class TamorNet(nn.Module):
    """One network of the comparison (see :data:`VARIANTS`); ``forward(batch) -> TamorOutput``.

    Args:
        variant: which parts the network has.
        n_user, n_shared: widths of ``user_x`` and ``item_shared``.
        scenario_columns: per scenario, the ``item_specific`` columns it owns.
        n_tiers: number of tiers; dim: representation width; bias_dim, bias_buckets: user-bias table.
        init: base rates used as output-bias initialisation: ``click_rate``, ``cvr_rate``, ``upgrade_rate``
            (given conversion), ``log_amount`` (mean log amount of converters), and ``log_gap_mean`` /
            ``log_gap_sd`` that centre the gap the upgrade tower reads.
        tier_inits: per tier, the same base rates measured on that tier's rows; with ``variant.tier_init`` tier
            ``t``'s towers start at ``tier_inits[t]`` (``init`` otherwise).
    """

    def __init__(
        self,
        variant: Variant,
        *,
        n_user: int,
        n_shared: int,
        scenario_columns: list[list[int]],
        n_tiers: int,
        dim: int,
        bias_dim: int,
        bias_buckets: int,
        init: dict[str, float],
        tier_inits: list[dict[str, float]] | None = None,
    ) -> None:
        super().__init__()
        if variant.tier_init and (tier_inits is None or len(tier_inits) != n_tiers):
            raise ValueError(f"tier_init needs tier_inits with one entry per tier ({n_tiers})")
        self.variant = variant
        n_scen = len(scenario_columns)
        n_specific = sum(len(c) for c in scenario_columns)
        self.user_mlp = mlp([n_user, dim], 0.0)
        self.tier_emb = nn.Embedding(n_tiers, 4) if variant.tier_aware else None
        self.user_gate = PriorGate(dim, 4, dim) if variant.tier_aware else None
        self.scen_emb = nn.Embedding(n_scen, 4)
        self.item_gate = PriorGate(dim, 8, dim) if variant.tier_aware else None
        self.item_shared = nn.Linear(n_shared + 4, dim)
        self.item_specific: nn.Module = (
            ScenarioItemEncoder(scenario_columns, dim)
            if variant.scenario_encoders
            else GenericItemEncoder(n_specific, dim)
        )
        in_dim = 3 * dim + (4 if variant.tier_aware else 0)
        n_tasks = len(TASK_NAMES)
        if variant.bottom == "star":
            self.star: StarLayer | None = StarLayer(in_dim, dim, n_tiers)
            self.cgc: CGC | None = None
        else:
            self.star = None
            mmoe = variant.bottom == "mmoe"
            self.cgc = CGC(in_dim, dim, n_tasks, shared_experts=4 if mmoe else 2, task_experts=0 if mmoe else 1)
        self.user_bias = UserBias(bias_buckets, bias_dim, sparse=True) if variant.user_bias else None
        self.log_amount0 = float(init["log_amount"])
        self.gap0, self.gap_sd = float(init["log_gap_mean"]), float(init["log_gap_sd"])
        self.log_retention = nn.Parameter(torch.zeros(n_scen)) if variant.upgrade_link else None
        self.link_scale = nn.Parameter(torch.ones(())) if variant.upgrade_link else None
        tower_bias = variant.user_bias and variant.bias_mode == "tower"
        extra = bias_dim if tower_bias else 0
        item_extra = dim if variant.towers_read_item else 0
        # one logit shift per user-specific task (click, conversion) read from the customer's bias vector
        self.bias_logits = nn.Linear(bias_dim, 2, bias=False) if variant.user_bias and not tower_bias else None

        def shapes(rates: dict[str, float]) -> dict[str, tuple[int, int, list[float]]]:
            return {
                "click": (dim + extra + item_extra, 1, [logit(rates["click_rate"])]),
                "conversion": (dim + extra + item_extra, 1, [logit(rates["cvr_rate"])]),
                "amount": (dim + item_extra, 2, [rates["log_amount"], 0.5]),
                "upgrade": (
                    dim + 1 + (2 if variant.amount_to_upgrade else 0),
                    1,
                    [0.0 if variant.upgrade_link else logit(rates["upgrade_rate"])],
                ),
            }

        copies = n_tiers if variant.tier_towers else 1
        rates = tier_inits if variant.tier_init and tier_inits is not None else [init] * copies
        per_copy = [shapes(r) for r in rates]
        self.towers = nn.ModuleDict(
            {k: nn.ModuleList([_tower(*per_copy[c][k], hidden=dim) for c in range(copies)]) for k in per_copy[0]}
        )

    def _logits(self, b: TamorBatch) -> _Heads:
        user = self.user_mlp(b.user_x)
        scen = self.scen_emb(b.scenario)
        item = self.item_shared(torch.cat([b.item_shared, scen], dim=1)) + self.item_specific(
            b.item_specific, b.scenario
        )
        item = F.relu(item)
        parts = [user, item, user * item]
        if self.tier_emb is not None and self.user_gate is not None and self.item_gate is not None:
            tier = self.tier_emb(b.tier)
            user = self.user_gate(user, tier)
            item = self.item_gate(item, torch.cat([tier, scen], dim=1))
            parts = [user, item, user * item, tier]
        x = torch.cat(parts, dim=1)
        if self.star is not None:
            h = self.star(x, b.tier)
            per_task = [h] * len(TASK_NAMES)
        else:
            assert self.cgc is not None
            mixed = self.cgc(x)
            per_task = [mixed[:, t] for t in range(len(TASK_NAMES))]
        ub = self.user_bias(b.user_key) if self.user_bias is not None else None

        tower_ub = ub if ub is not None and self.bias_logits is None else None

        def with_bias(h: Tensor) -> Tensor:
            return h if tower_ub is None else torch.cat([h, tower_ub], dim=1)

        def t(task: str, h: Tensor) -> Tensor:
            towers = cast(nn.ModuleList, self.towers[task])
            if len(towers) == 1:
                out: Tensor = towers[0](h)
                return out
            # one tower per tier: every tier's tower on the whole batch, each row keeps its own tier's output
            every = torch.stack([tower(h) for tower in towers])  # [T, B, O]
            return every[b.tier, torch.arange(h.shape[0])]

        if self.variant.towers_read_item:
            # each tier's towers also read the (tier-gated) item representation itself, so a tier can weigh an
            # item's features its own way after the shared experts have mixed them with the user's
            per_task = [torch.cat([h, item], dim=1) for h in per_task[:3]] + per_task[3:]
        click = t("click", with_bias(per_task[0])).squeeze(1)
        cvr = t("conversion", with_bias(per_task[1])).squeeze(1)
        base_click, base_cvr = click, cvr
        if ub is not None and self.bias_logits is not None:
            # A level shift per customer: it cannot reorder one customer's items by itself, only rescale them.
            shift = self.bias_logits(ub)
            click, cvr = click + shift[:, 0], cvr + shift[:, 1]
        amount = t("amount", per_task[2])
        mu, sigma = amount[:, 0], positive_sigma(amount[:, 1])
        up_in = torch.cat([per_task[3], ((b.log_gap - self.gap0) / self.gap_sd).unsqueeze(1)], dim=1)
        if self.variant.amount_to_upgrade:
            # An upgrade is driven by the amount bought: the upgrade tower reads the predicted amount distribution.
            up_in = torch.cat([up_in, mu.detach().unsqueeze(1) - self.log_amount0, sigma.detach().unsqueeze(1)], dim=1)
        upgrade = t("upgrade", up_in).squeeze(1)
        if self.log_retention is not None and self.link_scale is not None:
            # P(r A >= gap) for A ~ lognormal(mu, sigma) is Phi((mu + log r - log gap) / sigma); 1.702 z is its
            # logistic approximation. The amount head, trained on every purchase, thereby informs the rare labels.
            z = (mu.detach() + self.log_retention[b.scenario] - b.log_gap) / sigma.detach()
            upgrade = upgrade + 1.702 * self.link_scale * z
        if tower_ub is not None:
            # The upgrade chain uses the purchase probability at the prior bias (zeros): the per-customer bias serves
            # the click and conversion tasks, and an upgrade, a tier objective, is not fitted to it.
            zeros = torch.zeros_like(tower_ub)
            base_click = t("click", torch.cat([per_task[0], zeros], dim=1)).squeeze(1)
            base_cvr = t("conversion", torch.cat([per_task[1], zeros], dim=1)).squeeze(1)
        bias = ub if ub is not None else user[:, :0]
        return _Heads(click, cvr, mu, sigma, upgrade, base_click, base_cvr, bias)

    def forward(self, b: TamorBatch) -> TamorOutput:
        h = self._logits(b)
        click, cvr, mu, sigma, upgrade = h.click, h.cvr, h.mu, h.sigma, h.upgrade
        pctr, pcvr, pup = torch.sigmoid(click), torch.sigmoid(cvr), torch.sigmoid(upgrade)
        p = pctr * pcvr
        etv = expected_transaction_value("lognormal", p=p, mu=mu, sigma=sigma)
        amount = expected_transaction_value("lognormal", p=torch.ones_like(p), mu=mu, sigma=sigma)
        # the chain uses the purchase probability at the prior bias; an upgrade still needs this customer's purchase
        p_base = torch.minimum(torch.sigmoid(h.base_click) * torch.sigmoid(h.base_cvr), p)
        return TamorOutput(
            pctr=pctr, pcvr=pcvr, p=p, mu=mu, sigma=sigma, amount=amount, etv=etv, p_upgrade=p_base * pup
        )

    def task_losses(self, b: TamorBatch, l2: float = 0.0) -> dict[str, Tensor]:
        """Each task's mean loss on labelled batch ``b`` (scalars), plus ``bias_l2`` (the user-bias penalty)."""
        if b.click is None or b.convert is None or b.amount is None or b.upgrade is None:
            raise ValueError("task_losses needs a labelled batch (click, convert, amount, upgrade)")
        h = self._logits(b)
        click, cvr, mu, sigma, upgrade, ub = h.click, h.cvr, h.mu, h.sigma, h.upgrade, h.bias
        lp_click = (F.logsigmoid(click), F.logsigmoid(-click))
        lp_ctcvr = product_log_probs(click, cvr)
        # P(upgrade) = pCTCVR * s(u); 1 - p = (1 - pCTCVR) + pCTCVR (1 - s(u)), summed in log space.
        lp_base = product_log_probs(h.base_click, h.base_cvr)
        lp_up = lp_base[0] + F.logsigmoid(upgrade)
        l1mp_up = torch.logaddexp(lp_base[1], lp_base[0] + F.logsigmoid(-upgrade))
        applies = b.upgrade >= 0
        up_label = torch.where(applies, b.upgrade, torch.zeros_like(b.upgrade))
        up_terms = -(up_label * lp_up + (1.0 - up_label) * l1mp_up) * applies.to(lp_up.dtype)
        pos = b.amount > 0
        safe = torch.where(pos, b.amount, torch.ones_like(b.amount))
        nll = -lognormal_logpdf(safe, mu, sigma)
        # Amounts are O(1e4): their log terms are offset by log(amount), so the loss is over log amount.
        nll = nll - torch.log(safe)
        bias_l2 = l2 * ub.pow(2).sum(1).mean() if ub.numel() else click.new_zeros(())
        if self.variant.tier_balance:
            every = torch.ones_like(pos)
            click_terms = -(b.click * lp_click[0] + (1.0 - b.click) * lp_click[1])
            ctcvr_terms = -(b.convert * lp_ctcvr[0] + (1.0 - b.convert) * lp_ctcvr[1])
            return {
                "click": tier_balanced_mean(click_terms, every, b.tier),
                "conversion": tier_balanced_mean(ctcvr_terms, every, b.tier),
                "amount": tier_balanced_mean(nll, pos, b.tier),
                "upgrade": tier_balanced_mean(up_terms, applies, b.tier),
                "bias_l2": bias_l2,
            }
        return {
            "click": bce_loss(*lp_click, b.click),
            "conversion": bce_loss(*lp_ctcvr, b.convert),
            "amount": torch.where(pos, nll, torch.zeros_like(nll)).sum() / pos.sum().clamp(min=1),
            "upgrade": up_terms.mean(),
            "bias_l2": bias_l2,
        }


def tier_balanced_mean(terms: Tensor, rows: Tensor, tier: Tensor) -> Tensor:
    """Mean over the tiers with rows in the batch of each tier's mean of ``terms`` over ``rows``; ``terms [B]``
    float, ``rows [B]`` bool (the rows a task applies to), ``tier [B]`` int64. Zero when no row applies."""
    n_tiers = int(tier.max()) + 1 if tier.numel() else 0
    keep = rows.to(terms.dtype)
    safe = torch.where(rows, terms, torch.zeros_like(terms))
    sums = torch.zeros(n_tiers, dtype=terms.dtype).index_add(0, tier, safe)
    counts = torch.zeros(n_tiers, dtype=terms.dtype).index_add(0, tier, keep)
    present = counts > 0
    if not bool(present.any()):
        return terms.new_zeros(())
    return (sums[present] / counts[present]).mean()


def _tower(in_dim: int, out: int, bias: list[float], *, hidden: int) -> nn.Sequential:
    head = nn.Linear(hidden, out)
    with torch.no_grad():
        head.bias.copy_(torch.tensor(bias))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), head)


def variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown TAMOR framework {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


__all__ = [
    "CGC",
    "TASK_NAMES",
    "VARIANTS",
    "GenericItemEncoder",
    "PriorGate",
    "ScenarioItemEncoder",
    "StarLayer",
    "TamorBatch",
    "TamorNet",
    "TamorOutput",
    "UserBias",
    "Variant",
    "tier_balanced_mean",
    "variant",
]
