"""The exact solver: one price per fund, a contracted successive-shortest-path finish, and a certificate.

The problem is a transportation problem (totally unimodular), so its LP dual is tight:

    min over lambda in R^k of  g(lambda) = sum_i topK_j(E[i, j] - lambda_j)  +  sum_j lambda_j d_j

where topK sums the K largest reduced scores over the funds customer i is eligible for. For every lambda,
g(lambda) is an upper bound on any allocation's value (weak duality). An allocation in which every customer
holds K of its best reduced scores and every fund holds exactly d_j customers attains g(lambda), so it is
optimal; checking that equality over all N customers is the certificate the solver returns.

How lambda and the allocation are found:

1. *Prices from samples.* Exact coordinate descent on g over a small random sample (demands scaled to the
   sample: one fund at a time, lambda_j is set so that exactly d_j sampled customers prefer j), then damped
   Newton steps on samples growing tenfold, then on all customers until at most min(0.1% of N, 100) units are misplaced.
2. *Candidates.* A float32 scan of all customers at the sampled prices gives each customer's K best funds and
   its margin (K-th best minus (K+1)-th best reduced score). A customer whose margin exceeds the largest
   relative price move, max(delta) - min(delta), cannot change its choice, so only customers with a small margin
   (the candidates, typically a few percent) take part in the rest.
3. *Newton on the candidates* with exact integer demands (demand minus what the fixed customers already fill)
   brings the per-fund counts close to the demands. Its prices are kept only if they moved, relative to each
   other, by less than half the candidates' margin window, so no fixed customer can be affected; otherwise the
   round is retried after balancing over all customers.
4. *Successive shortest paths on the contracted graph.* With k funds, the residual network of the flow only
   matters through k x k "edges": moving one unit from fund a to fund j through some customer who holds a
   and not j costs (E[i,a] - E[i,j]) - lambda_a + lambda_j >= 0. Each (a, j) keeps its candidate customers
   sorted by E[i,a] - E[i,j], so Dijkstra on k nodes finds the cheapest way to move a unit from an over-full
   to an under-full fund; prices are updated from the distances (keeping every customer on its best reduced
   scores), and all customers tied at the minimum move at once, which makes all-equal and duplicate rows cheap.
5. *Certificate.* A float64 pass over all customers computes g(lambda) and checks that each customer holds
   K best reduced scores. If any fixed customer was wrongly fixed (the prices moved more than its margin),
   the candidate set grows and steps 2-5 repeat; the last resort is all customers as candidates, which is
   plain successive shortest paths and always finishes. So the answer is exact whenever it is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from eoca.allocation._dense_flow import DenseContracted, FlowState
from eoca.allocation._kernels import CHUNK, held_sets, top_levels, working_matrix

__all__ = ["ArrayStore", "CustomerStore", "ExactOutcome", "solve_exact", "solve_store"]

_EPS = np.finfo(np.float64).eps
# Above this many funds the solver takes its many-funds path: the flow keeps its edge minima in a dense k x k
# table (eoca.allocation._dense_flow) and the Newton step uses a narrow window with a trust region
# (_newton_step_many). Up to it, every step is the original one, so those allocations are unchanged bit for bit.
MANY_FUNDS_ABOVE = 16


@dataclass
class ExactOutcome:
    """Solution of :func:`solve_exact`.

    assign: int32 (N, K) fund indices per customer; prices: float64 (k,) lambda; primal / dual: objective and
    the dual bound g(prices); certified: every customer holds K best reduced scores (so primal == dual up to
    rounding); stats: counters and per-phase seconds.
    """

    assign: np.ndarray
    prices: np.ndarray
    primal: float
    dual: float
    certified: bool
    stats: dict[str, Any] = field(default_factory=dict)


# --- Newton steps on the dual ------------------------------------------------------------------------------


@dataclass
class _Scan:
    """One pass at prices lam: counts (k,), dual value g, margin (n,) float32, boundary pair code (n,) int32
    (K-th best fund * k + (K+1)-th best fund), and optionally the K best funds (n, K) int32. ``sums`` holds the
    per-chunk partial sums of g (without the price term) so another engine can add them up in the same order.

    The methods are the only questions the Newton step asks of a scan; a distributed scan answers the same
    questions by reductions over its partitions (see :mod:`eoca.distributed.exact`)."""

    counts: np.ndarray
    g: float
    gap: np.ndarray
    code: np.ndarray
    assign: np.ndarray | None
    sums: list[float] = field(default_factory=list)
    _fin: np.ndarray | None = field(default=None, repr=False)

    def finite_gaps(self) -> np.ndarray:
        """The finite margins (customers with at least K+1 eligible funds), float32 (m,)."""
        if self._fin is None:
            self._fin = self.gap[np.isfinite(self.gap)]
        return self._fin

    def n_finite(self) -> int:
        return int(self.finite_gaps().shape[0])

    def kth_gap(self, q: int, finite_only: bool = True) -> float:
        """The q-th smallest margin (0-based), over finite margins or over all customers."""
        g = self.finite_gaps() if finite_only else self.gap
        return float(np.partition(g, q)[q])

    def smallest_gaps(self, m: int, finite_only: bool = True) -> np.ndarray:
        """The m smallest margins (unsorted), for an exact order statistic across partitions."""
        g = self.finite_gaps() if finite_only else self.gap
        return g.copy() if m >= g.shape[0] else np.partition(g, m - 1)[:m].copy()

    def pair_counts(self, h: float, k: int) -> np.ndarray:
        """int64 (k * k,): customers with margin <= h per boundary pair code."""
        sel = self.gap <= h
        return np.bincount(self.code[sel], minlength=k * k)[: k * k].astype(np.int64)


def _scan(M: np.ndarray, lam: np.ndarray, K: int, demand: np.ndarray, keep_assign: bool = False) -> _Scan:
    """Scan M (k, n), float32 or float64 with -inf where ineligible, in chunks at prices lam (k,)."""
    k, n = M.shape
    lam_c = lam.astype(M.dtype)[:, None]
    counts = np.zeros(k, dtype=np.int64)
    gap = np.empty(n, dtype=np.float32)
    code = np.empty(n, dtype=np.int32)
    assign = np.empty((n, K), dtype=np.int32) if keep_assign else None
    best = 0.0
    sums: list[float] = []
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        vals, idx = top_levels(M[:, s:e] - lam_c, K + 1)
        top = idx[:K]
        counts += np.bincount(top[top >= 0], minlength=k)
        part = float(vals[:K].sum(dtype=np.float64))
        sums.append(part)
        best += part
        with np.errstate(invalid="ignore"):
            g = (vals[K - 1] - vals[K]).astype(np.float32)
        np.copyto(g, np.float32(np.inf), where=np.isnan(g))
        gap[s:e] = g
        code[s:e] = idx[K - 1] * k + np.maximum(idx[K], 0)
        if assign is not None:
            assign[s:e] = top.T
    return _Scan(counts, best + float(lam @ demand), gap, code, assign, sums)


class ScanLike(Protocol):
    """What the Newton step needs from a pass over all customers (one engine's :class:`_Scan` or a
    distributed reduction): counts (k,) int64 of customers per fund among their K best, g the dual value."""

    counts: np.ndarray
    g: float

    def n_finite(self) -> int: ...

    def kth_gap(self, q: int, finite_only: bool = True) -> float: ...

    def pair_counts(self, h: float, k: int) -> np.ndarray: ...


class CustomerStore(Protocol):
    """Where the customers of an exact solve live: one working matrix in memory (:class:`ArrayStore`) or
    partitions on a cluster (:class:`eoca.distributed.exact.DaskStore`). The solver's driver talks only to
    this interface, so both engines run the same steps with the same numbers.

    ``assignment`` handles are opaque: an (N, K) int32 array in memory, per-partition arrays on a cluster."""

    n: int
    k: int
    dtype: np.dtype

    def max_abs(self) -> float: ...

    def columns(self, rows: np.ndarray) -> np.ndarray: ...

    def scan(self, lam: np.ndarray, K: int, demand: np.ndarray, keep_assign: bool) -> ScanLike: ...

    def candidates(self, sc: Any, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]: ...

    def set_rows(self, assignment: Any, rows: np.ndarray, held: np.ndarray) -> Any: ...

    def certify(
        self, assignment: Any, lam: np.ndarray, demand: np.ndarray, K: int, tol: float
    ) -> tuple[float, float, int, np.ndarray]: ...


def _newton_step(sc: ScanLike, demand: np.ndarray, k: int) -> np.ndarray:
    """Price step solving L step = 2 h (counts - demand).

    L is the Laplacian of how many customers sit within h of the boundary between each pair of funds (their
    K-th and (K+1)-th choices); count changes per unit of price are then L / (2h), since customers on both
    sides of a boundary fall inside the window. h is chosen so the window holds about twice the imbalance.
    """
    ex = (sc.counts - demand).astype(np.float64)
    imb = float(np.abs(ex).sum() / 2)
    n_fin = sc.n_finite()
    if n_fin < 2:
        return np.zeros(k)
    want = int(min(max(200 * k, 2 * imb), n_fin - 1))
    if k > MANY_FUNDS_ABOVE:
        return _newton_step_many(sc, ex, k, int(min(max(1000, 4 * imb), n_fin - 1)))
    for _ in range(6):
        h = sc.kth_gap(want)
        pairs = sc.pair_counts(h, k).reshape(k, k).astype(np.float64)
        A = pairs + pairs.T
        np.fill_diagonal(A, 0.0)
        deg = A.sum(axis=1)
        if not ((deg == 0) & (ex != 0)).any() or want >= n_fin - 1:
            break
        want = min(n_fin - 1, want * 4)
    L = np.diag(deg) - A
    L += np.eye(k) * (1e-9 * max(1.0, float(deg.max())))
    return np.asarray(np.linalg.solve(L, 2.0 * max(h, 1e-30) * ex))


def _newton_step_many(sc: ScanLike, ex: np.ndarray, k: int, want: int) -> np.ndarray:
    """The Newton step of the many-funds path: a window of ``want`` customers, and no price moves by more
    than that window h.

    The few-funds rule widens the window until every fund with an imbalance has a boundary customer in it.
    With k = 100 some funds are nobody's first or second choice, so the window grew as wide as the scores
    themselves (h ~ 8,000 where the median margin is 20, at 20k x 100): the steps were thousands, every
    line search failed, and the full scans stopped with 15 % of the customers misplaced. Here a fund with
    no boundary customer moves by h towards its demand, the others by the Newton step on their own
    Laplacian, and all steps are clipped to +-h, the range over which the counted customers say anything.
    At 100k x 100 that left 2,691 misplaced units instead of 15,463, and 20 for the flow instead of 3,669.
    """
    h = max(sc.kth_gap(want), 1e-30)
    pairs = sc.pair_counts(h, k).reshape(k, k).astype(np.float64)
    A = pairs + pairs.T
    np.fill_diagonal(A, 0.0)
    deg = A.sum(axis=1)
    step = np.where(ex > 0, h, np.where(ex < 0, -h, 0.0))
    live = np.flatnonzero(deg > 0)
    if live.size:
        Al = A[np.ix_(live, live)]
        L = np.diag(Al.sum(axis=1)) - Al
        L += np.eye(live.size) * (1e-9 * float(deg.max()))
        step[live] = np.linalg.solve(L, 2.0 * h * ex[live])
    return np.asarray(np.clip(step, -h, h))


def coordinate_prices(S: np.ndarray, dem: np.ndarray, lam: np.ndarray, K: int, sweeps: int, scale: float) -> np.ndarray:
    """Gauss-Seidel coordinate descent on the dual over the customers of S (k, n) float64.

    Each step sets lambda_j so that round(dem_j) customers have fund j among their K best reduced scores, the
    other prices fixed (the exact minimiser of g along that coordinate). Slow to converge but robust far from
    the optimum, where the Newton model is poor; used for a few sweeps on a small sample to start Newton.
    """
    k, n = S.shape
    lam = lam.astype(np.float64).copy()
    want = np.clip(np.round(dem).astype(np.int64), 0, n)
    vals, idx = top_levels(S - lam[:, None], K + 1)
    step = 1e-3 * scale
    for _ in range(sweeps):
        for j in range(k):
            in_top = (idx[:K] == j).any(axis=0)
            theta = np.where(in_top, vals[K], vals[K - 1])
            with np.errstate(invalid="ignore"):
                v = S[j] - theta
            np.copyto(v, -np.inf, where=np.isnan(v))
            v = v[np.isfinite(v)]
            m = int(want[j])
            if v.size == 0:
                continue
            if m <= 0:
                new = float(v.max() + step)
            elif m >= v.size:
                new = float(v.min() - step)
            else:
                part = np.partition(v, (v.size - m - 1, v.size - m))
                new = float(0.5 * (part[v.size - m] + part[v.size - m - 1]))
            if new == lam[j]:
                continue
            lam[j] = new
            rows = np.flatnonzero((idx == j).any(axis=0) | (S[j] - new > vals[K]))
            if rows.size:
                sv, si = top_levels(S[:, rows] - lam[:, None], K + 1)
                vals[:, rows] = sv
                idx[:, rows] = si
    return lam


def newton_prices(
    M: np.ndarray | CustomerStore,
    demand: np.ndarray,
    lam: np.ndarray,
    K: int,
    *,
    max_scans: int,
    stop_imbalance: float,
    scale: float,
    keep_assign: bool = False,
    max_move: float = np.inf,
) -> tuple[np.ndarray, Any, int]:
    """Damped Newton on the dual over the customers of M (k, n); demand (k,) may be fractional (samples).

    A step is accepted when it lowers the dual value g (which is convex, so this is a plain backtracking line
    search); otherwise it is shortened. Steps are clipped to the score scale, beyond which the local model
    means nothing. Stops early once the prices have moved, relative to each other, by more than ``max_move``
    (the caller then discards them). Returns prices, the scan at those prices, and the number of scans made.
    """
    if isinstance(M, np.ndarray):
        arr = M

        def scan(at: np.ndarray) -> ScanLike:
            return _scan(arr, at, K, demand, keep_assign)

        k = arr.shape[0]
    else:
        store = M

        def scan(at: np.ndarray) -> ScanLike:
            return store.scan(at, K, demand, keep_assign)

        k = store.k
    lam = lam.astype(np.float64).copy()
    lam0 = lam.copy()
    sc = scan(lam)
    scans = 1
    fails = 0
    # float32 reduced scores make g noisy in its last digits; tiny "increases" then still count as progress
    # provided the counts got no worse
    noise = (1e-6 if M.dtype == np.float32 else 1e-12) * abs(sc.g)
    while scans < max_scans:
        imb = float(np.abs(sc.counts - demand).sum() / 2)
        if imb <= stop_imbalance:
            break
        step = np.clip(_newton_step(sc, demand, k), -scale, scale)
        t = 1.0
        accepted = False
        while scans < max_scans and t > 1e-3:
            trial = scan(lam + t * step)
            scans += 1
            t_imb = float(np.abs(trial.counts - demand).sum() / 2)
            if trial.g < sc.g - noise or (trial.g <= sc.g + noise and t_imb < imb):
                lam = lam + t * step
                sc = trial
                accepted = True
                break
            t *= 0.25
        fails = 0 if accepted else fails + 1
        moved = lam - lam0
        if fails >= 2 or float(moved.max() - moved.min()) > max_move:
            break
    return lam, sc, scans


# --- successive shortest paths on the contracted k-node graph -----------------------------------------------


class _Contracted(FlowState):
    """Flow state over candidate customers, organised by fund pair.

    S: float64 (k, m) candidate scores (-inf where ineligible); holds: bool (k, m) current funds; excess: int64
    (k,) count minus demand per fund over *all* customers; lam: (k,) prices with every candidate holding K best
    reduced scores. For each ordered pair (a, j) a list of chunks [keys, ids, pointer] holds candidates that
    held a and not j when the chunk was made, sorted by key = S[a] - S[j]; stale entries are skipped lazily.
    """

    MERGE_AT = 12

    def __init__(self, S: np.ndarray, holds: np.ndarray, excess: np.ndarray, lam: np.ndarray, K: int) -> None:
        super().__init__(S, holds, excess, lam, K)
        k = self.k
        self.chunks: list[list[list[Any]]] = [[] for _ in range(k * k)]
        self.minkey = np.full((k, k), np.inf)
        # the customer at each edge's minimum: only its move can invalidate minkey (new entries mark the edge
        # dirty when they are added), so an augmentation re-reads just the edges whose head customer moved
        # instead of all ~4k edges of the funds it touched (what made k = 100 slow: ~k^2 edges)
        self.head_id = np.full(k * k, -1, dtype=np.int64)
        self.dirty: set[int] = set()
        self.augmentations = 0
        self.moved = 0
        for a in range(k):
            rows = np.flatnonzero(holds[a])
            if rows.size == 0:
                continue
            for j in range(k):
                if j == a:
                    continue
                sel = rows[~holds[j, rows] & self.fin[j, rows]]
                if sel.size:
                    self._add(a, j, sel)

    def _add(self, a: int, j: int, ids: np.ndarray) -> None:
        keys = self.S[a, ids] - self.S[j, ids]
        order = np.argsort(keys, kind="stable")
        e = a * self.k + j
        self.chunks[e].append([keys[order], ids[order], 0])
        self.dirty.add(e)

    def _valid(self, a: int, j: int, ids: np.ndarray) -> np.ndarray:
        return self.holds[a, ids] & ~self.holds[j, ids]

    def _head(self, e: int) -> float:
        a, j = divmod(e, self.k)
        best = np.inf
        best_id = -1
        keep: list[list[Any]] = []
        for ch in self.chunks[e]:
            keys, ids, p = ch
            n = keys.shape[0]
            w = 16
            while p < n:
                ok = self._valid(a, j, ids[p : p + w])
                if ok.any():
                    p += int(ok.argmax())
                    break
                p += w
                w = min(w * 2, 1 << 16)
            ch[2] = p
            if p < n:
                keep.append(ch)
                if float(keys[p]) < best:
                    best = float(keys[p])
                    best_id = int(ids[p])
        if len(keep) > self.MERGE_AT:
            keep = [self._merge(a, j, keep)]
        self.chunks[e] = keep
        self.head_id[e] = best_id
        return best

    def _merge(self, a: int, j: int, chunks: list[list[Any]]) -> list[Any]:
        keys = np.concatenate([c[0][c[2] :] for c in chunks])
        ids = np.concatenate([c[1][c[2] :] for c in chunks])
        ok = self._valid(a, j, ids)
        keys, ids = keys[ok], ids[ok]
        ids, first = np.unique(ids, return_index=True)
        keys = keys[first]
        order = np.argsort(keys, kind="stable")
        return [keys[order], ids[order], 0]

    def _ties(self, e: int, kappa: float) -> np.ndarray:
        """Distinct valid candidates on edge e whose key equals the edge minimum kappa."""
        a, j = divmod(e, self.k)
        parts = []
        for keys, ids, p in self.chunks[e]:
            hi = int(np.searchsorted(keys, kappa, side="right"))
            if hi > p:
                seg = ids[p:hi]
                parts.append(seg[self._valid(a, j, seg)])
        if not parts:
            return np.zeros(0, dtype=np.int64)
        out = np.concatenate(parts)
        return np.unique(out) if len(parts) > 1 else out

    def _shortest(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        for e in self.dirty:
            self.minkey.flat[e] = self._head(e)
        self.dirty.clear()
        k = self.k
        lam = self.lam
        w = self.minkey - lam[:, None] + lam[None, :]
        # reduced costs are >= 0 in exact arithmetic; clamp rounding noise so Dijkstra stays valid
        np.maximum(w, 0.0, out=w)
        dist = np.full(k, np.inf)
        dist[self.excess > 0] = 0.0
        pred = np.full(k, -1, dtype=np.int64)
        done = np.zeros(k, dtype=bool)
        while True:
            cand = np.where(done, np.inf, dist)
            u = int(cand.argmin())
            if not np.isfinite(cand[u]):
                return None
            if self.excess[u] < 0:
                return dist, pred, u
            done[u] = True
            nd = dist[u] + w[u]
            better = (nd < dist) & ~done
            dist[better] = nd[better]
            pred[better] = u

    def run(self) -> bool:
        """Move units until every fund meets its demand; False if the candidates alone cannot do it."""
        k = self.k
        while (self.excess > 0).any():
            found = self._shortest()
            if found is None:
                return False
            dist, pred, t = found
            self.lam -= np.minimum(dist, dist[t])
            path: list[int] = []
            v = t
            while pred[v] >= 0:
                path.append(int(pred[v]) * k + v)
                v = int(pred[v])
            s = v
            amount = int(min(self.excess[s], -self.excess[t]))
            movers = []
            for e in path:
                ties = self._ties(e, float(self.minkey.flat[e]))
                movers.append(ties)
                amount = min(amount, ties.shape[0])
            if amount <= 0:
                # a cached minimum went stale; recompute those edges and retry
                self.dirty.update(path)
                continue
            touched: set[int] = set()
            moved_ids: list[np.ndarray] = []
            for e, ties in zip(path, movers, strict=True):
                a, j = divmod(e, k)
                X = ties[:amount]
                moved_ids.append(X)
                self.holds[a, X] = False
                self.holds[j, X] = True
                touched.update((a, j))
                for other in range(k):
                    if other == j:
                        continue
                    sel = X[~self.holds[other, X] & self.fin[other, X]]
                    if sel.size:
                        self._add(j, other, sel)
                if self.K > 1:
                    for h in range(k):
                        if h in (a, j):
                            continue
                        sel = X[self.holds[h, X]]
                        if sel.size:
                            self._add(h, a, sel)
            self.excess[s] -= amount
            self.excess[t] += amount
            fs = np.fromiter(touched, dtype=np.int64)
            ks = np.arange(k, dtype=np.int64)
            edges = np.concatenate([(fs[:, None] * k + ks).ravel(), (ks[:, None] * k + fs).ravel()])
            heads = self.head_id[edges]
            stale = edges[(heads >= 0) & np.isin(heads, np.concatenate(moved_ids))]
            self.dirty.update(stale.tolist())
            self.augmentations += 1
            self.moved += amount * len(path)
        return True


def _holds(S: np.ndarray, lam: np.ndarray, K: int) -> np.ndarray:
    """bool (k, m): each column of S (k, m) marks its K best reduced scores at prices lam."""
    k, m = S.shape
    _, idx = top_levels(S - lam[:, None], K)
    holds = np.zeros((k, m), dtype=bool)
    cols = np.arange(m)
    for q in range(K):
        holds[idx[q], cols] = True
    return holds


# --- certificate -------------------------------------------------------------------------------------------


@dataclass
class CertificateParts:
    """A certificate pass over some customers: per-chunk partial sums of the objective and of the K best
    reduced scores (added up by the caller in order, so every engine gets the same float64 totals), how many
    customers do not hold K distinct best reduced scores (beyond tol), and customers per fund (k,) int64."""

    primal_sums: list[float]
    best_sums: list[float]
    n_bad: int
    counts: np.ndarray


def certify_block(W: np.ndarray, lam: np.ndarray, assign: np.ndarray, K: int, tol: float) -> CertificateParts:
    """float64 certificate pass over W (k, n) with the assignment (n, K) int32 at prices lam (k,).

    The certificate trusts none of the flow's bookkeeping: deliveries are recounted here, because
    primal == g(lam) only follows from "everyone holds K best" when every fund is exactly full.
    """
    k, N = W.shape
    counts = np.zeros(k, dtype=np.int64)
    primal: list[float] = []
    best_sums: list[float] = []
    n_bad = 0
    lam_col = lam[:, None]
    for s in range(0, N, CHUNK):
        e = min(N, s + CHUNK)
        R = W[:, s:e].astype(np.float64)
        cols = np.arange(e - s)
        got_e = np.zeros(e - s)
        for q in range(K):
            got_e += R[assign[s:e, q], cols]
        R -= lam_col
        best = R.max(axis=0) if K == 1 else np.partition(R, k - K, axis=0)[k - K :].sum(axis=0)
        got = got_e - lam[assign[s:e]].sum(axis=1)
        with np.errstate(invalid="ignore"):
            viol = ~(best - got <= tol)
        if K > 1:
            # a fund held twice would count its reduced score twice and could fake "K best"
            srt = np.sort(assign[s:e], axis=1)
            viol |= (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        counts += np.bincount(assign[s:e].ravel(), minlength=k)
        n_bad += int(np.count_nonzero(viol))
        primal.append(float(got_e.sum()))
        best_sums.append(float(best.sum()))
    return CertificateParts(primal, best_sums, n_bad, counts)


def combine_certificates(
    parts: list[CertificateParts], lam: np.ndarray, demand: np.ndarray
) -> tuple[float, float, int, np.ndarray]:
    """(primal, dual bound g(lam), customers not holding K best, counts (k,)) from passes in customer order."""
    primal = 0.0
    best_sum = 0.0
    for p in parts:
        for x in p.primal_sums:
            primal += x
        for x in p.best_sums:
            best_sum += x
    counts = np.sum([p.counts for p in parts], axis=0)
    return primal, best_sum + float(lam @ demand), sum(p.n_bad for p in parts), counts


def max_abs_finite(W: np.ndarray) -> float:
    """Largest finite |W| (0.0 when there is none)."""
    m = 0.0
    for s in range(0, W.shape[1], CHUNK):
        blk = W[:, s : s + CHUNK]
        fin = blk[np.isfinite(blk)]
        if fin.size:
            m = max(m, float(np.abs(fin).max()))
    return m


def block_candidates(sc: _Scan, W: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers of one block whose margin is at most delta: local indices (m,) int64, their columns of W
    (k, m) in W's dtype, and the funds the other (fixed) customers hold, counted per fund (k,) int64."""
    assert sc.assign is not None
    k = W.shape[0]
    C = np.flatnonzero(sc.gap <= delta)
    fixed = np.ones(W.shape[1], dtype=bool)
    fixed[C] = False
    counts_fixed = np.bincount(sc.assign[fixed].ravel(), minlength=k).astype(np.int64)
    return C, W[:, C], counts_fixed


class ArrayStore:
    """The in-memory engine: every customer in one working matrix W (k, N) float32."""

    def __init__(self, W: np.ndarray) -> None:
        self.W = W
        self.k, self.n = W.shape
        self.dtype = W.dtype

    def max_abs(self) -> float:
        return max_abs_finite(self.W)

    def columns(self, rows: np.ndarray) -> np.ndarray:
        return self.W[:, rows].astype(np.float64)

    def scan(self, lam: np.ndarray, K: int, demand: np.ndarray, keep_assign: bool) -> _Scan:
        return _scan(self.W, lam, K, demand, keep_assign)

    def candidates(self, sc: _Scan, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        C, S, counts_fixed = block_candidates(sc, self.W, delta)
        assert sc.assign is not None
        return C, S.astype(np.float64), counts_fixed, sc.assign

    def set_rows(self, assignment: np.ndarray, rows: np.ndarray, held: np.ndarray) -> np.ndarray:
        assignment[rows] = held
        return assignment

    def certify(
        self, assignment: np.ndarray, lam: np.ndarray, demand: np.ndarray, K: int, tol: float
    ) -> tuple[float, float, int, np.ndarray]:
        return combine_certificates([certify_block(self.W, lam, assignment, K, tol)], lam, demand)


# --- driver -------------------------------------------------------------------------------------------------


def solve_exact(
    scores: np.ndarray,
    tolerance: np.ndarray,
    risk: np.ndarray,
    demand: np.ndarray,
    K: int = 1,
    *,
    seed: int = 0,
    max_rounds: int = 4,
    working: np.ndarray | None = None,
    candidate_target: int | None = None,
    full_scan_stop: float = 1e-3,
    full_scan_cap: float = 100.0,
    sample_sizes: tuple[int, int] = (5_000, 50_000),
) -> ExactOutcome:
    """Maximise sum E*X with K funds per customer, d_j customers per fund and t_i >= r_j.

    scores: float32 (N, k); tolerance: (N,); risk: (k,); demand: int (k,) summing to N*K. The plan must be
    feasible (see :mod:`eoca.allocation.feasibility`). ``working`` may pass a precomputed
    :func:`working_matrix` to save its copy. ``candidate_target`` overrides the initial number of candidate
    customers (tests use it to exercise the growth and fallback paths on small instances). ``full_scan_stop``:
    Newton over all customers stops once at most this fraction of N units (and at most ``full_scan_cap``) is
    misplaced. ``sample_sizes``: customers
    in the coordinate-descent sample and in the first Newton sample (growing tenfold while below N / 4). Returns an
    :class:`ExactOutcome` whose allocation is optimal and certified by the dual bound.
    """
    t0 = time.perf_counter()
    W = working if working is not None else working_matrix(scores, tolerance, risk)
    t_setup = time.perf_counter() - t0
    out = solve_store(
        ArrayStore(W),
        demand,
        K,
        seed=seed,
        max_rounds=max_rounds,
        candidate_target=candidate_target,
        full_scan_stop=full_scan_stop,
        full_scan_cap=full_scan_cap,
        sample_sizes=sample_sizes,
    )
    out.stats["t_setup"] += t_setup
    out.stats["t_total"] += t_setup
    return out


def solve_store(
    store: CustomerStore,
    demand: np.ndarray,
    K: int = 1,
    *,
    seed: int = 0,
    max_rounds: int = 4,
    candidate_target: int | None = None,
    full_scan_stop: float = 1e-3,
    full_scan_cap: float = 100.0,
    sample_sizes: tuple[int, int] = (5_000, 50_000),
    max_sample: int | None = None,
) -> ExactOutcome:
    """The exact solver's driver over any :class:`CustomerStore` (parameters as in :func:`solve_exact`).

    ``max_sample`` caps the customers gathered for the sampled-price stage (a distributed driver must not hold
    a tenth of a billion customers); None leaves it uncapped. The outcome's ``assign`` is the store's
    assignment handle.
    """
    t0 = time.perf_counter()
    N, k = store.n, store.k
    demand = np.asarray(demand, dtype=np.int64)
    dem_f = demand.astype(np.float64)
    stats: dict[str, Any] = {"rounds": 0, "candidates": [], "scans": [], "augmentations": 0}
    scale = max(store.max_abs(), 1e-30)
    stats["t_setup"] = time.perf_counter() - t0
    lam = np.zeros(k)
    rng = np.random.default_rng(seed)

    # 1. prices from random samples: coordinate descent to get near, Newton on growing samples to get close
    t1 = time.perf_counter()
    n_cd = min(N, sample_sizes[0])
    rows = np.sort(rng.choice(N, size=n_cd, replace=False)) if n_cd < N else np.arange(N)
    lam = coordinate_prices(store.columns(rows), dem_f * (n_cd / N), lam, K, 4, scale)
    n_s = sample_sizes[1]
    while n_s * 4 < N and (max_sample is None or n_s <= max_sample):
        rows = np.sort(rng.choice(N, size=n_s, replace=False))
        S = store.columns(rows)
        lam, _, n_scans = newton_prices(
            S, dem_f * (n_s / N), lam, K, max_scans=25, stop_imbalance=max(1.0, n_s * 2e-4), scale=scale
        )
        stats["scans"].append(n_scans)
        n_s *= 10
    stats["t_sample_prices"] = time.perf_counter() - t1

    # 2. Newton on all customers until a small fraction of units is misplaced. Every full scan costs as much as
    # HA's whole pass at 100k customers, so the last stretch is left to step 3, which only sees the candidates.
    t2 = time.perf_counter()
    lam, sc, n_scans = newton_prices(
        store,
        dem_f,
        lam,
        K,
        max_scans=30,
        stop_imbalance=max(10.0, min(N * full_scan_stop, full_scan_cap)),
        scale=scale,
        keep_assign=True,
    )
    stats["scans"].append(n_scans)
    stats["t_prices"] = time.perf_counter() - t2

    primal = dual = float("nan")
    certified = False
    float32_slop = 8.0 * np.finfo(np.float32).eps
    imbalance = int(np.abs(sc.counts - demand).sum() // 2)
    stats["imbalance_after_prices"] = imbalance
    target = min(N, max(20_000, N // 200, 100 * imbalance))
    if k > MANY_FUNDS_ABOVE and target > N // 2:
        # With many funds a window holding most customers leaves a few fixed customers whose margins are
        # the smallest the prices may not cross, and the finish usually crosses them: at 200k x 100 the round
        # with 195,300 candidates failed its certificate and the retry took all customers (25.4 CPU s; 11.4
        # when all are candidates from the start).
        target = N
    if candidate_target is not None:
        target = max(1, min(N, candidate_target))
    stats["candidate_newton_rejected"] = 0
    for rnd in range(max_rounds + 1):
        if rnd == max_rounds:
            target = N  # last resort: every customer is a candidate, which always finishes
        stats["rounds"] = rnd + 1
        t3 = time.perf_counter()
        if rnd > 0:
            # a retry: bring the full problem close to balance again (the old behaviour of a safe start) and
            # take fresh choices and margins at those prices
            lam, sc, n_scans = newton_prices(
                store, dem_f, lam, K, max_scans=30, stop_imbalance=10.0, scale=scale, keep_assign=True
            )
            stats["scans"].append(n_scans)
        # 3. candidates: customers whose choice could change when prices move by less than their margin
        delta: float = np.inf
        if target < N:
            # the window never shrinks below float32 rounding of the reduced scores
            floor = float(float32_slop * 4 * (scale + float(np.abs(lam).max())))
            delta = max(sc.kth_gap(target - 1, finite_only=False), floor)
        C, S, counts_fixed, assign = store.candidates(sc, delta)
        del sc
        stats["candidates"].append(int(C.size))
        holds = _holds(S, lam, K)
        excess = counts_fixed + holds.sum(axis=1) - demand
        if np.abs(excess).sum() > 20:
            # Newton on the candidates alone, against the demand the fixed customers leave open. Accepted only
            # if every price moves, relative to the others, by less than half the margin window: then no fixed
            # customer's choice can change and the fixed counts stay right. Otherwise the retry round redoes
            # the balancing over all customers.
            dem_c = (demand - counts_fixed).astype(np.float64)
            lam0_round = lam.copy()
            lam_try, _, n_scans = newton_prices(
                S, dem_c, lam, K, max_scans=15, stop_imbalance=10.0, scale=scale, max_move=0.5 * delta
            )
            stats["scans"].append(n_scans)
            move = lam_try - lam
            if float(move.max() - move.min()) <= 0.5 * delta:
                lam = lam_try
                holds = _holds(S, lam, K)
                excess = counts_fixed + holds.sum(axis=1) - demand
                if np.abs(excess).sum() > 20 and k > MANY_FUNDS_ABOVE:
                    # With many funds the Newton model (one boundary pair per customer) stalls far from
                    # balance, and every unit left over costs the flow an augmentation over ~k edges. Exact
                    # coordinate descent on the candidates (same move guard) removes most of what Newton left:
                    # at 20k x 100, 2,339 misplaced units became 537 and the solve went from 26 to 7 CPU s.
                    lam_cd = coordinate_prices(S, dem_c, lam, K, 4, scale)
                    move = lam_cd - lam0_round
                    if float(move.max() - move.min()) <= 0.5 * delta:
                        holds_cd = _holds(S, lam_cd, K)
                        ex_cd = counts_fixed + holds_cd.sum(axis=1) - demand
                        if np.abs(ex_cd).sum() < np.abs(excess).sum():
                            lam, holds, excess = lam_cd, holds_cd, ex_cd
            elif rnd < max_rounds:
                stats["candidate_newton_rejected"] += 1
                stats["t_candidates"] = stats.get("t_candidates", 0.0) + time.perf_counter() - t3
                continue
        stats["t_candidates"] = stats.get("t_candidates", 0.0) + time.perf_counter() - t3

        # 4. exact finish by successive shortest paths on the contracted graph
        stats.setdefault("excess_to_flow", []).append(int(np.abs(excess).sum() // 2))
        t4 = time.perf_counter()
        # few funds: the sorted-list flow (its allocations are the reference, unchanged bit for bit); many funds:
        # the dense edge table, whose updates are vectorised over funds instead of one Python step per edge
        net: _Contracted | DenseContracted = (
            DenseContracted(S, holds, excess, lam, K) if k > MANY_FUNDS_ABOVE else _Contracted(S, holds, excess, lam, K)
        )
        ok = net.run()
        lam = net.lam
        stats["augmentations"] += net.augmentations
        stats["t_flow"] = stats.get("t_flow", 0.0) + time.perf_counter() - t4
        if not ok:
            if target >= N:
                raise RuntimeError("the flow could not meet the demands although the plan passed feasibility")
            target = min(N, target * 8)
            continue
        assign = store.set_rows(assign, C, held_sets(np.argsort(~net.holds, axis=0, kind="stable").astype(np.int32), K))
        del net, S, holds

        # 5. certificate over all customers
        t5 = time.perf_counter()
        tol = 64.0 * K * _EPS * (scale + float(np.abs(lam).max()))
        primal, dual, n_bad, counts = store.certify(assign, lam, demand, K, tol)
        stats["t_certify"] = stats.get("t_certify", 0.0) + time.perf_counter() - t5
        stats["violators"] = int(n_bad)
        if not np.array_equal(counts, demand):
            raise RuntimeError(
                f"exact solver bookkeeping error: deliveries {counts.tolist()} differ from demands {demand.tolist()}"
            )
        if n_bad == 0:
            certified = True
            break
        target = min(N, max(target * 8, int(n_bad) * 8))
    stats["t_total"] = time.perf_counter() - t0
    return ExactOutcome(assign=assign, prices=lam, primal=primal, dual=dual, certified=certified, stats=stats)
