"""The simulator's pipeline: latent world -> behaviour and graph -> true pair parameters -> logged exposures,
assembled into a validated :class:`eoca.data.Dataset`; plus the oracle accessors evaluation uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from scipy.special import expit

from eoca.data.dataset import Dataset
from eoca.data.schema import EVENT_TYPES, DatasetSpec, FeatureSpec, FeatureType, SplitSpec, TableSpec
from eoca.errors import ConfigError, DataValidationError
from eoca.risk import eligible_mask
from eoca.simulate.config import SimulatorConfig, config_yaml
from eoca.simulate.outcomes import (
    PairLatents,
    amount_parameters,
    calibrate_cvr_shift,
    click_and_conversion_logits,
    draw_outcomes,
    expected_value,
)
from eoca.simulate.policy import draw_deliveries, policy_probabilities
from eoca.simulate.world import (
    STEP_BLOCKS,
    STEP_PAIRS,
    STEP_POLICY,
    Consumption,
    CustomerLatents,
    Events,
    FundLatents,
    chunk_count,
    generate_consumption,
    generate_customers,
    generate_events,
    generate_funds,
    step_rng,
)

# Customers used to solve the CVR intercept for the target conversion rate; iid customers make a fixed
# prefix an unbiased sample and keep the calibration cheap at a million customers.
_CALIBRATION_CUSTOMERS = 50_000
_STREAM_STRIDE = 1_000_003


def period_stream(seed: int, period: int) -> int:
    """Random stream of the outcomes of delivery period ``period`` in the world of ``seed``.

    Periods 0..P-1 are the logged exposures. A simulated A/B test of the test period should draw with
    ``period_stream(seed, P)`` or later, a stream no logged outcome used.
    """
    return seed * _STREAM_STRIDE + period


@dataclass
class World:
    """A generated world: the dataset plus everything hidden from it.

    Attributes:
        config: the configuration it was generated from.
        dataset: the validated dataset (what ``eoca simulate`` writes).
        customers: latent customer traits.
        funds: latent fund traits.
        consumption: the graph with the merchants' latent price levels.
        ctr, p, mu, sigma, etv: true pair quantities, float64 (N, K); p = CTCVR, etv = p (e^{mu+sigma^2/2} - 1).
        eligible: bool (N, K): fund risk level <= customer risk tolerance.
        cvr_shift: the calibrated conversion-given-click logit intercept.
    """

    config: SimulatorConfig
    dataset: Dataset
    customers: CustomerLatents
    funds: FundLatents
    events: Events
    consumption: Consumption
    ctr: np.ndarray
    p: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    etv: np.ndarray
    eligible: np.ndarray
    cvr_shift: float


class _Period(NamedTuple):
    """One delivery period's logged exposures, arrays of shape (N,) in customer order."""

    fund: np.ndarray
    propensity: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    amount: np.ndarray


class _Steps:
    """Progress display over the pipeline's steps (a no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Steps:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextlib.contextmanager
    def step(self, name: str, total: int = 1) -> Iterator[Callable[[], None]]:
        prog = self._progress
        if prog is None:
            yield lambda: None
            return
        task = prog.add_task(name, total=total)
        yield lambda: prog.advance(task)
        prog.update(task, completed=total)


@dataclass(frozen=True)
class _Block:
    """One block of a blocked world (``world.block_customers``): customers ``start .. start + n`` drawn from
    their own streams (``seed``), the funds, the merchants and the outcome streams of the world's seed, and
    the conversion calibration and the policy's fund popularity of block 0 (None while block 0 is made)."""

    index: int
    start: int
    seed: int
    shift: float | None
    popularity: np.ndarray | None


def block_seed(seed: int, block: int) -> int:
    """Seed of the customer streams of block ``block`` of a blocked world of seed ``seed``."""
    return int(step_rng(seed, STEP_BLOCKS, block).integers(0, 2**62))


def generate_world(config: SimulatorConfig, progress: bool = False) -> World:
    """Generate the full world of ``config`` (deterministic for its seed).

    Memory is dominated by a few (N, K) float64 matrices and the event table: the peak of generating and
    writing 1M x 8 is about 2.7 GB (benchmarks/RESULTS.md). A blocked world (``world.block_customers``) has
    no single :class:`World`: :func:`generate_blocks` yields its datasets block by block.
    """
    if config.world.block_customers is not None:
        raise ConfigError(
            "world.block_customers is set: a blocked world is generated block by block (eoca simulate writes it, "
            "one part per block with --parts); the in-memory world of eoca run and eoca budget needs it unset"
        )
    return _generate(config, progress, None)


def generate_blocks(config: SimulatorConfig, progress: bool = False) -> Iterator[Dataset]:
    """The datasets of the blocks of a blocked world, in customer order; each holds every table for its
    customers (global customer ids ``start .. start + n - 1``) and the whole funds table.

    Block b draws its customers, behaviour, graph edges, pair noise and policy draws from the streams of
    :func:`block_seed` (seed, b); funds and merchants come from the world's seed, outcome draws are keyed by
    the global customer position (so a simulated A/B test of the whole world uses the same streams), and the
    conversion intercept and the exploring policy's fund popularity are those of block 0. Memory is one
    block's, whatever N is.
    """
    cfg = config
    n = cfg.world.n_customers
    size = cfg.world.block_customers or n
    shift: float | None = None
    popularity: np.ndarray | None = None
    for b, start in enumerate(range(0, n, size)):
        m = min(size, n - start)
        blk = _Block(b, start, block_seed(cfg.seed, b), shift, popularity)
        world = _generate(
            cfg.model_copy(update={"world": cfg.world.model_copy(update={"n_customers": m})}), progress, blk
        )
        if b == 0:
            shift = world.cvr_shift
            popularity = _popularity(world.events.fund, cfg.world.n_funds)
        yield world.dataset


def _popularity(event_fund: np.ndarray, k: int) -> np.ndarray:
    """Standardised log event volume per fund (k,), the exploring policy's popularity signal."""
    volume = np.log1p(np.bincount(event_fund, minlength=k).astype(np.float64))
    return (volume - volume.mean()) / volume.std() if volume.std() > 0 else np.zeros(k)


def _generate(cfg: SimulatorConfig, progress: bool, blk: _Block | None) -> World:
    """One world, or one block of a blocked world (``cfg`` then has the block's customer count)."""
    n, k = cfg.world.n_customers, cfg.world.n_funds
    type_names = [t.name for t in cfg.funds.fund_types]
    n_types = len(type_names)
    # the customer streams: the world's seed, or the block's own
    ccfg = cfg if blk is None else cfg.model_copy(update={"seed": blk.seed})
    offset = 0 if blk is None else blk.start
    with _Steps(progress) as steps:
        with steps.step("customers and funds"):
            cust, cust_cols = generate_customers(ccfg)
            funds, fund_cols = generate_funds(cfg)
            tolerance = cust_cols["risk_tolerance"]
            risk = fund_cols["risk_level"]
            eligible = eligible_mask(tolerance, risk)
            pref_pair = cust.preference[:, funds.type_index]
            rng = step_rng(ccfg.seed, STEP_PAIRS)
            base = PairLatents(
                preference=pref_pair,
                history=np.zeros((n, k)),
                risk_gap=np.maximum(0.0, risk[None, :] - (3.0 + cust.risk_appetite[:, None])),
                engagement=cust.engagement,
                z_capital=cust.z_capital,
                ticket_style=cust.ticket_style,
                dispersion=cust.dispersion,
                fund_appeal=funds.appeal,
                fund_amount=funds.amount_effect,
                fund_risk=funds.centred_risk,
                pair_noise=rng.standard_normal((n, k)),
            )
            mu, sigma = amount_parameters(base, cfg)
        with steps.step("behaviour events", chunk_count(n, k)) as tick:
            events = generate_events(ccfg, pref_pair, eligible, cust.engagement, funds.appeal, mu, sigma, tick)
        with steps.step("consumption graph", chunk_count(n, 16)) as tick:
            graph = generate_consumption(ccfg, cust.z_capital, tick, merchant_seed=cfg.seed)
        with steps.step("conversion model"):
            ev_type_pos = events.customer * n_types + funds.type_index[events.fund]
            purchases = events.event_type == EVENT_TYPES.index("purchase")
            bought = np.bincount(ev_type_pos[purchases], minlength=n * n_types).reshape(n, n_types)
            history = np.log1p(bought[:, funds.type_index].astype(np.float64))
            lat = PairLatents(**{**base.__dict__, "history": history})
            ctr_logit, cvr_logit = click_and_conversion_logits(lat, cfg)
            ctr = expit(ctr_logit)
            m = min(n, _CALIBRATION_CUSTOMERS)
            if blk is not None and blk.shift is not None:
                shift = blk.shift
            else:
                target = cfg.conversion.target_per_mille / 1000.0
                shift = calibrate_cvr_shift(ctr[:m], cvr_logit[:m], eligible[:m], target)
            p = ctr * expit(cvr_logit + shift)
            etv = expected_value(p, mu, sigma)
        with steps.step("logged exposures", cfg.world.n_periods) as tick:
            used = np.bincount(ev_type_pos, minlength=n * n_types).reshape(n, n_types)
            favourite = np.where(used.sum(axis=1) > 0, np.argmax(used, axis=1), cust_cols["stated_preference"])
            pop_z = blk.popularity if blk is not None and blk.popularity is not None else _popularity(events.fund, k)
            probs = policy_probabilities(cfg.policy, favourite, funds.type_index, pop_z, risk, tolerance)
            exposures: list[_Period] = []
            rows = np.arange(n)
            for t in range(cfg.world.n_periods):
                fund, prop = draw_deliveries(probs, step_rng(ccfg.seed, STEP_POLICY, t))
                out = draw_outcomes(
                    p[rows, fund],
                    mu[rows, fund],
                    sigma[rows, fund],
                    rows + offset,
                    fund,
                    period_stream(cfg.seed, t),
                    ctr=ctr[rows, fund],
                )
                assert out.clicked is not None
                exposures.append(_Period(fund, prop, out.clicked, out.converted, out.amount))
                tick()
        with steps.step("tables and validation"):
            ds = _assemble(cfg, cust_cols, fund_cols, type_names, events, graph, exposures, p, mu, sigma, etv, offset)
            ds.validate()
    return World(
        config=cfg,
        dataset=ds,
        customers=cust,
        funds=funds,
        events=events,
        consumption=graph,
        ctr=ctr,
        p=p,
        mu=mu,
        sigma=sigma,
        etv=etv,
        eligible=eligible,
        cvr_shift=shift,
    )


def simulate(config: SimulatorConfig, progress: bool = False) -> Dataset:
    """Generate the world of ``config`` and return its validated dataset (truth table included)."""
    return generate_world(config, progress).dataset


_CUSTOMER_FEATURES: tuple[tuple[str, FeatureType, str], ...] = (
    ("age", "numeric", "age in years (older customers tend to hold more capital and take less risk)"),
    ("city_tier", "categorical", "1 = largest cities .. 4; wealthier customers live in tier 1 more often"),
    ("income_band", "categorical", "income decile 0..9, a noisy view of capital"),
    ("log_holdings", "numeric", "log(1 + holdings on the platform); 0 for customers holding nothing yet"),
    ("tenure_months", "numeric", "months since the account was opened"),
    ("sessions_30d", "numeric", "app sessions in the last 30 days (engagement)"),
    ("stated_preference", "categorical", "fund type named as favourite in the onboarding questionnaire"),
)
_FUND_FEATURES: tuple[tuple[str, FeatureType, str], ...] = (
    ("fund_type", "categorical", "fund type"),
    ("annual_return", "numeric", "trailing annual return, %"),
    ("volatility", "numeric", "annualised volatility, %"),
    ("management_fee", "numeric", "yearly management fee, %"),
    ("fund_age_years", "numeric", "years since launch"),
)


def _assemble(
    cfg: SimulatorConfig,
    cust_cols: dict[str, np.ndarray],
    fund_cols: dict[str, np.ndarray],
    type_names: list[str],
    events: Events,
    graph: Consumption,
    exposures: Sequence[_Period],
    p: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    etv: np.ndarray,
    offset: int = 0,
) -> Dataset:
    """The dataset of one world (or one block: customer ids start at ``offset``, the spec describes the block)."""
    n, k = p.shape
    ids = np.arange(offset, offset + n, dtype=np.int64)
    names = pa.array(type_names, type=pa.string())
    customers = pa.table(
        {
            "customer_id": pa.array(ids),
            "risk_tolerance": cust_cols["risk_tolerance"],
            **{
                f: (names.take(pa.array(cust_cols[f])) if f == "stated_preference" else cust_cols[f])
                for f, _, _ in _CUSTOMER_FEATURES
            },
        }
    )
    funds = pa.table(
        {
            "fund_id": pa.array(np.arange(k, dtype=np.int64)),
            "risk_level": fund_cols["risk_level"],
            **{
                f: (names.take(pa.array(fund_cols[f])) if f == "fund_type" else fund_cols[f])
                for f, _, _ in _FUND_FEATURES
            },
        }
    )
    periods = len(exposures)
    exp_tab = pa.table(
        {
            "customer_id": np.tile(ids, periods),
            "fund_id": np.concatenate([e.fund for e in exposures]).astype(np.int64),
            "time": np.repeat(np.arange(periods, dtype=np.int64), n),
            "clicked": np.concatenate([e.clicked for e in exposures]),
            "converted": np.concatenate([e.converted for e in exposures]),
            "amount": np.concatenate([e.amount for e in exposures]),
            "propensity": np.concatenate([e.propensity for e in exposures]),
        }
    )
    ev_tab = pa.table(
        {
            "customer_id": events.customer + offset,
            "fund_id": events.fund,
            "time": events.time,
            "event_type": pa.array(list(EVENT_TYPES), type=pa.string()).take(pa.array(events.event_type)),
            "amount": events.amount,
        }
    )
    cons_tab = pa.table(
        {
            "customer_id": graph.customer + offset,
            "merchant_id": graph.merchant,
            "payment_count": graph.payment_count,
            "payment_total": graph.payment_total,
        }
    )
    truth = pa.table(
        {
            "customer_id": np.repeat(ids, k),
            "fund_id": np.tile(np.arange(k, dtype=np.int64), n),
            "p": p.ravel(),
            "mu": mu.ravel(),
            "sigma": sigma.ravel(),
            "etv": etv.ravel(),
        }
    )
    return Dataset(
        spec=dataset_spec(cfg, n, k, periods),
        customers=customers,
        funds=funds,
        exposures=exp_tab,
        events=ev_tab,
        consumption=cons_tab,
        truth=truth,
    )


def dataset_spec(cfg: SimulatorConfig, n: int, k: int, periods: int, folders: bool = False) -> DatasetSpec:
    """``dataset.yaml`` of a simulated world of n customers; ``folders``: every table but funds is a folder of
    part files (a partitioned world, read back as one table by :meth:`eoca.data.Dataset.load`)."""

    def file(name: str) -> str:
        return name if folders and name != "funds" else f"{name}.parquet"

    return DatasetSpec(
        name=cfg.name,
        description=(
            f"eoca simulated fund platform: {n:,} customers, {k} funds, {periods} delivery periods "
            f"(the last is the test period), seed {cfg.seed}"
        ),
        risk_levels=(1, 5),
        customers=TableSpec(
            file=file("customers"),
            features=[FeatureSpec(name=f, type=t, description=d) for f, t, d in _CUSTOMER_FEATURES],
        ),
        funds=TableSpec(
            file=file("funds"),
            features=[FeatureSpec(name=f, type=t, description=d) for f, t, d in _FUND_FEATURES],
        ),
        exposures=TableSpec(file=file("exposures")),
        events=TableSpec(file=file("events")),
        consumption=TableSpec(file=file("consumption")),
        truth=TableSpec(file=file("truth")),
        split=SplitSpec(test_start=periods - 1, validation_fraction=0.1, seed=cfg.seed),
        sequence_length=cfg.sequence_length,
        propensity="logged",
        notes={
            "generator": "eoca simulate (docs/simulator.md)",
            "truth": "oracle only: true p (CTCVR), mu, sigma of log(amount + 1), etv = p * (exp(mu + sigma^2/2) - 1)",
            "simulator_config": config_yaml(cfg),
        },
    )


# --- oracle accessors ----------------------------------------------------------------------------------------


class TruthArrays(NamedTuple):
    """True pair quantities in dataset order: float64 arrays of shape (N, K), row i = customers row i,
    column j = funds row j."""

    p: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    etv: np.ndarray


def truth_arrays(dataset: Dataset) -> TruthArrays:
    """The truth table of ``dataset`` as (N, K) matrices aligned with its customers and funds tables.

    Raises:
        DataValidationError: the dataset has no truth table (only simulated data have one) or it does not
            cover every pair exactly once.
    """
    tr = dataset.truth
    if tr is None:
        raise DataValidationError(
            f"dataset '{dataset.spec.name}' has no truth table; only simulated datasets carry the oracle"
        )
    n, k = dataset.n_customers, dataset.n_funds
    rows = dataset.customer_index(tr.column("customer_id"))
    cols = dataset.fund_index(tr.column("fund_id"))
    flat = rows * k + cols
    if tr.num_rows != n * k or np.bincount(flat, minlength=n * k).max(initial=0) != 1:
        raise DataValidationError("table 'truth' must hold every (customer, fund) pair exactly once")
    out = []
    for name in ("p", "mu", "sigma", "etv"):
        vals = np.asarray(tr.column(name).to_numpy(), dtype=np.float64)
        mat = np.empty(n * k, dtype=np.float64)
        mat[flat] = vals
        out.append(mat.reshape(n, k))
    return TruthArrays(*out)


def recorded_seed(dataset: Dataset) -> int:
    """The seed a simulated dataset was generated with, from the configuration ``eoca simulate`` records in
    its spec (``notes.simulator_config``); the delivery period's outcome streams derive from it.

    Raises:
        ConfigError: the dataset carries no such record.
    """
    from eoca.config import parse_yaml

    recorded = (dataset.spec.notes or {}).get("simulator_config")
    if isinstance(recorded, str):
        seed = parse_yaml(recorded, f"dataset '{dataset.spec.name}' notes.simulator_config").get("seed")
        if isinstance(seed, int):
            return seed
    raise ConfigError(
        f"dataset '{dataset.spec.name}' has a truth table but no record of its simulator seed "
        "(notes.simulator_config in dataset.yaml), so the delivery period's outcome stream is unknown"
    )


OutcomeDraw = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def outcome_draw(truth: TruthArrays | Dataset, stream: int) -> OutcomeDraw:
    """An outcome source for :func:`eoca.evaluation.online.simulate_ab_test`: ``draw(customer_pos, fund_pos)
    -> (converted, amount)`` from the true parameters, with common random numbers on ``stream``.

    ``customer_pos`` / ``fund_pos`` are int arrays of shape (m,) indexing the truth matrices' rows / columns.
    """
    ta = truth_arrays(truth) if isinstance(truth, Dataset) else truth

    def draw(customer_pos: np.ndarray, fund_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(customer_pos, dtype=np.int64)
        f = np.asarray(fund_pos, dtype=np.int64)
        out = draw_outcomes(ta.p[c, f], ta.mu[c, f], ta.sigma[c, f], c, f, stream)
        return out.converted, out.amount

    return draw
