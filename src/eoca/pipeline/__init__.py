"""``eoca run``: the whole predict-then-optimise framework end to end, with its evaluation and report.

Public API::

    from eoca.pipeline import load_run_config, run_pipeline

    if __name__ == "__main__":  # the models train in spawned processes, which import this script
        result = run_pipeline(load_run_config(overrides=["simulator.customers=20000"]))
        print(result.folder / "report.html")
"""

from eoca.pipeline.config import RunConfig, load_run_config
from eoca.pipeline.run import RunResult, run_pipeline

__all__ = ["RunConfig", "RunResult", "load_run_config", "run_pipeline"]
