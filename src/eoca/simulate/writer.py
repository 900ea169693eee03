"""Writing a blocked world (``world.block_customers``): one part per block, or the same tables as single files.

A partitioned world is a dataset folder whose tables (all but ``funds``) are folders of part files, block b
in ``<table>/part-b.parquet``; ``dataset.yaml`` names the folders, and :meth:`eoca.data.Dataset.load` reads each
folder back as one table, in part order. Only one block is in memory at a time, so a world of 10M+ customers
is written with one block's memory. Written unpartitioned, the same world is the blocks' tables concatenated
(what a test compares the parts with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from eoca.data.dataset import Dataset
from eoca.data.schema import SPEC_FILE
from eoca.distributed.parts import part_name
from eoca.errors import ConfigError
from eoca.io import write_parquet, write_yaml
from eoca.simulate.config import SimulatorConfig
from eoca.simulate.simulator import dataset_spec, generate_blocks

__all__ = ["WorldSummary", "write_blocked_world"]

_PARTITIONED = ("customers", "exposures", "events", "consumption", "truth")


@dataclass(frozen=True)
class WorldSummary:
    """What was written: customers, funds, exposures, conversions, events, consumption edges, parts."""

    n_customers: int
    n_funds: int
    exposures: int
    conversions: int
    events: int
    edges: int
    parts: int


def write_blocked_world(
    cfg: SimulatorConfig, folder: Path, *, partitioned: bool, progress: bool = False
) -> WorldSummary:
    """Generate the blocked world of ``cfg`` block by block into ``folder`` (an empty folder the caller renames
    into place when this returns). ``partitioned``: one part per block and table; otherwise single files."""
    if cfg.world.block_customers is None:
        raise ConfigError("a partitioned world needs world.block_customers (the customers per part)")
    if cfg.incentives is not None:
        raise ConfigError(
            "the incentive campaign needs the whole world in memory: unset world.block_customers (or --parts) "
            "to simulate it"
        )
    held: dict[str, list[pa.Table]] = {t: [] for t in _PARTITIONED}
    funds: pa.Table | None = None
    exposures = conversions = events = edges = parts = 0
    for b, block in enumerate(generate_blocks(cfg, progress)):
        funds = block.funds
        tables = block.tables()
        for name in _PARTITIONED:
            if partitioned:
                write_parquet(tables[name], folder / name / part_name(b))
            else:
                held[name].append(tables[name])
        exposures += block.exposures.num_rows
        conversions += int(block.exposures.column("converted").to_numpy().sum())
        events += 0 if block.events is None else block.events.num_rows
        edges += 0 if block.consumption is None else block.consumption.num_rows
        parts += 1
        del block, tables
    assert funds is not None
    spec = dataset_spec(cfg, cfg.world.n_customers, cfg.world.n_funds, cfg.world.n_periods, folders=partitioned)
    if partitioned:
        write_parquet(funds, folder / spec.funds.file)
        write_yaml(spec.model_dump(mode="json", exclude_none=True), folder / SPEC_FILE)
    else:
        Dataset(spec=spec, funds=funds, **{t: pa.concat_tables(v) for t, v in held.items()}).save(folder)
    return WorldSummary(cfg.world.n_customers, cfg.world.n_funds, exposures, conversions, events, edges, parts)
