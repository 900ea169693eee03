"""PTOFA's amount model on ESDPM: the ESDPM network (graph included) trained with PTOFA's counterfactual
loss (PTOFA Eq. 6): a non-converter's likelihood is ``1 - p + p * LogNormalPdf(eps)``, "had it converted, it
would have bought ``eps``". The amount itself is lognormal, so ETV is ``p * exp(mu + sigma^2 / 2)``.

``eps`` defaults to one currency unit, the smallest value at which the counterfactual density is bounded by 1
under eoca's sigma floor (see :mod:`eoca.models.losses`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from eoca.models.losses import DEFAULT_PTOFA_EPS
from eoca.models.zoo.common import COMMON_DEFAULTS, GRAPH_DEFAULTS, MMOE_DEFAULTS
from eoca.models.zoo.esdpm import AMOUNT_HEAD_DEFAULTS, EsdpmFamily


class Ptofa(EsdpmFamily):
    name = "ptofa"
    amount_loss = "ptofa"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        **MMOE_DEFAULTS,
        **GRAPH_DEFAULTS,
        **AMOUNT_HEAD_DEFAULTS,
        "eps": DEFAULT_PTOFA_EPS,
    }


MODEL = Ptofa
