"""Tiny seeded datasets for the model tests (module-scoped: simulating and binding once per session)."""

from __future__ import annotations

import pytest
import torch

from eoca.data import Dataset
from eoca.models import FeatureSpace
from eoca.simulate import load_simulator_config, simulate


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # The test machine is shared: one intra-op thread avoids oversubscription stalls and keeps timings stable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sim() -> Dataset:
    """2,000 simulated customers x 8 funds, clicks and conversion raised (~9% convert) for short training runs."""
    config = load_simulator_config(
        overrides=[
            "seed=3",
            "world.n_customers=2000",
            "world.n_merchants=40",
            "conversion.ctr_intercept=-1.5",
            "conversion.target_per_mille=60",
        ]
    )
    return simulate(config)


@pytest.fixture(scope="module")
def space(sim: Dataset) -> FeatureSpace:
    """The feature space fitted on ``sim`` (the fast-path tests compare against references on it)."""
    return FeatureSpace.fit(sim)


def strip_to_hillstrom_like(ds: Dataset) -> Dataset:
    """The same customers and exposures without clicks, behaviour events or consumption graph (Hillstrom's shape)."""
    spec = ds.spec.model_copy(update={"events": None, "consumption": None, "truth": None})
    exposures = ds.exposures.drop_columns(["clicked"])
    return Dataset(spec=spec, customers=ds.customers, funds=ds.funds, exposures=exposures)


@pytest.fixture(scope="session")
def hillstrom_like(sim: Dataset) -> Dataset:
    return strip_to_hillstrom_like(sim)
