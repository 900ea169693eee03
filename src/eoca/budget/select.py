"""Choosing the campaign's policy by cross-fitted validation on the training customers only.

A budget run offers several candidate policies for the same budget:

* ``<model>``: the exact solver on the model's predictions;
* ``<model>:only_<arm>``: one incentive arm, to the customers with that arm's largest predicted uplift;
* ``untargeted:<arm>``: the incentive arm with the highest mean logged value *in the training customers*, sent
  to random customers at the budget (probabilities: each customer gets it with the same probability).

Random targeting (each customer treated with the same probability, arm uniform over the incentives) is the
reference every candidate is measured against; it is not itself a candidate, since the untargeted best arm
differs from it only by sending the arm whose average effect was estimated to be the largest.

:func:`select_policy` scores every candidate on the training customers alone: they are split in ``folds``
folds, each fold's candidates come from models trained on the other folds (so no customer is scored by a model
that saw them), and the paired doubly robust difference to random targeting over all training customers gives
the candidate's validation gain and its standard error (the mean and standard error of the per-customer terms
Gamma_i(candidate) - Gamma_i(random), see :mod:`eoca.budget.offpolicy`). Two rules pick the winner:

* ``lower_bound`` (default): the largest lower confidence bound, gain - z se, the bounds holding *simultaneously*
  for all m candidates with probability 95% (Bonferroni: z = Phi^-1(1 - 0.05 / m), 2.58 for 10 candidates).
  This is the pessimism principle of offline policy learning (Thomas et al. 2015, high-confidence policy
  improvement; Jin et al. 2021): between a policy whose gain the data can show and one whose larger estimated
  gain is within its noise, prefer the first. The bounds must hold jointly because the rule takes the largest
  of m noisy estimates: with each candidate's own 95% bound (z = 1.645) the luckiest of many noisy targeted
  candidates wins often (the winner's curse), which Hillstrom showed (docs/budget.md). A targeted policy
  differs from random targeting on every customer, an untargeted one only in which incentive the treated get,
  so on noisy data (few buyers, heavy-tailed spend) the bound favours the untargeted best arm; with a real
  targeting signal it favours the models.
* ``value``: the largest estimated gain.

The evaluation customers are never seen by the choice: :func:`crossfit_selected` repeats it inside each
cross-fitting fold, on that fold's training customers, and applies the chosen candidate to the fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from eoca.budget.data import IncentiveData
from eoca.budget.evaluate import allocate, random_policy, single_arm_policy
from eoca.budget.models import Prediction
from eoca.budget.offpolicy import dr_terms, policy_matrix
from eoca.errors import DataValidationError

__all__ = [
    "DEFAULT_SELECTION",
    "SELECTION_RULES",
    "CandidateScore",
    "Selection",
    "apply_selection",
    "candidate_policies",
    "crossfit_selected",
    "logged_means",
    "select_policy",
    "simultaneous_z",
    "untargeted_arm",
]

SELECTION_RULES = ("lower_bound", "value")
#: the rule `eoca budget` and `eoca run`'s budget section use unless told otherwise
DEFAULT_SELECTION = "lower_bound"
CONFIDENCE = 0.95

Fitter = Callable[[str, IncentiveData, int], Any]


def logged_means(data: IncentiveData, what: np.ndarray) -> np.ndarray:
    """Mean of ``what`` (n,) per logged arm, float64 (k,); an arm nobody got has NaN."""
    return np.array([what[data.arm == t].mean() if (data.arm == t).any() else np.nan for t in range(data.n_arms)])


def untargeted_arm(train: IncentiveData) -> int:
    """The incentive arm (1..k-1) with the highest mean logged value among ``train``'s customers."""
    means = logged_means(train, train.value)[1:]
    if not np.isfinite(means).any():
        raise DataValidationError(f"data '{train.name}': no customer got an incentive arm; nothing to choose from")
    return 1 + int(np.nanargmax(means))


def _expected_cost(act: IncentiveData, rates: np.ndarray) -> np.ndarray:
    return act.cost_matrix(np.broadcast_to(np.nan_to_num(rates), (act.n, act.n_arms)))


def candidate_policies(
    act: IncentiveData,
    preds: Mapping[str, Prediction],
    budget: float,
    best_arm: int,
    conversion_rates: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every candidate policy (probabilities, float64 (n, k)) and random targeting (``"random"``) for the
    customers ``act`` at ``budget``.

    Args:
        preds: model name -> predictions (n, k) for ``act``'s customers by models that did not see them.
        best_arm: the untargeted candidate's arm (the selection takes it from the training customers with
            :func:`untargeted_arm`).
        conversion_rates: (k,) conversion rate per arm (the selection's: among the training customers); the
            expected costs of the random and untargeted policies use them (exact for fixed costs).
    """
    n, k = act.n, act.n_arms
    out: dict[str, np.ndarray] = {}
    for name, pred in preds.items():
        out[name] = policy_matrix(allocate(pred, act, budget).arm, n, k, name)
        for t in range(1, k):
            label = f"{name}:only_{act.arms[t].name}"
            out[label] = policy_matrix(single_arm_policy(pred, act, budget, t), n, k, label)
    exp_cost = _expected_cost(act, conversion_rates)
    base = float(exp_cost[:, 0].sum())
    extra = float(exp_cost[:, best_arm].sum()) - base
    share = 1.0 if extra <= 0 else float(np.clip((budget - base) / extra, 0.0, 1.0))
    untargeted = np.zeros((n, k))
    untargeted[:, 0], untargeted[:, best_arm] = 1.0 - share, share
    out[f"untargeted:{act.arms[best_arm].name}"] = untargeted
    out["random"] = random_policy(act, budget, exp_cost)
    return out


def simultaneous_z(m: int, confidence: float = CONFIDENCE) -> float:
    """The z of one-sided lower bounds that hold jointly for ``m`` estimates with probability ``confidence``
    (Bonferroni)."""
    if m < 1:
        raise DataValidationError(f"simultaneous bounds need at least one estimate, got {m}")
    return float(stats.norm.ppf(1.0 - (1.0 - confidence) / m))


@dataclass(frozen=True)
class CandidateScore:
    """A candidate's cross-fitted validation gain over random targeting (DR, value per customer), its standard
    error and its lower bound gain - z se (z: :func:`simultaneous_z` over all candidates)."""

    policy: str
    gain: float
    se: float
    z: float

    @property
    def lower_bound(self) -> float:
        return self.gain - self.z * self.se

    def to_row(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "validation_gain": self.gain,
            "validation_se": self.se,
            "validation_lower_bound": self.lower_bound,
            "z": self.z,
        }


@dataclass(frozen=True)
class Selection:
    """The candidate chosen by ``rule`` on ``n_train`` training customers; ``scores`` of every candidate."""

    chosen: str
    rule: str
    n_train: int
    folds: int
    scores: tuple[CandidateScore, ...]

    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {**s.to_row(), "rule": self.rule, "chosen": s.policy == self.chosen, "train_customers": self.n_train}
            for s in self.scores
        ]


def _check(rule: str, folds: int, models: Sequence[str]) -> None:
    if rule not in SELECTION_RULES:
        raise DataValidationError(f"selection rule {rule!r} is not one of {SELECTION_RULES}")
    if folds < 2:
        raise DataValidationError(f"validation needs at least 2 folds, got {folds}")
    if not models:
        raise DataValidationError("policy selection needs at least one model")


def select_policy(
    train: IncentiveData,
    models: Sequence[str],
    fraction: float,
    fit: Fitter,
    *,
    rule: str = "lower_bound",
    folds: int = 2,
    seed: int = 0,
) -> Selection:
    """Choose among the candidates (module docstring) at ``fraction`` of the treat-everyone cost, using
    ``train``'s customers only.

    Args:
        train: the training customers (a randomized log).
        models: model names; each is fitted ``folds`` times by ``fit(name, data, seed)``, which returns an
            object with ``predict(features) -> Prediction``.
        fraction: the budget as a share of the treat-everyone cost (each fold's budget is that share of its own).
        rule: ``lower_bound`` or ``value``.

    The doubly robust terms use the first model's cross-fitted values as the outcome model.
    """
    _check(rule, folds, models)
    if not (math.isfinite(fraction) and fraction >= 0):
        raise DataValidationError(f"budget fraction must be a number >= 0, got {fraction!r}")
    fold = np.random.default_rng(seed).permutation(train.n) % folds
    rates = logged_means(train, train.converted)
    best_arm = untargeted_arm(train)
    diff_terms: dict[str, np.ndarray] = {}
    for f in range(folds):
        held = fold == f
        fit_on, act = train.subset(~held), train.subset(held)
        preds = {m: fit(m, fit_on, seed).predict(act.features) for m in models}
        for m, pr in preds.items():
            bad = ~(np.isfinite(pr.value).all(axis=1) & np.isfinite(pr.p).all(axis=1))
            if bad.any():
                raise DataValidationError(
                    f"model '{m}' predicted non-finite values for {int(bad.sum()):,} validation customers, first "
                    f"customer {act.customer_id[int(np.argmax(bad))]}; the policy selection cannot score it"
                )
        pols = candidate_policies(act, preds, fraction * act.treat_all_cost(), best_arm, rates)
        mu = preds[models[0]].value
        ref = dr_terms(act.arm, act.propensity, act.value, pols.pop("random"), mu)
        for name, probs in pols.items():
            d = dr_terms(act.arm, act.propensity, act.value, probs, mu) - ref
            diff_terms.setdefault(name, np.empty(train.n))[held] = d
    z = simultaneous_z(len(diff_terms))
    scores = tuple(
        CandidateScore(name, float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), z)
        for name, d in diff_terms.items()
    )
    key: Callable[[CandidateScore], float] = (lambda s: s.lower_bound) if rule == "lower_bound" else (lambda s: s.gain)
    chosen = max(scores, key=key).policy
    return Selection(chosen=chosen, rule=rule, n_train=train.n, folds=folds, scores=scores)


def apply_selection(
    chosen: str,
    train: IncentiveData,
    act: IncentiveData,
    fraction: float,
    fit: Fitter,
    act_preds: Mapping[str, Prediction] | None = None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """The candidate ``chosen`` (a name from :func:`select_policy`) as probabilities float64 (n, k) for the
    customers ``act``, at ``fraction`` of their treat-everyone cost; its model (if any) is the one trained on
    ``train``, whose predictions for ``act`` may be passed in ``act_preds`` to save a refit."""
    model = chosen.split(":")[0]
    use: dict[str, Prediction] = {}
    if not chosen.startswith("untargeted:"):
        if act_preds is not None and model in act_preds:
            use[model] = act_preds[model]
        else:
            use[model] = fit(model, train, seed).predict(act.features)
    pols = candidate_policies(
        act, use, fraction * act.treat_all_cost(), untargeted_arm(train), logged_means(train, train.converted)
    )
    if chosen not in pols:
        raise DataValidationError(f"policy {chosen!r} is not a candidate; candidates: {sorted(pols)}")
    return pols[chosen]


def crossfit_selected(
    data: IncentiveData,
    models: Sequence[str],
    fraction: float,
    fit: Fitter,
    outer_fold: np.ndarray,
    preds: Mapping[str, Prediction] | None = None,
    *,
    rule: str = "lower_bound",
    folds: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, list[Selection]]:
    """The selected policy for every customer of ``data``, probabilities float64 (n, k): in each outer fold the
    candidate chosen by :func:`select_policy` on the other folds' customers, with models trained on them.

    ``preds`` (name -> (n, k) predictions, each customer's by models trained on the other outer folds) saves
    refitting; without it the chosen candidate's model is fitted per fold. Returns the policy and the per-fold
    selections.
    """
    _check(rule, folds, models)
    if outer_fold.shape != (data.n,):
        raise DataValidationError(f"outer_fold has shape {outer_fold.shape}; expected ({data.n},)")
    out = np.empty((data.n, data.n_arms))
    selections = []
    for f in np.unique(outer_fold):
        held = outer_fold == f
        train, act = data.subset(~held), data.subset(held)
        sel = select_policy(train, models, fraction, fit, rule=rule, folds=folds, seed=seed)
        selections.append(sel)
        fold_preds = (
            None if preds is None else {m: Prediction(p=pr.p[held], value=pr.value[held]) for m, pr in preds.items()}
        )
        out[held] = apply_selection(sel.chosen, train, act, fraction, fit, fold_preds, seed=seed)
    return out, selections
