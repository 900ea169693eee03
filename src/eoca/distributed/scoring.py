"""``eoca score --engine dask``: every customer x every fund scored by the workers, one part per worker task.

The trained model is sent to every worker once (``Client.scatter(broadcast=True)``); each worker opens the
dataset from its path (shared storage on a real cluster) once and keeps it for all its tasks. A task scores a
range of customers in chunks of ``chunk`` customers and writes its two parts itself::

    OUT/scores/part-i.parquet      customer_id, fund_id, p, etv[, ...]   (the long form of `eoca score`)
    OUT/customers/part-i.parquet   customer_id, risk_tolerance           (the allocation's partner parts)

so ``eoca allocate --engine dask --scores OUT/scores --customers OUT/customers`` reads them directly. Scoring
temporaries are bounded by ``chunk * k`` pairs per worker thread.

A worker reads only its own part of a dataset folder (:func:`read_partition`): the row groups of the customers
table that hold its range, and the exposures, events and consumption rows of those customers (Parquet filters,
so the other rows are skipped while reading, never held). A model with the graph branch looks two hops
away (customer -> merchant -> the merchant's other customers), so for it the part also holds every payment edge
of the merchants its customers paid and the profile rows of the customers at their other ends; neighbour
lists keep their order, so the scores are the whole-table scores. Data that is not a dataset folder
(``hillstrom``, a CSV) is small and is read whole, as is a folder whose part would change a feature: the
behaviour sequences measure event ages from the dataset's first exposure, so a part whose customers have no
exposure at that time is read whole.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eoca.distributed.parts import atomic_dir, part_name
from eoca.io import atomic_path, write_parquet

__all__ = ["score_dask"]

_DATASETS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _dataset(path: str) -> Any:
    """The whole dataset at ``path``, opened once per worker process (data that is not a dataset folder)."""
    from eoca.data import open_dataset

    with _LOCK:
        if path not in _DATASETS:
            _DATASETS[path] = open_dataset(path, with_truth=False)
        return _DATASETS[path]


def _is_folder_dataset(data: str) -> bool:
    from eoca.data.schema import SPEC_FILE

    return Path(data, SPEC_FILE).is_file()


def _read_rows(path: Path, start: int, stop: int) -> pa.Table:
    """Rows start..stop-1 of a Parquet file, reading only the row groups that hold them."""
    f = pq.ParquetFile(path)
    groups, first, at = [], None, 0
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if at < stop and at + n > start:
            groups.append(g)
            first = at if first is None else first
        at += n
    if not groups:
        return f.schema_arrow.empty_table()
    assert first is not None
    return f.read_row_groups(groups).slice(start - first, stop - start)


def _rows_of(path: Path, column: str, values: pa.Array) -> pa.Table:
    """The rows of a Parquet table whose ``column`` is in ``values`` (filtered while reading)."""
    return pq.read_table(path, filters=pc.field(column).isin(values))


def _first_exposure(path: Path) -> int | None:
    """The smallest exposure time of the whole table, from the Parquet statistics (no data read)."""
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.to_arrow_schema().get_field_index("time")
    lows = []
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        lows.append(int(st.min))
    return min(lows) if lows else None


def read_partition(data: str, start: int, stop: int, graph: bool) -> tuple[Any, dict[str, int]]:
    """The part of dataset folder ``data`` that scores customers start..stop-1 (their positions in the
    customers table): a :class:`eoca.data.Dataset` whose first stop - start customers are those, validated, and
    the rows read per table. ``graph``: add the two-hop neighbourhood the graph branch needs (module docstring).
    Returns (None, {}) when the part would change a feature; the caller then reads the whole dataset."""
    from eoca.data.dataset import Dataset, load_spec

    root = Path(data)
    spec = load_spec(root)
    customers = _read_rows(root / spec.customers.file, start, stop)
    ids = customers.column("customer_id").combine_chunks()
    exposures = _rows_of(root / spec.exposures.file, "customer_id", ids)
    first = _first_exposure(root / spec.exposures.file)
    if first is None or exposures.num_rows == 0 or pc.min(exposures.column("time")).as_py() != first:
        return None, {}
    events = consumption = None
    if spec.events is not None:
        events = _rows_of(root / spec.events.file, "customer_id", ids)
    if spec.consumption is not None:
        consumption = _rows_of(root / spec.consumption.file, "customer_id", ids)
        if graph and consumption.num_rows:
            merchants = pc.unique(consumption.column("merchant_id").combine_chunks())
            consumption = _rows_of(root / spec.consumption.file, "merchant_id", merchants)
            others = pc.unique(consumption.column("customer_id").combine_chunks())
            others = others.filter(pc.invert(pc.is_in(others, value_set=ids)))
            if len(others):
                extra = _rows_of(root / spec.customers.file, "customer_id", others)
                customers = pa.concat_tables([customers, extra.select(customers.column_names).cast(customers.schema)])
    funds = pq.read_table(root / spec.funds.file)
    ds = Dataset(
        spec=spec.model_copy(update={"truth": None}),
        customers=customers,
        funds=funds,
        exposures=exposures,
        events=events,
        consumption=consumption,
        root=root,
    ).validate()
    read = {name: t.num_rows for name, t in ds.tables().items() if name != "funds"}
    return ds, read


def _score_part(
    trained: Any, data: str, start: int, stop: int, chunk: int, folder: str, name: str
) -> tuple[int, dict[str, int]]:
    """Score customers start..stop-1 and write their parts; returns (pairs, rows read per table, or {} when
    the whole dataset was used)."""
    part: Any = None
    read: dict[str, int] = {}
    if _is_folder_dataset(data):
        part, read = read_partition(data, start, stop, bool(trained.features.has_graph))
    if part is None:
        ds, offset = _dataset(data), 0
    else:
        ds, offset = part, start
    k = ds.n_funds
    cids = ds.customers.column("customer_id").combine_chunks()
    fids = ds.funds.column("fund_id").combine_chunks()
    writer: pq.ParquetWriter | None = None
    rows = 0
    with atomic_path(Path(folder, "scores", name)) as tmp:
        try:
            for s in range(start - offset, stop - offset, chunk):
                e = min(stop - offset, s + chunk)
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
    cust_part = ds.customers.slice(start - offset, stop - start).select(["customer_id", "risk_tolerance"])
    write_parquet(cust_part, Path(folder, "customers", name))
    return rows, read


def score_dask(
    client: Any,
    trained: Any,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    part_size: int = 1 << 20,
    chunk: int = 65536,
    reads: list[dict[str, int]] | None = None,
) -> tuple[int, int]:
    """Score dataset ``data`` (a folder every worker can read) with ``trained`` on the cluster; writes
    OUT/scores/ and OUT/customers/ as one atomic folder. Returns (parts, pairs); ``reads``, when given, receives
    each part's rows read per table ({} for a part that read the whole dataset)."""
    from eoca.data import open_dataset
    from eoca.data.dataset import load_spec

    data_path = str(Path(data).resolve()) if Path(data).exists() else str(data)
    if _is_folder_dataset(data_path):
        # the customer count from the Parquet footer: the driver reads no table
        n = int(pq.read_metadata(Path(data_path, load_spec(data_path).customers.file)).num_rows)
    else:
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
        done = client.gather(futs)
    if reads is not None:
        reads.extend(r for _, r in done)
    return len(futs), int(sum(p for p, _ in done))
