"""Bring-your-own-data benchmark: eoca's best model against tuned LightGBM and BG/NBD + Gamma-Gamma on
customer-value data of two shapes, from the raw files through an import spec, with paired bootstrap intervals.

Data (nothing is copied into the repository):

* ``cdnow``: the CDNOW transaction log read from where the ``lifetimes`` package installed it, by default the
  full log (``--cdnow master``: 23,570 customers, 69,659 purchases, 1997-01 .. 1998-06; ``--cdnow sample`` is
  lifetimes' 1-in-10 sample, 2,357 customers); calibration to 1997-09-30, target 1997-10-01 .. 1998-06-30
  (about 70% of customers spend nothing in the target window).
* ``donations``: a *synthetic* donation-like direct-mail sample (:mod:`eoca.data.donations`; 10,000 rows,
  responders oversampled to 50%, population rate about 5%, blank features), imported with
  ``sampling.converted_rate`` so that training and every metric are population-weighted.

Per data set and seed: the zoo candidates train on the train split and the one with the best validation
metric is "eoca's best" (``gbdt_mean`` is tuned over :data:`GBDT_MEAN_GRID` first, on the same metric); the
peer ``gbdt`` (LightGBM hurdle) is tuned over the larger :data:`GBDT_GRID` on the same validation metric;
``bgnbd`` (transaction logs only) is fitted on the train customers. Both eoca's candidates and the peer
``gbdt`` are then the mean of ``--ensemble`` (default 5) training seeds at their chosen parameters, as
``eoca evaluate --seeds ... --ensemble`` scores them (for LightGBM the seed moves the feature subsampling),
and eoca's best is the candidate whose seed-average scores best on validation. The metric (``--select``) is by
default the validation Poisson deviance of the ETV (:func:`eoca.evaluation.metrics.tweedie_deviance`): like MSE it is
minimised by the expected value, but one extreme customer in the validation split does not decide it, so the
choice is far less noisy (``--select mse`` or ``gini`` are the alternatives). All are scored on the same test
customers. The paired bootstrap resamples test customers (``--boot`` draws) and reports the 95% percentile
interval of ``Gini(eoca) - Gini(peer)`` and ``MSE(peer) - MSE(eoca)`` (an interval above zero means eoca's best
is better on that metric) and the power of the test set: MDE80, the smallest true difference it detects four
times in five. On the synthetic donations the truth (:func:`eoca.data.donations.expected_donation`) is scored
against the peers too: the ceiling any model could reach on that test set. Every method's validation and test
predictions are saved (``predictions_<data>_<seed>.npz``).

``--folds K`` cross-fits instead: K runs per seed, run k holding out customer fold k (``split.folds``), each
with its own selection, tuning and seeds; the K test parts are pooled, so every customer is a test customer
once and the bootstrap resamples all of them (about 3.3x the test customers of the 30% split, for K = 3).

Run: ``nice python benchmarks/own_data.py --out bench_own_data`` (writes ``results.json`` and ``results.md``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from scipy.stats import norm

from eoca.data import Dataset
from eoca.data.donations import donation_spec, write_donation_sample
from eoca.data.importer import import_dataset
from eoca.evaluation import metrics as M
from eoca.io import write_json, write_text
from eoca.peers import make_peer
from eoca.pipeline.evaluate import split_exposures, trained_predictor
from eoca.training import train

CDNOW_SPEC = """\
name: cdnow-sample
description: CDNOW sample transaction log as installed by the lifetimes package
split: {split}
transactions:
  path: {path}
  delimiter: whitespace
  header: false
  columns: [customer_id, customer_index, date, quantity, amount]
  customer_id: customer_id
  time: date
  time_format: "%Y%m%d"
  amount: amount
  quantity: quantity
  window: {{calibration_end: 1997-09-30, target_end: 1998-06-30}}
"""

CDNOW_MASTER_SPEC = """\
name: cdnow
description: CDNOW transaction log (all 23,570 customers) as installed by the lifetimes package
split: {split}
transactions:
  path: {path}
  delimiter: whitespace
  header: true
  customer_id: customer_id
  time: date
  time_format: "%Y%m%d"
  amount: dollar_value
  quantity: number_of_cds
  window: {{calibration_end: 1997-09-30, target_end: 1998-06-30}}
"""

DONATION_FEATURES = ["age", "income", "n_gifts", "avg_gift", "last_gift", "months_since_last", "region"]

GBDT_GRID = [
    {"num_leaves": nl, "min_child_samples": mcs, "learning_rate": lr, "amount_num_leaves": anl}
    for nl in (7, 15)
    for mcs in (20, 100)
    for lr in (0.03, 0.1)
    for anl in (7, 15)
]
"""The peer's grid: classifier leaves, leaf size and learning rate, and the amount regressor's leaves."""

GBDT_MEAN_GRID = [
    {"value_num_leaves": nl, "value_min_child_samples": mcs, "value_learning_rate": lr}
    for nl in (7, 15)
    for mcs in (20, 100)
    for lr in (0.03, 0.1)
]
"""eoca's ``gbdt_mean`` grid (half the peer's size)."""

POWER_Z = 1.96 + 0.8416
"""z-values of a two-sided 5% test plus 80% power: a true difference of POWER_Z standard errors is detected
four times in five."""

PEERS = ("gbdt", "bgnbd", "gbdt_cbm")
"""Peers in the order they are reported: tuned LightGBM on the imported (RFM) table, BG/NBD + Gamma-Gamma, and
(with ``--customer-base-model``) tuned LightGBM on the hybrid table."""

EOCA_GRIDS: dict[str, list[dict[str, Any]]] = {"gbdt_mean": GBDT_MEAN_GRID, "bgnbd_gbdt": GBDT_MEAN_GRID}
"""Zoo candidates tuned before their seed ensemble (``bgnbd_gbdt`` shares ``gbdt_mean``'s value regressor, so its
grid); the others train at their defaults."""


def cdnow_path(variant: str = "master") -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the cdnow data set ships with the lifetimes package: pip install 'eoca[peers]'")
    file = "CDNOW_master.txt" if variant == "master" else "CDNOW_sample.txt"
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / file


def split_rule(seed: int, folds: int = 0, fold: int = 0) -> str:
    """The spec's split: 30% of customers held out, or fold ``fold`` of ``folds`` (cross-fitting)."""
    if folds:
        return f"{{folds: {folds}, fold: {fold}, validation_fraction: 0.2, seed: {seed}}}"
    return f"{{test_fraction: 0.3, validation_fraction: 0.2, seed: {seed}}}"


def build(
    name: str,
    work: Path,
    split_seed: int,
    cdnow: str = "master",
    split: str | None = None,
    customer_base_model: bool = False,
) -> Dataset:
    work.mkdir(parents=True, exist_ok=True)
    split = split or split_rule(split_seed)
    if name == "cdnow":
        template = CDNOW_MASTER_SPEC if cdnow == "master" else CDNOW_SPEC
        text = template.format(path=cdnow_path(cdnow), split=split)
        if customer_base_model:
            text += "  customer_base_model: true\n"
        (work / "spec.yaml").write_text(text)
    else:
        info = write_donation_sample(work / "donations.csv", seed=0, truth_path=work / "truth.csv")
        spec = donation_spec(
            "donations.csv",
            DONATION_FEATURES,
            split=split,
            population_rate=info["population_rate"],
            description="synthetic donation-like direct-mail sample, responders oversampled to 50%",
        )
        (work / "spec.yaml").write_text(spec)
    return import_dataset(work / "spec.yaml", work / "dataset")


def oracle_etv(ds: Dataset, work: Path, customer_pos: np.ndarray, column: str = "etv") -> np.ndarray | None:
    """The synthetic donations' expected donation of the customers at ``customer_pos`` (None for real data):
    ``column="etv"``, the population model on the complete features (the best any model could predict), or
    ``"etv_observed"``, on what the file shows (the best any model trained on the file could predict; the
    Bayes predictor, :func:`eoca.data.donations.observable_expected_value`)."""
    path = work / "truth.csv"
    if not path.exists():
        return None
    truth = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"CONTROLN": pa.string()}))
    etv = dict(zip(truth.column("CONTROLN").to_pylist(), truth.column(column).to_pylist(), strict=True))
    ids = ds.customers.column("customer_id").to_pylist()
    return np.array([etv[ids[int(c)]] for c in customer_pos], dtype=np.float64)


def excess_mse(ceiling: np.ndarray, pred: np.ndarray, w: np.ndarray | None, boot: int, seed: int) -> dict[str, Any]:
    """A model's expected MSE above the Bayes predictor ``ceiling``, ``E[(ceiling - pred)^2]`` (weighted): since
    ``E[(y - pred)^2] = E[(y - ceiling)^2] + E[(ceiling - pred)^2]`` for the Bayes predictor, this is the
    model's expected-MSE gap without the label noise that makes a test MSE noisy; with its 95% interval over
    test-customer resamples."""
    sq = (ceiling - pred) ** 2
    ww = np.ones_like(sq) if w is None else w
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        i = rng.integers(0, sq.size, sq.size)
        draws.append(float(np.sum(ww[i] * sq[i]) / np.sum(ww[i])))
    return {"excess": float(np.sum(ww * sq) / np.sum(ww)), "excess_95": np.percentile(draws, [2.5, 97.5]).tolist()}


def _score(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None, metric: str) -> float:
    """Higher is better."""
    if metric == "gini":
        return M.normalized_gini(y, pred, w)
    if metric == "deviance":
        return -M.tweedie_deviance(y, pred, w)
    return -M.mse(y, pred, w)


def fit_and_predict(ds: Dataset, model: str, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(validation ETV, test ETV) of one configuration."""
    trained = train(ds, {**cfg, "model": model}, None, progress=False)
    if hasattr(trained.model, "blend_weight"):  # stack: the structure's weight, chosen on the validation split
        print(json.dumps({"model": model, "seed": cfg["seed"], "blend_weight": float(trained.model.blend_weight)}))
    predict = trained_predictor(trained, ds)
    out = []
    for split in ("valid", "test"):
        lab = split_exposures(ds, split)
        out.append(np.asarray(predict(lab["customer_pos"], lab["fund_pos"])["etv"], dtype=np.float64))
    return out[0], out[1]


def ci(interval: Any, spec: str) -> str:
    """An interval ``(low, high)`` as ``[+low, +high]`` with the format ``spec`` (e.g. ``".4f"``) and signs."""
    return f"[{interval[0]:+{spec}}, {interval[1]:+{spec}}]"


def paired_bootstrap(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray | None, boot: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals of Gini(a) - Gini(b) and MSE(b) - MSE(a) over test-customer resamples, their
    bootstrap standard errors, and the smallest true difference this test set detects with 80% power in a
    two-sided 5% test, ``(1.96 + 0.84) x se`` (normal approximation)."""
    rng = np.random.default_rng(seed)
    n = y.size
    gini, mse = [], []
    for _ in range(boot):
        i = rng.integers(0, n, n)
        wi = None if w is None else w[i]
        gini.append(M.normalized_gini(y[i], a[i], wi) - M.normalized_gini(y[i], b[i], wi))
        mse.append(M.mse(y[i], b[i], wi) - M.mse(y[i], a[i], wi))
    q = [2.5, 97.5]
    se_g, se_m = float(np.std(gini, ddof=1)), float(np.std(mse, ddof=1))
    return {
        "gini_diff_95": np.percentile(gini, q).tolist(),
        "mse_diff_95": np.percentile(mse, q).tolist(),
        "gini_diff_se": se_g,
        "mse_diff_se": se_m,
        "gini_mde80": POWER_Z * se_g,
        "mse_mde80": POWER_Z * se_m,
    }


def tuned(
    ds: Dataset, model: str, base: dict[str, Any], grid: list[dict[str, Any]], select: str
) -> tuple[float, dict[str, Any], np.ndarray, np.ndarray]:
    """(validation score, params, validation ETV, test ETV) of the best grid point of ``model`` on ``select``."""
    valid = split_exposures(ds, "valid")
    best: tuple[float, dict[str, Any], np.ndarray, np.ndarray] | None = None
    for params in grid or [{}]:
        v, t = fit_and_predict(ds, model, {**base, "params": params})
        s = _score(valid["amount"], v, valid.get("weight"), select)
        if best is None or s > best[0]:
            best = (s, params, v, t)
    assert best is not None
    return best


def seed_averaged(
    ds: Dataset, model: str, base: dict[str, Any], grid: list[dict[str, Any]], select: str, seeds: int
) -> tuple[float, dict[str, Any], np.ndarray, np.ndarray]:
    """:func:`tuned`, then the mean ETV of ``seeds`` training seeds at the chosen grid point (the first is the
    tuning run itself): what ``eoca evaluate --seeds ... --ensemble`` scores. Returns the validation score of
    the average, the params, and the averaged validation and test ETV."""
    _, params, v, t = tuned(ds, model, base, grid, select)
    vs, ts = [v], [t]
    for k in range(1, seeds):
        vk, tk = fit_and_predict(ds, model, {**base, "seed": base["seed"] * 1000 + k, "params": params})
        vs.append(vk)
        ts.append(tk)
    valid = split_exposures(ds, "valid")
    v_mean, t_mean = np.mean(vs, axis=0), np.mean(ts, axis=0)
    return _score(valid["amount"], v_mean, valid.get("weight"), select), params, v_mean, t_mean


def run_one(
    name: str, seed: int, args: argparse.Namespace, work: Path, fold: int | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One split (``fold`` of ``args.folds`` when given): the result record (without metrics) and the test
    arrays ``y``, ``w`` (weights or absent), ``eoca``, each peer's ETV and ``oracle`` (synthetic data)."""
    tag = f"{name}_{seed}" if fold is None else f"{name}_{seed}_fold{fold}"
    split = None if fold is None else split_rule(seed, args.folds, fold)
    ds = build(name, work / tag, split_seed=seed, cdnow=args.cdnow, split=split)
    hybrid = name == "cdnow" and args.customer_base_model
    # eoca's candidates read the hybrid table (the customer-base model's quantities as features); the peers
    # gbdt and bgnbd read what practitioners give them, the RFM table; gbdt_cbm is LightGBM on the hybrid table.
    ds_eoca = (
        build(name, work / tag / "cbm", split_seed=seed, cdnow=args.cdnow, split=split, customer_base_model=True)
        if hybrid
        else ds
    )
    base = {"seed": seed, "num_threads": 1, "max_epochs": args.max_epochs, "patience": 3}
    test = split_exposures(ds, "test")
    if hybrid:
        assert np.array_equal(split_exposures(ds_eoca, "test")["customer_pos"], test["customer_pos"])
    wt = test.get("weight")
    res: dict[str, Any] = {
        "dataset": name,
        "seed": seed,
        "test_customers": int(test["amount"].size),
        "zero_label_share": float((test["amount"] == 0).mean()),
    }
    t0 = time.perf_counter()
    cands: dict[str, tuple[float, dict[str, Any], np.ndarray]] = {}
    saved: dict[str, np.ndarray] = {}  # every method's valid and test ETV, for analysis after the run
    for model in args.models.split(","):
        score, params, v, t = seed_averaged(ds_eoca, model, base, EOCA_GRIDS.get(model, []), args.select, args.ensemble)
        cands[model] = (score, params, t)
        key = f"eoca_{model}" if model in PEERS else model  # the zoo's gbdt as a candidate is not the peer gbdt
        saved[f"valid_{key}"], saved[f"test_{key}"] = v, t
    best = max(cands, key=lambda m: cands[m][0])
    res["eoca_candidates_valid"] = {m: c[0] for m, c in cands.items()}
    res["eoca_best"] = best
    res["eoca_best_params"] = cands[best][1]
    eoca = cands[best][2]
    gb = seed_averaged(ds, "gbdt", base, GBDT_GRID, args.select, args.ensemble)
    res["gbdt_params"] = gb[1]
    peers = {"gbdt": gb[3]}
    saved["valid_gbdt"], saved["test_gbdt"] = gb[2], gb[3]
    if hybrid:
        gbh = seed_averaged(ds_eoca, "gbdt", base, GBDT_GRID, args.select, args.ensemble)
        res["gbdt_cbm_params"] = gbh[1]
        peers["gbdt_cbm"] = gbh[3]
        saved["valid_gbdt_cbm"], saved["test_gbdt_cbm"] = gbh[2], gbh[3]
    if name == "cdnow":
        peer = make_peer("bgnbd").fit(ds)
        peers["bgnbd"] = peer.predict_customers(ds, test["customer_pos"])["etv"]
        saved["valid_bgnbd"] = peer.predict_customers(ds, split_exposures(ds, "valid")["customer_pos"])["etv"]
        saved["test_bgnbd"] = peers["bgnbd"]
    y = test["amount"]
    arrays: dict[str, np.ndarray] = {"y": y, "eoca": eoca, **peers, **{f"cand:{m}": c[2] for m, c in cands.items()}}
    if wt is not None:
        arrays["w"] = wt
    oracle = oracle_etv(ds, work / tag, test["customer_pos"])
    if oracle is not None:
        saved["test_oracle"] = arrays["oracle"] = oracle
        ceiling = oracle_etv(ds, work / tag, test["customer_pos"], "etv_observed")
        assert ceiling is not None
        saved["test_ceiling"] = arrays["ceiling"] = ceiling
    valid = split_exposures(ds, "valid")
    for split, lab in (("valid", valid), ("test", test)):
        saved[f"{split}_amount"] = lab["amount"]
        if "weight" in lab:
            saved[f"{split}_weight"] = lab["weight"]
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"predictions_{tag}.npz", **saved)
    res["seconds"] = time.perf_counter() - t0
    return res, arrays


def score(res: dict[str, Any], arrays: dict[str, np.ndarray], boot: int, seed: int) -> dict[str, Any]:
    """Add the test metrics of eoca's best and the peers, and the paired bootstrap comparisons, to ``res``
    (and the truth's, on synthetic data: the ceiling, how far the true expected value is from the peers)."""
    y, w, eoca = arrays["y"], arrays.get("w"), arrays["eoca"]
    peers = {p: arrays[p] for p in PEERS if p in arrays}
    res["metrics"] = {
        m: {"gini": M.normalized_gini(y, p, w), "mse": M.mse(y, p, w), "mae": M.mae(y, p, w)}
        for m, p in {"eoca:" + res["eoca_best"]: eoca, **peers}.items()
    }
    res["vs"] = {p: paired_bootstrap(y, eoca, pred, w, boot, seed) for p, pred in peers.items()}
    if cand_keys := [k for k in arrays if k.startswith("cand:")]:
        res["candidates"] = {
            k[5:]: {
                "gini": M.normalized_gini(y, arrays[k], w),
                "mse": M.mse(y, arrays[k], w),
                "vs": {p: paired_bootstrap(y, arrays[k], pred, w, boot, seed) for p, pred in peers.items()},
            }
            for k in cand_keys
        }
    if "oracle" in arrays:
        oracle = arrays["oracle"]
        res["oracle"] = {"gini": M.normalized_gini(y, oracle, w), "mse": M.mse(y, oracle, w)}
        res["oracle_vs"] = {p: paired_bootstrap(y, oracle, pred, w, boot, seed) for p, pred in peers.items()}
    if "ceiling" in arrays:
        ceiling = arrays["ceiling"]
        res["ceiling"] = {"gini": M.normalized_gini(y, ceiling, w), "mse": M.mse(y, ceiling, w)}
        res["ceiling_vs"] = {p: paired_bootstrap(y, ceiling, pred, w, boot, seed) for p, pred in peers.items()}
        res["excess"] = {m: excess_mse(ceiling, pred, w, boot, seed) for m, pred in {"eoca": eoca, **peers}.items()}
        # The largest true MSE margin any model trained on this file can have over a peer is the peer's own
        # excess over the Bayes predictor; the power to show it is that of the ceiling-vs-peer comparison.
        res["reach"] = {
            p: {
                "max_margin": res["excess"][p]["excess"],
                "se": res["ceiling_vs"][p]["mse_diff_se"],
                "power": float(norm.cdf(res["excess"][p]["excess"] / res["ceiling_vs"][p]["mse_diff_se"] - 1.96)),
            }
            for p in peers
        }
    return res


def crossfit(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every customer tested once: ``args.folds`` runs, each holding out one fold, pooled before scoring."""
    parts = [run_one(name, seed, args, work, fold) for fold in range(args.folds)]
    pooled = {k: np.concatenate([a[k] for _, a in parts]) for k in parts[0][1]}
    res = {
        "dataset": f"{name} ({args.folds}-fold, every customer)",
        "seed": seed,
        "test_customers": int(pooled["y"].size),
        "zero_label_share": float((pooled["y"] == 0).mean()),
        "eoca_best": "/".join(r["eoca_best"] for r, _ in parts),
        "folds": [r for r, _ in parts],
        "seconds": sum(r["seconds"] for r, _ in parts),
    }
    return score(res, pooled, args.boot, seed)


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| data | seed | eoca best | Gini eoca | peer | Gini peer | ΔGini 95% | ΔGini MDE80 | MSE eoca | MSE peer |"
        " ΔMSE 95% | ΔMSE MDE80 | beats on both |",
        "|---|---:|---|---:|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        e = r["metrics"]["eoca:" + r["eoca_best"]]
        for peer, vs in r["vs"].items():
            p = r["metrics"][peer]
            g, m = vs["gini_diff_95"], vs["mse_diff_95"]
            both = "yes" if g[0] > 0 and m[0] > 0 else "no"
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {r['eoca_best']} | {e['gini']:.4f} | {peer} | {p['gini']:.4f} | "
                f"{ci(g, '.4f')} | {vs['gini_mde80']:.4f} | {e['mse']:.4g} | {p['mse']:.4g} | "
                f"{ci(m, '.4g')} | {vs['mse_mde80']:.4g} | {both} |"
            )
    cand = [r for r in results if "candidates" in r]
    if cand:
        lines += [
            "",
            "Every eoca candidate (its seed ensemble at its tuned parameters) against the peers, same test customers:",
            "",
            "| data | seed | candidate | Gini | MSE | peer | ΔGini 95% | ΔMSE 95% |",
            "|---|---:|---|---:|---:|---|---|---|",
        ]
        for r in cand:
            for m, c in r["candidates"].items():
                for peer, vs in c["vs"].items():
                    g, d = vs["gini_diff_95"], vs["mse_diff_95"]
                    lines.append(
                        f"| {r['dataset']} | {r['seed']} | {m} | {c['gini']:.4f} | {c['mse']:.4g} | {peer} | "
                        f"{ci(g, '.4f')} | {ci(d, '.4g')} |"
                    )
    oracle = [r for r in results if "oracle_vs" in r]
    if oracle:
        lines += [
            "",
            "The true expected value (synthetic data only) against the same peers, on the same test customers:",
            "",
            "| data | seed | Gini truth | peer | ΔGini 95% | ΔGini MDE80 | MSE truth | ΔMSE 95% | ΔMSE MDE80 |",
            "|---|---:|---:|---|---|---:|---:|---|---:|",
        ]
        for r in oracle:
            for peer, vs in r["oracle_vs"].items():
                g, m = vs["gini_diff_95"], vs["mse_diff_95"]
                lines.append(
                    f"| {r['dataset']} | {r['seed']} | {r['oracle']['gini']:.4f} | {peer} | {ci(g, '.4f')} "
                    f"| {vs['gini_mde80']:.4f} | {r['oracle']['mse']:.4g} | {ci(m, '.4g')} | "
                    f"{vs['mse_mde80']:.4g} |"
                )
    ceiling = [r for r in results if "reach" in r]
    if ceiling:
        lines += [
            "",
            "What the file allows (synthetic data only): the Bayes predictor from the file's features (blanks "
            "averaged over their population distribution) against the same peers, each method's expected MSE "
            "above it (label noise removed), and the power to show the largest margin any model could have:",
            "",
            "| data | seed | Gini ceiling | ΔGini ceiling 95% | ΔGini MDE80 | MSE ceiling | peer | ΔMSE ceiling 95% | "
            "excess eoca | excess peer | max margin / se | power |",
            "|---|---:|---:|---|---:|---:|---|---|---|---|---:|---:|",
        ]
        for r in ceiling:
            ex = r["excess"]
            e = ex["eoca"]
            for peer, reach in r["reach"].items():
                vs = r["ceiling_vs"][peer]
                g, m = vs["gini_diff_95"], vs["mse_diff_95"]
                excess = [
                    f"{x['excess']:.4g} [{x['excess_95'][0]:.4g}, {x['excess_95'][1]:.4g}]" for x in (e, ex[peer])
                ]
                lines.append(
                    f"| {r['dataset']} | {r['seed']} | {r['ceiling']['gini']:.4f} | {ci(g, '.4f')} | "
                    f"{vs['gini_mde80']:.4f} | {r['ceiling']['mse']:.4g} | {peer} | {ci(m, '.4g')} | "
                    f"{excess[0]} | {excess[1]} | {reach['max_margin']:.4g} / {reach['se']:.4g} | "
                    f"{reach['power']:.0%} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", default="cdnow,donations")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="mtl_ziln,esdpm,mtl_mse,dnn_v,gbdt_mean")
    ap.add_argument("--cdnow", choices=("master", "sample"), default="master")
    ap.add_argument("--ensemble", type=int, default=5, help="training seeds averaged per model (both sides)")
    ap.add_argument("--select", choices=("mse", "deviance", "gini"), default="deviance")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument(
        "--customer-base-model",
        action="store_true",
        help="CDNOW: eoca's candidates read the hybrid table (transactions.customer_base_model: true); the peer "
        "gbdt keeps the RFM table and gbdt_cbm (tuned LightGBM on the hybrid table) is added",
    )
    ap.add_argument(
        "--folds", type=int, default=0, help="cross-fit: K runs, each testing one of K customer folds, pooled"
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                if args.folds:
                    r = crossfit(name, seed, args, Path(tmp))
                else:
                    r = score(*run_one(name, seed, args, Path(tmp)), args.boot, seed)
                print(json.dumps({k: r[k] for k in ("dataset", "seed", "eoca_best", "metrics", "vs")}), flush=True)
                results.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({"args": vars(args) | {"out": str(args.out)}, "results": results}, args.out / "results.json")
    write_text(render(results), args.out / "results.md")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
