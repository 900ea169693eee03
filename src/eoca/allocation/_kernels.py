"""Vectorised building blocks shared by the solvers: eligibility-masked working matrix and top-K scans.

The solvers scan the score matrix fund by fund, so they keep a (k, N) float32 copy with -inf where a customer
may not get a fund; with k small, N-long vector operations per fund are far faster in numpy than reductions
over a short inner axis.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 19


def working_matrix(scores: np.ndarray, tolerance: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """float32 (k, N): scores transposed, -inf where tolerance[i] < risk[j]. One copy of the scores."""
    N, k = scores.shape
    W = np.empty((k, N), dtype=np.float32)
    for s in range(0, N, CHUNK):
        e = min(N, s + CHUNK)
        W[:, s:e] = scores[s:e].T
    for j in range(k):
        low = tolerance < risk[j]
        if low.any():
            W[j, low] = -np.inf
    return W


def top_levels(R: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``levels`` largest entries of each column of R (k, m), descending.

    Returns values (levels, m) and fund indices (levels, m) int32; missing levels (k < levels) are -inf / -1.
    Ties keep the lower fund index first, which makes every scan deterministic.
    """
    k, m = R.shape
    vals = np.full((levels, m), -np.inf, dtype=R.dtype)
    idx = np.full((levels, m), -1, dtype=np.int32)
    if levels == 2 and m > 0:
        # The K = 1 hot path (every full scan of a 10M-row matrix). The best value is one fast reduction over the
        # short fund axis; its fund is the lowest index attaining it (scan funds from the last to the first);
        # the runner-up is the best of the other funds, lowest index first. Strict comparisons keep -inf entries
        # (ineligible funds) out, so a customer with fewer than two eligible funds gets -inf / -1 as before.
        v1, v2, i1, i2 = vals[0], vals[1], idx[0], idx[1]
        np.max(R, axis=0, out=v1)
        mask = np.empty(m, dtype=bool)
        for j in range(k - 1, -1, -1):
            np.equal(R[j], v1, out=mask)
            np.copyto(i1, j, where=mask)
        np.copyto(i1, -1, where=v1 == -np.inf)
        other = np.empty(m, dtype=bool)
        for j in range(k):
            x = R[j]
            np.greater(x, v2, out=mask)
            np.not_equal(i1, j, out=other)
            mask &= other
            np.copyto(v2, x, where=mask)
            np.copyto(i2, j, where=mask)
        return vals, idx
    if levels <= 4 or k <= levels:
        for j in range(k):
            x = R[j].copy()
            xi = np.full(m, j, dtype=np.int32)
            for lv in range(levels):
                sw = x > vals[lv]
                if lv == levels - 1:
                    np.copyto(vals[lv], x, where=sw)
                    np.copyto(idx[lv], xi, where=sw)
                    break
                old_v = vals[lv].copy()
                old_i = idx[lv].copy()
                np.copyto(vals[lv], x, where=sw)
                np.copyto(idx[lv], xi, where=sw)
                np.copyto(x, old_v, where=sw)
                np.copyto(xi, old_i, where=sw)
        return vals, idx
    # Many levels: a per-column partial sort is cheaper than the insertion cascade.
    part = np.argpartition(-R, levels - 1, axis=0)[:levels]
    pv = np.take_along_axis(R, part, axis=0)
    order = np.lexsort((part, -pv), axis=0)
    idx = np.take_along_axis(part, order, axis=0).astype(np.int32)
    vals = np.take_along_axis(pv, order, axis=0)
    return vals, idx


def held_sets(idx: np.ndarray, K: int) -> np.ndarray:
    """(m, K) int32 fund indices from the first K rows of a top_levels index array (levels, m)."""
    return np.ascontiguousarray(idx[:K].T)
