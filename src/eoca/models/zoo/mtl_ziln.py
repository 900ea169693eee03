"""MTL-ZILN (EOCA Sec. 5.1): ESDPM-NCG's structure trained with the ZILN loss (Wang et al. 2019): BCE on
conversion over every exposure plus the lognormal NLL of the amount on converters only. The amount itself is
lognormal, so ETV is ``p * exp(mu + sigma^2 / 2)``."""

from __future__ import annotations

from typing import Any, ClassVar

from eoca.models.zoo.common import COMMON_DEFAULTS, MMOE_DEFAULTS
from eoca.models.zoo.esdpm import AMOUNT_HEAD_DEFAULTS, EsdpmFamily


class MtlZiln(EsdpmFamily):
    name = "mtl_ziln"
    amount_loss = "ziln"
    DEFAULTS: ClassVar[dict[str, Any]] = {**COMMON_DEFAULTS, **MMOE_DEFAULTS, **AMOUNT_HEAD_DEFAULTS}


MODEL = MtlZiln
