"""`eoca allocate --data DIR` reads the table file names from the dataset's spec, not fixed names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from eoca.cli import app
from eoca.simulate import load_simulator_config, simulate


def test_allocate_data_folder_follows_the_spec_file_names(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = simulate(load_simulator_config(None, ["world.n_customers=60", "world.n_funds=3", "seed=2"]))
    ds.save(root)
    # An imported dataset may name its tables anything; the spec is what says where they are.
    (root / "customers.parquet").rename(root / "my_customers.parquet")
    (root / "funds.parquet").rename(root / "my_funds.parquet")
    spec = (root / "dataset.yaml").read_text()
    spec = spec.replace("file: customers.parquet", "file: my_customers.parquet")
    (root / "dataset.yaml").write_text(spec.replace("file: funds.parquet", "file: my_funds.parquet"))
    cids = ds.customers.column("customer_id").to_pylist()
    fids = ds.funds.column("fund_id").to_pylist()
    rng = np.random.default_rng(0)
    scores = tmp_path / "scores.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": [c for c in cids for _ in fids],
                "fund_id": fids * len(cids),
                "etv": rng.uniform(0, 10, len(cids) * len(fids)),
            }
        ),
        scores,
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text("shares: uniform\nrisk_rule: false\n")  # feasible whatever the drawn risk levels
    out = tmp_path / "alloc"
    res = CliRunner().invoke(
        app, ["allocate", "--scores", str(scores), "--data", str(root), "--plan", str(plan), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    alloc = pq.read_table(out / "allocation.parquet")
    assert sorted(alloc.column("customer_id").to_pylist()) == sorted(cids)
