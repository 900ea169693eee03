"""``--engine dask`` gives the local engine's allocation, diagnosis and certificate, and survives a dead worker.

One LocalCluster (2 worker processes, 1 thread each) serves the module; instances are small and split into
several parts so every reduction crosses partitions and workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

pytest.importorskip("distributed")

from eoca.allocation import AllocationProblem, allocate, feasibility_issues
from eoca.allocation.generate import synthetic_instance
from eoca.cli import app
from eoca.distributed import ClusterSpec, DistributedError, atomic_dir, open_client
from eoca.distributed.exact import DaskStore, allocate_dask
from eoca.distributed.generate import write_problem
from eoca.errors import ConfigError, InfeasiblePlanError


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with open_client(ClusterSpec(workers=2, threads=1, memory_limit="1GB")) as c:
        yield c


def _tied(N: int, k: int, K: int, seed: int) -> AllocationProblem:
    """Binding risk rules, scores rounded to a coarse grid (many ties) and every other row duplicated."""
    p = synthetic_instance(N, k, K, seed, bind_risk=True)
    E = np.round(p.scores / 40.0).astype(np.float32)
    E[1::2] = E[0::2][: E[1::2].shape[0]]
    return AllocationProblem(scores=E, tolerance=p.tolerance, risk=p.risk, demand=p.demand, K=K)


def _solve_both(client: Any, p: AllocationProblem, tmp: Path, *, long: bool, store_cls: type[DaskStore] = DaskStore):
    data = write_problem(p, tmp / "data", part_size=700, long=long)
    local = allocate(p)
    dist = allocate_dask(
        client,
        data / "scores",
        data / "customers",
        data / "funds.parquet",
        data / "plan.yaml",
        tmp / "out",
        store_cls=store_cls,
    )
    return local, dist


def _same_allocation(local: Any, folder: Path) -> None:
    got = pq.read_table(folder).to_pandas().sort_values(["customer_id", "fund_id"]).to_numpy()
    want = local.to_table().to_pandas().sort_values(["customer_id", "fund_id"]).to_numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("K", "long"), [(1, False), (2, True)])
def test_same_allocation_objective_and_certificate(client: Any, tmp_path: Path, K: int, long: bool) -> None:
    p = _tied(3_000, 6, K, seed=11 + K)
    local, dist = _solve_both(client, p, tmp_path, long=long)
    assert dist.certified and local.optimal
    assert dist.objective == pytest.approx(local.objective, rel=1e-9, abs=1e-9)
    assert abs(dist.certificate_gap) <= 1e-9 * max(1.0, abs(dist.objective))
    np.testing.assert_array_equal(dist.delivered, p.demand)
    _same_allocation(local, tmp_path / "out" / "allocation")
    assert sorted(x.name for x in (tmp_path / "out" / "allocation").iterdir()) == sorted(
        x.name for x in (tmp_path / "data" / "scores").iterdir()
    )
    assert not [x for x in (tmp_path / "out").iterdir() if x.name.startswith(".")]


def test_infeasible_plan_gives_the_same_diagnosis(client: Any, tmp_path: Path) -> None:
    p = synthetic_instance(2_000, 5, 1, seed=3)
    d = p.demand.copy()
    d[-1] += d[0]  # the riskiest fund now wants more customers than tolerate it
    d[0] = 0
    bad = AllocationProblem(scores=p.scores, tolerance=p.tolerance, risk=p.risk, demand=d, K=1)
    issues = feasibility_issues(bad)
    assert issues
    data = write_problem(bad, tmp_path / "data", part_size=600)
    with pytest.raises(InfeasiblePlanError) as err:
        allocate_dask(
            client, data / "scores", data / "customers", data / "funds.parquet", data / "plan.yaml", tmp_path / "out"
        )
    with pytest.raises(InfeasiblePlanError) as ref:
        allocate(bad)
    assert str(err.value) == str(ref.value)
    assert not (tmp_path / "out").exists()


async def _exit_now() -> None:
    os._exit(1)


class _KillOnThirdScan(DaskStore):
    """Kills the worker holding the first partition in the middle of the full-data Newton stage."""

    def scan(self, lam: np.ndarray, K: int, demand: np.ndarray, keep_assign: bool) -> Any:
        self.stats["scans_seen"] = self.stats.get("scans_seen", 0) + 1
        if self.stats["scans_seen"] == 3:
            victim = next(iter(self.client.who_has([self.blocks[0]])[self.blocks[0].key]))
            self.client.run(_exit_now, workers=[victim], wait=False)
        return super().scan(lam, K, demand, keep_assign)


def test_killed_worker_mid_solve_recovers(client: Any, tmp_path: Path) -> None:
    p = _tied(3_000, 6, 1, seed=5)
    local, dist = _solve_both(client, p, tmp_path, long=False, store_cls=_KillOnThirdScan)
    assert dist.info["scans_seen"] >= 3
    assert dist.certified
    assert dist.objective == pytest.approx(local.objective, rel=1e-9)
    _same_allocation(local, tmp_path / "out" / "allocation")
    client.wait_for_workers(2, timeout=60)


def _die() -> None:
    os._exit(1)


class _FailInCertificate(DaskStore):
    """A worker dies while running a certificate task, and the scheduler allows no retry."""

    def certify(self, assignment: Any, lam: np.ndarray, demand: np.ndarray, K: int, tol: float) -> Any:
        self.client.submit(_die, pure=False).result()
        return super().certify(assignment, lam, demand, K, tol)


def test_failed_cluster_is_a_clear_error_and_leaves_no_allocation(client: Any, tmp_path: Path) -> None:
    p = _tied(2_000, 5, 1, seed=7)
    data = write_problem(p, tmp_path / "data", part_size=700)
    old = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    try:
        with pytest.raises(DistributedError, match="no allocation was written"):
            allocate_dask(
                client,
                data / "scores",
                data / "customers",
                data / "funds.parquet",
                data / "plan.yaml",
                tmp_path / "out",
                store_cls=_FailInCertificate,
            )
    finally:
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", old))
        client.wait_for_workers(2, timeout=60)
    assert not (tmp_path / "out" / "allocation").exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "allocation"
    with atomic_dir(final) as d:
        (d / "part-00000.parquet").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final) as d:
        (d / "part-00000.parquet").write_text("new, half")
        raise RuntimeError("a worker died")
    assert [x.name for x in final.iterdir()] == ["part-00000.parquet"]
    assert (final / "part-00000.parquet").read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["allocation"]


def test_single_machine_methods_refuse_the_dask_engine(tmp_path: Path) -> None:
    for method in ("ha", "manual"):
        with pytest.raises(ConfigError, match="one machine only"):
            allocate_dask(None, tmp_path, tmp_path, tmp_path, tmp_path, None, method=method)
    res = CliRunner().invoke(
        app,
        [
            "allocate",
            "--engine",
            "dask",
            "--method",
            "manual",
            "--data",
            str(tmp_path),
            "--scores",
            str(tmp_path),
            "--plan",
            str(tmp_path / "plan.yaml"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code != 0
    assert "one machine only" in str(res.exception) + res.output


def test_run_with_dask_refuses_the_sequential_baselines(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--engine", "dask", "--out", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code != 0
    assert "one machine only" in str(res.exception) + res.output
    assert not (tmp_path / "r").exists()


def test_run_hook_solves_exact_on_the_cluster(client: Any, tmp_path: Path) -> None:
    from eoca.distributed.exact import allocate_problem_dask
    from eoca.pipeline.config import AllocationSection
    from eoca.pipeline.frameworks import EXACT_ENGINE, run_method

    p = _tied(2_500, 6, 2, seed=21)
    local = allocate(p)
    calls: list[int] = []

    def solve(problem: AllocationProblem) -> Any:
        calls.append(problem.n_customers)
        return allocate_problem_dask(client, problem, tmp_path / f"s{len(calls)}", part_size=600)

    token = EXACT_ENGINE.set(solve)
    try:
        res = run_method(p, "exact", AllocationSection())
        manual = run_method(p, "manual", AllocationSection())  # the baselines never go to the engine
    finally:
        EXACT_ENGINE.reset(token)
    assert calls == [2_500]
    assert manual.method == "manual"
    assert res.optimal and res.feasible and res.info["engine"] == "dask"
    np.testing.assert_array_equal(res.assign, local.assign)
    assert res.objective == local.objective
