"""``stack_tail``: :mod:`stack <eoca.models.zoo.stack>` with a weight that depends on the customer.

``etv = s`` for the customers whose structural expected spend ``s`` (BG/NBD x Gamma-Gamma over the target window,
the import option ``transactions.customer_base_model: true``) is at or above the 99th percentile of the training
customers' ``s``, and ``(f + g) / 2`` for everyone else, with ``f`` the ETV of ``mtl_ziln`` and ``g`` that of the
LightGBM hurdle model ``gbdt`` at its defaults (both within the ETV guard's bounds); the guard's per-fund ETV
scale, fitted on the validation split, multiplies the result. Nothing else is chosen on validation.

Why: on a transaction log the test MSE is decided by the heaviest buyers, whose spend the structure extrapolates
from their purchase rate and no model fitted on the observed amounts does, while the ranking of the bulk is
decided by the flexible models, whose errors differ between a network and a tree ensemble. The design and its
pre-registered measurement on CDNOW are in benchmarks/RESULTS.md (issue 11) and docs/data.md: over six split
seeds it beat BG/NBD's MSE in 4 (not where the guard's cap held the largest spender below BG/NBD's prediction)
and the tuned LightGBM's Gini in 2, so it is a zoo option, not a default.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eoca.models.zoo.stack import DEFAULTS as STACK_DEFAULTS
from eoca.models.zoo.stack import Stack

DEFAULTS: dict[str, Any] = {
    **STACK_DEFAULTS,
    "trees": "gbdt",
    "trees_weight": 0.5,
    "tail_quantile": 0.99,
    "blend_steps": 0,
}


class StackTail(Stack):
    """``stack`` with ``trees: gbdt``, ``trees_weight: 0.5``, ``tail_quantile: 0.99`` and ``blend_steps: 0``;
    ``predict`` returns ``p`` (the network's) and ``etv``, each ``[B]``."""

    name = "stack_tail"
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS


MODEL = StackTail
