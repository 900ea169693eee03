"""The thread policy: how many threads training and prediction use when the config leaves it to eoca.

Plain functions of the process's CPUs and environment, without torch, so that the models (which read
:func:`prediction_threads` at each prediction) and the trainer (which sets torch's threads by
:func:`resolve_threads`) share one definition.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows have no affinity API
        return max(1, os.cpu_count() or 1)


AUTO_THREADS = 1
"""Intra-op threads used when ``num_threads`` is unset (see :func:`resolve_threads`)."""


def resolve_threads(num_threads: int | None = None) -> int:
    """The thread policy: ``num_threads`` when given, else :data:`AUTO_THREADS` (one), capped at the CPUs.

    One thread is the automatic choice because every zoo model is a network of small kernels (batches of about a
    thousand rows, layers a few dozen wide) whose work per kernel is close to what waking and joining a second
    thread costs. A second thread can at best halve a step, but when another job holds the other core each
    kernel waits for it, and training ran 6 to 30 times slower than with one thread (see
    benchmarks/RESULTS.md). The choice is fixed, not timed at start, so the same config gives the same model
    whatever the load. Set ``num_threads`` to use more threads, e.g. on a machine of one's own.
    """
    if num_threads is None:
        return min(AUTO_THREADS, available_cpus())
    return max(1, num_threads)


def prediction_threads(predict_threads: int | None = None) -> int:
    """Threads of a tree model's predictions (LightGBM's ``predict``, the config's ``predict_threads``):
    ``predict_threads`` when given; else ``OMP_NUM_THREADS`` when set (Dask's nanny sets it to 1 for the worker
    processes it spawns, whose tasks are the parallelism, and leaves it set in the process that started them);
    else every CPU of :func:`available_cpus`.

    Unlike a training step, a prediction is one coarse parallel loop: each thread scores its own block of rows and
    nothing waits on a small kernel. With the other core busy it still ran faster on two threads than on one,
    and the values do not depend on the count (benchmarks/RESULTS.md, eleventh pass), so it is a setting of its
    own that, unlike ``num_threads``, a run need not pin. Growing the trees keeps :func:`resolve_threads`:
    row-wise histograms summed over another number of threads give another model.

    A process that registered a share with :func:`follow_cpu_share` (``eoca run``'s training workers) takes the
    count from it instead of ``OMP_NUM_THREADS``, read again at every prediction.
    """
    if predict_threads is not None:
        return max(1, predict_threads)
    if _CPU_SHARE is not None:
        return min(max(1, _CPU_SHARE()), available_cpus())
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), available_cpus())
    return available_cpus()


_CPU_SHARE: Callable[[], int] | None = None


def follow_cpu_share(share: Callable[[], int] | None) -> None:
    """Let :func:`prediction_threads` take its automatic count from ``share()``, called at each prediction (None:
    back to ``OMP_NUM_THREADS`` or every CPU).

    For processes that share the machine with a changing number of busy peers: ``eoca run``'s training workers
    predict on CPUs / busy workers, so a tree model still scoring after the network beside it has finished takes
    the CPU that network left (the default world's `gbdt` scoring on a slow AVX2 host: 32.8 s on two threads against
    57.9 s on one, the values equal; in `eoca run` 35-38 s against 59-62 s; benchmarks/RESULTS.md, issue 10,
    seventeenth pass). Only predictions follow it: training keeps :func:`resolve_threads`, whose count decides the
    model."""
    global _CPU_SHARE
    _CPU_SHARE = share


JOB_MEMORY_FACTOR = 2.5
"""A model-training worker's peak resident memory, as a multiple of the starting process's resident memory when it
starts the workers. On the default world (2026-12-02, benchmarks/RESULTS.md, issue 10, twelfth pass) the parent held
661 MiB when it started the workers, and each worker peaked at 1,263-1,269 MiB (1.9 times): a worker holds its own
copy of the data besides the libraries and its model's training buffers. The factor leaves a margin over that."""


PARALLEL_MIN_EXPOSURES = 100_000
"""Below this many logged exposures the automatic policy trains the models one after the other: a worker's start
(spawning Python, importing torch and eoca, reading a copy of the data: about 5 s of wall time and 10 CPU-seconds
on the 2-core sandbox) then costs about as much as the training it takes over. Default `eoca run`, one after the
other against two at once (``benchmarks/run_jobs.py --rounds 1 --set ...``, 2026-12-02, benchmarks/RESULTS.md,
issue 10, twelfth pass): 3,000 simulated customers (12,000 exposures) 21.3 against 26.3 s, 8,000 (32,000) 37.0
against 36.2 s, 20,000 (80,000) 54.3 against 50.2 s, Hillstrom (64,000) 21.9 against 25.5 s; the default world
(400,000) 268-278 against 182-194 s."""


def proc_kib(path: str, key: str) -> int | None:
    """The kibibytes of field ``key`` of a Linux ``/proc`` file (``/proc/meminfo``, ``/proc/<pid>/status``), or None
    where the file or the field cannot be read."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_available() -> int | None:
    """Bytes the machine can give new processes without swapping (Linux ``MemAvailable``), or None if unknown."""
    kib = proc_kib("/proc/meminfo", "MemAvailable")
    return None if kib is None else kib * 1024


def resident_memory() -> int | None:
    """This process's resident memory in bytes (Linux ``VmRSS``), or None if unknown."""
    kib = proc_kib("/proc/self/status", "VmRSS")
    return None if kib is None else kib * 1024


def _daemonic() -> bool:
    # A daemonic process (a Dask worker's, a multiprocessing pool's) may not start processes of its own.
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def model_jobs(
    jobs: int | None,
    n_models: int,
    num_threads: int | None = None,
    *,
    available: int | None = None,
    resident: int | None = None,
    exposures: int | None = None,
) -> int:
    """How many models ``eoca run`` trains at once, each in its own process.

    ``jobs`` when given. Else one for data of fewer than :data:`PARALLEL_MIN_EXPOSURES` ``exposures`` (when given)
    and in a daemonic process, which may not start processes; else as many as the CPUs hold at
    :func:`resolve_threads` threads each and, where the memory is known (``available`` and ``resident`` bytes, read
    from the machine when not given), no more than fit in the available memory at :data:`JOB_MEMORY_FACTOR` times
    this process's resident memory each. Never more than ``n_models``, never less than one.

    Unlike a second thread inside one training step, a second process trains another model: the two wait on
    nothing of each other, and each model gets the numbers it would get alone (the same seed, the same threads).
    """
    if jobs is None:
        if _daemonic() or (exposures is not None and exposures < PARALLEL_MIN_EXPOSURES):
            return 1
        jobs = available_cpus() // resolve_threads(num_threads)
        available = memory_available() if available is None else available
        resident = resident_memory() if resident is None else resident
        if available is not None and resident:
            jobs = min(jobs, int(available // (JOB_MEMORY_FACTOR * resident)))
    return max(1, min(jobs, n_models))
