"""Successive shortest paths on the contracted k-node graph, kept as a dense k x k table (the many-funds path).

Same flow as :class:`eoca.allocation.exact._Contracted` (read its docstring first): a unit moves from fund a to
fund j through a candidate customer who holds a and not j, at cost (S[a, i] - S[j, i]) - lambda_a + lambda_j,
and Dijkstra on k nodes picks the cheapest way from an over-full to an under-full fund. What differs is the
bookkeeping of the edge minima.

The lazy per-edge sorted lists of ``_Contracted`` pay Python work per edge: a customer moving into fund j
becomes a new entry on k - 1 edges (j, *), and each of them was a small sorted chunk re-read on the next
augmentation. At k = 100 that was ~330 edge re-reads per augmentation and 80 % of a 100k x 100 solve. Here the
table ``minkey`` (k, k) holds every edge's minimum and ``head`` (k, k) a customer attaining it, and every update
is one vectorised step over funds:

* a customer arriving in fund j lowers row j (and, with K > 1, column a of the other funds it holds) by a
  k-vector minimum, no sorting;
* only edges whose ``head`` customer moved are recomputed, from the holders of the edge's source fund
  (one pass over those holders for all stale edges of that fund);
* ties at an edge minimum (duplicate rows) come from the same pass, so they still move together.

Dijkstra runs in scipy's C implementation over the dense reduced-cost table. Every quantity the flow decides
on (edge minima, distances, price updates) is the same as the sorted-list version's, so the result is an
optimal flow; among equally good moves the customers chosen may differ, which is why the few-funds path keeps
the original class (its allocations are unchanged bit for bit).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import csgraph_from_dense, dijkstra

__all__ = ["DenseContracted", "FlowState"]

_BLOCK = 1 << 13


class FlowState:
    """The state both successive-shortest-path implementations start from: candidate scores, which funds each
    candidate holds, each fund's excess over its demand and the prices (copied, since the flow moves them)."""

    def __init__(self, S: np.ndarray, holds: np.ndarray, excess: np.ndarray, lam: np.ndarray, K: int) -> None:
        self.S = S
        self.fin = np.isfinite(S)
        self.holds = holds
        self.excess = excess.astype(np.int64).copy()
        self.lam = lam.astype(np.float64).copy()
        self.K = K
        self.k = S.shape[0]


class DenseContracted(FlowState):
    """Flow state over m candidate customers, edge minima in a dense table.

    S: float64 (k, m) candidate scores (-inf where ineligible); holds: bool (k, m) current funds (each
    candidate holds K best reduced scores at lam); excess: int64 (k,) count minus demand per fund over all
    customers; lam: float64 (k,) prices. After :meth:`run`, ``holds`` and ``lam`` are the finished flow.
    """

    def __init__(self, S: np.ndarray, holds: np.ndarray, excess: np.ndarray, lam: np.ndarray, K: int) -> None:
        super().__init__(S, holds, excess, lam, K)
        k = self.k
        self.minkey = np.full((k, k), np.inf)
        self.head = np.full((k, k), -1, dtype=np.int64)
        self._holders: list[np.ndarray | None] = [None] * k
        self.augmentations = 0
        self.moved = 0
        self.recomputed = 0
        for a in range(k):
            self._recompute(a, np.arange(k))

    def _holders_of(self, a: int) -> np.ndarray:
        h = self._holders[a]
        if h is None:
            h = np.flatnonzero(self.holds[a])
            self._holders[a] = h
        return h

    def _keys(self, a: int, cols: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """float64 (len(cols), len(ids)): S[a, i] - S[q, i] for customers ids holding a, +inf where (a, q) is
        not an edge for i (i holds q already, or q is ineligible for i)."""
        D = self.S[a, ids][None, :] - self.S[np.ix_(cols, ids)]
        bad = self.holds[np.ix_(cols, ids)] | ~self.fin[np.ix_(cols, ids)]
        D[bad] = np.inf
        return D

    def _recompute(self, a: int, cols: np.ndarray) -> None:
        """Edge minima (a, q) for q in cols, from every current holder of a."""
        self.recomputed += int(cols.size)
        H = self._holders_of(a)
        best = np.full(cols.size, np.inf)
        arg = np.full(cols.size, -1, dtype=np.int64)
        for s in range(0, H.size, _BLOCK):
            ids = H[s : s + _BLOCK]
            D = self._keys(a, cols, ids)
            pos = D.argmin(axis=1)
            mn = D[np.arange(cols.size), pos]
            better = mn < best
            best[better] = mn[better]
            arg[better] = ids[pos[better]]
        self.minkey[a, cols] = best
        self.head[a, cols] = arg

    def _lower(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """Customers ids became holders of funds ``rows`` (or lost a fund that was an edge's head): lower the
        minima of every edge they now lie on."""
        allc = np.arange(self.k)
        for a in rows.tolist():
            sel = ids[self.holds[a, ids]]
            if sel.size == 0:
                continue
            D = self._keys(a, allc, sel)
            pos = D.argmin(axis=1)
            mn = D[allc, pos]
            better = mn < self.minkey[a]
            self.minkey[a, better] = mn[better]
            self.head[a, better] = sel[pos[better]]

    def _ties(self, a: int, j: int) -> np.ndarray:
        """Customers on edge (a, j) whose key equals its minimum, ascending."""
        H = self._holders_of(a)
        ok = ~self.holds[j, H] & self.fin[j, H]
        keys = self.S[a, H] - self.S[j, H]
        return H[ok & (keys == self.minkey[a, j])]

    def _shortest(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        w = self.minkey - self.lam[:, None] + self.lam[None, :]
        # reduced costs are >= 0 in exact arithmetic; clamp rounding noise so Dijkstra stays valid. Zero-cost
        # edges are real edges, so the table's "no edge" marker is +inf, not 0.
        np.maximum(w, 0.0, out=w)
        np.fill_diagonal(w, np.inf)
        src = np.flatnonzero(self.excess > 0)
        dist, pred, _ = dijkstra(
            csgraph_from_dense(w, null_value=np.inf),
            directed=True,
            indices=src,
            return_predecessors=True,
            min_only=True,
        )
        sinks = np.flatnonzero(self.excess < 0)
        t = int(sinks[np.argmin(dist[sinks])])
        if not np.isfinite(dist[t]):
            return None
        return dist, pred, t

    def run(self) -> bool:
        """Move units until every fund meets its demand; False if the candidates alone cannot do it."""
        while (self.excess > 0).any():
            found = self._shortest()
            if found is None:
                return False
            dist, pred, t = found
            self.lam -= np.minimum(dist, dist[t])
            path: list[tuple[int, int]] = []
            v = t
            while pred[v] >= 0:
                path.append((int(pred[v]), v))
                v = int(pred[v])
            s = v
            amount = int(min(self.excess[s], -self.excess[t]))
            movers = []
            for a, j in path:
                ties = self._ties(a, j)
                movers.append(ties)
                amount = min(amount, ties.shape[0])
            if amount <= 0:
                raise RuntimeError("exact solver bookkeeping error: an edge minimum has no customer")
            moved: list[np.ndarray] = []
            for (a, j), ties in zip(path, movers, strict=True):
                X = ties[:amount]
                self.holds[a, X] = False
                self.holds[j, X] = True
                self._holders[a] = None
                self._holders[j] = None
                moved.append(X)
            self.excess[s] -= amount
            self.excess[t] += amount
            X_all = np.unique(np.concatenate(moved))
            # edges whose minimum sat on a customer that moved: recompute them from their source's holders
            stale = np.isin(self.head, X_all)
            for a in np.flatnonzero(stale.any(axis=1)).tolist():
                self._recompute(a, np.flatnonzero(stale[a]))
            # edges the movers now lie on (every fund they hold, towards every fund they do not)
            self._lower(np.flatnonzero(self.holds[:, X_all].any(axis=1)), X_all)
            self.augmentations += 1
            self.moved += amount * len(path)
        return True
