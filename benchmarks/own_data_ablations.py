"""The ideas tried on top of ``benchmarks/own_data.py`` to make eoca's best model beat the peers, measured on the
same splits (results in benchmarks/RESULTS.md, "Bring your own data", table "What was tried").

* ``features`` (CDNOW, full log, split seeds 0-2): a Poisson LightGBM of the amount with fixed parameters on
  the imported features without the trend windows, with them, with BG/NBD's p(alive), expected purchases and
  predicted spend added as features, and with BG/NBD's log prediction as an offset (``init_score``).
* ``blends`` (the predictions ``own_data.py`` saved, ``--preds DIR``): non-negative weights on the candidates
  (and on the candidates plus the peers ``gbdt`` and ``bgnbd``) minimising the validation Poisson deviance, the
  plain mean of ``mtl_ziln`` and ``gbdt_mean``, and a
  calibration slope ``c * pred^g`` fitted on the validation deviance, for each candidate.
* ``tail`` (CDNOW predictions saved by ``own_data.py``, ``--preds DIR``): each test customer's share of the MSE
  difference between eoca's best and BG/NBD, by band of eoca's prediction, and the largest shares.
* ``hybrid`` (``--preds`` of an ``own_data.py --customer-base-model`` run and ``--baseline`` of the same run
  without it): every candidate, and the tuned LightGBM, with the customer-base features against without them.
* ``shrink`` (CDNOW predictions saved by ``own_data.py``, ``--preds DIR``): eoca's best capped at a quantile of
  its validation predictions chosen on validation MSE, the calibration of its top predictions, and its rank
  agreement with the tuned LightGBM.
* ``structural`` (CDNOW predictions saved by ``own_data.py --customer-base-model``, ``--preds DIR``): every
  candidate and peer on the largest target-window spenders (what only the structural model extrapolates to) and
  on everyone else, with its mean validation deviance, the criterion that picks eoca's best.
* ``weights`` (CDNOW predictions saved by ``own_data.py --customer-base-model``, ``--preds DIR``): the blend
  ``w * bgnbd + (1 - w) * mtl_ziln`` at every ``w`` in 0, 0.1, ..., 1 against the peers on the test customers,
  a hindsight bound on what one global weight (the zoo model ``stack``) could reach.
* ``power`` (CDNOW predictions saved by an ``own_data.py --folds`` run, ``--preds DIR``): per split seed, eoca's
  best against the tuned LightGBM on Gini and against BG/NBD on MSE (the two CDNOW ties): the observed difference,
  its interval and MDE80, and the number of test customers at which the MDE80 would reach the observed
  difference (``n x (MDE80 / d)^2``: the standard error shrinks as ``1 / sqrt(n)``).
* ``excess`` (donation predictions saved by ``own_data.py``, ``--preds DIR``): every candidate's and peer's
  expected MSE above the Bayes predictor of the file (``test_ceiling``), free of label noise.
* ``unweighted`` (synthetic donations, ``--seeds``): networks trained on the oversampled sample without its
  weights, with ``p`` shifted afterwards by ``log(w1 / w0)`` (prior correction of a response-based sample), and
  their expected MSE above the Bayes predictor of the file.

Every row reports test MSE and Gini and the paired bootstrap interval against the peers, as in own_data.py.
Run: ``nice python benchmarks/own_data_ablations.py --preds bench_own_data --out bench_ablations``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.optimize import minimize

from eoca.data import Dataset
from eoca.data.dataset import split_exposures
from eoca.evaluation import metrics as M
from eoca.io import write_text
from eoca.peers import make_peer
from eoca.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_data import CDNOW_MASTER_SPEC, PEERS, build, cdnow_path, ci, oracle_etv, paired_bootstrap, split_rule

LGB = {
    "objective": "poisson",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 50,
    "lambda_l2": 10.0,
    "verbose": -1,
    "seed": 0,
    "num_threads": 1,
    "deterministic": True,
}


def _row(label: str, y: np.ndarray, pred: np.ndarray, peers: dict[str, np.ndarray], w: Any = None) -> str:
    cells = [label, f"{M.mse(y, pred, w):.4g}", f"{M.normalized_gini(y, pred, w):.4f}"]
    for p in peers.values():
        vs = paired_bootstrap(y, pred, p, w, 500, 0)
        g, m = vs["gini_diff_95"], vs["mse_diff_95"]
        cells.append(f"{ci(g, '.4f')} / {ci(m, '.4g')}")
    return "| " + " | ".join(cells) + " |"


def _cdnow(work: Path, seed: int, trend: bool) -> Dataset:
    work.mkdir(parents=True, exist_ok=True)
    spec = CDNOW_MASTER_SPEC.format(path=cdnow_path("master"), split=split_rule(seed))
    (work / "spec.yaml").write_text(spec if trend else spec + "  recent_windows: []\n")
    from eoca.data.importer import import_dataset

    return import_dataset(work / "spec.yaml", work / "dataset")


def _matrix(ds: Dataset) -> np.ndarray:
    cust = ds.customers
    names = [c for c in cust.column_names if c not in ("customer_id", "risk_tolerance")]
    return np.stack([np.asarray(cust.column(c).to_numpy(), dtype=np.float64) for c in names], axis=1)


def _poisson(x: dict[str, np.ndarray], y: dict[str, np.ndarray], offset: dict[str, np.ndarray] | None) -> np.ndarray:
    """Test predictions of a Poisson LightGBM early-stopped on the valid split."""
    off = offset or {}
    train_set = lgb.Dataset(x["train"], y["train"], init_score=off.get("train"))
    valid_set = lgb.Dataset(x["valid"], y["valid"], init_score=off.get("valid"))
    booster = lgb.train(LGB, train_set, 2000, valid_sets=[valid_set], callbacks=[lgb.early_stopping(50, verbose=False)])
    return np.exp(booster.predict(x["test"], raw_score=True) + off.get("test", 0.0))


def features(seeds: list[int], work: Path) -> list[str]:
    lines = [
        "| CDNOW seed: variant | MSE | Gini | vs bgnbd: ΔGini 95% / ΔMSE 95% |",
        "|---|---:|---:|---|",
    ]
    for seed in seeds:
        base = _cdnow(work / f"base{seed}", seed, trend=False)
        ds = _cdnow(work / f"trend{seed}", seed, trend=True)
        pos = {s: split_exposures(ds, s)["customer_pos"] for s in ("train", "valid", "test")}
        y = {s: split_exposures(ds, s)["amount"] for s in pos}
        peer = make_peer("bgnbd").fit(ds)
        every = np.arange(ds.n_customers)
        cols = peer._columns(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alive = peer._bgf.conditional_probability_alive(cols["frequency"], cols["recency"], cols["T"])
            expected = peer._bgf.conditional_expected_number_of_purchases_up_to_time(
                peer.target_days, cols["frequency"], cols["recency"], cols["T"]
            )
        bg = peer.predict_customers(ds, every)["etv"]
        peers = {"bgnbd": bg[pos["test"]]}
        x_base, x_trend = _matrix(base), _matrix(ds)
        x_bg = np.column_stack([x_base, np.asarray(alive), np.asarray(expected), np.log1p(bg)])
        log_bg = np.log(np.maximum(bg, 0.05))
        variants = {
            "imported features without the trend windows": (x_base, None),
            "with the trend windows (the import default)": (x_trend, None),
            "without trend, + BG/NBD p(alive), expected purchases, log predicted spend": (x_bg, None),
            "without trend, BG/NBD log prediction as offset": (x_base, log_bg),
        }
        for label, (x, offset) in variants.items():
            pred = _poisson(
                {s: x[p] for s, p in pos.items()},
                y,
                None if offset is None else {s: offset[p] for s, p in pos.items()},
            )
            lines.append(_row(f"{seed}: {label}", y["test"], pred, peers))
        lines.append(_row(f"{seed}: BG/NBD + Gamma-Gamma", y["test"], peers["bgnbd"], peers))
    return lines


def _deviance_weights(x: np.ndarray, y: np.ndarray, w: Any) -> np.ndarray:
    k = x.shape[1]
    res = minimize(
        lambda a: M.tweedie_deviance(y, x @ np.abs(a), w),
        np.full(k, 1.0 / k),
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-6},
    )
    return np.abs(res.x)


def blends(preds: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(preds.glob("predictions_*.npz")):
        d = dict(np.load(path))
        yv, yt = d["valid_amount"], d["test_amount"]
        wv, wt = d.get("valid_weight"), d.get("test_weight")
        peer_names = [p for p in PEERS if f"test_{p}" in d]
        peers = {p: d[f"test_{p}"] for p in peer_names}
        skip = {"amount", "weight", "oracle", *peer_names}
        cands = [k[6:] for k in d if k.startswith("valid_") and k[6:] not in skip]
        lines += [
            "",
            f"`{path.stem}`",
            "",
            "| variant | MSE | Gini | " + " | ".join(f"vs {p}: ΔGini 95% / ΔMSE 95%" for p in peer_names) + " |",
            "|---|---:|---:|" + "---|" * len(peer_names),
        ]
        for c in cands:
            lines.append(_row(c, yt, d[f"test_{c}"], peers, wt))
        xv = np.stack([d[f"valid_{c}"] for c in cands], axis=1)
        xt = np.stack([d[f"test_{c}"] for c in cands], axis=1)
        a = _deviance_weights(xv, yv, wv)
        weights = ", ".join(f"{c} {v:.2f}" for c, v in zip(cands, a, strict=True))
        lines.append(_row(f"blend, validation-deviance weights ({weights})", yt, xt @ a, peers, wt))
        # A hybrid with the peers' own predictions among its parts (stacking on the valid split).
        every = cands + peer_names
        xv = np.stack([d[f"valid_{c}"] for c in every], axis=1)
        xt = np.stack([d[f"test_{c}"] for c in every], axis=1)
        a = _deviance_weights(xv, yv, wv)
        weights = ", ".join(f"{c} {v:.2f}" for c, v in zip(every, a, strict=True))
        lines.append(_row(f"blend with the peers, validation-deviance weights ({weights})", yt, xt @ a, peers, wt))
        if {"mtl_ziln", "gbdt_mean"} <= set(cands):
            mean = 0.5 * (d["test_mtl_ziln"] + d["test_gbdt_mean"])
            lines.append(_row("mean of mtl_ziln and gbdt_mean", yt, mean, peers, wt))
        for c in cands:
            v, t = np.maximum(d[f"valid_{c}"], 1e-6), np.maximum(d[f"test_{c}"], 1e-6)
            fit = minimize(
                lambda b, v=v, yv=yv, wv=wv: M.tweedie_deviance(yv, np.exp(b[0]) * v ** b[1], wv),
                [0.0, 1.0],
                method="Nelder-Mead",
            )
            c0, g = float(np.exp(fit.x[0])), float(fit.x[1])
            lines.append(_row(f"{c}, calibration slope {c0:.3f} * pred^{g:.3f}", yt, c0 * t**g, peers, wt))
    return lines


def unweighted(work: Path, seeds: list[int]) -> list[str]:
    """Networks trained on the response-based donation sample with its weights (rows drawn in proportion to
    them, the default) or without, ``p`` then shifted by ``log(w1 / w0)`` (prior correction; the amount given a
    donation is unaffected by sampling on the response). Test MSE, Gini, the interval against ``gbdt`` with
    default parameters, and the expected MSE above the Bayes predictor of the file."""
    lines = [
        "| donations seed: variant | MSE | Gini | vs gbdt (defaults): ΔGini 95% / ΔMSE 95% | excess MSE |",
        "|---|---:|---:|---|---:|",
    ]
    for seed in seeds:
        ds = build("donations", work / f"don{seed}", split_seed=seed)
        exp = ds.exposures
        w = np.asarray(exp.column("weight").to_numpy())
        conv = np.asarray(exp.column("converted").to_numpy())
        shift = float(np.log(w[conv > 0][0] / w[conv == 0][0]))
        plain = Dataset(spec=ds.spec, customers=ds.customers, funds=ds.funds, exposures=exp.drop_columns(["weight"]))
        test = split_exposures(ds, "test")
        ceiling = oracle_etv(ds, work / f"don{seed}", test["customer_pos"], "etv_observed")
        assert ceiling is not None
        base = {"seed": seed, "num_threads": 1, "max_epochs": 30, "patience": 3}
        gbdt = train(ds, {**base, "model": "gbdt"}, None, progress=False)
        peers = {"gbdt": gbdt.predict_pairs(ds, test["customer_pos"], test["fund_pos"])["etv"]}
        runs: list[tuple[str, np.ndarray]] = [("gbdt (defaults)", peers["gbdt"].astype(np.float64))]
        for model in ("mtl_ziln", "esdpm"):
            for label, data in (("weighted resampling (default)", ds), ("unweighted + prior shift", plain)):
                out = train(data, {**base, "model": model}, None, progress=False).predict_pairs(
                    data, test["customer_pos"], test["fund_pos"]
                )
                p = out["p"].astype(np.float64)
                if data is plain:
                    p = 1.0 / (1.0 + np.exp(-(np.log(p / (1.0 - p)) + shift)))
                runs.append((f"{model}, {label}", p * out["amount"]))
        for label, etv in runs:
            row = _row(f"{seed}: {label}", test["amount"], etv, peers, test["weight"])
            lines.append(row + f" {np.average((ceiling - etv) ** 2, weights=test['weight']):.4f} |")
    return lines


BANDS = (0.0, 20.0, 50.0, 100.0, 200.0, 500.0, np.inf)
"""Bands of eoca's predicted spend for :func:`tail`."""


def _best_per_file(preds: Path, data: str = "cdnow") -> list[dict[str, np.ndarray]]:
    """Per saved file ``predictions_<data>_*.npz`` in ``preds`` (the folds of a ``--folds`` run cover every
    customer once): eoca's best candidate (the best validation deviance, as in own_data.py) as ``valid_eoca`` /
    ``test_eoca``, with the labels and the peers' predictions."""
    out = []
    for path in sorted(preds.glob(f"predictions_{data}_*.npz")):
        d = dict(np.load(path))
        cands = [k[6:] for k in d if k.startswith("valid_") and k[6:] not in ("amount", "weight", *PEERS)]
        best = min(cands, key=lambda c: M.tweedie_deviance(d["valid_amount"], d[f"valid_{c}"]))
        out.append({**d, "valid_eoca": d[f"valid_{best}"], "test_eoca": d[f"test_{best}"]})
    return out


def tail(preds: Path, data: str = "cdnow") -> list[str]:
    """Where eoca's best and BG/NBD differ in squared error: each test customer's share of
    ``MSE(bgnbd) - MSE(eoca)`` (positive: eoca better), summed per band of eoca's prediction, and the customers
    contributing most (saved predictions of an own_data.py run, pooled over its files)."""
    files = _best_per_file(preds, data)
    y, a, b = (np.concatenate([d[k] for d in files]) for k in ("test_amount", "test_eoca", "test_bgnbd"))
    share = ((y - b) ** 2 - (y - a) ** 2) / y.size
    lines = [
        f"{y.size:,} test customers; MSE(bgnbd) - MSE(eoca) = {share.sum():+.1f}",
        "",
        "| eoca's prediction | customers | sum of ΔMSE shares | mean actual | mean eoca | mean bgnbd |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lo, hi in itertools.pairwise(BANDS):
        m = (a >= lo) & (a < hi)
        if m.any():
            lines.append(
                f"| [{lo:g}, {hi:g}) | {int(m.sum()):,} | {share[m].sum():+.1f} | {y[m].mean():.1f} | "
                f"{a[m].mean():.1f} | {b[m].mean():.1f} |"
            )
    lines += ["", "| actual | eoca | bgnbd | ΔMSE share |", "|---:|---:|---:|---:|"]
    for i in np.argsort(-np.abs(share))[:5]:
        lines.append(f"| {y[i]:.1f} | {a[i]:.1f} | {b[i]:.1f} | {share[i]:+.1f} |")
    return lines


CAP_QUANTILES = (0.99, 0.995, 0.998, 0.999)
"""Candidate caps for :func:`shrink`: these quantiles of eoca's validation predictions (or no cap)."""


def shrink(preds: Path, data: str = "cdnow") -> list[str]:
    """Would bounding eoca's largest predictions help its MSE? Per saved file, eoca's best is capped at the
    quantile of its validation predictions (or not at all, :data:`CAP_QUANTILES`) with the lowest validation
    MSE, then scored on the pooled test customers against BG/NBD; and, for eoca's top predictions, the mean
    actual against the mean predicted (a cap only helps where predictions exceed what customers spend), with
    the rank agreement of eoca and the tuned LightGBM (Spearman), which bounds how far their Gini can differ."""
    from scipy.stats import spearmanr

    files = _best_per_file(preds, data)
    capped, chosen = [], []
    for d in files:
        yv, v = d["valid_amount"], d["valid_eoca"]
        caps = [np.inf, *np.quantile(v, CAP_QUANTILES)]
        c = min(caps, key=lambda cap: M.mse(yv, np.minimum(v, cap)))
        chosen.append("none" if np.isinf(c) else f"{c:.0f}")
        capped.append(np.minimum(d["test_eoca"], c))
    y, a, b, g = (
        np.concatenate([d[k] for d in files]) for k in ("test_amount", "test_eoca", "test_bgnbd", "test_gbdt")
    )
    lines = ["| variant | MSE | Gini | vs bgnbd: ΔMSE 95% |", "|---|---:|---:|---|"]
    for label, pred in (
        ("eoca's best", a),
        (f"capped on validation (caps {', '.join(chosen)})", np.concatenate(capped)),
    ):
        vs = paired_bootstrap(y, pred, b, None, 1000, 0)["mse_diff_95"]
        lines.append(
            f"| {label} | {M.mse(y, pred):.0f} | {M.normalized_gini(y, pred):.4f} | [{vs[0]:+.0f}, {vs[1]:+.0f}] |"
        )
    lines += [
        "",
        "| eoca's top predictions | customers | mean actual | mean eoca | mean bgnbd |",
        "|---|---:|---:|---:|---:|",
    ]
    for q in (0.99, 0.995, 0.999):
        top = a >= np.quantile(a, q)
        lines.append(
            f"| top {1 - q:.1%} | {int(top.sum())} | {y[top].mean():.0f} | {a[top].mean():.0f} | {b[top].mean():.0f} |"
        )
    rho = float(spearmanr(a, g)[0])
    lines += ["", f"Spearman rank correlation of eoca's best and the tuned LightGBM `gbdt`: {rho:.4f}"]
    return lines


def hybrid(preds: Path, baseline: Path, data: str = "cdnow") -> list[str]:
    """Each candidate with the customer-base features (``preds``, an ``own_data.py --customer-base-model`` run)
    against itself without them (``baseline``, the same command without the option: same split seed, so the
    same test customers in the same order), pooled over the files: test Gini and MSE of both and the paired
    bootstrap interval of the gain (Gini with minus without; MSE without minus with)."""
    runs = [
        [dict(np.load(p)) for p in sorted(folder.glob(f"predictions_{data}_*.npz"))] for folder in (preds, baseline)
    ]
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a["test_amount"], b["test_amount"]), "the two runs must test the same customers"
    y = np.concatenate([d["test_amount"] for d in runs[0]])
    cands = [k[5:] for k in runs[0][0] if k.startswith("test_") and k[5:] not in ("amount", "weight", *PEERS)]
    names = {"eoca_gbdt": "gbdt (eoca's, default parameters)", "gbdt": "gbdt (tuned LightGBM, the peer)"}
    lines = [
        "| model | Gini without | Gini with | ΔGini 95% | MSE without | MSE with | ΔMSE 95% |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for c in [*cands, "gbdt"]:
        key_with = "gbdt_cbm" if c == "gbdt" else c
        with_ = np.concatenate([d[f"test_{key_with}"] for d in runs[0]])
        without = np.concatenate([d[f"test_{c}"] for d in runs[1]])
        vs = paired_bootstrap(y, with_, without, None, 1000, 0)
        g, m = vs["gini_diff_95"], vs["mse_diff_95"]
        lines.append(
            f"| {names.get(c, c)} | {M.normalized_gini(y, without):.4f} | {M.normalized_gini(y, with_):.4f} | "
            f"{ci(g, '.4f')} | {M.mse(y, without):.0f} | {M.mse(y, with_):.0f} | "
            f"{ci(m, '.0f')} |"
        )
    return lines


TOP_SPENDERS = 2
"""How many of the largest target-window spenders :func:`structural` sets apart."""


def structural(preds: Path, data: str = "cdnow") -> list[str]:
    """Where boosting from the structural model (``bgnbd_gbdt``) gains and where it pays, pooled over the saved
    files: each method's predictions for the :data:`TOP_SPENDERS` largest spenders, its MSE and Gini on the
    other test customers, its Spearman correlation with the tuned LightGBM and its validation deviance (the
    mean over the files, then per file; what own_data.py selects on)."""
    from scipy.stats import spearmanr

    files = [dict(np.load(p)) for p in sorted(preds.glob(f"predictions_{data}_*.npz"))]
    y = np.concatenate([d["test_amount"] for d in files])
    methods = [k[5:] for k in files[0] if k.startswith("test_") and k[5:] not in ("amount", "weight")]
    top = np.argsort(-y)[:TOP_SPENDERS]
    rest = np.ones(y.size, dtype=bool)
    rest[top] = False
    lines = [
        f"{y.size:,} test customers; the {TOP_SPENDERS} largest spent {', '.join(f'{v:,.0f}' for v in y[top])}",
        "",
        "| method | Gini | MSE | their predictions | MSE others | Gini others | Spearman vs gbdt | "
        "valid deviance (per file) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    g = np.concatenate([d["test_gbdt"] for d in files])
    for m in methods:
        pred = np.concatenate([d[f"test_{m}"] for d in files])
        dev = [M.tweedie_deviance(d["valid_amount"], np.maximum(d[f"valid_{m}"], 1e-9)) for d in files]
        lines.append(
            f"| {m} | {M.normalized_gini(y, pred):.4f} | {M.mse(y, pred):.0f} | "
            f"{', '.join(f'{v:,.0f}' for v in pred[top])} | {M.mse(y[rest], pred[rest]):.0f} | "
            f"{M.normalized_gini(y[rest], pred[rest]):.4f} | {float(spearmanr(pred, g)[0]):.4f} | "
            f"{np.mean(dev):.2f} ({' / '.join(f'{v:.2f}' for v in dev)}) |"
        )
    return lines


def weights(preds: Path, data: str = "cdnow", flexible: str = "mtl_ziln") -> list[str]:
    """Hindsight bound on a global blend weight: per split seed (the saved folds of a ``--folds`` run pooled),
    ``w * bgnbd + (1 - w) * flexible`` for ``w`` in 0, 0.1, ..., 1 against the tuned LightGBM and BG/NBD on the
    *test* customers. ``w`` is read off the test set here, so this is not a result any model can claim; it
    bounds what a stacker with one weight (``stack``, whose weight is chosen on validation) could reach."""
    seeds: dict[str, list[dict[str, np.ndarray]]] = {}
    for path in sorted(preds.glob(f"predictions_{data}_*_fold*.npz")):
        seeds.setdefault(path.stem.split("_fold")[0], []).append(dict(np.load(path)))
    lines = [
        "| split seed | w | MSE | Gini | vs gbdt: ΔGini / ΔMSE 95% | vs bgnbd: ΔGini / ΔMSE 95% |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, files in seeds.items():
        y, f, s, g = (
            np.concatenate([d[k] for d in files])
            for k in ("test_amount", f"test_{flexible}", "test_bgnbd", "test_gbdt")
        )
        for k in range(11):
            w = k / 10
            lines.append(_row(f"{name} | {w:.1f}", y, w * s + (1.0 - w) * f, {"gbdt": g, "bgnbd": s}))
    return lines


def power(preds: Path, data: str = "cdnow", boot: int = 1000) -> list[str]:
    """The two CDNOW ties per split seed (see the module docstring); bootstrap draws seeded by the split seed, as
    in own_data.py, so the intervals are that run's."""
    files: dict[int, list[dict[str, np.ndarray]]] = {}
    for path, d in zip(sorted(preds.glob(f"predictions_{data}_*_fold*.npz")), _best_per_file(preds, data), strict=True):
        files.setdefault(int(path.stem.split("_fold")[0].rsplit("_", 1)[1]), []).append(d)
    lines = [
        "| comparison | split seed | test customers | observed Δ | 95% | se | MDE80 | customers for 80% power |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for metric, peer in (("gini", "gbdt"), ("mse", "bgnbd")):
        for seed, parts in sorted(files.items()):
            y, a, b = (np.concatenate([d[k] for d in parts]) for k in ("test_amount", "test_eoca", f"test_{peer}"))
            gini = M.normalized_gini(y, a) - M.normalized_gini(y, b)
            d_obs = gini if metric == "gini" else M.mse(y, b) - M.mse(y, a)
            r = paired_bootstrap(y, a, b, None, boot, seed)
            mde = r[f"{metric}_mde80"]
            need = f"{y.size * (mde / d_obs) ** 2:,.0f} ({(mde / d_obs) ** 2:.1f}x)" if d_obs > 0 else "none: Δ <= 0"
            spec = ".4f" if metric == "gini" else ",.0f"
            lines.append(
                f"| {metric} vs {peer} | {seed} | {y.size:,} | {d_obs:+{spec}} | {ci(r[f'{metric}_diff_95'], spec)} | "
                f"{r[f'{metric}_diff_se']:{'.5f' if metric == 'gini' else ',.0f'}} | {mde:{spec}} | {need} |"
            )
    # Where MSE(bgnbd) - MSE(eoca) comes from: BG/NBD's top 1% of test predictions (about what a tail hand-off
    # gives to the structure) against the rest, and the single largest share.
    lines += [
        "",
        "| split seed | ΔMSE vs bgnbd | top 1% of bgnbd | rest | eoca / bgnbd on the top 1% (median) "
        "| largest share: actual, eoca, bgnbd, share |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for seed, parts in sorted(files.items()):
        y, a, b = (np.concatenate([d[k] for d in parts]) for k in ("test_amount", "test_eoca", "test_bgnbd"))
        share = ((y - b) ** 2 - (y - a) ** 2) / y.size
        top = b >= np.quantile(b, 0.99)
        i = int(np.argmax(np.abs(share)))
        lines.append(
            f"| {seed} | {share.sum():+,.0f} | {share[top].sum():+,.0f} | {share[~top].sum():+,.0f} | "
            f"{np.median(a[top] / b[top]):.3f} | {y[i]:,.0f}, {a[i]:,.0f}, {b[i]:,.0f}, {share[i]:+,.0f} |"
        )
    return lines


def excess(preds: Path) -> list[str]:
    """Every method's expected MSE above the Bayes predictor of the file (synthetic donations only: the saved
    ``test_ceiling``), population-weighted, per saved run; the folds of a ``--folds`` run are pooled."""
    runs: dict[str, list[dict[str, np.ndarray]]] = {}
    for path in sorted(preds.glob("predictions_*.npz")):
        d = dict(np.load(path))
        if "test_ceiling" in d:
            runs.setdefault(path.stem.split("_fold")[0], []).append(d)
    lines = ["| run | " + " | ".join(["method", "excess MSE", "max prediction"]) + " |", "|---|---|---:|---:|"]
    for name, parts in runs.items():
        ceiling = np.concatenate([d["test_ceiling"] for d in parts])
        w = np.concatenate([d["test_weight"] for d in parts])
        methods = [k[5:] for k in parts[0] if k.startswith("test_") and k[5:] not in ("amount", "weight", "oracle")]
        for m in methods:
            if m == "ceiling":
                continue
            pred = np.concatenate([d[f"test_{m}"] for d in parts])
            value = float(np.average((ceiling - pred) ** 2, weights=w))
            lines.append(f"| {name} | {m} | {value:.4f} | {pred.max():.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preds", type=Path, help="the --out folder of an own_data.py run (its saved predictions)")
    ap.add_argument("--baseline", type=Path, help="hybrid: the --out folder of the same run without the option")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parts", default="features,blends,unweighted")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    parts = args.parts.split(",")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "features" in parts:
            lines += ["## features", "", *features([int(s) for s in args.seeds.split(",")], Path(tmp)), ""]
        if "blends" in parts and args.preds is not None:
            lines += ["## blends and calibration", *blends(args.preds), ""]
        if "excess" in parts and args.preds is not None:
            lines += ["## expected MSE above the Bayes predictor (synthetic donations)", "", *excess(args.preds), ""]
        if "tail" in parts and args.preds is not None:
            lines += ["## the tail: where eoca and BG/NBD differ in squared error", "", *tail(args.preds), ""]
        if "structural" in parts and args.preds is not None:
            lines += ["## boosting from the structural model: the tail and the rest", "", *structural(args.preds), ""]
        if "hybrid" in parts and args.preds is not None and args.baseline is not None:
            lines += ["## the customer-base features: with against without", "", *hybrid(args.preds, args.baseline), ""]
        if "weights" in parts and args.preds is not None:
            lines += ["## one blend weight chosen on the test set (hindsight bound)", "", *weights(args.preds), ""]
        if "power" in parts and args.preds is not None:
            lines += ["## power of the two CDNOW ties", "", *power(args.preds), ""]
        if "shrink" in parts and args.preds is not None:
            lines += ["## capping eoca's largest predictions", "", *shrink(args.preds), ""]
        if "unweighted" in parts:
            lines += ["## unweighted training", "", *unweighted(Path(tmp), [int(x) for x in args.seeds.split(",")]), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    write_text("\n".join(lines) + "\n", args.out / "ablations.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
