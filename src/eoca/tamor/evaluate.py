"""Ranking, offline metrics and the simulated next period of a TAMOR comparison.

* :func:`slate_scores` combines the objectives: ``ETV + w * P(upgrade) * upgrade_value`` per (customer, item).
* :func:`build_slates` takes the top-K risk-eligible items per customer across scenarios, or, with delivery
  contracts, lets the exact allocator (:func:`eoca.allocation.exact.solve_exact`) place them.
* :func:`offline_metrics` gives per tier and per scenario AUCs on the logged test period.
* :func:`simulate_next_period` delivers every framework's slates in one simulated period with common random
  numbers (the same uniforms for a (customer, item) pair in every framework) and reports conversions, amount,
  expected amount and new high-holding customers, with paired-bootstrap 95% intervals of the lifts over a
  control framework and each framework's share of the oracle (true scores, same slate rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from eoca.allocation.exact import solve_exact
from eoca.errors import EocaError
from eoca.evaluation.metrics import auc
from eoca.evaluation.online import bootstrap_counts, percentile_interval
from eoca.tamor.config import SCENARIO_NAMES, TIER_NAMES, TamorEvalConfig, TamorRankConfig
from eoca.tamor.model import TamorOutput
from eoca.tamor.world import MultiScenarioWorld, common_numbers, draw_outcomes

METRICS: tuple[str, ...] = (
    "conversions",
    "amount",
    "expected_amount",
    "new_high_holding",
    "expected_new_high_holding",
)
"""Per-framework totals of the simulated period: realised conversions and amount, the slate's true expected
amount, realised new high-holding customers and their true expected number (:func:`expected_upgrades`)."""


MAX_ENUMERATED_K = 10
"""Largest slate for which :func:`expected_upgrades` enumerates every set of purchased items."""


def slate_scores(etv: np.ndarray, p_upgrade: np.ndarray, cfg: TamorRankConfig) -> np.ndarray:
    """``etv + upgrade_weight * p_upgrade * upgrade_value``; arrays of equal shape, float64 result."""
    return np.asarray(etv, dtype=np.float64) + cfg.upgrade_weight * cfg.upgrade_value * np.asarray(p_upgrade)


def output_scores(out: TamorOutput, world: MultiScenarioWorld, cfg: TamorRankConfig) -> np.ndarray:
    """Slate scores ``(N, M)`` from a model's row-major score matrix (see ``TamorModel.score_matrix``).

    P(upgrade) counts only for customers who are not high-holding yet: the platform knows the tier, and a model's
    upgrade head, never trained on high-holding rows, would otherwise add an arbitrary term to their ranking.
    """
    shape = (world.n_customers, world.n_items)
    p_up = out.p_upgrade.numpy().reshape(shape) * (world.tier < 2)[:, None]
    return slate_scores(out.etv.numpy().reshape(shape), p_up, cfg)


def oracle_scores(world: MultiScenarioWorld, cfg: TamorRankConfig) -> np.ndarray:
    """Slate scores ``(N, M)`` from the world's true ETV and P(upgrade)."""
    return slate_scores(world.true_etv(), world.true_p_upgrade(), cfg)


def contract_demand(world: MultiScenarioWorld, k: int) -> np.ndarray:
    """Deliveries each item is contracted for, int64 ``(M,)`` summing to ``N * k``: the logged test period's
    first ``k`` slots per customer (so the logged policy itself witnesses that the plan is feasible)."""
    slots = world.config.slots
    if k > slots:
        raise EocaError(f"tamor.rank.k={k} exceeds the logged slots={slots}; contracts need k <= slots")
    first = world.test.item.reshape(world.n_customers, slots)[:, :k]
    return np.bincount(first.ravel(), minlength=world.n_items).astype(np.int64)


def build_slates(scores: np.ndarray, world: MultiScenarioWorld, cfg: TamorRankConfig, seed: int = 0) -> np.ndarray:
    """The slate of each customer, int64 ``(N, k)`` item positions, from scores ``(N, M)``.

    ``contracts='none'``: the k best risk-eligible items. ``proportional``: the exact allocator maximises the
    total score subject to every item receiving its :func:`contract_demand` and the risk rule.
    """
    if scores.shape != (world.n_customers, world.n_items):
        raise EocaError(f"slate scores have shape {scores.shape}, expected {(world.n_customers, world.n_items)}")
    if cfg.contracts == "proportional":
        demand = contract_demand(world, cfg.k)
        out = solve_exact(scores.astype(np.float32), world.tolerance, world.risk, demand, K=cfg.k, seed=seed)
        return np.sort(out.assign.astype(np.int64), axis=1)
    masked = np.where(world.eligible(), scores, -np.inf)
    top = np.argpartition(-masked, cfg.k - 1, axis=1)[:, : cfg.k]
    return np.sort(top.astype(np.int64), axis=1)


def offline_metrics(world: MultiScenarioWorld, out: TamorOutput) -> list[dict[str, object]]:
    """AUCs on the logged test period per tier, per scenario and overall.

    ``out`` holds predictions for the rows of ``world.test`` in order. Rows: ``{group, value, rows, auc_click,
    auc_purchase, auc_upgrade}`` (upgrade only where the task applies; NaN where a group has one class).
    """
    log = world.test
    tier = world.tier[log.customer]
    scen = world.scenario[log.item]
    pctr, p, pup = out.pctr.numpy(), out.p.numpy(), out.p_upgrade.numpy()
    groups: list[tuple[str, str, np.ndarray]] = [("all", "all", np.ones(len(log), dtype=bool))]
    groups += [("tier", name, tier == t) for t, name in enumerate(TIER_NAMES)]
    groups += [("scenario", name, scen == s) for s, name in enumerate(SCENARIO_NAMES)]
    rows: list[dict[str, object]] = []
    for group, value, mask in groups:
        up = mask & (log.upgrade >= 0)
        rows.append(
            {
                "group": group,
                "value": value,
                "rows": int(mask.sum()),
                "auc_click": auc(log.click[mask], pctr[mask]) if mask.any() else float("nan"),
                "auc_purchase": auc(log.convert[mask], p[mask]) if mask.any() else float("nan"),
                "auc_upgrade": auc(log.upgrade[up], pup[up]) if up.any() else float("nan"),
            }
        )
    return rows


@dataclass
class PeriodResult:
    """Outcome of one simulated period for every framework.

    ``per_customer[name]``: float64 ``(N, len(METRICS))``, each customer's outcomes averaged over the
    replications (every framework saw the same random numbers). ``totals`` are their column sums.
    """

    control: str
    oracle: str | None
    per_customer: dict[str, np.ndarray]
    n_bootstrap: int
    confidence: float
    seed: int

    @property
    def totals(self) -> dict[str, dict[str, float]]:
        return {n: dict(zip(METRICS, v.sum(0).tolist(), strict=True)) for n, v in self.per_customer.items()}

    def lift(self, name: str, reference: str) -> dict[str, tuple[float, float, float]]:
        """``metric -> (point %, low %, high %)`` of ``name`` over ``reference``: the paired bootstrap over
        customers resamples the same customers for both, so common random numbers cancel in the difference."""
        return paired_lift([self], name, reference)

    def oracle_share(self, name: str) -> dict[str, float]:
        """``metric -> name's total as % of the oracle's`` (empty without an oracle)."""
        if self.oracle is None:
            return {}
        share = _pct(self.per_customer[name].sum(0), self.per_customer[self.oracle].sum(0)) + 100.0
        return dict(zip(METRICS, share.tolist(), strict=True))

    def rows(self, reference: str | None = None) -> list[dict[str, object]]:
        """One flat row per framework: totals, lift over ``reference`` (default the control) with its interval
        and the share of the oracle."""
        ref = reference or self.control
        out: list[dict[str, object]] = []
        for name, tot in self.totals.items():
            row: dict[str, object] = {"framework": name}
            lift = self.lift(name, ref) if name != ref else {}
            share = self.oracle_share(name)
            for metric in METRICS:
                row[metric] = tot[metric]
                point, lo, hi = lift.get(metric, (float("nan"),) * 3)
                row[f"{metric}_lift_pct"], row[f"{metric}_lift_low"], row[f"{metric}_lift_high"] = point, lo, hi
                row[f"{metric}_oracle_pct"] = share.get(metric, float("nan"))
            out.append(row)
        return out


def paired_lift(periods: Sequence[PeriodResult], name: str, reference: str) -> dict[str, tuple[float, float, float]]:
    """``metric -> (point %, low %, high %)`` of ``name`` over ``reference`` with totals summed over ``periods``
    (one per world, e.g. per seed; one period gives that period's lift).

    The bootstrap resamples customers within each period (stratified by period) and uses the same resampled
    customers for both frameworks; replicate count and confidence are the first period's.
    """
    if not periods:
        raise EocaError("paired_lift needs at least one simulated period")
    n_boot, confidence = periods[0].n_bootstrap, periods[0].confidence
    point_a = sum(p.per_customer[name].sum(0) for p in periods)
    point_b = sum(p.per_customer[reference].sum(0) for p in periods)
    point = _pct(np.asarray(point_a), np.asarray(point_b))
    if n_boot > 0:
        rep_a = np.zeros((n_boot, len(METRICS)))
        rep_b = np.zeros((n_boot, len(METRICS)))
        for p in periods:
            a, b = p.per_customer[name], p.per_customer[reference]
            rng = np.random.default_rng([p.seed, 1313, 99])
            done = 0
            for counts in bootstrap_counts(a.shape[0], n_boot, rng):
                rep_a[done : done + counts.shape[0]] += counts @ a
                rep_b[done : done + counts.shape[0]] += counts @ b
                done += counts.shape[0]
        rep = _pct(rep_a, rep_b)
    else:
        rep = np.full((1, len(METRICS)), np.nan)
    out: dict[str, tuple[float, float, float]] = {}
    for j, metric in enumerate(METRICS):
        lo, hi = percentile_interval(rep[:, j], confidence)
        out[metric] = (float(point[j]), lo, hi)
    return out


def _pct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``100 (a / b - 1)`` elementwise, NaN where ``b <= 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (a / np.where(b > 0, b, 1.0) - 1.0), np.nan)


def expected_upgrades(world: MultiScenarioWorld, slates: np.ndarray, normals: list[np.ndarray]) -> np.ndarray:
    """float64 ``(N,)``: each customer's true probability of becoming high-holding when shown ``slates``
    (``(N, k)`` item positions); 0 for customers already high-holding.

    Purchases of the ``k`` items are independent with the true probabilities, so the probability is a sum over
    the ``2^k`` sets of purchased items: a set's probability times the chance that its retained amounts lift the
    holdings to the threshold. For one item that chance is closed-form (lognormal tail); for two or more it is
    the share of the draws ``normals`` (standard normals ``(N, M)`` each, the common random numbers of the
    period's replications) in which the retained amounts add up to the gap. With several purchases rare, the
    result carries little Monte Carlo error, and none from the purchase draws.
    """
    n, k = slates.shape
    if k > MAX_ENUMERATED_K:
        raise EocaError(f"expected new high-holding enumerates 2^k purchase sets; k={k} exceeds {MAX_ENUMERATED_K}")
    rows = np.arange(n)[:, None]
    p = world.true_p_convert()[rows, slates].astype(np.float64)
    keep = world.retention[slates]
    mu = world.mu[rows, slates].astype(np.float64)
    gap = np.maximum(world.threshold - world.holdings, 1e-9)
    with np.errstate(divide="ignore"):
        single = ndtr((mu + np.log(keep) - np.log(gap)[:, None]) / world.sigma)  # (N, k); retention 0 -> 0
    retained = np.stack([keep * np.exp(mu + world.sigma * z[rows, slates]) for z in normals]) if normals else None
    total = np.zeros(n)
    for members in range(1, 1 << k):
        inside = np.array([(members >> j) & 1 for j in range(k)], dtype=bool)
        prob = np.prod(np.where(inside, p, 1.0 - p), axis=1)
        if inside.sum() == 1:
            reach = single[:, int(np.flatnonzero(inside)[0])]
        elif retained is None:
            reach = single[:, inside].max(axis=1)  # a lower bound without draws
        else:
            reach = (retained[:, :, inside].sum(axis=2) >= gap[None, :]).mean(axis=0)
        total += prob * reach
    return np.where(world.tier < 2, total, 0.0)


def per_customer_outcomes(
    world: MultiScenarioWorld, slates: np.ndarray, numbers: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """float64 ``(N, 4)``: each customer's conversions, amount, expected amount and whether they became
    high-holding (holdings plus the retained part of every purchase reach the threshold) in the period
    (the first four of :data:`METRICS`)."""
    n, k = slates.shape
    cust = np.repeat(np.arange(n), k)
    item = slates.ravel()
    u = tuple(x[cust, item] for x in numbers)
    _, convert, amount, _ = draw_outcomes(world, cust, item, uniforms=(u[0], u[1], u[2]))
    expected = world.true_etv()[cust, item].astype(np.float64)
    retained = np.bincount(cust, weights=world.retention[item] * amount, minlength=n)
    upgraded = (world.tier < 2) & (world.holdings + retained >= world.threshold)
    return np.stack(
        [
            np.bincount(cust, weights=convert.astype(np.float64), minlength=n),
            np.bincount(cust, weights=amount, minlength=n),
            np.bincount(cust, weights=expected, minlength=n),
            upgraded.astype(np.float64),
        ],
        axis=1,
    )


def simulate_next_period(
    world: MultiScenarioWorld,
    slates: dict[str, np.ndarray],
    *,
    control: str,
    oracle: str | None = "oracle",
    cfg: TamorEvalConfig | None = None,
    seed: int = 0,
) -> PeriodResult:
    """Deliver every framework's slates (``(N, k)`` item positions) in ``cfg.replications`` simulated periods with
    common random numbers and compare them; see :class:`PeriodResult`."""
    cfg = cfg or TamorEvalConfig()
    if control not in slates:
        raise EocaError(f"control framework {control!r} is not among {sorted(slates)}")
    names = list(slates)
    per = {name: np.zeros((world.n_customers, len(METRICS))) for name in names}
    normals: list[np.ndarray] = []
    for r in range(cfg.replications):
        numbers = common_numbers(world, r)
        normals.append(numbers[2])
        for name in names:
            per[name][:, :4] += per_customer_outcomes(world, slates[name], numbers) / cfg.replications
    for name in names:
        per[name][:, 4] = expected_upgrades(world, slates[name], normals)
    return PeriodResult(
        control=control,
        oracle=oracle if oracle in per else None,
        per_customer=per,
        n_bootstrap=cfg.n_bootstrap,
        confidence=cfg.confidence,
        seed=seed,
    )
