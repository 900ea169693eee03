"""End to end on a transaction log: import, evaluate (single-item table, bgnbd peer), score several runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eoca.cli import app

COMMON = ["--set", "max_epochs=1", "--set", "num_threads=1", "--set", "batch_size=256", "--no-progress"]


def _log(path: Path, customers: int = 400, seed: int = 0) -> None:
    """A repeat-buying log (Poisson purchases that stop at a random dropout time), dates as YYYYMMDD."""
    rng = np.random.default_rng(seed)
    lines = []
    start = np.datetime64("2020-01-01")
    for c in range(customers):
        rate = rng.gamma(0.8, 1 / 40)  # purchases per day
        life = rng.exponential(300)
        spend = rng.lognormal(3.0, 0.5)
        first = int(rng.integers(0, 90))
        t = float(first)
        while t < min(first + life, 540):
            day = start + np.timedelta64(int(t), "D")
            lines.append(f"{c:06d} {str(day).replace('-', '')} {rng.lognormal(np.log(spend), 0.3):.2f}")
            t += rng.exponential(1 / max(rate, 1e-3)) + 1
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def log_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("txlog")
    _log(root / "log.txt")
    (root / "spec.yaml").write_text(
        "name: txlog\nsplit: {test_fraction: 0.3, validation_fraction: 0.15, seed: 0}\n"
        "transactions:\n  path: log.txt\n  delimiter: whitespace\n  header: false\n"
        "  columns: [cust, date, amount]\n  customer_id: cust\n  time: date\n  time_format: '%Y%m%d'\n"
        "  amount: amount\n  window: {calibration_end: 2020-09-30, target_end: 2021-06-30}\n"
    )
    res = CliRunner().invoke(app, ["import", "--spec", str(root / "spec.yaml"), "--out", str(root / "ds")])
    assert res.exit_code == 0, res.output
    return root / "ds"


def test_single_item_evaluate_with_bgnbd_peer(log_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("lifetimes")
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app, ["evaluate", "--data", str(log_data), "--models", "dnn_c,bgnbd", "--out", str(out), *COMMON]
    )
    assert res.exit_code == 0, res.output
    assert "THC" not in res.output and "Deciles of predicted value" in res.output
    for name in ("comparison.md", "deciles.csv", "gain.png", "comparison.json"):
        assert (out / name).exists(), name
    assert not (out / "thc_tha.png").exists()
    rows = {r["model"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    for model in ("dnn_c", "bgnbd"):  # every model that scores an ETV gets ETV metrics
        assert rows[model]["mse"] is not None and rows[model]["gini"] is not None
        assert rows[model]["auc"] is not None and rows[model]["thc"] is None
    report = json.loads((out / "comparison.json").read_text())
    assert len(report["deciles"]["bgnbd"]) == 10
    assert report["configs"]["bgnbd"]["bgnbd"]["r"] > 0


def test_bgnbd_needs_a_transaction_log(tmp_path: Path) -> None:
    from eoca.data import Dataset
    from eoca.errors import ConfigError
    from eoca.peers import make_peer

    pytest.importorskip("lifetimes")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    from eoca.data.importer import import_dataset

    ds: Dataset = import_dataset(fixtures / "clv_spec.yaml")
    with pytest.raises(ConfigError, match="imported from a transaction log"):
        make_peer("bgnbd").fit(ds)


def test_score_several_runs_loads_data_once(log_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    runs = []
    for model in ("dnn_c", "mtl_ziln"):
        run = tmp_path / model
        res = runner.invoke(app, ["train", "--data", str(log_data), "--model", model, "--out", str(run), *COMMON])
        assert res.exit_code == 0, res.output
        runs += ["--run", str(run)]
    out = tmp_path / "scores"
    res = runner.invoke(app, ["score", *runs, "--data", str(log_data), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    ids = pq.read_table(log_data / "customers.parquet").column("customer_id").to_pylist()
    for model in ("dnn_c", "mtl_ziln"):
        table = pq.read_table(out / f"{model}.parquet")
        assert table.column("customer_id").to_pylist() == ids, "ids written exactly (text with leading zeros)"
        assert ids[0].startswith("0")
    # ... and allocations keep them too.
    (tmp_path / "plan.yaml").write_text("shares: {all: 1.0}\n")
    res = runner.invoke(
        app,
        [
            "allocate",
            "--scores",
            str(out / "dnn_c.parquet"),
            "--data",
            str(log_data),
            "--plan",
            str(tmp_path / "plan.yaml"),
            "--out",
            str(tmp_path / "alloc"),
        ],
    )
    assert res.exit_code == 0, res.output
    alloc = pq.read_table(tmp_path / "alloc" / "allocation.parquet")
    assert sorted(alloc.column("customer_id").to_pylist()) == sorted(ids)
