"""Outputs are whole or absent, and bad paths end in a clear message naming the path, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eoca.cli import app
from eoca.errors import ConfigError
from eoca.io import output_folder, partial_folder, remove_stale_temporaries

SIM = ["simulate", "--customers", "200", "--funds", "3", "--no-progress"]


def _fails_with(args: list[str], *fragments: str) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0, res.output
    message = str(res.exception)
    for frag in fragments:
        assert frag in message, message


# --- the helper ---------------------------------------------------------------------------------------------


def test_output_folder_appears_whole_and_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_folder(out) as work:
        (work / "a.txt").write_text("a")
        assert not out.exists()  # nothing visible until the block ends
    assert (out / "a.txt").read_text() == "a" and not partial_folder(out).exists()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "other") as work:
        (work / "half.txt").write_text("x")
        raise RuntimeError("killed half way")
    assert not (tmp_path / "other").exists() and not partial_folder(tmp_path / "other").exists()


def test_existing_output_is_refused_or_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ConfigError, match="exists already.*--overwrite"), output_folder(out):
        pass
    with pytest.raises(RuntimeError), output_folder(out, overwrite=True) as work:
        (work / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # the old output survives a failed overwrite
    with output_folder(out, overwrite=True) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]  # never a mix of the two
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file; expected a folder"), output_folder(tmp_path / "file"):
        pass


def test_stale_partial_folder_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = partial_folder(out)
    stale.mkdir()
    (stale / "leftover").write_text("from a killed run")
    with output_folder(out) as work:
        (work / "fresh").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["fresh"]


def test_stale_temporary_files_are_found_and_removed(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    left = [tmp_path / ".scores.parquet.abc123.tmp", tmp_path / ".scores.parquet.zz.tmp"]
    for p in left:
        p.write_bytes(b"partial")
    (tmp_path / ".other.parquet.x.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(target) == sorted(left)
    assert [p.name for p in tmp_path.iterdir()] == [".other.parquet.x.tmp"]


# --- commands -----------------------------------------------------------------------------------------------


def test_simulate_refuses_an_existing_folder_and_overwrite_replaces_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "world"
    assert CliRunner().invoke(app, [*SIM, "--seed", "1", "--out", str(out)]).exit_code == 0
    (out / "stray.txt").write_text("not part of the world")
    _fails_with([*SIM, "--seed", "2", "--out", str(out)], str(out), "--overwrite")
    res = CliRunner().invoke(app, [*SIM, "--seed", "2", "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "stray.txt").exists()  # a replaced folder holds one world only
    assert "seed: 2" in (out / "simulator.yaml").read_text()


def test_file_where_a_folder_is_expected(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    _fails_with([*SIM, "--out", str(f)], str(f), "is a file; expected a folder")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    _fails_with(["import", "--spec", str(spec), "--out", str(f)], str(f), "is a file; expected a folder")


def test_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    d = tmp_path / "adir"
    d.mkdir()
    _fails_with(["import", "--spec", str(d), "--out", str(tmp_path / "o")], str(d), "is a folder; expected a YAML")
    _fails_with(["run", "--config", str(d), "--print-config"], str(d), "is a folder; expected a YAML")
    _fails_with(["simulate", "--config", str(d), "--out", str(tmp_path / "w")], str(d), "is a folder")


def test_parquet_file_given_as_a_dataset_folder(tmp_path: Path) -> None:
    f = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"customer_id": np.arange(3)}), f)
    _fails_with(["inspect", str(f)], str(f), "is a data file; expected a dataset folder")
    _fails_with(
        ["train", "--data", str(f), "--out", str(tmp_path / "r"), "--no-progress"],
        "is a data file; expected a dataset folder",
    )
    assert not (tmp_path / "r").exists() and not partial_folder(tmp_path / "r").exists()


def test_allocate_refuses_to_mix_outputs(tmp_path: Path) -> None:
    from tests.allocation.helpers import random_feasible, write_inputs

    prob = random_feasible(np.random.default_rng(3), 30, 3, 1, "float")
    sc, cust, funds = write_inputs(tmp_path / "in", prob.scores, prob.tolerance, prob.risk, form="long")
    plan = tmp_path / "plan.yaml"
    plan.write_text("demands:\n" + "".join(f"  F{j}: {int(d)}\n" for j, d in enumerate(prob.demand)))
    out = tmp_path / "alloc"
    base = ["allocate", "--scores", str(sc), "--customers", str(cust), "--funds", str(funds), "--plan", str(plan)]
    assert CliRunner().invoke(app, [*base, "--out", str(out)]).exit_code == 0
    _fails_with([*base, "--out", str(out), "--method", "manual"], "exists already")
    assert '"method": "exact"' in (out / "summary.json").read_text()
    res = CliRunner().invoke(app, [*base, "--out", str(out), "--method", "manual", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert '"method": "manual"' in (out / "summary.json").read_text()
    f = tmp_path / "afile"
    f.write_text("x")
    _fails_with([*base, "--out", str(f)], "is a file; expected a folder")
