"""The ``--engine`` options shared by ``eoca score``, ``eoca allocate`` and ``eoca run``."""

from __future__ import annotations

from typing import Annotated

import typer

from eoca.errors import ConfigError

Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local: one process, in memory (default). dask: partitions on a Dask cluster (pip install "
        "'eoca[dask]'); see docs/scale.md.",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option("--scheduler", help="--engine dask: address of a running Dask scheduler (else a LocalCluster)."),
]
Workers = Annotated[int, typer.Option("--workers", help="--engine dask: LocalCluster worker processes.", min=1)]
MemoryLimit = Annotated[
    str, typer.Option("--memory-limit", help="--engine dask: memory limit per LocalCluster worker, e.g. 4GB.")
]


def check_engine(engine: str) -> bool:
    """True for dask, False for local; a ConfigError for anything else."""
    from eoca.distributed.cluster import ENGINES

    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine == "dask"
