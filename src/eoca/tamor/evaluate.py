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

from dataclasses import dataclass

import numpy as np

from eoca.allocation.exact import solve_exact
from eoca.errors import EocaError
from eoca.evaluation.metrics import auc
from eoca.evaluation.online import bootstrap_counts, percentile_interval
from eoca.tamor.config import SCENARIO_NAMES, TIER_NAMES, TamorEvalConfig, TamorRankConfig
from eoca.tamor.model import TamorOutput
from eoca.tamor.world import MultiScenarioWorld, common_numbers, draw_outcomes

METRICS: tuple[str, ...] = ("conversions", "amount", "expected_amount", "new_high_holding")
"""Per-framework totals of the simulated period."""


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
        a, b = self.per_customer[name], self.per_customer[reference]
        point = _pct(a.sum(0), b.sum(0))
        reps: list[np.ndarray] = []
        if self.n_bootstrap > 0:
            rng = np.random.default_rng([self.seed, 1313, 99])
            for counts in bootstrap_counts(a.shape[0], self.n_bootstrap, rng):
                reps.append(_pct(counts @ a, counts @ b))
        rep = np.concatenate(reps) if reps else np.full((1, len(METRICS)), np.nan)
        out: dict[str, tuple[float, float, float]] = {}
        for j, metric in enumerate(METRICS):
            lo, hi = percentile_interval(rep[..., j], self.confidence)
            out[metric] = (float(point[j]), lo, hi)
        return out

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


def _pct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``100 (a / b - 1)`` elementwise, NaN where ``b <= 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (a / np.where(b > 0, b, 1.0) - 1.0), np.nan)


def per_customer_outcomes(
    world: MultiScenarioWorld, slates: np.ndarray, numbers: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """float64 ``(N, 4)``: each customer's conversions, amount, expected amount and whether they became
    high-holding (holdings plus the retained part of every purchase reach the threshold) in the period."""
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
    for r in range(cfg.replications):
        numbers = common_numbers(world, r)
        for name in names:
            per[name] += per_customer_outcomes(world, slates[name], numbers) / cfg.replications
    return PeriodResult(
        control=control,
        oracle=oracle if oracle in per else None,
        per_customer=per,
        n_bootstrap=cfg.n_bootstrap,
        confidence=cfg.confidence,
        seed=seed,
    )
