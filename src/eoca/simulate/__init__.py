"""The built-in fund-platform simulator: a generative world with ground truth (docs/simulator.md).

Public API:

* :class:`SimulatorConfig`, :func:`load_simulator_config`, :func:`config_yaml`: the configuration.
* :func:`simulate` (config -> validated :class:`~eoca.data.Dataset`) and :func:`generate_world` (the dataset
  plus every latent quantity, for analysis and tests).
* :func:`draw_outcomes`: outcomes for any (customer, fund) pairs with common random numbers;
  :func:`outcome_draw` wraps it for simulated A/B tests; :func:`period_stream` names the streams.
* :func:`truth_arrays`: the oracle p, mu, sigma, etv as (N, K) matrices; :func:`expected_value`: Eq. 13.
"""

from eoca.simulate.config import SimulatorConfig, config_yaml, default_config_path, load_simulator_config
from eoca.simulate.outcomes import Outcomes, draw_outcomes, expected_amount, expected_value, pair_uniforms
from eoca.simulate.simulator import (
    OutcomeDraw,
    TruthArrays,
    World,
    generate_world,
    outcome_draw,
    period_stream,
    recorded_seed,
    simulate,
    truth_arrays,
)

__all__ = [
    "OutcomeDraw",
    "Outcomes",
    "SimulatorConfig",
    "TruthArrays",
    "World",
    "config_yaml",
    "default_config_path",
    "draw_outcomes",
    "expected_amount",
    "expected_value",
    "generate_world",
    "load_simulator_config",
    "outcome_draw",
    "pair_uniforms",
    "period_stream",
    "recorded_seed",
    "simulate",
    "truth_arrays",
]
