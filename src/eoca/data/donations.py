"""A synthetic, donation-like direct-mail response sample: oversampled responders and missing features.

No public direct-mail donation file with these properties ships inside an installable Python package (the
KDD Cup 1998 data it imitates is a separate download), so this module *generates* one with the shape analysts
meet: one row per mailed donor, ids with leading zeros, blank cells in several features, a 0/1 response, a
donation amount that is blank for non-responders, responders oversampled to half of the file while the
population rate is about 5%, and a heavy-tailed donation capped at 200. It is synthetic and says so wherever it
is used; it exists to exercise eoca's import path (missing values, exact ids, sampling weights) and the ETV
guard end to end.

Population model (per donor): ``n_gifts ~ 1 + Poisson(3)``, ``avg_gift ~ LogNormal(log 12, 0.6)``,
``months_since_last ~ U{1..36}``, ``income ~ U{1..7}``, ``age ~ N(55, 15)`` clipped to [18, 95], region one of
five. Response: ``logit P = b + 0.5 log(n_gifts) - 0.05 months_since_last + 0.15 (income - 4)
+ 0.01 (age - 55)`` with ``b`` chosen for a rate near 5%. Donation given response:
``LogNormal(0.85 log avg_gift + 0.4 + 0.05 income, 0.55)``, rounded to whole units, in [1, 200].
Missing: age 25%, income 22%, region 5%, months_since_last 3% (completely at random). The truth file has the
expected donation from the complete features and from what the file shows (:func:`observable_expected_value`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from eoca.io import atomic_path

COLUMNS = (
    "CONTROLN",
    "AGE",
    "INCOME",
    "NGIFTALL",
    "AVGGIFT",
    "LASTGIFT",
    "MONTHS_SINCE_LAST",
    "REGION",
    "TARGET_B",
    "TARGET_D",
)


FEATURES = {
    "age": ("AGE", "numeric"),
    "income": ("INCOME", "numeric"),
    "n_gifts": ("NGIFTALL", "numeric"),
    "avg_gift": ("AVGGIFT", "numeric"),
    "last_gift": ("LASTGIFT", "numeric"),
    "months_since_last": ("MONTHS_SINCE_LAST", "numeric"),
    "region": ("REGION", "categorical"),
}
"""The sample's feature columns by the name a spec gives them: (column, type)."""


def donation_spec(
    path: str,
    features: list[str],
    *,
    split: str,
    population_rate: float | None = None,
    name: str = "donations-synthetic",
    description: str | None = None,
) -> str:
    """A dataset spec (YAML text) for a file written by :func:`write_donation_sample`.

    ``features`` names keys of :data:`FEATURES`; ``split`` is the YAML flow mapping of the split section;
    ``population_rate``, when given, declares the responders' population rate so that training and metrics are
    weighted to the population (the file oversamples responders).
    """
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown donation features {unknown}; known: {sorted(FEATURES)}")
    lines = [f"name: {name}"]
    if description is not None:
        lines.append(f"description: {description}")
    lines.append(f"split: {split}")
    if population_rate is not None:
        lines.append(f"sampling: {{converted_rate: {population_rate:.4f}}}")
    lines += [
        "customer_value:",
        f"  path: {path}",
        "  customer_id: CONTROLN",
        "  amount: TARGET_D",
        "  converted: TARGET_B",
        "  features:",
    ]
    lines += [f"    - {{name: {f}, column: {FEATURES[f][0]}, type: {FEATURES[f][1]}}}" for f in features]
    return "\n".join(lines) + "\n"


SIGMA = 0.55
"""Spread of log(donation) around its mean given response."""
MAX_DONATION = 200
MISSING_SHARES = {"AGE": 0.25, "INCOME": 0.22, "MONTHS_SINCE_LAST": 0.03, "REGION": 0.05}
"""Share of each column's cells blanked, completely at random."""
INCOMES = np.arange(1, 8)
"""Income bands, drawn uniformly."""
MONTHS = np.arange(1, 37)
"""Months since the last gift, drawn uniformly."""
AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX = 55.0, 15.0, 18, 95
"""Age ~ N(AGE_MEAN, AGE_SD) clipped to [AGE_MIN, AGE_MAX], in whole years."""


def response_probability(n_gifts: np.ndarray, months: np.ndarray, income: np.ndarray, age: np.ndarray) -> np.ndarray:
    """The population's P(response) per donor (arrays broadcast together)."""
    z = 0.5 * np.log(n_gifts) - 0.05 * months + 0.15 * (income - 4) + 0.01 * (age - AGE_MEAN)
    return np.asarray(1.0 / (1.0 + np.exp(-(-2.85 + z))), dtype=np.float64)


def donation_mu(avg_gift: np.ndarray, income: np.ndarray) -> np.ndarray:
    """Mean of log(donation) given response (arrays broadcast together)."""
    return np.asarray(0.85 * np.log(avg_gift) + 0.4 + 0.05 * income, dtype=np.float64)


def _age_prior() -> tuple[np.ndarray, np.ndarray]:
    """The whole-year ages and their population probabilities (the clipped, rounded normal)."""
    from scipy.stats import norm

    ages = np.arange(AGE_MIN, AGE_MAX + 1, dtype=np.float64)
    upper = norm.cdf((ages + 0.5 - AGE_MEAN) / AGE_SD)
    upper[-1] = 1.0
    return ages, np.diff(np.concatenate([[0.0], upper]))


def _candidates(values: np.ndarray, blank: bool, prior: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A feature's possible values per row, shape (rows, k), and their probabilities, shape (1, k): the
    population's values and probabilities where the cell is blank, else the row's own value with probability 1."""
    if blank:
        return np.broadcast_to(prior, (values.size, prior.size)), prob[None, :]
    return values[:, None], np.ones((1, 1))


def observable_expected_value(
    n_gifts: np.ndarray, avg_gift: np.ndarray, months: np.ndarray, income: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """E[donation | the features a file row shows], per row (float64, shape (n,); NaN marks a blank cell of
    ``months``, ``income`` or ``age``): the population model's expected donation averaged over the blank
    features' population distribution. The blanks are completely at random and the features independent, so
    this is the Bayes predictor of the donation from the file, the lowest expected (population-weighted) MSE any
    model trained on it can reach. Region has no effect on the outcome and is left out."""
    n = n_gifts.size
    ages, age_prob = _age_prior()
    out = np.empty(n, dtype=np.float64)
    blank = np.stack([np.isnan(months), np.isnan(income), np.isnan(age)], axis=1)
    patterns, which = np.unique(blank, axis=0, return_inverse=True)
    for k, (m_blank, i_blank, a_blank) in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == k)
        uniform_income = np.full(INCOMES.size, 1.0 / INCOMES.size)
        inc, p_inc = _candidates(income[rows], i_blank, INCOMES.astype(np.float64), uniform_income)
        uniform_months = np.full(MONTHS.size, 1.0 / MONTHS.size)
        mon, p_mon = _candidates(months[rows], m_blank, MONTHS.astype(np.float64), uniform_months)
        ag, p_age = _candidates(age[rows], a_blank, ages, age_prob)
        # E[p x m] with m depending on income only: sum over income of P(income) m(income) E[p | income].
        amount = expected_donation(donation_mu(avg_gift[rows, None], inc).ravel()).reshape(inc.shape)
        p = response_probability(
            n_gifts[rows, None, None, None], mon[:, None, :, None], inc[:, :, None, None], ag[:, None, None, :]
        )
        p_given_income = (p * p_mon[:, None, :, None] * p_age[:, None, None, :]).sum(axis=(2, 3))
        out[rows] = (p_inc * amount * p_given_income).sum(axis=1)
    return out


def expected_donation(mu: np.ndarray) -> np.ndarray:
    """``E[clip(round(exp(N(mu, SIGMA^2))), 1, MAX_DONATION)]`` per row (float64, shape of ``mu``), exactly: the
    sum over the donation values k = 1..MAX_DONATION of k times the normal probability of the log-interval that
    rounds (and clips) to k."""
    from scipy.stats import norm

    k = np.arange(1, MAX_DONATION + 1, dtype=np.float64)
    edges = np.log(np.concatenate([[0.5], k[:-1] + 0.5]))  # lower log-edge of each value; value 1 takes all below
    cdf = norm.cdf((edges[None, :] - mu[:, None]) / SIGMA)
    cdf[:, 0] = 0.0
    prob = np.diff(np.concatenate([cdf, np.ones((mu.size, 1))], axis=1), axis=1)
    return np.asarray(prob @ k, dtype=np.float64)


def write_donation_sample(
    path: str | os.PathLike[str],
    *,
    population: int = 200_000,
    sample_size: int = 10_000,
    seed: int = 0,
    truth_path: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Draw a population, keep every responder up to half of ``sample_size`` and as many non-responders, and
    write the sample as CSV (columns :data:`COLUMNS`, blanks for missing values).

    ``truth_path``: also write, per sample row, the population model's truth (``CONTROLN``, ``p`` = P(response),
    ``etv`` = ``p`` x the expected donation given response, from the complete features before any cell was
    blanked) and ``etv_observed``, the expected donation given only what the file shows
    (:func:`observable_expected_value`). Oracles for benchmarks (``etv``: the best any model could do with
    complete features; ``etv_observed``: with the file's blanks), never a training input.

    Returns:
        ``population_rate`` (the rate to declare as ``sampling.converted_rate``), ``sample_rate``, ``rows``,
        ``max_donation``.
    """
    rng = np.random.default_rng(seed)
    n = population
    n_gifts = 1 + rng.poisson(3.0, n)
    avg_gift = np.round(np.exp(rng.normal(np.log(12.0), 0.6, n)), 2)
    last_gift = np.round(avg_gift * np.exp(rng.normal(0.0, 0.3, n)), 2)
    months = rng.integers(MONTHS[0], MONTHS[-1] + 1, n)
    income = rng.integers(INCOMES[0], INCOMES[-1] + 1, n)
    age = np.clip(rng.normal(AGE_MEAN, AGE_SD, n), AGE_MIN, AGE_MAX).round()
    region = rng.choice(np.array(["N", "S", "E", "W", "C"]), n)
    p = response_probability(n_gifts, months, income, age)
    responded = rng.random(n) < p
    mu = donation_mu(avg_gift, income)
    donation = np.clip(np.round(np.exp(rng.normal(mu, SIGMA))), 1, MAX_DONATION)
    pos = np.flatnonzero(responded)
    neg = np.flatnonzero(~responded)
    half = min(sample_size // 2, pos.size)
    keep = np.concatenate([rng.choice(pos, half, replace=False), rng.choice(neg, sample_size - half, replace=False)])
    keep = keep[rng.permutation(keep.size)]
    m = keep.size

    # Drawn in this order (age, income, months, region) so that a seed keeps giving the same file.
    blanked = {col: rng.random(m) < share for col, share in MISSING_SHARES.items()}
    table = pa.table(
        {
            "CONTROLN": pa.array([f"{i:08d}" for i in keep]),
            "AGE": pa.array(age.astype(np.int64)[keep], mask=blanked["AGE"]),
            "INCOME": pa.array(income[keep], mask=blanked["INCOME"]),
            "NGIFTALL": pa.array(n_gifts[keep]),
            "AVGGIFT": pa.array(avg_gift[keep]),
            "LASTGIFT": pa.array(last_gift[keep]),
            "MONTHS_SINCE_LAST": pa.array(months[keep], mask=blanked["MONTHS_SINCE_LAST"]),
            "REGION": pa.array(region[keep], mask=blanked["REGION"]),
            "TARGET_B": pa.array(responded[keep].astype(np.int64)),
            "TARGET_D": pa.array(donation[keep], mask=~responded[keep]),
        }
    )
    with atomic_path(Path(path)) as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(quoting_style="none"))
    if truth_path is not None:
        truth = pa.table(
            {
                "CONTROLN": table.column("CONTROLN"),
                "p": pa.array(p[keep]),
                "etv": pa.array(p[keep] * expected_donation(mu[keep])),
                "etv_observed": pa.array(
                    observable_expected_value(
                        n_gifts[keep],
                        avg_gift[keep],
                        np.where(blanked["MONTHS_SINCE_LAST"], np.nan, months[keep]),
                        np.where(blanked["INCOME"], np.nan, income[keep]),
                        np.where(blanked["AGE"], np.nan, age[keep]),
                    )
                ),
            }
        )
        with atomic_path(Path(truth_path)) as tmp:
            pacsv.write_csv(truth, tmp)
    return {
        "population_rate": float(responded.mean()),
        "sample_rate": float(responded[keep].mean()),
        "rows": float(m),
        "max_donation": float(donation[keep][responded[keep]].max()),
    }
