"""``eoca run`` with its models trained one after the other (``jobs=1``) and at once (``jobs`` automatic), on an
idle machine or beside competing CPU-bound processes; wall time, CPU time, peak memory and the outputs compared.

    python benchmarks/run_jobs.py --out W --rounds 2 --busy 0
    python benchmarks/run_jobs.py --out W --rounds 2 --busy 1

Each round runs the command a new user runs, ``eoca run --out DIR --no-progress`` (the default configuration,
any ``--set`` given here added), once with ``--set jobs=1`` and once without, alternating, each in a fresh
process. For ``--busy N``, N Python loops run from before the first run to after the last. Per run: wall seconds,
CPU seconds of the whole process tree (user + sys of the finished children), the peak of the tree's summed
resident memory (sampled from ``/proc`` every 0.2 s, so Linux only; a peak shorter than that can be missed), the
training jobs and the seconds of the "train and score" step from ``metrics.json``. The script fails unless every
run wrote the first run's ``ab_test.csv`` (or ``policy_values.csv``), ``offline_metrics.csv``,
``allocation.parquet`` and ``allocations.parquet`` byte for byte. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from eoca.threads import proc_kib

OUTPUTS = ("ab_test.csv", "policy_values.csv", "offline_metrics.csv", "allocation.parquet", "allocations.parquet")
"""Compared byte for byte where the first run wrote them (a simulated world writes the A/B test, randomized data
the policy values)."""


def _children(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                found.append(kid)
                frontier.append(kid)
    return found


def _timed_run(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Wall s, CPU s of the process tree, peak summed RSS in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, sum(proc_kib(f"/proc/{p}/status", "VmRSS") or 0 for p in [proc.pid, *_children(proc.pid)]))
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with code {proc.returncode}; its output is in {log}")
    return wall, cpu, peak // 1024


def main() -> None:
    from train import _burn  # benchmarks/train.py, beside this script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs (emptied first)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating pairs of runs")
    ap.add_argument("--busy", type=int, default=0, help="competing CPU-bound processes during the runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra eoca run --set KEY=VALUE")
    args = ap.parse_args()
    eoca = shutil.which("eoca", path=str(Path(sys.executable).parent)) or shutil.which("eoca")
    if eoca is None:
        raise SystemExit("no eoca command beside this Python or on PATH; install eoca first (scripts/setup.sh)")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.busy)]
    for b in burners:
        b.start()
    rows, reference = [], None
    try:
        for r in range(1, args.rounds + 1):
            for jobs in ("1", "auto"):
                folder = args.out / f"round{r}_jobs{jobs}"
                cmd = [eoca, "run", "--out", str(folder), "--no-progress"]
                for s in [*args.overrides, *(["jobs=1"] if jobs == "1" else [])]:
                    cmd += ["--set", s]
                wall, cpu, peak = _timed_run(cmd, args.out / f"{folder.name}.log")
                metrics = json.loads((folder / "metrics.json").read_text())
                reference = reference or folder
                compared = [n for n in OUTPUTS if (reference / n).exists()]
                same = all((folder / n).read_bytes() == (reference / n).read_bytes() for n in compared)
                if not same:
                    raise SystemExit(f"{folder}: outputs differ from {reference}'s")
                rows.append(
                    (r, metrics["reproducibility"]["training_jobs"], wall, cpu, peak,
                     metrics["timings_s"]["train and score"])
                )  # fmt: skip
                print(f"round {r} jobs {jobs}: {wall:.1f} s wall", flush=True)
    finally:
        for b in burners:
            b.terminate()
    print(f"\n{args.busy} competing CPU-bound processes; outputs of every run byte-identical to the first's\n")
    print("| round | training jobs | wall s | CPU s (tree) | peak RSS (tree) MiB | train and score s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r, j, wall, cpu, peak, ts in rows:
        print(f"| {r} | {j} | {wall:.1f} | {cpu:.1f} | {peak:,} | {ts:.1f} |")


if __name__ == "__main__":
    main()
