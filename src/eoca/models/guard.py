"""The ETV guard: every model's amount and ETV bounded by what the training data support, then recalibrated.

One rule for every model, applied in one place (:meth:`eoca.training.TrainedModel.predict_pairs`), after the
network and before anything downstream (metrics, allocation, reports) sees a prediction:

1. **Bounds** (from the train split's converters, :attr:`FeatureSpace.label_stats`). A lognormal amount head's
   ``mu`` is clipped to ``[min, max]`` of the train converters' ``log1p(amount)`` and its ``sigma`` to
   ``[SIGMA_FLOOR, s]`` where ``s`` is the standard deviation of that same sample: a per-pair spread wider than
   the spread of all converters together is not something the data can support, and ``E[amount]`` grows like
   ``exp(sigma^2 / 2)``. The expected amount ``E[amount | convert]`` is then recomputed with the model's own
   formula and capped at :data:`AMOUNT_CAP_MULTIPLE` times the largest train amount; a model that predicts ETV
   directly (MSE on ``log1p(amount)``) has its ETV capped at that same amount (``p <= 1``).
2. **Recalibration** (on the validation split, :meth:`EtvGuard.fit_recalibration`), in log space, where
   heavy-tailed amounts are estimated efficiently (a ratio of summed amounts over a few dozen lognormal draws
   is dominated by whether the one huge purchase happened to fall in the split). On the validation converters,
   with residuals ``r = log(y) - mu`` in the model's own scale (``log1p`` for EOCA's formula): ``mu`` is shifted
   by the mean residual, plus per fund by the excess of the fund's mean residual over it (weighted
   ``n_f / (n_f + RECALIBRATION_PRIOR)`` for the fund's ``n_f`` converters), and ``sigma`` is
   multiplied by one shared factor that makes the standardised residuals' mean square 1 (the model's sigma,
   whose ``exp(sigma^2 / 2)`` the mean grows with, is re-scaled to the spread actually seen). Every one of these
   corrections is shrunk towards "no change" by positive-part James-Stein, ``c * max(0, 1 - se^2 / c^2)`` with
   ``se`` its standard error (:func:`_shrink`): a correction within one standard error of zero is dropped, one
   several standard errors away is kept almost whole. A model fitted on far more amounts than the validation
   split holds (``gbdt`` learns from every past purchase) is therefore left alone unless the validation
   converters clearly disagree, and a clearly biased head (an inflated sigma) is still corrected. Models with
   a constant amount (``esmm``, ``dnn_c``) expose it as ``mu``/``sigma`` and are recalibrated the same way, so
   their amount becomes per fund where the data show a difference. Models that predict
   ETV directly (MSE on ``log1p(amount)``, or ``gbdt_mean``) get a per-fund scale on ETV: realised over
   predicted amount summed over the fund's validation rows (each row times its sampling weight where the data
   are an oversampled design), shrunk towards the all-funds ratio with a prior weight of
   :data:`RECALIBRATION_PRIOR` converters.

3. **Mean level of the amount** (:meth:`EtvGuard.fit_amount_factor`, on the dataset's past purchases where it has
   behaviour events: every purchase before the held-out periods, scored with the features it had at its own time,
   at most :data:`AMOUNT_FACTOR_MAX_ROWS` of them in a seeded random order). A lognormal head whose sigma cannot see
   a customer's latent dispersion matches the spread of log amounts (step 2) yet under-states their *mean*: the mean
   of ``exp(sigma^2 / 2)`` over customers exceeds ``exp`` of the mean ``sigma^2 / 2`` (Jensen). One factor ``k``,
   the past purchases' summed amount over their summed guarded ``E[amount]``, multiplies every model's expected
   amount; ``log k`` is shrunk by its delta-method standard error as in step 2. Thousands of purchases pin it where
   a validation split's few dozen converters could not. Being one positive scale for every customer and fund, it
   leaves every argmax and every allocation unchanged (the exact allocator's objective is scaled, not reordered)
   except on the few pairs whose scaled amount then meets the cap of step 1 (the cap is kept: it is the explosion
   bound), and corrects the amount's level, e.g. for a budget set against ETV. Past purchases are the data the
   history-learning models (``gbdt``, the ESDPM family) fitted their amounts on, so for them the factor is measured
   in-sample; a model without that data (no behaviour events) keeps ``k = 1``.

   **Per fund** (``amount_level: per_fund`` in the training config; the default ``shared`` is the single factor
   above). A user who needs each fund's amount level right (a forecast of what a fund's campaign brings in), not
   only the decisions, can have step 3 fitted per fund on the same past purchases, in two parts
   (:meth:`EtvGuard.fit_amount_level`): (a) per fund, a log-space shift of ``mu`` and a scale of ``sigma`` (the
   fund's mean residual and the mean square of its standardised residuals, as in step 2 but on thousands of
   purchases instead of the validation split's few dozen converters), and (b) a mean-space correction that grows
   with the pair's spread, ``E[amount] = k (exp(mu + (1 + b) sigma^2 / 2) - offset)``: the Jensen gap of a latent
   dispersion is larger where the spread is larger (``E[exp(sigma^2 / 2)]`` is convex in sigma), so one factor
   for all pairs under-states the high-risk funds and over-states the low-risk ones. ``b`` and ``k`` solve two
   moment equations: realised = predicted summed over the half of the purchases with the smaller sigma, and over the
   other half. Every part is shrunk by its standard error as above. It is not the default because it moves decisions:
   measured on the default world it costs ``gbdt`` decision value (benchmarks/RESULTS.md, issue 9).

The bounds never bind on a calibrated model (they only remove extrapolation), and the recalibration is a per-fund
shift plus one shared scale, so it changes which fund wins for a customer only where a model's amount is biased
differently for different funds (or its sigma is inflated), which is the error it corrects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eoca.models.losses import LOG_ETV_CAP, SIGMA_FLOOR

AMOUNT_CAP_MULTIPLE: float = 1.0
"""``E[amount | convert]`` may not exceed this multiple of the largest amount among the train converters: an
expected value above every amount ever observed has no support in the data."""

AMOUNT_LEVELS: tuple[str, ...] = ("shared", "per_fund")
"""Step 3's forms: one factor for every pair, or per-fund log-space corrections plus a spread-dependent factor."""

JENSEN_B_RANGE: tuple[float, float] = (-0.5, 2.0)
"""Where the spread exponent ``b`` of the per-fund form is searched: ``(1 + b) sigma^2`` stays positive, and at most
triples the variance term (the amount cap of step 1 still bounds every prediction)."""

AMOUNT_FACTOR_MAX_ROWS: int = 200_000
"""Past purchases that :meth:`EtvGuard.fit_amount_factor` is fitted on at most (a seeded random subset beyond it):
at 200,000 purchases the factor's standard error is a few percent even for lognormal amounts with sigma near 2."""

RECALIBRATION_PRIOR: float = 20.0
"""Pseudo-converters of "no difference from the other funds" in each fund's correction (its log-space shift,
or a direct-ETV model's ETV factor)."""

_FORMULA_OFFSET = {"eoca": 1.0, "lognormal": 0.0}
"""``E[amount] = exp(mu + sigma^2 / 2) - offset``: EOCA models ``amount + 1`` as lognormal, ZILN the amount."""


def _shrink(estimate: float, variance: float) -> float:
    """Positive-part James-Stein shrinkage of one estimate towards 0: ``estimate * max(0, 1 - variance /
    estimate^2)``, so an estimate within one standard error of zero is dropped and one many standard errors
    away is kept almost whole."""
    if estimate == 0.0:
        return 0.0
    return estimate * max(0.0, 1.0 - variance / estimate**2)


@dataclass
class EtvGuard:
    """Bounds and recalibration factors of one trained model (see the module docstring).

    Attributes:
        mu_min, mu_max: range of the train converters' ``log1p(amount)``.
        sigma_max: their standard deviation (at least ``SIGMA_FLOOR``).
        amount_cap: ``AMOUNT_CAP_MULTIPLE`` x the largest train amount.
        fund_shift, global_shift: per-fund shift of ``mu`` (funds absent use ``global_shift``).
        sigma_scale: the shared factor on ``sigma``.
        fund_factor, global_factor: per-fund ETV scale of direct-ETV models (1.0 before recalibration).
        recalibration: how the factors were fitted (shown in metrics), e.g. ``"valid split, 97 converters"``.
        amount_factor: the shared mean-space scale of ``E[amount | convert]`` (step 3; 1.0 when not fitted).
        amount_factor_source: how it was fitted (shown in metrics).
        level_shift, level_scale: step 3's per-fund shift of ``mu`` and scale of ``sigma`` (``per_fund`` only;
            funds absent are unchanged).
        jensen_b: step 3's spread exponent ``b`` (``per_fund`` only; 0 otherwise).
    """

    mu_min: float
    mu_max: float
    sigma_max: float
    amount_cap: float
    fund_factor: dict[str, float] = field(default_factory=dict)
    global_factor: float = 1.0
    fund_shift: dict[str, float] = field(default_factory=dict)
    global_shift: float = 0.0
    sigma_scale: float = 1.0
    recalibration: str = "none"
    amount_factor: float = 1.0
    amount_factor_source: str = "none"
    level_shift: dict[str, float] = field(default_factory=dict)
    level_scale: dict[str, float] = field(default_factory=dict)
    jensen_b: float = 0.0

    @classmethod
    def from_label_stats(cls, stats: dict[str, float]) -> EtvGuard:
        """Bounds from :attr:`FeatureSpace.label_stats`; no recalibration yet."""
        max_amount = float(stats.get("max_amount", 0.0))
        if stats.get("n_converters", 0.0) < 1 or max_amount <= 0:
            # No train converter: nothing to bound against; an infinite cap keeps predictions as they are.
            return cls(mu_min=-math.inf, mu_max=math.inf, sigma_max=math.inf, amount_cap=math.inf)
        return cls(
            mu_min=float(stats["log1p_min"]),
            mu_max=float(stats["log1p_max"]),
            sigma_max=max(float(stats["log1p_sigma"]), SIGMA_FLOOR),
            amount_cap=AMOUNT_CAP_MULTIPLE * max_amount,
        )

    # -- serialisation ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values only (infinities as None), so model files stay ``weights_only``-loadable."""

        def enc(x: float) -> float | None:
            return None if math.isinf(x) else x

        return {
            "mu_min": enc(self.mu_min),
            "mu_max": enc(self.mu_max),
            "sigma_max": enc(self.sigma_max),
            "amount_cap": enc(self.amount_cap),
            "fund_factor": dict(self.fund_factor),
            "global_factor": self.global_factor,
            "fund_shift": dict(self.fund_shift),
            "global_shift": self.global_shift,
            "sigma_scale": self.sigma_scale,
            "recalibration": self.recalibration,
            "amount_factor": self.amount_factor,
            "amount_factor_source": self.amount_factor_source,
            "level_shift": dict(self.level_shift),
            "level_scale": dict(self.level_scale),
            "jensen_b": self.jensen_b,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EtvGuard:
        def dec(x: float | None, inf: float) -> float:
            return inf if x is None else float(x)

        return cls(
            mu_min=dec(state.get("mu_min"), -math.inf),
            mu_max=dec(state.get("mu_max"), math.inf),
            sigma_max=dec(state.get("sigma_max"), math.inf),
            amount_cap=dec(state.get("amount_cap"), math.inf),
            fund_factor={str(k): float(v) for k, v in dict(state.get("fund_factor", {})).items()},
            global_factor=float(state.get("global_factor", 1.0)),
            fund_shift={str(k): float(v) for k, v in dict(state.get("fund_shift", {})).items()},
            global_shift=float(state.get("global_shift", 0.0)),
            sigma_scale=float(state.get("sigma_scale", 1.0)),
            recalibration=str(state.get("recalibration", "none")),
            # guards saved before step 3 existed had no factor: 1.0 reproduces their predictions exactly
            amount_factor=float(state.get("amount_factor", 1.0)),
            amount_factor_source=str(state.get("amount_factor_source", "none")),
            level_shift={str(k): float(v) for k, v in dict(state.get("level_shift", {})).items()},
            level_scale={str(k): float(v) for k, v in dict(state.get("level_scale", {})).items()},
            jensen_b=float(state.get("jensen_b", 0.0)),
        )

    # -- the rule -------------------------------------------------------------------------------------------
    def _shifts(self, fund_ids: list[str]) -> np.ndarray:
        return np.array([self.fund_shift.get(f, self.global_shift) for f in fund_ids], dtype=np.float64)

    def factors(self, fund_ids: list[str]) -> np.ndarray:
        """Direct-ETV scale of each fund position of a dataset whose funds are ``fund_ids``; float64 ``[F]``."""
        return np.array([self.fund_factor.get(f, self.global_factor) for f in fund_ids], dtype=np.float64)

    def apply(
        self,
        preds: dict[str, np.ndarray],
        fund_pos: np.ndarray | None,
        fund_ids: list[str] | None,
        formula: str | None,
    ) -> dict[str, np.ndarray]:
        """Recalibration (when fitted) then bounds, on a prediction dict of float arrays ``[m]`` (``p``, ``etv``
        and optional ``mu``, ``sigma``, ``amount``); ``fund_pos`` indexes ``fund_ids``. None for both skips the
        recalibration. Returns a new dict with ``amount``/``etv`` (and ``mu``/``sigma``) replaced."""
        out = dict(preds)
        p = np.asarray(preds["p"], dtype=np.float64)
        recal = fund_pos is not None and fund_ids is not None
        if "mu" in preds and "sigma" in preds and formula in _FORMULA_OFFSET:
            mu = np.asarray(preds["mu"], dtype=np.float64)
            sigma = np.asarray(preds["sigma"], dtype=np.float64)
            spread = 1.0
            if recal:
                assert fund_pos is not None and fund_ids is not None
                pos = np.asarray(fund_pos, dtype=np.int64)
                mu = mu + self._shifts(fund_ids)[pos]
                sigma = sigma * self.sigma_scale
                if self.level_shift or self.level_scale:
                    mu = mu + np.array([self.level_shift.get(f, 0.0) for f in fund_ids])[pos]
                    sigma = sigma * np.array([self.level_scale.get(f, 1.0) for f in fund_ids])[pos]
                spread = 1.0 + self.jensen_b
            mu = np.clip(mu, self.mu_min, self.mu_max)
            sigma = np.clip(sigma, SIGMA_FLOOR, self.sigma_max)
            if spread != 1.0:
                # the sigma whose lognormal mean is the prediction, so that mu, sigma and amount stay consistent
                sigma = sigma * math.sqrt(spread)
            amount = np.exp(np.minimum(mu + 0.5 * sigma**2, LOG_ETV_CAP)) - _FORMULA_OFFSET[formula]
            out["mu"], out["sigma"] = mu.astype(np.float32), sigma.astype(np.float32)
        elif "amount" in preds:
            amount = np.asarray(preds["amount"], dtype=np.float64)
        else:
            etv = np.asarray(preds["etv"], dtype=np.float64)
            if recal:
                assert fund_pos is not None and fund_ids is not None
                etv = etv * self.factors(fund_ids)[np.asarray(fund_pos, dtype=np.int64)]
            out["etv"] = np.minimum(etv, self.amount_cap).astype(np.float32)
            return out
        if recal and self.amount_factor != 1.0:
            amount = amount * self.amount_factor
        amount = np.clip(amount, 0.0, self.amount_cap)
        out["amount"] = amount.astype(np.float32)
        out["etv"] = (p * amount).astype(np.float32)
        return out

    def bound(self, preds: dict[str, np.ndarray], formula: str | None) -> dict[str, np.ndarray]:
        """Step 1 only (the bounds, no recalibration); see :meth:`apply`."""
        return self.apply(preds, None, None, formula)

    def fit_recalibration(
        self,
        preds: dict[str, np.ndarray],
        fund_pos: np.ndarray,
        converted: np.ndarray,
        amount: np.ndarray,
        fund_ids: list[str],
        formula: str | None,
        split: str = "valid",
        weight: np.ndarray | None = None,
    ) -> EtvGuard:
        """Fit the per-fund shifts, the sigma scale (or the direct-ETV factors) on labelled rows; returns self.

        Args:
            preds: raw model predictions for the rows (float arrays ``[m]``).
            fund_pos: fund position of each row in ``fund_ids``; converted, amount: labels ``[m]``.
            weight: sampling weights of the rows (an oversampled design), or None. The direct-ETV factors are
                ratios of weighted sums, so they scale to the population's mean amount, not the sample's.
        """
        fund_pos = np.asarray(fund_pos, dtype=np.int64)
        y = np.asarray(amount, dtype=np.float64)
        pos = (np.asarray(converted) > 0) & (y > 0)
        n_pos = int(pos.sum())
        self.fund_shift, self.global_shift, self.sigma_scale = {}, 0.0, 1.0
        self.fund_factor, self.global_factor = {}, 1.0
        if n_pos == 0:
            self.recalibration = f"none: no converters in the {split} split"
            return self
        if "mu" in preds and "sigma" in preds and formula in _FORMULA_OFFSET:
            log_y = np.log1p(y[pos]) if _FORMULA_OFFSET[formula] else np.log(y[pos])
            resid = log_y - np.asarray(preds["mu"], dtype=np.float64)[pos]
            sigma = np.maximum(np.asarray(preds["sigma"], dtype=np.float64)[pos], SIGMA_FLOOR)
            f_pos = fund_pos[pos]
            # Each correction is shrunk towards "no change" by how many standard errors it lies from zero: a model
            # whose amounts are already calibrated (gbdt learns them from every past purchase) must not be moved
            # by the noise of a few dozen validation converters, while a clearly biased head still is.
            # with one converter its residual says nothing about the spread: the model's own sigma stands in
            spread = float(resid.std()) if n_pos > 1 else float(np.sqrt(np.mean(sigma**2)))
            raw_global = float(resid.mean())
            self.global_shift = _shrink(raw_global, spread**2 / n_pos)
            shift = np.full(len(fund_ids), self.global_shift)
            for f, fid in enumerate(fund_ids):
                n_f = int((f_pos == f).sum())
                if n_f:
                    # A fund's excess over the all-funds shift rests on a handful of converters: it is weighted
                    # against RECALIBRATION_PRIOR pseudo-converters of no excess, then shrunk by its standard error.
                    prior_w = n_f / (n_f + RECALIBRATION_PRIOR)
                    excess = float(resid[f_pos == f].mean()) - raw_global
                    shift[f] = self.global_shift + prior_w * _shrink(excess, spread**2 / n_f)
                self.fund_shift[fid] = float(shift[f])
            centred = resid - shift[f_pos]
            # The log of a mean of n squared standard normals has variance about 2 / n, so log_scale about 1/(2n).
            log_scale = 0.5 * math.log(max(float(np.mean((centred / sigma) ** 2)), 1e-12))
            self.sigma_scale = math.exp(_shrink(log_scale, 1.0 / (2 * n_pos)))
            self.recalibration = f"{split} split, {n_pos} converters (log-space shift per fund, shared sigma scale)"
            return self
        bounded = self.bound(preds, formula)
        w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
        predicted = np.asarray(bounded["etv"], dtype=np.float64) * w
        y = y * w
        total_pred = float(predicted.sum())
        if total_pred <= 0:
            self.recalibration = f"none: no positive prediction in the {split} split"
            return self
        log_global = math.log(max(float(y.sum()), 1e-12) / total_pred)
        for f, fid in enumerate(fund_ids):
            sel = fund_pos == f
            n_f = int((pos & sel).sum())
            pred_f, real_f = float(predicted[sel].sum()), float(y[sel].sum())
            log_f = math.log(max(real_f, 1e-12) / pred_f) if n_f and pred_f > 0 else log_global
            self.fund_factor[fid] = math.exp(
                (n_f * log_f + RECALIBRATION_PRIOR * log_global) / (n_f + RECALIBRATION_PRIOR)
            )
        self.global_factor = math.exp(log_global)
        self.recalibration = f"{split} split, {n_pos} converters (per-fund ETV scale)"
        return self

    def fit_amount_factor(self, realised: np.ndarray, predicted: np.ndarray, source: str) -> EtvGuard:
        """Fit step 3's shared factor on held purchases; returns self.

        Args:
            realised: the purchases' amounts, float ``[m]`` (> 0).
            predicted: this guard's ``E[amount | convert]`` for them (steps 1-2 applied, factor 1), float ``[m]``.
            source: where the purchases come from, for :attr:`amount_factor_source`.

        ``k = sum(realised) / sum(predicted)``; the standard error of ``log k`` is the ratio estimator's,
        ``sqrt(sum((realised - k predicted)^2)) / sum(realised)``, and ``log k`` is shrunk by it (:func:`_shrink`).
        """
        y = np.asarray(realised, dtype=np.float64).ravel()
        yhat = np.asarray(predicted, dtype=np.float64).ravel()
        if y.shape != yhat.shape:
            raise ValueError(f"realised and predicted differ in length: {y.size} vs {yhat.size}")
        keep = np.isfinite(y) & np.isfinite(yhat) & (y > 0) & (yhat > 0)
        self.amount_factor = 1.0
        if not keep.any():
            self.amount_factor_source = f"none: no purchase with a positive amount in {source}"
            return self
        y, yhat = y[keep], yhat[keep]
        k, se = _ratio_estimate(y, yhat)
        self.amount_factor = math.exp(_shrink(math.log(k), se**2))
        self.amount_factor_source = (
            f"{source}, {y.size} purchases: realised / predicted {k:.4f} (se of log {se:.4f}), shrunk to "
            f"{self.amount_factor:.4f}"
        )
        return self

    def fit_amount_level(
        self,
        realised: np.ndarray,
        preds: dict[str, np.ndarray],
        fund_pos: np.ndarray,
        fund_ids: list[str],
        formula: str | None,
        source: str,
    ) -> EtvGuard:
        """Fit step 3 in its ``per_fund`` form (module docstring) on held purchases; returns self.

        Args:
            realised: the purchases' amounts, float ``[m]``.
            preds: the model's raw predictions for them (``p``, ``mu``, ``sigma`` ..., float arrays ``[m]``).
            fund_pos: each purchase's fund position in ``fund_ids``, int ``[m]``.
            formula: the model's amount formula; a model without a lognormal amount (``mu``/``sigma``) gets the
                shared factor (:meth:`fit_amount_factor`) instead.
        """
        from scipy.optimize import brentq

        y = np.asarray(realised, dtype=np.float64).ravel()
        fund_pos = np.asarray(fund_pos, dtype=np.int64).ravel()
        if y.shape != fund_pos.shape:
            raise ValueError(f"realised and fund_pos differ in length: {y.size} vs {fund_pos.size}")
        self.level_shift, self.level_scale, self.jensen_b = {}, {}, 0.0
        if "mu" not in preds or "sigma" not in preds or formula not in _FORMULA_OFFSET:
            base = self.apply(preds, fund_pos, fund_ids, formula)
            if "amount" not in base:
                self.amount_factor, self.amount_factor_source = 1.0, f"none: no amount output in {source}"
                return self
            return self.fit_amount_factor(y, np.asarray(base["amount"], dtype=np.float64), source)
        offset = _FORMULA_OFFSET[formula]
        self.amount_factor = 1.0
        base = self.apply(preds, fund_pos, fund_ids, formula)  # steps 1-2, no step 3 yet
        mu = np.asarray(base["mu"], dtype=np.float64)
        sigma = np.asarray(base["sigma"], dtype=np.float64)
        keep = np.isfinite(y) & (y + offset > 0) & (y > 0) & np.isfinite(mu) & np.isfinite(sigma)
        fund_all = fund_pos
        y, mu, sigma, fund_pos = y[keep], mu[keep], sigma[keep], fund_pos[keep]
        if y.size < 2:
            self.amount_factor_source = f"none: fewer than 2 purchases with a positive amount in {source}"
            return self
        resid = np.log(y + offset) - mu
        # (a) per fund, in log space, each part shrunk by its standard error as in step 2
        for f, fid in enumerate(fund_ids):
            rows = fund_pos == f
            n_f = int(rows.sum())
            if n_f < 2:
                continue
            r_f = resid[rows]
            shift = _shrink(float(r_f.mean()), float(r_f.var()) / n_f)
            log_scale = 0.5 * math.log(max(float(np.mean(((r_f - shift) / sigma[rows]) ** 2)), 1e-12))
            self.level_shift[fid] = shift
            self.level_scale[fid] = math.exp(_shrink(log_scale, 1.0 / (2 * n_f)))
        shifted = self.apply(preds, fund_all, fund_ids, formula)
        mu_a = np.asarray(shifted["mu"], dtype=np.float64)[keep]
        var_a = np.asarray(shifted["sigma"], dtype=np.float64)[keep] ** 2
        # (b) the spread exponent from two moment equations (purchases below / above the median sigma)
        # the halves by rank, so that ties (a few distinct sigmas, e.g. one per fund) still give two halves
        high = np.zeros(var_a.size, dtype=bool)
        high[np.argsort(var_a, kind="stable")[var_a.size // 2 :]] = True
        b = 0.0
        if float(var_a[high].mean()) > float(var_a[~high].mean()):

            def log_ratio(part: np.ndarray, b_: float) -> float:
                return math.log(_ratio_estimate(y[part], _spread_mean(mu_a[part], var_a[part], b_, offset))[0])

            def gap(b_: float) -> float:
                return log_ratio(~high, b_) - log_ratio(high, b_)

            lo, hi = JENSEN_B_RANGE
            g_lo, g_hi = gap(lo), gap(hi)
            raw_b = brentq(gap, lo, hi) if g_lo * g_hi < 0 else (lo if abs(g_lo) < abs(g_hi) else hi)
            # standard error of b: the two halves' ratio-estimator errors through the slope of the gap
            se_gap = math.sqrt(
                sum(
                    _ratio_estimate(y[part], _spread_mean(mu_a[part], var_a[part], raw_b, offset))[1] ** 2
                    for part in (~high, high)
                )
            )
            slope = (gap(raw_b + 1e-3) - gap(raw_b - 1e-3)) / 2e-3
            b = _shrink(raw_b, (se_gap / slope) ** 2) if slope != 0 else 0.0
        self.jensen_b = float(b)
        predicted = _spread_mean(mu_a, var_a, b, offset)
        self.fit_amount_factor(y, np.minimum(predicted, self.amount_cap), source)
        self.amount_factor_source = (
            f"per fund: {self.amount_factor_source}; spread exponent b {self.jensen_b:.4f}; log shifts "
            + ", ".join(f"{k} {v:+.3f}" for k, v in self.level_shift.items())
        )
        return self


def _spread_mean(mu: np.ndarray, var: np.ndarray, b: float, offset: float) -> np.ndarray:
    """The per-fund form's expected amount before its factor: ``exp(mu + (1 + b) var / 2) - offset``."""
    return np.asarray(np.exp(np.minimum(mu + 0.5 * (1.0 + b) * var, LOG_ETV_CAP)) - offset)


def _ratio_estimate(realised: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """``k = sum(realised) / sum(predicted)`` and the ratio estimator's standard error of ``log k``,
    ``sqrt(sum((realised - k predicted)^2)) / sum(realised)``."""
    k = float(realised.sum() / max(float(predicted.sum()), 1e-300))
    return k, float(np.sqrt(np.sum((realised - k * predicted) ** 2)) / realised.sum())
