"""TAMOR: tier-aware multi-objective recommendation over items of several business scenarios.

:mod:`~eoca.tamor.world` generates the multi-scenario world, :mod:`~eoca.tamor.model` holds the network and its
baselines, :mod:`~eoca.tamor.train` trains them, :mod:`~eoca.tamor.evaluate` ranks mixed slates and simulates
the next period, :mod:`~eoca.tamor.experiment` runs a whole comparison. See ``docs/tamor.md``.
"""

from eoca.tamor.config import TamorConfig, load_tamor_config
from eoca.tamor.experiment import TamorResult, run_comparison
from eoca.tamor.world import MultiScenarioWorld, generate_multi_scenario_world

__all__ = [
    "MultiScenarioWorld",
    "TamorConfig",
    "TamorResult",
    "generate_multi_scenario_world",
    "load_tamor_config",
    "run_comparison",
]
