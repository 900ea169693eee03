"""Expected transaction value (ETV), one formula for NumPy arrays and torch tensors.

A converted customer's amount A satisfies log(A + 1) ~ Normal(mu, sigma) (EOCA section 3), so

    E[A | convert] = exp(mu + sigma^2 / 2) - 1        and        ETV = p * E[A | convert]   (EOCA Eq. 13).

The simulator's ground truth (NumPy) and the models' predictions (torch) both call :func:`etv_eoca`, so they
clip identically: the exponent is capped at :data:`LOG_ETV_CAP` (finite in float32) and a negative expected
amount (mu well below 0) is clipped to 0, since an amount cannot be negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

LOG_ETV_CAP: float = 50.0
"""Cap on ``mu + sigma^2 / 2`` inside ETV: exp(50) ~ 5e21, beyond any transaction, yet finite in float32."""


def _backend(x: Any) -> tuple[Callable[[Any], Any], Callable[..., Any]]:
    """(expm1, clip(x, lo, hi)) for ``x``'s array library."""
    if isinstance(x, np.ndarray | np.generic | float | int):
        return np.expm1, lambda v, lo, hi: np.clip(v, lo, hi)
    import torch

    return torch.expm1, lambda v, lo, hi: torch.clamp(v, min=lo, max=hi)


@overload
def expected_amount(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray: ...
@overload
def expected_amount(mu: Tensor, sigma: Tensor) -> Tensor: ...
def expected_amount(mu: Any, sigma: Any) -> Any:
    """E[A | convert] = exp(mu + sigma^2 / 2) - 1, clipped to [0, exp(LOG_ETV_CAP)); same shape as ``mu``."""
    expm1, clip = _backend(mu)
    return clip(expm1(clip(mu + 0.5 * sigma * sigma, None, LOG_ETV_CAP)), 0.0, None)


@overload
def etv_eoca(p: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray: ...
@overload
def etv_eoca(p: Tensor, mu: Tensor, sigma: Tensor) -> Tensor: ...
def etv_eoca(p: Any, mu: Any, sigma: Any) -> Any:
    """ETV = p * (exp(mu + sigma^2 / 2) - 1) (EOCA Eq. 13), elementwise; NumPy or torch in, the same out."""
    return p * expected_amount(mu, sigma)
