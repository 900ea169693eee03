"""A blocked world (``world.block_customers``) written as parts equals the same world written as single files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eoca.data import Dataset
from eoca.errors import ConfigError
from eoca.simulate import load_simulator_config
from eoca.simulate.simulator import generate_world
from eoca.simulate.writer import write_blocked_world

from .test_config_cli import eoca


def test_partitioned_world_equals_single_file_world(tmp_path: Path) -> None:
    common = ("--customers", "700", "--periods", "3", "--seed", "4", "--no-progress")
    single = eoca("simulate", "--out", str(tmp_path / "single"), "--set", "world.block_customers=300", *common)
    assert single.returncode == 0, single.stderr
    parts = eoca("simulate", "--out", str(tmp_path / "parts"), "--parts", "300", *common)
    assert parts.returncode == 0, parts.stderr
    assert "3 block(s) (one part each)" in parts.stdout
    assert sorted(p.name for p in (tmp_path / "parts" / "customers").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    a, b = Dataset.load(tmp_path / "single"), Dataset.load(tmp_path / "parts")
    assert a.tables().keys() == b.tables().keys()
    for name, table in a.tables().items():
        assert table.equals(b.tables()[name]), name
    # every customer once, global ids in order; blocks are independent draws, not copies of block 0
    ids = a.customers.column("customer_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(700))
    cap = a.customers.column("log_holdings").to_numpy()
    assert not np.array_equal(cap[:300], cap[300:600])
    assert a.exposures.num_rows == 3 * 700
    assert set(a.events.column("customer_id").to_numpy().tolist()) <= set(range(700))


def test_blocked_world_is_refused_where_the_whole_world_is_needed(tmp_path: Path) -> None:
    cfg = load_simulator_config(None, ["world.n_customers=100", "world.block_customers=50"])
    with pytest.raises(ConfigError, match="block_customers"):
        generate_world(cfg)
    with pytest.raises(ConfigError, match="incentive"):
        write_blocked_world(
            load_simulator_config(None, ["world.n_customers=100", "world.block_customers=50", "incentives={}"]),
            tmp_path,
            partitioned=True,
        )
