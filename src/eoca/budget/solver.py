"""The budget solver: one treatment per customer, total cost within a budget (a multiple-choice knapsack).

Problem: customers i = 0..n-1, arms t = 0..k-1 with value ``V[i, t]`` and cost ``C[i, t] >= 0``; choose one arm
per customer to maximise ``sum_i V[i, t_i]`` subject to ``sum_i C[i, t_i] <= B``.

Method (the Lagrangian dual, solved exactly by a sort of the convex hulls' slopes):

1. *Hulls.* For each customer, the arms that can ever be chosen for some budget price lambda are the vertices
   of the upper concave hull of its points (C[i, t], V[i, t]). Starting from the cheapest arm (the most valuable
   among equally cheap ones), a vectorised gift-wrap picks the steepest step up (largest value gain per unit of
   extra cost; on equal slopes the nearest point, so collinear arms stay separate steps). Each customer yields
   at most k - 1 *segments* (dv > 0, dc >= 0) with non-increasing slopes dv / dc.
2. *Price.* The LP relaxation is the fractional knapsack over all segments: take them in decreasing slope
   until the budget is spent. The break segment's slope is the optimal price lambda*. Instead of sorting all
   segments, the solver narrows a slope band around the break with sampled pivots and sorts only that band
   (ties are kept in a fixed order, customer by customer, earlier steps first, which is what makes ties exact).
3. *Integer solution.* All segments before the break are taken; the break customer keeps its previous arm;
   a greedy pass then adds later segments that still fit the leftover budget.
4. *Certificate.* The dual function ``g(lambda) = sum_i max_t (V[i, t] - lambda C[i, t]) + lambda B`` is an
   upper bound on every feasible choice (weak duality) and equals the LP optimum at lambda*. It is evaluated
   directly on the matrices (not from the segments), so the bound does not trust steps 1-3. The integer
   solution's value is at most the break segment's value gain below the LP optimum, i.e. at most one
   customer's value; ``gap = dual_bound - value`` is reported together with that bound.

Per-arm caps (at most m_t customers on arm t) add one multiplier mu_t per capped arm. The solver then searches
(lambda, mu) by coordinate bisection, repairs the integer solution to respect the caps, and reports the dual
bound g(lambda, mu) and the gap; with caps the one-customer guarantee no longer holds, which the certificate
states (``exact_within_one_customer = False``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eoca.errors import DataValidationError, InfeasiblePlanError

__all__ = ["BudgetCertificate", "BudgetSolution", "dual_bound", "hull_segments", "solve_budget"]

_CHUNK = 1 << 20
_BAND_SORT = 1 << 18
_FILL_ROUNDS = 64
_DIRECT = 400_000
_SAMPLE = 100_000
_BRACKET = 0.03
_BRACKET_TRIES = 12
_CAP_ROUNDS = 3
_CAP_BISECT = 40


@dataclass(frozen=True)
class BudgetCertificate:
    """Proof of quality of a :class:`BudgetSolution`.

    Attributes:
        price: lambda, the budget's multiplier (value per unit of cost at the margin).
        dual_bound: g(lambda[, mu]) >= the value of every feasible choice (weak duality).
        lp_value: value of the LP relaxation at the price found (equals ``dual_bound`` without caps, up to
            rounding).
        value: value of the integer solution returned.
        gap: ``dual_bound - value`` (>= 0).
        gap_bound: without caps, the value gain of the break customer's fractional step: ``lp_value - value``
            never exceeds it (one customer's value). NaN with caps.
        optimal: the gap is zero (up to rounding), so the integer solution is proven optimal.
        exact_within_one_customer: True without caps; False with caps (the gap is then only what is measured).
        break_customer: the customer whose step was fractional in the LP (-1 if none).
        cap_prices: mu per capped arm (empty without caps).
    """

    price: float
    dual_bound: float
    lp_value: float
    value: float
    gap: float
    gap_bound: float
    optimal: bool
    exact_within_one_customer: bool
    break_customer: int
    cap_prices: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "price": self.price,
            "dual_bound": self.dual_bound,
            "lp_value": self.lp_value,
            "value": self.value,
            "gap": self.gap,
            "gap_bound": self.gap_bound,
            "optimal": self.optimal,
            "exact_within_one_customer": self.exact_within_one_customer,
            "break_customer": self.break_customer,
            "cap_prices": {str(k): v for k, v in self.cap_prices.items()},
        }


@dataclass(frozen=True)
class BudgetSolution:
    """Result of :func:`solve_budget`.

    Attributes:
        arm: int64 (n,), the arm chosen for each customer.
        value: sum of V[i, arm[i]].
        cost: sum of C[i, arm[i]] (<= budget).
        budget: the budget B.
        arm_counts: int64 (k,), customers per arm.
        certificate: the dual bound and the gap.
    """

    arm: np.ndarray
    value: float
    cost: float
    budget: float
    arm_counts: np.ndarray
    certificate: BudgetCertificate


def _check_inputs(value: Any, cost: Any, budget: float) -> tuple[np.ndarray, np.ndarray, float]:
    v = np.asarray(value, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] < 1:
        raise DataValidationError(f"value must be a (customers, arms) matrix, got shape {v.shape}")
    if c.shape != v.shape:
        raise DataValidationError(
            f"cost has shape {c.shape} but value has {v.shape}; every arm needs a cost for every customer"
        )
    b = float(budget)
    if math.isnan(b):
        raise DataValidationError("budget is NaN; give a number >= 0 (currency units)")
    if b < 0:
        raise DataValidationError(f"budget is negative ({b:g}); give a number >= 0 (currency units)")
    for name, arr in (("value", v), ("cost", c)):
        bad = ~np.isfinite(arr)
        if bad.any():
            rows, cols = np.nonzero(bad)
            raise DataValidationError(
                f"{name} has {rows.size:,} missing or infinite entries, first at customer {int(rows[0])}, arm "
                f"{int(cols[0])}" + (" (an arm without a cost rule?)" if name == "cost" else "")
            )
    if (c < 0).any():
        rows, cols = np.nonzero(c < 0)
        raise DataValidationError(
            f"cost must be >= 0; {rows.size:,} negative entries, first at customer {int(rows[0])}, arm "
            f"{int(cols[0])} ({c[rows[0], cols[0]]:g})"
        )
    return v, c, b


@dataclass
class _Segments:
    """Hull segments, flattened chunk by chunk, step-major within a chunk (so a customer's steps are in order).

    start: int64 (n,) starting (cheapest) arm; slope, dc: float64 (m,); cust: int64 (m,); arm: int8/16 (m,)
    target arm; step: int8 (m,) step number within the customer's hull.
    """

    start: np.ndarray
    slope: np.ndarray
    dc: np.ndarray
    cust: np.ndarray
    arm: np.ndarray
    step: np.ndarray


def hull_segments(value: np.ndarray, cost: np.ndarray) -> _Segments:
    """Upper-concave-hull steps of every customer's (cost, value) points; see the module docstring, step 1."""
    n, k = value.shape
    arm_dtype = np.int8 if k < 127 else np.int32
    start = np.empty(n, dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    cols = np.arange(k)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        V, C = value[lo:hi], cost[lo:hi]
        m = hi - lo
        rows = np.arange(m)
        cmin = C.min(axis=1)
        cur = np.where(cmin[:, None] == C, V, -np.inf).argmax(axis=1)
        start[lo:hi] = cur
        cur_v, cur_c = V[rows, cur], C[rows, cur]
        alive = np.ones(m, dtype=bool)
        for s in range(k - 1):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            dv = V[idx] - cur_v[idx, None]
            dc = C[idx] - cur_c[idx, None]
            ok = (dv > 0) & (dc >= 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(ok, np.where(dc > 0, dv / np.where(dc > 0, dc, 1.0), np.inf), -np.inf)
            best = slope.max(axis=1)
            has = best > -np.inf
            # equal slopes: the nearest point first, so collinear arms become separate steps of equal slope
            nearest = np.where(slope == best[:, None], dc, np.inf).argmin(axis=1)
            idx, nearest, best = idx[has], nearest[has], best[has]
            alive[:] = False
            alive[idx] = True
            tgt_c = C[idx, nearest]
            parts.append(
                (
                    best,
                    tgt_c - cur_c[idx],
                    (idx + lo).astype(np.int64),
                    cols[nearest].astype(arm_dtype),
                    np.full(idx.size, s, dtype=np.int8),
                )
            )
            cur_v[idx] = V[idx, nearest]
            cur_c[idx] = tgt_c
    if parts:
        slope, dc, cust, arm, step = (np.concatenate([p[j] for p in parts]) for j in range(5))
    else:
        slope, dc = np.empty(0), np.empty(0)
        cust, arm, step = np.empty(0, np.int64), np.empty(0, arm_dtype), np.empty(0, np.int8)
    return _Segments(start, slope, dc, cust, arm, step)


def dual_bound(
    value: np.ndarray,
    cost: np.ndarray,
    budget: float,
    price: float,
    cap_prices: Mapping[int, float] | None = None,
    caps: Mapping[int, int] | None = None,
) -> float:
    """g(lambda, mu) = sum_i max_t (V - lambda C - mu_t) + lambda B + sum_t mu_t cap_t, evaluated directly."""
    k = value.shape[1]
    mu = np.zeros(k)
    extra = 0.0
    for t, m in (cap_prices or {}).items():
        mu[t] = m
        extra += m * float((caps or {})[t])
    return _row_max_sum(value, cost, price, mu) + price * budget + extra


def _break_order(seg: _Segments, budget_left: float) -> tuple[np.ndarray, np.ndarray]:
    """Segments taken in full before the break (bool mask) and the band after them in LP order (indices).

    The band's first segment that does not fit is the break; the caller walks the band's cumulative cost.
    """
    m = seg.slope.size
    taken = np.zeros(m, dtype=bool)
    band = np.arange(m)
    spent = 0.0
    rng = np.random.default_rng(0)
    while band.size > _BAND_SORT:
        s = seg.slope[band]
        finite = s[np.isfinite(s)]
        if finite.size == 0:
            break
        pivot = float(np.median(rng.choice(finite, size=min(finite.size, 4097), replace=False)))
        above, equal = s > pivot, s == pivot
        cost_above = float(seg.dc[band[above]].sum())
        if spent + cost_above > budget_left:
            band = band[above]
            continue
        cost_equal = float(seg.dc[band[equal]].sum())
        taken[band[above]] = True
        spent += cost_above
        if spent + cost_equal <= budget_left:
            taken[band[equal]] = True
            spent += cost_equal
            band = band[s < pivot]
        else:
            band = band[equal]
            break
    order = band[np.argsort(-seg.slope[band], kind="stable")]
    return taken, order


def _arms_from(seg: _Segments, taken: np.ndarray) -> np.ndarray:
    """Each customer's arm after its taken steps (a prefix of its hull), int64 (n,)."""
    arm = seg.start.copy()
    for s in range(int(seg.step.max(initial=-1)) + 1):
        sel = taken & (seg.step == s)
        arm[seg.cust[sel]] = seg.arm[sel]
    return arm


def _choice_at(v: np.ndarray, c: np.ndarray, price: float) -> tuple[np.ndarray, np.ndarray]:
    """Arg max_t (V - price C) per customer (int64 (n,), first on ties) and whether that maximum is unique.

    Column by column on chunks: numpy's row-wise reductions over a handful of arms are several times slower.
    """
    n, k = v.shape
    arm = np.zeros(n, dtype=np.int64)
    unique = np.ones(n, dtype=bool)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        top = v[lo:hi, 0] - price * c[lo:hi, 0]
        a, u = arm[lo:hi], unique[lo:hi]
        for j in range(1, k):
            r = v[lo:hi, j] - price * c[lo:hi, j]
            u &= r != top
            better = r > top
            a[better] = j
            u[better] = True
            np.maximum(top, r, out=top)
    return arm, unique


def _row_min_sum(c: np.ndarray) -> float:
    """sum_i min_t C[i, t], chunked column by column."""
    n, k = c.shape
    total = 0.0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        low = c[lo:hi, 0].copy()
        for j in range(1, k):
            np.minimum(low, c[lo:hi, j], out=low)
        total += float(low.sum())
    return total


def _row_max_sum(v: np.ndarray, c: np.ndarray, price: float, shift: np.ndarray | None = None) -> float:
    """sum_i max_t (V - price C - shift_t), chunked column by column."""
    n, k = v.shape
    total = 0.0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        top = np.full(hi - lo, -np.inf)
        for j in range(k):
            r = v[lo:hi, j] - price * c[lo:hi, j]
            if shift is not None:
                r -= shift[j]
            np.maximum(top, r, out=top)
        total += float(top.sum())
    return total


def _solve_lagrangian(v: np.ndarray, c: np.ndarray, b: float) -> tuple[np.ndarray, float, float, float, int]:
    """Core without caps: (arm (n,), price lambda*, LP value, break step's value gain, break customer).

    Large instances first bracket lambda* with a sample: customers whose best arm is the same and unique at
    both ends of the bracket have no hull breakpoint inside it, so they are fixed, and only the others (a few
    percent) go through the exact hull-and-sort. The bracket is accepted only if the exact price of that
    reduced problem falls inside it, which makes the combined solution the exact LP solution.
    """
    n = v.shape[0]
    if n <= _DIRECT:
        return _solve_direct(v, c, b)
    rng = np.random.default_rng(n)
    sample = np.sort(rng.choice(n, size=_SAMPLE, replace=False))
    vs, cs = v[sample], c[sample]
    base = _row_min_sum(c)
    if base > b * (1 + 1e-12) + 1e-9:
        return _solve_direct(v[:0], c[:0], -1.0, base_cost=base)
    b_s = float(cs.min(axis=1).sum()) + (b - base) * _SAMPLE / n
    guess = _solve_direct(vs, cs, b_s)[1]
    lo, hi = (guess / (1 + _BRACKET), guess * (1 + _BRACKET)) if guess > 0 else (0.0, 0.0)
    for _ in range(_BRACKET_TRIES):
        arm_lo, uniq_lo = _choice_at(v, c, lo)
        arm_hi, uniq_hi = (arm_lo, uniq_lo) if hi == lo else _choice_at(v, c, hi)
        fixed = uniq_lo & uniq_hi & (arm_lo == arm_hi)
        active = np.flatnonzero(~fixed)
        if active.size > n // 4:
            break
        rows_f = np.flatnonzero(fixed)
        cost_fixed = float(c[rows_f, arm_lo[rows_f]].sum())
        if cost_fixed > b:
            lo, hi = lo, 2 * hi + (1e-12 if hi == 0 else 0.0)
            continue
        sub_arm, price, sub_lp, step_dv, brk = _solve_direct(v[active], c[active], b - cost_fixed)
        if lo <= price <= hi:
            arm = arm_lo
            arm[active] = sub_arm
            lp = float(v[rows_f, arm_lo[rows_f]].sum()) + sub_lp
            return arm, price, lp, step_dv, (int(active[brk]) if brk >= 0 else -1)
        if price < lo:
            lo = 0.0 if lo < 1e-300 else lo / 2
        else:
            hi = 2 * hi if hi > 0 else max(lo, 1e-12) * 2
    return _solve_direct(v, c, b)


def _solve_direct(
    v: np.ndarray, c: np.ndarray, b: float, base_cost: float | None = None
) -> tuple[np.ndarray, float, float, float, int]:
    """Exact hull-and-sort on all given customers; see :func:`_solve_lagrangian`."""
    n, _ = v.shape
    rows = np.arange(n)
    seg = hull_segments(v, c)
    if base_cost is None:
        base_cost = float(c[rows, seg.start].sum())
    # Tolerate summation rounding of a budget given as exactly the minimum cost.
    if base_cost > b * (1 + 1e-12) + 1e-9:
        raise InfeasiblePlanError(
            f"budget {b:,.6g} is below the cost of giving every customer its cheapest arm ({base_cost:,.6g}); "
            "no choice fits"
        )
    left = b - base_cost
    if float(seg.dc.sum()) <= left:
        arm = _arms_from(seg, np.ones(seg.slope.size, dtype=bool))
        return arm, 0.0, float(v[rows, arm].sum()), 0.0, -1
    taken, order = _break_order(seg, left)
    spent = float(seg.dc[taken].sum())
    cum = spent + np.cumsum(seg.dc[order])
    k_brk = int(np.searchsorted(cum, left, side="right"))
    taken[order[:k_brk]] = True
    j = int(order[k_brk])
    price = float(seg.slope[j])
    brk = int(seg.cust[j])
    prefix = _arms_from(seg, taken)
    step_dv = float(v[brk, int(seg.arm[j])] - v[brk, prefix[brk]])
    prev_cost = float(cum[k_brk - 1]) if k_brk > 0 else spent
    lp_value = float(v[rows, prefix].sum()) + (left - prev_cost) / float(seg.dc[j]) * step_dv
    ntaken = np.bincount(seg.cust[taken], minlength=n).astype(np.int16)
    _fill(seg, taken, ntaken, left - prev_cost, order[k_brk + 1 :])
    return _arms_from(seg, taken), price, lp_value, step_dv, brk


def _fill(seg: _Segments, taken: np.ndarray, ntaken: np.ndarray, left: float, rest: np.ndarray) -> None:
    """Greedy fill after the break: add later steps (in LP order) that continue their customer's hull and fit.

    Updates ``taken`` and ``ntaken`` in place; bounded to a few vectorised rounds (the budget left is less than
    one step's cost, so few steps can fit).
    """
    cand = rest[seg.dc[rest] <= left]
    for _ in range(_FILL_ROUNDS):
        cand = cand[(seg.dc[cand] <= left) & (ntaken[seg.cust[cand]] == seg.step[cand])]
        if cand.size == 0:
            break
        # one step per customer per round keeps each hull's order; the longest prefix that fits is taken at once
        _, first = np.unique(seg.cust[cand], return_index=True)
        one = cand[np.sort(first)]
        n_fit = max(1, int(np.searchsorted(np.cumsum(seg.dc[one]), left, side="right")))
        pick = one[:n_fit]
        taken[pick] = True
        ntaken[seg.cust[pick]] += 1
        left -= float(seg.dc[pick].sum())
        cand = cand[~taken[cand]]


def solve_budget(
    value: Any,
    cost: Any,
    budget: float,
    *,
    caps: Mapping[int, int] | None = None,
) -> BudgetSolution:
    """Choose one arm per customer maximising total value with total cost <= ``budget``.

    Args:
        value: float array (n, k): value of giving customer i arm t (any sign; e.g. expected spend).
        cost: float array (n, k), >= 0: expected cost of that choice.
        budget: B >= 0, in the units of ``cost``.
        caps: optional {arm: max customers}; see the module docstring.

    Returns:
        :class:`BudgetSolution` with its :class:`BudgetCertificate`.

    Raises:
        DataValidationError: NaN/negative budget, NaN/inf/negative costs, NaN values, shapes that differ,
            a cap on an unknown arm or a negative cap.
        InfeasiblePlanError: the budget cannot pay for every customer's cheapest arm, or the caps leave a
            customer without an arm.
    """
    v, c, b = _check_inputs(value, cost, budget)
    n, k = v.shape
    rows = np.arange(n)
    cap_map = _check_caps(caps, k)
    if not cap_map:
        arm, price, lp_value, step_dv, brk = _solve_lagrangian(v, c, b)
        mus: dict[int, float] = {}
    else:
        arm, price, mus = _solve_with_caps(v, c, b, cap_map)
        lp_value, step_dv, brk = math.nan, math.nan, -1
    total_v = float(v[rows, arm].sum())
    total_c = float(c[rows, arm].sum())
    bound = dual_bound(v, c, b, price, mus, cap_map)
    if not cap_map:
        lp_value = bound if brk < 0 else lp_value
    scale = max(1.0, abs(bound), abs(total_v))
    gap = bound - total_v
    # Summation rounding can make an optimal solution's gap a few ulps negative; weak duality says it is >= 0.
    if gap < 0:
        if gap < -1e-9 * scale * max(1.0, math.log2(max(n, 2))):
            raise AssertionError(f"dual bound {bound!r} below the primal {total_v!r}: a solver bug")
        gap = 0.0
    cert = BudgetCertificate(
        price=price,
        dual_bound=bound,
        lp_value=lp_value,
        value=total_v,
        gap=gap,
        gap_bound=step_dv,
        optimal=gap <= 1e-9 * scale,
        exact_within_one_customer=not cap_map,
        break_customer=brk,
        cap_prices=mus,
    )
    return BudgetSolution(
        arm=arm,
        value=total_v,
        cost=total_c,
        budget=b,
        arm_counts=np.bincount(arm, minlength=k).astype(np.int64),
        certificate=cert,
    )


def _check_caps(caps: Mapping[int, int] | None, k: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for t, m in (caps or {}).items():
        ti = int(t)
        if not 0 <= ti < k:
            raise DataValidationError(f"caps: arm {t} does not exist (arms are 0..{k - 1})")
        if int(m) < 0:
            raise DataValidationError(f"caps: arm {t} has a negative cap ({m})")
        out[ti] = int(m)
    return out


def _solve_with_caps(
    v: np.ndarray, c: np.ndarray, b: float, caps: dict[int, int]
) -> tuple[np.ndarray, float, dict[int, float]]:
    """Coordinate bisection on the cap multipliers around the exact budget core, then a repair to the caps."""
    k = v.shape[1]
    mu = np.zeros(k)
    hi_mu = float(np.ptp(v)) + 1.0
    arm, price = _solve_lagrangian(v, c, b)[:2]
    for _ in range(_CAP_ROUNDS):
        changed = False
        for t, m in caps.items():
            if np.count_nonzero(arm == t) <= m and mu[t] == 0.0:
                continue
            lo, hi = 0.0, hi_mu
            if np.count_nonzero(_solve_lagrangian(v - _shift(mu, t, 0.0), c, b)[0] == t) <= m:
                hi = 0.0
            for _ in range(_CAP_BISECT):
                if hi - lo <= 1e-9 * hi_mu:
                    break
                mid = 0.5 * (lo + hi)
                if np.count_nonzero(_solve_lagrangian(v - _shift(mu, t, mid), c, b)[0] == t) <= m:
                    hi = mid
                else:
                    lo = mid
            changed |= hi != mu[t]
            mu[t] = hi
        arm, price = _solve_lagrangian(v - mu, c, b)[:2]
        if not changed:
            break
    arm = _repair_caps(v - price * c - mu, c, arm, caps)
    return arm, price, {t: float(mu[t]) for t in caps}


def _shift(mu: np.ndarray, t: int, value: float) -> np.ndarray:
    out = mu.copy()
    out[t] = value
    return out


def _repair_caps(reduced: np.ndarray, c: np.ndarray, arm: np.ndarray, caps: dict[int, int]) -> np.ndarray:
    """Move the excess customers of an over-cap arm to their best arm that costs no more and has room."""
    n, k = reduced.shape
    arm = arm.copy()
    rows = np.arange(n)
    counts = np.bincount(arm, minlength=k)
    room = np.array([caps.get(t, n) - counts[t] for t in range(k)], dtype=np.int64)
    for t, m in caps.items():
        excess = counts[t] - m
        if excess <= 0:
            continue
        on_t = np.flatnonzero(arm == t)
        # cheaper-or-equal alternatives keep the budget; the customers who lose least move first
        alt = np.where((c[on_t] <= c[on_t, t][:, None]) & (np.arange(k) != t), reduced[on_t], -np.inf)
        alt[:, [a for a in range(k) if room[a] <= 0]] = -np.inf
        best = alt.argmax(axis=1)
        loss = reduced[on_t, t] - alt[np.arange(on_t.size), best]
        order = np.argsort(loss, kind="stable")
        moved = 0
        for i in order:
            if moved == excess:
                break
            a = int(best[i])
            if not np.isfinite(alt[i, a]) or room[a] <= 0:
                row = np.where(
                    (c[on_t[i]] <= c[on_t[i], t]) & (room > 0) & (np.arange(k) != t), reduced[on_t[i]], -np.inf
                )
                a = int(row.argmax())
                if not np.isfinite(row[a]):
                    continue
            arm[on_t[i]] = a
            room[a] -= 1
            moved += 1
        if moved < excess:
            raise InfeasiblePlanError(
                f"caps: arm {t} holds {counts[t]:,} customers but its cap is {m:,}, and {excess - moved:,} of "
                "them have no other arm that costs no more and has room"
            )
        room[t] += moved
    del rows
    return arm
