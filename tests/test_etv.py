"""The ETV formula is one function: the simulator's truth (NumPy) and the models' predictions (torch) agree."""

from __future__ import annotations

import numpy as np
import torch

from eoca.etv import LOG_ETV_CAP, etv_eoca, expected_amount
from eoca.models.losses import expected_transaction_value
from eoca.simulate import expected_value


def test_numpy_and_torch_give_the_same_etv_including_the_clipped_ends() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 500)
    mu = np.concatenate([rng.normal(6, 2, 496), [-5.0, 0.0, 49.0, 80.0]])  # negative and capped ends included
    sigma = np.concatenate([rng.uniform(0.2, 2.5, 496), [0.3, 0.0, 3.0, 1.0]])
    truth = expected_value(p, mu, sigma)
    model = expected_transaction_value(
        "eoca", p=torch.from_numpy(p), mu=torch.from_numpy(mu), sigma=torch.from_numpy(sigma)
    ).numpy()
    np.testing.assert_allclose(model, truth, rtol=1e-12, atol=0)
    assert truth[-4] == 0.0  # mu = -5: a negative expected amount is clipped to 0
    assert np.isfinite(truth).all() and truth[-1] == p[-1] * np.expm1(LOG_ETV_CAP)


def test_formula_matches_the_lognormal_mean() -> None:
    mu, sigma = np.array([7.0]), np.array([1.2])
    assert expected_amount(mu, sigma)[0] == np.expm1(7.0 + 0.72)
    assert etv_eoca(np.array([0.5]), mu, sigma)[0] == 0.5 * np.expm1(7.72)
