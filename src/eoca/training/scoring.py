"""Streamed scoring: every customer x every fund to one Parquet file, a chunk of customers at a time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eoca.data import Dataset
from eoca.io import atomic_path
from eoca.training.trainer import TrainedModel, iter_score_chunks


def write_scores(
    trained: TrainedModel,
    dataset: Dataset,
    path: str | os.PathLike[str],
    *,
    chunk_customers: int = 65536,
    progress: bool = True,
) -> Path:
    """Write the long table ``customer_id, fund_id, p, etv[, pctr, pcvr, mu, sigma, amount]`` for every pair.

    Rows are customer-major (all funds of customer 0, then customer 1, ...), each pair exactly once; one Parquet
    row group per chunk, so memory is bounded by ``chunk_customers * n_funds`` rows. The file is written under a
    temporary name and renamed when complete: an interrupted run leaves no partial ``scores.parquet``.
    """
    out = Path(path)
    k = dataset.n_funds
    customer_ids = dataset.customers.column("customer_id").combine_chunks()
    fund_ids = dataset.funds.column("fund_id").combine_chunks()
    fund_take = pa.array(np.tile(np.arange(k, dtype=np.int64), chunk_customers))
    writer: pq.ParquetWriter | None = None
    with atomic_path(out) as tmp:
        try:
            for start, stop, preds in iter_score_chunks(
                trained, dataset, chunk_customers=chunk_customers, progress=progress
            ):
                m = (stop - start) * k
                cust_take = pa.array(np.repeat(np.arange(start, stop, dtype=np.int64), k))
                columns = {
                    "customer_id": customer_ids.take(cust_take),
                    "fund_id": fund_ids.take(fund_take.slice(0, m)),
                    **{name: pa.array(values, type=pa.float32()) for name, values in preds.items()},
                }
                table = pa.table(columns)
                if writer is None:
                    # Dictionary encoding pays only for the repeated ids; on the float scores it is tried, fails
                    # over to plain encoding and costs more than half of the writer's CPU time.
                    writer = pq.ParquetWriter(
                        tmp, table.schema, compression="zstd", use_dictionary=["customer_id", "fund_id"]
                    )
                writer.write_table(table)
            if writer is None:  # no customers: still write a valid, empty file with the full schema
                preds = trained.predict_pairs(dataset, np.empty(0, np.int64), np.empty(0, np.int64))
                empty = pa.table(
                    {
                        "customer_id": customer_ids.slice(0, 0),
                        "fund_id": fund_ids.slice(0, 0),
                        **{name: pa.array(v, type=pa.float32()) for name, v in preds.items()},
                    }
                )
                pq.write_table(empty, tmp)
        finally:
            if writer is not None:
                writer.close()
    return out
