"""Model selection by decision value: the off-policy value of the argmax-ETV policy on a labelled split.

The product gives each customer the eligible fund with the highest predicted ETV, so the number that matters
when choosing between epochs, grid points or models is how much that choice would earn, not the validation
loss. Where the exposures carry the logging policy's propensities (the simulator's and Hillstrom's do), that
value is estimated without a simulator by self-normalised inverse propensity weighting (SNIPS, see
:mod:`eoca.evaluation.ope`): a logged exposure whose fund is the one the model would have chosen stands in for
``1 / propensity`` exposures like it, and

``V = sum_i w_i amount_i / sum_i w_i``,  ``w_i = 1[argmax_f ETV(c_i, f) = f_i] / propensity_i``,

the expected amount per exposure under the model's policy. The model's ETV passes through the ETV guard with
its recalibration fitted on the same split (as it is after training), so the policy scored is the deployed
one. With few conversions in the split the estimate is noisy; it is unbiased for the quantity that matters.

When it is used. The estimate rests on the validation conversions whose logged fund is the model's choice,
about ``conversions x mean propensity`` of them. Measured on the default simulated world (97 validation
conversions over 8 funds, so about 12 matched) early stopping on it was no better than on the loss (3 seeds,
docs/models.md), and on Hillstrom (about 14 matched) it lowered ESMM's policy values; so ``selection: auto``
uses it only when at least :data:`MIN_MATCHED_CONVERSIONS` matched conversions are expected, the validation
loss when propensities exist but fewer conversions match, and ``etv_mse`` (below) without propensities.
``selection: ips`` forces the decision value.

Without propensities (imported customer-value data, a single item) there is no choice to value; selection then
scores the deployed ETV itself on the validation split (:func:`etv_selection_score`): ``etv_mse``, its
(sampling-weighted) mean squared error against the realised amount, or ``gini``, its normalised Gini. Neither
can be won by a model whose amounts explode: a validation *loss* can (a lognormal head that widens sigma to the
ceiling lowers the likelihood loss of a few large amounts while its ETV, ``exp(mu + sigma^2 / 2)``, runs to
hundreds of thousands), whereas the ETV's squared error grows with every exploded prediction.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np

from eoca.data import Dataset
from eoca.data.dataset import split_exposures
from eoca.evaluation.metrics import argmax_fund, mse, normalized_gini
from eoca.models.guard import EtvGuard
from eoca.risk import eligible_mask

if TYPE_CHECKING:
    from eoca.training.trainer import TrainedModel

Selection = Literal["auto", "loss", "ips", "etv_mse", "gini"]
SELECTIONS: tuple[str, ...] = ("auto", "loss", "ips", "etv_mse", "gini")
MIN_MATCHED_CONVERSIONS = 100
"""Expected validation conversions on the policy's own funds (conversions x mean propensity) from which
``selection: auto`` trusts the decision value: its relative standard error is then roughly 1/sqrt(100) = 10%
on the conversion count, before the spread of the amounts."""


def has_propensities(dataset: Dataset, split: str = "valid", min_matched: float = 1.0) -> bool:
    """True when ``split`` has logged exposures with a usable propensity column and at least ``min_matched``
    expected matched conversions (conversions x mean propensity; by default: any conversion at all)."""
    exp = dataset.exposures
    if "propensity" not in exp.column_names:
        return False
    mask = dataset.split_mask(split)
    if not mask.any():
        return False
    prop = np.asarray(exp.column("propensity").to_numpy(zero_copy_only=False), dtype=np.float64)[mask]
    converted = np.asarray(exp.column("converted").to_numpy(zero_copy_only=False), dtype=np.float64)[mask]
    usable = bool(np.all((prop > 0) & (prop <= 1)) and converted.sum() > 0)
    return usable and float(converted.sum() * prop.mean()) >= min_matched


def resolve_selection(selection: str, dataset: Dataset) -> str:
    """``auto`` -> ``ips`` when the validation split has propensities and at least
    :data:`MIN_MATCHED_CONVERSIONS` expected matched conversions, ``loss`` when it has propensities but fewer,
    else ``etv_mse``."""
    if selection == "auto":
        if has_propensities(dataset, "valid", MIN_MATCHED_CONVERSIONS):
            return "ips"
        return "loss" if has_propensities(dataset) else "etv_mse"
    return selection


def etv_selection_score(
    trained: TrainedModel, dataset: Dataset, metric: str, split: str = "valid", *, final: bool = False
) -> float:
    """Lower is better: the (sampling-weighted) MSE of the deployed ETV against ``split``'s realised amounts
    (``metric="etv_mse"``) or minus its normalised Gini (``"gini"``; +inf when undefined). The ETV is the
    guarded one, with the guard's recalibration fitted on ``split`` as it is after training (this sets
    ``trained.guard``). Early stopping calls it after every epoch with ``final`` False: what a model chooses on
    the split after training (``stack``'s blend weight) is left as it is (see ``TrainedModel.fit_guard``)."""
    labels = split_exposures(dataset, split)
    if labels["amount"].size == 0:
        return math.inf
    trained.fit_guard(dataset, split, final=final)
    pairs = labels["customer_pos"], labels["fund_pos"]
    etv = trained.predict_pairs(dataset, *pairs, trained.config.eval_batch_size)["etv"].astype(np.float64)
    weight = labels.get("weight")
    if metric == "etv_mse":
        return mse(labels["amount"], etv, weight)
    if metric == "gini":
        g = normalized_gini(labels["amount"], etv, weight)
        return -g if math.isfinite(g) else math.inf
    raise ValueError(f"unknown ETV selection metric {metric!r}; use etv_mse or gini")


def argmax_policy_value(trained: TrainedModel, dataset: Dataset, split: str = "valid") -> float:
    """SNIPS estimate of the expected amount per exposure when each of ``split``'s logged exposures gets its
    customer's argmax-ETV eligible fund (see the module docstring); NaN when no logged fund matches."""
    exp = dataset.exposures
    mask = dataset.split_mask(split)
    rows = np.flatnonzero(mask)
    cust = dataset.customer_index(exp.column("customer_id"))[rows]
    fund = dataset.fund_index(exp.column("fund_id"))[rows]
    prop = np.asarray(exp.column("propensity").to_numpy(zero_copy_only=False), dtype=np.float64)[rows]
    converted = np.asarray(exp.column("converted").to_numpy(zero_copy_only=False), dtype=np.float64)[rows]
    amount = np.asarray(exp.column("amount").to_numpy(zero_copy_only=False), dtype=np.float64)[rows]
    k = dataset.n_funds
    units, row_unit = np.unique(cust, return_inverse=True)
    raw = trained.predict_pairs(
        dataset,
        np.repeat(units, k),
        np.tile(np.arange(k, dtype=np.int64), units.size),
        trained.config.eval_batch_size,
        guarded=False,
    )
    fund_ids = [str(f) for f in dataset.funds.column("fund_id").to_pylist()]
    formula = trained.model.formula
    logged = row_unit * k + fund
    guard = EtvGuard.from_label_stats(trained.features.label_stats).fit_recalibration(
        {name: v[logged] for name, v in raw.items()}, fund, converted, amount, fund_ids, formula, split
    )
    etv = guard.apply(raw, np.tile(np.arange(k), units.size), fund_ids, formula)["etv"].reshape(units.size, k)
    tol = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[units]
    risk = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    return snips_argmax_value(etv, eligible_mask(tol, risk), row_unit, fund, prop, amount)


def snips_argmax_value(
    scores: np.ndarray,
    eligible: np.ndarray | None,
    row_unit: np.ndarray,
    logged_fund: np.ndarray,
    propensity: np.ndarray,
    reward: np.ndarray,
) -> float:
    """SNIPS value of "each customer gets its highest-scoring eligible fund" on a randomized log.

    Args:
        scores: ``[U, k]`` predicted values of each customer unit; eligible: ``[U, k]`` bool mask or None.
        row_unit: ``[n]`` unit of each logged row; logged_fund, propensity, reward: ``[n]``.

    Returns the weighted mean reward of the rows whose logged fund is the policy's choice (NaN if none).
    """
    choice = argmax_fund(scores, eligible)[np.asarray(row_unit, dtype=np.int64)]
    w = (choice == np.asarray(logged_fund)) / np.asarray(propensity, dtype=np.float64)
    total = float(w.sum())
    return float((w * np.asarray(reward, dtype=np.float64)).sum() / total) if total > 0 else float("nan")
