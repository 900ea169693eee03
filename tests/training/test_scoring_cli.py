"""Streamed scoring covers every pair once; `eoca train/score/evaluate` work end to end; offline metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eoca.cli import app
from eoca.data import Dataset
from eoca.pipeline.evaluate import exposure_predictions, offline_metrics
from eoca.training import TrainedModel, train, write_scores

from .conftest import SMALL


@pytest.fixture(scope="module")
def trained(tiny: Dataset) -> TrainedModel:
    return train(tiny, {**SMALL, "model": "esdpm", "max_epochs": 1}, None, progress=False)


def test_scores_cover_every_customer_fund_pair_exactly_once(
    tiny: Dataset, trained: TrainedModel, tmp_path: Path
) -> None:
    path = write_scores(trained, tiny, tmp_path / "scores.parquet", chunk_customers=333, progress=False)
    table = pq.read_table(path)
    n, k = tiny.n_customers, tiny.n_funds
    assert table.num_rows == n * k
    cust = tiny.customer_index(table.column("customer_id"))
    fund = tiny.fund_index(table.column("fund_id"))
    counts = np.bincount(cust * k + fund, minlength=n * k)
    assert counts.min() == counts.max() == 1
    assert {"p", "etv", "mu", "sigma"} <= set(table.column_names)
    # The streamed file agrees with the in-memory matrix (same chunking, so bit for bit), row for row.
    matrix = trained.score_matrix(tiny, chunk_customers=333)
    assert matrix["etv"].shape == (n, k) and matrix["etv"].dtype == np.float32
    np.testing.assert_array_equal(matrix["etv"][cust, fund], table.column("etv").to_numpy())
    np.testing.assert_array_equal(matrix["p"][cust, fund], table.column("p").to_numpy())
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_offline_metrics_are_in_range(tiny: Dataset, trained: TrainedModel) -> None:
    m = offline_metrics(trained, tiny, "test").to_row()
    assert m["auc"] is not None and 0.0 <= m["auc"] <= 1.0
    assert m["logloss"] is not None and m["logloss"] > 0
    assert m["thc"] is not None and 0 <= m["thc"] <= m["n_conversions"]
    assert m["hits"] is not None and m["hits"] <= m["n_exposures"]
    assert m["true_value_argmax"] is not None and 0 < m["argmax_share_of_oracle"] <= 1.0 + 1e-9


def test_offline_metrics_from_the_score_matrix_equal_a_fresh_grid_and_score_no_pair_twice(
    tiny: Dataset, trained: TrainedModel, pairs_asked: Callable[[], list[int]]
) -> None:
    fresh = offline_metrics(trained, tiny, "test").to_row()
    matrix = trained.score_matrix(tiny)
    rows_asked = pairs_asked()
    from_matrix = offline_metrics(trained, tiny, "test", grid_etv=matrix["etv"]).to_row()
    # Only the test exposures are scored; the decision metrics read the matrix (every customer x fund otherwise).
    assert rows_asked == [int(tiny.split_mask("test").sum())]
    assert from_matrix.keys() == fresh.keys()
    for key, value in fresh.items():
        if isinstance(value, float):
            assert from_matrix[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
        else:
            assert from_matrix[key] == value, key


def test_offline_metrics_reuse_the_callers_exposure_predictions(
    tiny: Dataset, trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = trained.score_matrix(tiny)
    tolerance = np.asarray(tiny.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)
    ruled = trained.score_matrix(tiny, tolerance=tolerance)["etv"]
    alone = offline_metrics(trained, tiny, "test", grid_etv=matrix["etv"]).to_row()
    test_pred = exposure_predictions(trained, tiny, "test")
    assert test_pred["etv"].shape == (int(tiny.split_mask("test").sum()),)

    def refuse(*args: object, **kw: object) -> object:
        raise AssertionError("scored a pair the caller had already scored")

    monkeypatch.setattr(TrainedModel, "predict_pairs", refuse)
    shared = offline_metrics(trained, tiny, "test", grid_etv=matrix["etv"], exposure_pred=test_pred).to_row()
    assert shared == alone  # the same predictions, so the same metrics to the last bit
    with pytest.raises(ValueError, match="one value per exposure"):
        offline_metrics(trained, tiny, "test", grid_etv=matrix["etv"], exposure_pred={"p": test_pred["p"][:-1]})
    # A matrix of another dataset (here one customer short) is refused, not read row by row.
    with pytest.raises(ValueError, match="every customer x fund"):
        offline_metrics(trained, tiny, "test", grid_etv=matrix["etv"][:-1], exposure_pred=test_pred)
    # A matrix scored under the risk rule (the forbidden pairs NaN, as `eoca run` scores) gives the same metrics.
    assert np.isnan(ruled).any()
    assert offline_metrics(trained, tiny, "test", grid_etv=ruled, exposure_pred=test_pred).to_row() == alone
    # An allowed pair of a test customer left unscored is named, not read as a value.
    test_customer = int(tiny.customer_index(tiny.exposures.column("customer_id"))[tiny.split_mask("test")][0])
    ruled[test_customer, 0] = np.nan  # fund position 0 has the lowest risk level: every customer may see it
    with pytest.raises(ValueError, match=f"customer position {test_customer}, fund position 0, a pair the risk"):
        offline_metrics(trained, tiny, "test", grid_etv=ruled, exposure_pred=test_pred)


def test_cli_train_score_evaluate(tiny_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["--set", "max_epochs=1", "--set", "num_threads=1", "--no-progress"]
    res = runner.invoke(app, ["train", "--data", str(tiny_dir), "--model", "mtl_ziln", "--out", str(run), *common])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "mtl_ziln" and "auc" in metrics["test"]

    scores = tmp_path / "scores.parquet"
    res = runner.invoke(
        app,
        ["score", "--run", str(run), "--data", str(tiny_dir), "--out", str(scores), "--chunk", "500", "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert pq.read_metadata(scores).num_rows == 2000 * 8

    ev = tmp_path / "eval"
    # mtl_ziln is reused from --runs (no retraining); esmm trains into the same folder.
    (tmp_path / "runs").mkdir()
    run.rename(tmp_path / "runs" / "mtl_ziln")
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(tiny_dir),
            "--models",
            "esmm,mtl_ziln",
            "--out",
            str(ev),
            "--runs",
            str(tmp_path / "runs"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    for name in ("comparison.md", "comparison.csv", "comparison.json", "thc_tha.png", "config.yaml"):
        assert (ev / name).exists(), name
    assert (tmp_path / "runs" / "esmm" / "model.pt").exists()
    report = json.loads((ev / "comparison.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"esmm", "mtl_ziln", "oracle"}
    # ESMM scores an ETV (p times a constant amount), so it gets ETV metrics like every model.
    assert rows["esmm"]["mae"] is not None and rows["mtl_ziln"]["mae"] is not None
    assert "| esmm |" in res.output and "THC" in res.output  # the table is printed as written
    assert any("reused" in n for n in report["notes"])


def test_cli_errors_name_the_culprit(tiny_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["evaluate", "--data", str(tiny_dir), "--models", "esmm,nosuch", "--out", str(tmp_path / "e"), "--no-progress"],
    )
    assert res.exit_code != 0
    assert "nosuch" in str(res.exception)
    res = runner.invoke(app, ["train", "--data", str(tiny_dir), "--out", str(tmp_path / "r"), "--set", "patience=0"])
    assert res.exit_code != 0 and "patience" in str(res.exception)
    res = runner.invoke(
        app,
        ["score", "--run", str(tmp_path / "missing"), "--data", str(tiny_dir), "--out", str(tmp_path / "s.parquet")],
    )
    assert res.exit_code != 0 and "missing" in str(res.exception)


def test_score_removes_what_a_killed_run_left_and_refuses_a_folder_as_out(
    tiny_dir: Path, trained: TrainedModel, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    trained.save(run)
    out = tmp_path / "scores.parquet"
    stale = tmp_path / ".scores.parquet.k1ll3d.tmp"  # the temporary name a killed writer leaves behind
    stale.write_bytes(b"half a parquet file")
    args = ["score", "--run", str(run), "--data", str(tiny_dir), "--chunk", "700", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not stale.exists() and pq.read_metadata(out).num_rows == 2000 * 8
    assert not list(tmp_path.glob(".*.tmp"))
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert res.exit_code != 0 and "is a folder; expected the path of the Parquet file" in str(res.exception)
