"""Scale-out engine: scoring and the exact allocation on a Dask cluster over partitioned Parquet datasets.

``--engine dask`` on ``eoca score``, ``eoca allocate`` and ``eoca run`` uses this package; the mathematics is
the in-memory solver's (:func:`eoca.allocation.exact.solve_store` over a :class:`DaskStore`), so both engines
return the same certified optimum. See docs/scale.md.
"""

from eoca.distributed.cluster import ENGINES, ClusterSpec, DistributedError, open_client, require_dask
from eoca.distributed.parts import atomic_dir, list_parts, pair_parts, part_name

__all__ = [
    "ENGINES",
    "ClusterSpec",
    "DistributedError",
    "atomic_dir",
    "list_parts",
    "open_client",
    "pair_parts",
    "part_name",
    "require_dask",
]
