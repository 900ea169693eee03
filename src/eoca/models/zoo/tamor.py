"""TAMOR in the zoo: the tier-aware multi-objective network of :mod:`eoca.tamor.model` on eoca's fund datasets.

The customer and fund encoders are the zoo's (profile, behaviour sequences); on top of them:

* tier-aware user representation: a PEPNet gate driven by the customer's tier, read from the categorical
  customer feature named by ``tier_feature`` (default ``tier``; without it every customer is one tier);
* scenario-aware item representation: one encoder per scenario over the fund's numeric features (scenario from
  the categorical fund feature ``scenario_feature``, default ``scenario``) plus a gate driven by tier and scenario;
* PLE's shared + task experts (``n_shared_experts`` shared, one per task) for click, conversion and amount;
* ESMM click x conversion heads and the lognormal amount head, trained with ESJ (ETV by EOCA Eq. 13), as ESDPM;
* the user-bias module: a hashed per-customer vector (key: a stable hash of ``customer_id``) fed to the click
  and conversion towers and L2-regularised; customers not seen in training get zeros.

The upgrade task needs a tier-transition label that fund datasets do not have; it lives in the multi-scenario
pipeline (:mod:`eoca.tamor`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from eoca.models.base import Batch
from eoca.models.features import FeatureSpace
from eoca.models.features.encoding import notice
from eoca.models.layers import Tower
from eoca.models.losses import SIGMA_FLOOR, positive_sigma
from eoca.models.zoo.common import COMMON_DEFAULTS, ConversionHeads, ZooModel, conversion_labels, task_set
from eoca.models.zoo.esdpm import EsdpmFamily, _softplus_inverse
from eoca.tamor.model import CGC, PriorGate, ScenarioItemEncoder, UserBias

_PRIOR_DIM = 4


def _categorical_column(features: list[dict[str, Any]], name: str) -> tuple[int | None, int]:
    """Position of categorical feature ``name`` and its number of codes (vocabulary + unknown), or ``(None, 1)``."""
    for i, f in enumerate(features):
        if f["name"] == name:
            return i, len(f["vocab"]) + 1
    return None, 1


class TamorZoo(EsdpmFamily):
    name = "tamor"
    amount_loss = "esj"
    uses_pair_input = False  # its towers read the gated user / item representations only
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "expert_dim": 32,
        "n_shared_experts": 2,
        "tier_feature": "tier",
        "scenario_feature": "scenario",
        "user_bias_dim": 4,
        "user_bias_buckets": 1 << 16,
        "user_bias_l2": 1e-4,
    }

    def __init__(self, space: FeatureSpace, params: dict[str, Any]) -> None:
        ZooModel.__init__(self, space, params)  # EsdpmFamily's MMoE bottom is replaced below
        self.tasks = task_set(space, "conversion", "amount", "etv")
        self.formula = "eoca"
        dim = int(params["expert_dim"])
        dropout = float(params["dropout"])
        hidden = int(params["tower_hidden"])
        self.tier_col, n_tiers = _categorical_column(space.customer_categorical, str(params["tier_feature"]))
        self.scen_col, n_scen = _categorical_column(space.fund_categorical, str(params["scenario_feature"]))
        for col, what, key in (
            (self.tier_col, "tier", "tier_feature"),
            (self.scen_col, "scenario", "scenario_feature"),
        ):
            if col is None:
                notice(f"tamor-no-{what}", f"model 'tamor': no {what} column ({key}={params[key]!r}); one {what}")
        self.user_proj = torch.nn.Linear(self.customer_arch.out_dim, dim)
        self.item_proj = torch.nn.Linear(self.fund_arch.out_dim, dim)
        n_num = len(space.fund_numeric)
        self.scenario_encoder = ScenarioItemEncoder([list(range(n_num))] * n_scen, dim)
        self.tier_emb = torch.nn.Embedding(n_tiers, _PRIOR_DIM)
        self.scen_emb = torch.nn.Embedding(n_scen, _PRIOR_DIM)
        self.user_gate = PriorGate(dim, _PRIOR_DIM, dim)
        self.item_gate = PriorGate(dim, 2 * _PRIOR_DIM, dim)
        self.cgc = CGC(3 * dim + _PRIOR_DIM, dim, 3, shared_experts=int(params["n_shared_experts"]), task_experts=1)
        bias_dim = int(params["user_bias_dim"])
        self.user_bias = UserBias(int(params["user_bias_buckets"]), bias_dim)
        self.heads = ConversionHeads(space, dim + bias_dim, hidden, dropout)
        stats = space.label_stats
        sigma0 = max(stats["log1p_sigma"], SIGMA_FLOOR + 0.1)
        self.lognormal = Tower(dim, hidden, 2, dropout, [stats["log1p_mu"], _softplus_inverse(sigma0 - SIGMA_FLOOR)])

    def _forward(self, batch: Batch) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        return self._forward_with_bias(batch)[:4]

    def _forward_with_bias(self, batch: Batch) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """``(logit_ctr or None, logit_cvr, mu, sigma)`` each ``[B]``, and the user-bias rows ``[B, bias_dim]``."""
        pair = self.encode(batch)
        inputs = batch.inputs
        n_units, n_funds = pair.customer.shape[0], pair.fund.shape[0]
        zeros_u = torch.zeros(n_units, dtype=torch.int64)
        zeros_f = torch.zeros(n_funds, dtype=torch.int64)
        tier = inputs["c_cat"][:, self.tier_col] if self.tier_col is not None else zeros_u
        scen = inputs["f_cat"][:, self.scen_col] if self.scen_col is not None else zeros_f
        tier_e = self.tier_emb(tier)  # [U, P]
        user = self.user_gate(F.relu(self.user_proj(pair.customer)), tier_e)  # [U, D]
        item = F.relu(self.item_proj(pair.fund) + self.scenario_encoder(inputs["f_num"], scen))  # [F, D]
        u, t = user[pair.row_unit], tier_e[pair.row_unit]
        i = self.item_gate(item[pair.fund_index], torch.cat([t, self.scen_emb(scen)[pair.fund_index]], dim=1))
        h = self.cgc(torch.cat([u, i, u * i, t], dim=1))  # [B, 3, D]
        keys = inputs["c_key"]
        if self.training:
            self.user_bias.register(keys)
        ub = self.user_bias(keys)[pair.row_unit]  # [B, bias_dim]
        logit_ctr, logit_cvr, (out,) = self.heads.forward_with(
            torch.cat([h[:, 0], ub], dim=1), torch.cat([h[:, 1], ub], dim=1), [(self.lognormal, h[:, 2])]
        )
        return logit_ctr, logit_cvr, out[:, 0], positive_sigma(out[:, 1]), ub

    def loss(self, batch: Batch) -> Tensor:
        _, amount = conversion_labels(batch)
        logit_ctr, logit_cvr, mu, sigma, ub = self._forward_with_bias(batch)
        log_p, log_1mp = ConversionHeads.log_probs(logit_ctr, logit_cvr)
        penalty = float(self.params["user_bias_l2"]) * ub.pow(2).sum(1).mean()
        return (
            self._amount_loss(log_p, log_1mp, mu, sigma, amount)
            + ConversionHeads.click_loss(logit_ctr, batch)
            + penalty
        )


MODEL = TamorZoo
