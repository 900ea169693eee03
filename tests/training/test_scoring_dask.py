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


@pytest.mark.parametrize(("model", "graph"), [("esmm", False), ("esdpm", True)])
def test_dask_scoring_matches_local_scoring(
    model: str, graph: bool, tiny_dir: Path, tiny: Dataset, tmp_path: Path
) -> None:
    from eoca.distributed import ClusterSpec, open_client
    from eoca.distributed.scoring import score_dask

    # with the graph features a part also carries the two-hop neighbourhood of its customers
    cfg = {**SMALL, "model": model, "max_epochs": 1, "use_graph": graph}
    trained: TrainedModel = train(tiny, cfg, None, progress=False)
    assert trained.features.has_graph == graph
    local = pq.read_table(write_scores(trained, tiny, tmp_path / "local.parquet", chunk_customers=257, progress=False))
    reads: list[dict[str, int]] = []
    with open_client(ClusterSpec(workers=2, processes=False)) as client:
        parts, pairs = score_dask(client, trained, tiny_dir, tmp_path / "dask", part_size=300, chunk=257, reads=reads)
    assert parts == -(-tiny.n_customers // 300) and pairs == tiny.n_customers * tiny.n_funds
    # every worker read only its own part: its customers' rows of every table, never the whole tables
    assert len(reads) == parts and all(reads)
    periods = tiny.exposures.num_rows // tiny.n_customers
    for i, r in enumerate(reads):
        mine = min(300, tiny.n_customers - 300 * i)
        assert r["exposures"] == periods * mine
        assert r["events"] < tiny.events.num_rows  # type: ignore[union-attr]
        if graph:
            assert r["customers"] >= mine and r["consumption"] > 0
        else:
            assert r["customers"] == mine
            assert 0 < r["consumption"] < tiny.consumption.num_rows  # type: ignore[union-attr]
    got = pq.read_table(tmp_path / "dask" / "scores")
    assert got.num_rows == local.num_rows
    for col in ("customer_id", "fund_id"):
        np.testing.assert_array_equal(got.column(col).to_numpy(), local.column(col).to_numpy())
    # float32 through exp(mu + sigma^2 / 2): one last-bit difference of mu (about 8, so 5e-7 absolute) from a
    # different grouping of the same rows into batches moves ETV by about 1e-6 relative
    np.testing.assert_allclose(got.column("etv").to_numpy(), local.column("etv").to_numpy(), rtol=1e-5)
    cust = pq.read_table(tmp_path / "dask" / "customers")
    assert cust.num_rows == tiny.n_customers
    assert sorted(p.name for p in (tmp_path / "dask" / "scores").iterdir()) == sorted(
        p.name for p in (tmp_path / "dask" / "customers").iterdir()
    )
