"""`eoca run` gives the same numbers again: a second process with another thread environment, fed the first
run's config.yaml, reproduces every metric and allocation exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SMALL = [
    "simulator.customers=600",
    "simulator.funds=3",
    "models=[esmm]",
    "allocation.methods=[manual,exact]",
    "train.max_epochs=1",
    "train.batch_size=256",
    "ab_test.n_bootstrap=50",
    "ope.n_bootstrap=50",
    "progress=false",
]

# Figures that measure the machine rather than the decisions.
_VOLATILE = {"wall_time_s", "peak_memory_mb", "train_s", "score_s"}


def _eoca_run(out: Path, threads: int, args: list[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads),
    }
    res = subprocess.run(
        [sys.executable, "-c", "from eoca.cli import main; main()", "run", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads((out / "metrics.json").read_text()))


def _stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in rows]


def test_a_run_config_reproduces_the_run_in_another_thread_environment(tmp_path: Path) -> None:
    sets = [a for s in SMALL for a in ("--set", s)]
    first = _eoca_run(tmp_path / "a", 2, sets)
    # The first run resolved the training thread count and wrote it into its config.yaml; the second process
    # starts with one thread everywhere and reads that file.
    assert "num_threads: null" not in (tmp_path / "a" / "config.yaml").read_text()
    second = _eoca_run(tmp_path / "b", 1, ["--config", str(tmp_path / "a" / "config.yaml")])
    assert first["reproducibility"] == second["reproducibility"]
    for key in ("offline", "allocation", "ab_test"):
        assert _stable(first[key]) == _stable(second[key]), key
    assert first["plan"] == second["plan"]
    a = pq.read_table(tmp_path / "a" / "allocations.parquet")
    b = pq.read_table(tmp_path / "b" / "allocations.parquet")
    assert a.equals(b)
