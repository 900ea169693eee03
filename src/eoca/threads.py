"""The thread policy: how many threads training and prediction use when the config leaves it to eoca.

Plain functions of the process's CPUs and environment, without torch, so that the models (which read
:func:`prediction_threads` at each prediction) and the trainer (which sets torch's threads by
:func:`resolve_threads`) share one definition.
"""

from __future__ import annotations

import os


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
    """
    if predict_threads is not None:
        return max(1, predict_threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), available_cpus())
    return available_cpus()
