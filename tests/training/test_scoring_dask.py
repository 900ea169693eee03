"""``eoca score --engine dask``: the workers' parts hold exactly the pairs and values of the local scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from eoca.data import Dataset
from eoca.training import TrainedModel, train, write_scores

from .conftest import SMALL

pytest.importorskip("distributed")


def test_dask_scoring_matches_local_scoring(tiny_dir: Path, tiny: Dataset, tmp_path: Path) -> None:
    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.scoring import score_dask

    trained: TrainedModel = train(tiny, {**SMALL, "model": "esmm", "max_epochs": 1}, None, progress=False)
    local = pq.read_table(write_scores(trained, tiny, tmp_path / "local.parquet", chunk_customers=257, progress=False))
    with open_client(ClusterSpec(workers=2, processes=False)) as client:
        parts, pairs = score_dask(client, trained, tiny_dir, tmp_path / "dask", part_size=300, chunk=257)
    assert parts == -(-tiny.n_customers // 300) and pairs == tiny.n_customers * tiny.n_funds
    got = pq.read_table(tmp_path / "dask" / "scores")
    assert got.num_rows == local.num_rows
    for col in ("customer_id", "fund_id"):
        np.testing.assert_array_equal(got.column(col).to_numpy(), local.column(col).to_numpy())
    np.testing.assert_allclose(got.column("etv").to_numpy(), local.column("etv").to_numpy(), rtol=1e-6)
    cust = pq.read_table(tmp_path / "dask" / "customers")
    assert cust.num_rows == tiny.n_customers
    assert sorted(p.name for p in (tmp_path / "dask" / "scores").iterdir()) == sorted(
        p.name for p in (tmp_path / "dask" / "customers").iterdir()
    )
