"""ESDPM-NCG (EOCA Sec. 5.1): ESDPM without the consumption graph (and its graph attention layers)."""

from __future__ import annotations

from typing import Any, ClassVar

from eoca.models.zoo.common import COMMON_DEFAULTS, MMOE_DEFAULTS
from eoca.models.zoo.esdpm import AMOUNT_HEAD_DEFAULTS, EsdpmFamily


class EsdpmNcg(EsdpmFamily):
    name = "esdpm_ncg"
    amount_loss = "esj"
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, **MMOE_DEFAULTS, **AMOUNT_HEAD_DEFAULTS}


MODEL = EsdpmNcg
