from __future__ import annotations

import pytest

from eoca.simulate import SimulatorConfig, World, generate_world


def small_config(n: int, seed: int = 0, **world: int) -> SimulatorConfig:
    return SimulatorConfig.model_validate({"seed": seed, "world": {"n_customers": n, **world}})


@pytest.fixture(scope="session")
def world() -> World:
    """A default-parameter world large enough for its statistics to be stable (about 1 s to generate)."""
    return generate_world(small_config(60_000, seed=7))
