"""Report plots as PNG bytes, from plain arrays and dicts.

Every helper returns the PNG file's bytes so the report can embed it and the run folder can save it, and
closes its figure so long runs do not accumulate open figures. The Agg backend is selected before pyplot is
imported: runs happen on servers and in CI with no display, where an interactive backend would fail.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # must follow the backend choice above
import matplotlib.ticker as mticker
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from eoca.errors import EocaError

# Colour-blind-safe palette (Okabe-Ito order, blue first), cycled when there are more series than colours.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#7F7F7F", "#F0E442")
_INK = "#1c2733"
_MUTED = "#5b6b7c"
_GRID = "#e3e8ee"
_DPI = 144

# Typed Any: matplotlib's stubs type rc keys as a Literal union that a plain dict literal does not satisfy;
# matplotlib validates the keys at runtime anyway.
_STYLE: Any = {
    "font.size": 10.5,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelcolor": _INK,
    "axes.edgecolor": "#b8c4d0",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": _GRID,
    "grid.linewidth": 0.8,
    "xtick.color": _MUTED,
    "ytick.color": _MUTED,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-count bins by prediction, arrays of shape (n_bins,): mean prediction, mean outcome, count."""

    mean_predicted: np.ndarray
    mean_realised: np.ndarray
    count: np.ndarray


def calibration_bins(predicted: Any, realised: Any, n_bins: int = 10) -> CalibrationBins:
    """Sort pairs by prediction and cut them into ``n_bins`` equal-count bins (deciles by default).

    Args:
        predicted: shape (n,), e.g. predicted ETV or predicted conversion probability.
        realised: shape (n,), the realised amount or the 0/1 conversion of the same pairs.

    Equal-count bins by rank rather than ``np.quantile`` edges: ETV predictions pile up at zero (ineligible
    or hopeless pairs), and quantile edges would then collapse several bins into one.
    """
    pred = _vector(predicted, "predicted")
    real = _vector(realised, "realised")
    if pred.size != real.size:
        raise EocaError(f"predicted has {pred.size:,} values but realised has {real.size:,}")
    if pred.size == 0:
        raise EocaError("calibration needs at least one prediction")
    n_bins = max(1, min(n_bins, pred.size))
    order = np.argsort(pred, kind="stable")
    groups = np.array_split(order, n_bins)
    return CalibrationBins(
        mean_predicted=np.array([pred[g].mean() for g in groups]),
        mean_realised=np.array([real[g].mean() for g in groups]),
        count=np.array([g.size for g in groups], dtype=np.int64),
    )


def lift_chart(
    frameworks: Sequence[str],
    lift_pct: Mapping[str, Sequence[float | None]],
    ci_low: Mapping[str, Sequence[float | None]],
    ci_high: Mapping[str, Sequence[float | None]],
    *,
    control: str,
    confidence: float = 0.95,
    title: str = "Lift against the control",
) -> bytes:
    """Horizontal grouped bars of % lifts with interval whiskers, one group per framework.

    Args:
        frameworks: framework names, length F (the control may be included; its bars are skipped).
        lift_pct: metric name (e.g. "CPMD", "TAPMD") -> F lifts in %; ``None`` for no value.
        ci_low, ci_high: same keys and lengths: interval bounds in %.
        control: the control's name, shown in the axis label.
        confidence: the intervals' coverage, shown in the axis label.
    """
    metrics = list(lift_pct)
    for name in metrics:
        for arg, mapping in (("lift_pct", lift_pct), ("ci_low", ci_low), ("ci_high", ci_high)):
            if name not in mapping or len(mapping[name]) != len(frameworks):
                raise EocaError(f"lift_chart: {arg}['{name}'] must have one value per framework")
    shown = [i for i, fw in enumerate(frameworks) if fw != control]
    with plt.rc_context(_STYLE):
        height = 1.2 + 0.32 * max(1, len(shown)) * max(1, len(metrics))
        fig, ax = plt.subplots(figsize=(9.0, min(max(height, 3.0), 12.0)))
        bar_h = 0.8 / max(1, len(metrics))
        ys = np.arange(len(shown), dtype=float)
        for m, name in enumerate(metrics):
            vals = np.array([_num(lift_pct[name][i]) for i in shown])
            lo = np.array([_num(ci_low[name][i]) for i in shown])
            hi = np.array([_num(ci_high[name][i]) for i in shown])
            offset = (m - (len(metrics) - 1) / 2) * bar_h
            pos = ys + offset
            color = PALETTE[m % len(PALETTE)]
            ax.barh(pos, np.nan_to_num(vals), height=bar_h * 0.9, color=color, label=name, zorder=2)
            ok = np.isfinite(vals) & np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                err = np.vstack([vals[ok] - lo[ok], hi[ok] - vals[ok]])
                ax.errorbar(
                    vals[ok],
                    pos[ok],
                    xerr=np.clip(err, 0, None),
                    fmt="none",
                    ecolor=_INK,
                    elinewidth=1.1,
                    capsize=3,
                    zorder=3,
                )
            for p, v, low, high in zip(pos, vals, lo, hi, strict=True):
                if not math.isfinite(v):
                    continue
                # Put the label past the whisker's end on the bar's side so it never overlaps the interval.
                if v >= 0:
                    x, dx, ha = (max(v, high) if math.isfinite(high) else v), 5, "left"
                else:
                    x, dx, ha = (min(v, low) if math.isfinite(low) else v), -5, "right"
                ax.annotate(
                    f"{v:+.1f}%",
                    (x, p),
                    xytext=(dx, 0),
                    textcoords="offset points",
                    ha=ha,
                    va="center",
                    fontsize=9,
                    color=_INK,
                )
        ax.axvline(0.0, color=_INK, linewidth=1.0, zorder=1)
        ax.set_yticks(ys, [frameworks[i] for i in shown])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"% lift against {control} (bars: point estimate; whiskers: {confidence:.0%} interval)")
        ax.set_title(title)
        _pad_xlim(ax, 0.18)
        # Outside the axes: inside, it would sit on top of some framework's bar whatever corner is chosen.
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def delivered_vs_demanded_chart(
    funds: Sequence[str],
    demanded: Any,
    delivered: Mapping[str, Any],
    *,
    title: str = "Deliveries per fund against the contract",
) -> bytes:
    """Grouped bars per fund: the contracted demand (outlined) next to each method's deliveries.

    Args:
        funds: fund names, length k.
        demanded: shape (k,), contracted deliveries d_j.
        delivered: method name -> shape (k,) deliveries per fund.
    """
    dem = _vector(demanded, "demanded")
    k = len(funds)
    if dem.size != k:
        raise EocaError(f"demanded has {dem.size} values for {k} funds")
    series = {name: _vector(v, f"delivered['{name}']") for name, v in delivered.items()}
    for name, v in series.items():
        if v.size != k:
            raise EocaError(f"delivered['{name}'] has {v.size} values for {k} funds")
    with plt.rc_context(_STYLE):
        width_in = min(max(7.5, 0.55 * k * (1 + len(series)) * 0.6 + 2.0), 16.0)
        fig, ax = plt.subplots(figsize=(width_in, 4.6))
        groups = 1 + len(series)
        bar_w = 0.82 / groups
        xs = np.arange(k, dtype=float)
        ax.bar(
            xs - 0.41 + bar_w / 2,
            dem,
            width=bar_w * 0.92,
            facecolor="white",
            edgecolor=_INK,
            linewidth=1.1,
            hatch="///",
            label="contracted (demand)",
            zorder=2,
        )
        for s, (name, vals) in enumerate(series.items(), start=1):
            ax.bar(
                xs - 0.41 + bar_w * (s + 0.5),
                vals,
                width=bar_w * 0.92,
                color=PALETTE[(s - 1) % len(PALETTE)],
                label=name,
                zorder=2,
            )
            short = vals < dem
            if short.any():
                # Under-delivery breaks a guaranteed contract; mark it so nobody has to compare bar heights.
                ax.scatter(
                    xs[short] - 0.41 + bar_w * (s + 0.5),
                    vals[short],
                    marker="v",
                    color="#D55E00",
                    s=28,
                    zorder=4,
                )
        ax.set_xticks(xs, list(funds), rotation=0 if k <= 10 else 45, ha="center" if k <= 10 else "right")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("customers")
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def etv_distribution_chart(
    etv_by_model: Mapping[str, Any],
    *,
    bins: int = 60,
    title: str = "Predicted ETV per customer-fund pair",
) -> bytes:
    """Overlaid histograms of predicted ETV, one per model, on log-spaced bins (log x axis).

    Args:
        etv_by_model: model name -> predicted ETV, any shape (flattened), >= 0. Zeros cannot sit on a log
            axis; their share is given in the legend instead.
    """
    if not etv_by_model:
        raise EocaError("etv_distribution_chart needs at least one model")
    data = {
        name: _vector(np.ravel(np.asarray(v, dtype=np.float64)), f"etv_by_model['{name}']")
        for name, v in etv_by_model.items()
    }
    positives = [v[v > 0] for v in data.values()]
    pooled = np.concatenate(positives) if positives else np.empty(0)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.0, 4.4))
        if pooled.size:
            lo, hi = np.quantile(pooled, [0.0005, 0.9995])
            lo = max(lo, pooled.min())
            hi = max(hi, lo * 10)
            edges = np.geomspace(lo, hi, bins + 1)
            for m, (name, v) in enumerate(data.items()):
                pos = v[v > 0]
                zero_share = 1.0 - pos.size / max(v.size, 1)
                label = name if zero_share == 0 else f"{name} ({zero_share:.1%} exactly 0)"
                counts, _ = np.histogram(np.clip(pos, lo, hi), bins=edges)
                share = counts / max(v.size, 1) * 100.0
                color = PALETTE[m % len(PALETTE)]
                ax.stairs(share, edges, color=color, linewidth=1.8, label=label)
                ax.stairs(share, edges, color=color, alpha=0.12, fill=True)
                median = float(np.median(pos)) if pos.size else math.nan
                if math.isfinite(median):
                    ax.axvline(median, color=color, linestyle="--", linewidth=1.0)
            ax.set_xscale("log")
            ax.legend(loc="upper left")
        else:
            ax.text(0.5, 0.5, "every prediction is 0", transform=ax.transAxes, ha="center", color=_MUTED)
        ax.set_xlabel("predicted ETV (log scale; dashed line: median of the non-zero predictions)")
        ax.set_ylabel("% of pairs")
        ax.set_title(title)
        return _png(fig)


def calibration_chart(
    predicted_etv: Mapping[str, Any],
    realised_amount: Any,
    predicted_p: Mapping[str, Any] | None = None,
    converted: Any = None,
    *,
    n_bins: int = 10,
) -> bytes:
    """Reliability plot: mean prediction against mean outcome per equal-count bin (deciles by default).

    Left panel: pairs binned by predicted ETV; mean predicted ETV against the mean realised amount. Right
    panel (when ``predicted_p`` and ``converted`` are given): pairs binned by predicted conversion
    probability; mean predicted p against the realised conversion rate. A well-calibrated model's points lie
    on the diagonal.

    Args:
        predicted_etv: model name -> predicted ETV, shape (n,), for the same n test pairs.
        realised_amount: shape (n,), realised amount (0 where not converted).
        predicted_p: model name -> predicted conversion probability, shape (n,).
        converted: shape (n,), realised 0/1 conversion.
    """
    if not predicted_etv:
        raise EocaError("calibration_chart needs at least one model")
    if (predicted_p is None) != (converted is None):
        raise EocaError("calibration_chart: give both predicted_p and converted, or neither")
    panels = 2 if predicted_p is not None else 1
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, panels, figsize=(9.6 if panels == 2 else 6.2, 4.6), squeeze=False)
        ax_etv = axes[0, 0]
        bins_etv = {m: calibration_bins(v, realised_amount, n_bins) for m, v in predicted_etv.items()}
        _reliability(ax_etv, bins_etv, "mean predicted ETV", "mean realised amount", "ETV vs realised amount")
        if predicted_p is not None:
            bins_p = {m: calibration_bins(v, converted, n_bins) for m, v in predicted_p.items()}
            _reliability(
                axes[0, 1],
                bins_p,
                "mean predicted conversion probability",
                "realised conversion rate",
                "Conversion probability",
            )
        fig.suptitle(
            f"Calibration by {n_bins} equal-size bins of the prediction",
            x=0.01,
            ha="left",
            fontsize=12,
            fontweight="bold",
        )
        return _png(fig)


def allocation_value_chart(
    methods: Sequence[str],
    pct_of_optimum: Any,
    *,
    wall_time_s: Any = None,
    title: str = "Allocation value as % of the exact optimum",
) -> bytes:
    """Horizontal bars of each method's objective as % of the exact optimum, labelled to two decimals.

    Args:
        methods: method names, length M.
        pct_of_optimum: shape (M,), in %; NaN for a method with no value (e.g. it failed).
        wall_time_s: optional shape (M,), seconds, appended to the labels.
    """
    pct = _vector(pct_of_optimum, "pct_of_optimum")
    if pct.size != len(methods):
        raise EocaError(f"pct_of_optimum has {pct.size} values for {len(methods)} methods")
    times = None if wall_time_s is None else _vector(wall_time_s, "wall_time_s")
    if times is not None and times.size != len(methods):
        raise EocaError(f"wall_time_s has {times.size} values for {len(methods)} methods")
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.55 * max(1, len(methods))))
        ys = np.arange(len(methods), dtype=float)
        best = np.nanmax(pct) if np.isfinite(pct).any() else math.nan
        colors = [PALETTE[0] if v == best else "#8fb3d9" for v in pct]
        ax.barh(ys, np.nan_to_num(pct), color=colors, height=0.62, zorder=2)
        for i, v in enumerate(pct):
            text = "no result" if not math.isfinite(v) else f"{v:.2f}%"
            if times is not None and math.isfinite(times[i]):
                text += f"  ({_seconds(times[i])})"
            ax.annotate(
                text,
                (max(v, 0.0) if math.isfinite(v) else 0.0, ys[i]),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=9.5,
                color=_INK,
            )
        ax.axvline(100.0, color=_INK, linestyle=":", linewidth=1.0)
        ax.set_xlim(0, max(100.0, float(np.nanmax(pct)) if np.isfinite(pct).any() else 100.0) * 1.22)
        ax.set_yticks(ys, list(methods))
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("% of the exact optimum (dotted line: 100%)")
        ax.set_title(title)
        return _png(fig)


def _reliability(ax: Axes, bins: Mapping[str, CalibrationBins], xlabel: str, ylabel: str, title: str) -> None:
    allx = np.concatenate([b.mean_predicted for b in bins.values()])
    ally = np.concatenate([b.mean_realised for b in bins.values()])
    # Means of skewed amounts span orders of magnitude; a log-log view keeps the low deciles readable,
    # but only works when every mean is positive.
    log = bool(np.all(allx > 0) and np.all(ally > 0))
    lo = float(min(allx.min(), ally.min()))
    hi = float(max(allx.max(), ally.max()))
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = lo / 1.3, hi * 1.3
    else:
        pad = (hi - lo) * 0.05 or 1.0
        lo, hi = min(lo, 0.0) - pad * 0.2, hi + pad
    ax.plot([lo, hi], [lo, hi], color=_MUTED, linestyle="--", linewidth=1.0, label="perfect calibration")
    for m, (name, b) in enumerate(bins.items()):
        ax.plot(
            b.mean_predicted,
            b.mean_realised,
            marker="o",
            markersize=4.5,
            linewidth=1.6,
            color=PALETTE[m % len(PALETTE)],
            label=name,
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", fontsize=9)


def _pad_xlim(ax: Axes, frac: float) -> None:
    # Room for the value labels printed beyond the bar ends and whiskers.
    lo, hi = ax.get_xlim()
    span = hi - lo
    ax.set_xlim(lo - span * (frac if lo < 0 else 0.02), hi + span * frac)


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise EocaError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _png(fig: Figure) -> bytes:
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)
