"""``eoca score --engine dask``: every customer x every fund scored by the workers, one part per worker task.

The trained model is sent to every worker once (``Client.scatter(broadcast=True)``); each worker opens the
dataset from its path (shared storage on a real cluster) once and keeps it for all its tasks. A task scores a
range of customers in chunks of ``chunk`` customers and writes its two parts itself::

    OUT/scores/part-i.parquet      customer_id, fund_id, p, etv[, ...]   (the long form of `eoca score`)
    OUT/customers/part-i.parquet   customer_id, risk_tolerance           (the allocation's partner parts)

so ``eoca allocate --engine dask --scores OUT/scores --customers OUT/customers`` reads them directly. Scoring
temporaries are bounded by ``chunk * k`` pairs per worker thread; the dataset's own tables are read whole by
each worker (the features of every customer), which is the memory that grows with N.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eoca.distributed.parts import atomic_dir, part_name
from eoca.io import atomic_path, write_parquet

__all__ = ["score_dask"]

_DATASETS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _dataset(path: str) -> Any:
    """The dataset at ``path``, opened once per worker process."""
    from eoca.data import open_dataset

    with _LOCK:
        if path not in _DATASETS:
            _DATASETS[path] = open_dataset(path, with_truth=False)
        return _DATASETS[path]


def _score_part(trained: Any, data: str, start: int, stop: int, chunk: int, folder: str, name: str) -> int:
    ds = _dataset(data)
    k = ds.n_funds
    cids = ds.customers.column("customer_id").combine_chunks()
    fids = ds.funds.column("fund_id").combine_chunks()
    writer: pq.ParquetWriter | None = None
    rows = 0
    with atomic_path(Path(folder, "scores", name)) as tmp:
        try:
            for s in range(start, stop, chunk):
                e = min(stop, s + chunk)
                cust = np.repeat(np.arange(s, e, dtype=np.int64), k)
                fund = np.tile(np.arange(k, dtype=np.int64), e - s)
                preds = trained.predict_pairs(ds, cust, fund, batch_size=trained.config.eval_batch_size)
                table = pa.table(
                    {
                        "customer_id": cids.take(pa.array(cust)),
                        "fund_id": fids.take(pa.array(fund)),
                        **{n: pa.array(v, type=pa.float32()) for n, v in preds.items()},
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    cust_part = ds.customers.slice(start, stop - start).select(["customer_id", "risk_tolerance"])
    write_parquet(cust_part, Path(folder, "customers", name))
    return rows


def score_dask(
    client: Any,
    trained: Any,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    part_size: int = 1 << 20,
    chunk: int = 65536,
) -> tuple[int, int]:
    """Score dataset ``data`` (a folder every worker can read) with ``trained`` on the cluster; writes
    OUT/scores/ and OUT/customers/ as one atomic folder. Returns (parts, pairs)."""
    from eoca.data import open_dataset

    data_path = str(Path(data).resolve()) if Path(data).exists() else str(data)
    n = open_dataset(data_path, with_truth=False).n_customers
    model = client.scatter(trained, broadcast=True)
    with atomic_dir(out) as tmp:
        (tmp / "scores").mkdir()
        (tmp / "customers").mkdir()
        futs = [
            client.submit(
                _score_part, model, data_path, s, min(n, s + part_size), chunk, str(tmp), part_name(i), pure=False
            )
            for i, s in enumerate(range(0, n, part_size))
        ]
        pairs = int(sum(client.gather(futs)))
    return len(futs), pairs
