"""`eoca allocate` end to end on small Parquet files, through the console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.allocation.helpers import lp_optimum, random_feasible, write_inputs


def eoca(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from eoca.cli import main; main()", "allocate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def instance() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    p = random_feasible(np.random.default_rng(21), 40, 4, 2, "float")
    return p.scores, p.tolerance, p.risk, p.demand, lp_optimum(p)


def _counts_plan(folder: Path, demand: np.ndarray) -> Path:
    plan = folder / "plan.yaml"
    plan.write_text("K: 2\ndemands:\n" + "".join(f"  F{j}: {int(d)}\n" for j, d in enumerate(demand)))
    return plan


@pytest.mark.parametrize("form", ["long", "wide"])
def test_exact_with_counts_plan_and_verify(tmp_path: Path, instance: tuple, form: str) -> None:
    scores, tol, risk, demand, optimum = instance
    sc, cust, funds = write_inputs(tmp_path / "in", scores, tol, risk, form=form)
    out = tmp_path / "out"
    r = eoca(
        "--scores",
        sc,
        "--customers",
        cust,
        "--funds",
        funds,
        "--plan",
        _counts_plan(tmp_path, demand),
        "--out",
        out,
        "--verify",
    )
    assert r.returncode == 0, r.stderr
    assert "allocation verified: every constraint holds" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["optimal"] is True and s["K"] == 2 and s["objective"] == pytest.approx(optimum, rel=1e-9)
    assert [f["delivered"] for f in s["per_fund"]] == demand.tolist()
    t = pq.read_table(out / "allocation.parquet").to_pylist()
    assert len(t) == 80 and t[0]["customer_id"] == "c000" and t[1]["customer_id"] == "c000"
    got = sum(float(scores[int(row["customer_id"][1:]), int(row["fund_id"][1:])]) for row in t)
    assert got == pytest.approx(optimum, rel=1e-6)


def test_shares_plan_uses_the_rounding_rule(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    scores = rng.gamma(1.0, 3.0, size=(7, 3)).astype(np.float32)
    sc, _, _ = write_inputs(tmp_path, scores, np.full(7, 3), np.array([1, 2, 3]), form="wide")
    plan = tmp_path / "plan.yaml"
    plan.write_text("shares:\n  F0: 0.55\n  F1: 0.25\n  F2: 0.2\n")
    r = eoca("--scores", sc, "--data", tmp_path, "--plan", plan, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    # 7 slots: quotas 3.85, 1.75, 1.4 -> floors 3, 1, 1 -> largest remainders F0, F1 -> 4, 2, 1
    assert [f["demanded"] for f in s["per_fund"]] == [4, 2, 1]
    assert [f["delivered"] for f in s["per_fund"]] == [4, 2, 1]


def test_ha_with_stranding_fails_verify_and_repair_fixes_it(tmp_path: Path) -> None:
    scores = np.array([[1, 0], [9, 2]], dtype=np.float32)
    sc, _, _ = write_inputs(tmp_path, scores, np.array([1, 2]), np.array([1, 2]), form="long")
    plan = tmp_path / "plan.yaml"
    plan.write_text("demands:\n  F0: 1\n  F1: 1\n")
    args = ["--scores", sc, "--data", tmp_path, "--plan", plan, "--method", "ha", "--verify"]
    r = eoca(*args, "--out", tmp_path / "raw")
    assert r.returncode == 1
    assert "1 customers lack funds" in r.stderr
    s = json.loads((tmp_path / "raw" / "summary.json").read_text())
    assert s["unassigned_customers"] == {"count": 1, "first_ids": ["c000"]}
    assert pq.read_table(tmp_path / "raw" / "allocation.parquet").column("fund_id").null_count == 1
    r = eoca(*args, "--repair", "--out", tmp_path / "fixed")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "fixed" / "summary.json").read_text())["objective"] == 3.0


def test_bad_inputs_name_file_column_and_fund(tmp_path: Path, instance: tuple) -> None:
    scores, tol, risk, demand, _ = instance
    sc, _, funds = write_inputs(tmp_path, scores, tol, risk, form="long")
    plan = _counts_plan(tmp_path, demand)

    def err(*args: str | Path) -> str:
        r = eoca(*args)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        return r.stderr

    # customers without risk_tolerance
    bad_c = tmp_path / "bad_customers.parquet"
    pq.write_table(pa.table({"customer_id": [f"c{i:03d}" for i in range(40)]}), bad_c)
    msg = err("--scores", sc, "--customers", bad_c, "--funds", funds, "--plan", plan, "--out", tmp_path / "o")
    assert str(bad_c) in msg and "missing column(s) ['risk_tolerance']" in msg
    # a plan naming a fund that does not exist
    bad_plan = tmp_path / "bad_plan.yaml"
    bad_plan.write_text(plan.read_text().replace("F3:", "F9:"))
    msg = err("--scores", sc, "--data", tmp_path, "--plan", bad_plan, "--out", tmp_path / "o")
    assert str(bad_plan) in msg and "['F9'] are not in the funds table" in msg
    # a wide score file missing one fund's column
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"customer_id": [f"c{i:03d}" for i in range(40)], "F0": scores[:, 0]}), wide)
    msg = err("--scores", wide, "--data", tmp_path, "--plan", plan, "--out", tmp_path / "o")
    assert str(wide) in msg and "missing ['F1', 'F2', 'F3']" in msg
    # long form with an empty etv
    t = pq.read_table(sc)
    etv = t.column("etv").to_pylist()
    etv[5] = None
    holes = tmp_path / "holes.parquet"
    pq.write_table(t.set_column(2, "etv", pa.array(etv, pa.float32())), holes)
    msg = err("--scores", holes, "--data", tmp_path, "--plan", plan, "--out", tmp_path / "o")
    assert str(holes) in msg and "column etv has empty values at rows 5" in msg
    # an infeasible plan: the message says what fails, with numbers
    inf_plan = tmp_path / "inf.yaml"
    high = int(np.argmax(risk))
    over = demand.copy()
    over[high] = int((tol >= risk[high]).sum()) + 1
    over[int(np.argmin(risk))] -= over[high] - demand[high]
    inf_plan.write_text("K: 2\ndemands:\n" + "".join(f"  F{j}: {int(d)}\n" for j, d in enumerate(over)))
    msg = err("--scores", sc, "--data", tmp_path, "--plan", inf_plan, "--out", tmp_path / "o")
    assert "the delivery plan is infeasible" in msg and f"fund F{high} (risk level {risk[high]})" in msg
    # --data without the needed tables
    msg = err("--scores", sc, "--plan", plan, "--out", tmp_path / "o")
    assert "give --data DIR, or both --customers and --funds" in msg
    assert not (tmp_path / "o").exists()
