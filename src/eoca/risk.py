"""The risk rule, in one place: customer i may be shown fund j only if the fund's risk level r_j is at most the
customer's risk tolerance t_i (regulatory suitability; levels are small integers, 1 = safest)."""

from __future__ import annotations

from typing import Any

import numpy as np


def eligible_mask(tolerance: Any, risk: Any) -> np.ndarray:
    """Boolean (N, k) mask, True where fund j may be shown to customer i (``risk[j] <= tolerance[i]``).

    Args:
        tolerance: (N,) customer risk tolerances.
        risk: (k,) fund risk levels.
    """
    t = np.asarray(tolerance)
    r = np.asarray(risk)
    return np.asarray(r[None, :] <= t[:, None])
