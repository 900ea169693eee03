"""Connecting to Dask: an existing cluster by scheduler address, or a LocalCluster started for one command.

Dask is an optional extra (``pip install eoca[dask]``); :func:`require_dask` turns its absence into a clear
error instead of an ImportError deep inside a command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eoca.errors import ConfigError, EocaError

__all__ = ["ENGINES", "ClusterSpec", "DistributedError", "open_client", "require_dask"]

ENGINES = ("local", "dask")
"""``--engine`` values: local (one process, in memory) or dask (partitions on a Dask cluster)."""


def require_dask() -> None:
    """Raise ConfigError naming the extra to install when dask.distributed cannot be imported."""
    try:
        import dask  # noqa: F401

        import distributed  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--engine dask needs Dask: pip install 'eoca[dask]' (dask and distributed); import failed: {exc}"
        ) from None


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: ``scheduler`` (an address such as tcp://10.0.0.5:8786) or, when None, a LocalCluster of
    ``workers`` processes with ``threads`` threads and ``memory_limit`` each (a Dask size string, e.g. "4GB").
    ``processes=False`` keeps the local workers as threads of this process (tests)."""

    scheduler: str | None = None
    workers: int = 2
    threads: int = 1
    memory_limit: str = "4GB"
    processes: bool = True

    def validate(self) -> None:
        if self.workers < 1 or self.threads < 1:
            raise ConfigError(f"--workers and threads must be >= 1, got {self.workers} and {self.threads}")


# The working matrix lives in worker memory for the whole solve: spilling it to disk or pausing a worker near
# the limit would stall every iteration, so a local cluster only keeps the hard limit (the nanny restarts a
# worker that crosses it, and Dask recomputes its partitions elsewhere).
_LOCAL_MEMORY_CONFIG = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
}


@contextlib.contextmanager
def open_client(spec: ClusterSpec) -> Iterator[Any]:
    """Yield a ``distributed.Client``: connected to ``spec.scheduler``, or to a LocalCluster closed on exit."""
    require_dask()
    spec.validate()
    import dask

    from distributed import Client, LocalCluster

    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout="30s")
        except OSError as exc:
            raise ConfigError(f"--scheduler {spec.scheduler}: cannot connect to a Dask scheduler ({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    with dask.config.set(_LOCAL_MEMORY_CONFIG):
        cluster = LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=spec.threads,
            memory_limit=spec.memory_limit,
            processes=spec.processes,
            dashboard_address=None,
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


class DistributedError(EocaError, RuntimeError):
    """The cluster failed (a worker died more often than Dask retries, a lost scheduler); nothing was written."""
