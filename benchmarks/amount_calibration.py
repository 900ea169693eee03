"""Why the amount head misses "within 20% per fund" on the simulator, and what was tried (issue 9).

On a simulated world and one or more saved runs (e.g. ``OUT/runs/gbdt/seed=0`` of ``benchmarks/decisions.py``),
for each run:

* **product**: the per-fund amount ratio of ``benchmarks/decisions.py`` (per fund, mean predicted
  ``E[amount | convert]`` / mean true one over the test customers, both weighted by the true conversion
  probability), guarded (what the product outputs) and unguarded, and the decision share (the true value of the
  eligible argmax of ``p x amount`` as a share of the oracle's, as in ``eoca evaluate``).
* **where the worst fund loses**: its ratio by bins of the simulator's true per-pair sigma, each bin's share of
  the fund's weighted true mean, and the model's mean predicted sigma there.
* **what the data can say**: per fund, the past purchases' summed amount over the sum of their true expected
  amounts (the truth's ``exp(mu + sigma^2 / 2) - 1``). Lognormal amounts with sigma near 2 have a sample mean
  that is usually below its expectation, so any estimate of the mean fitted on the data inherits this ratio.
* **alternatives**, each as per-fund ratios and decision share; every one changes the amount only, never ``p``:
  ``history_mean``: one factor per fund, the past purchases' summed amount over the summed guarded prediction;
  ``scale_mixture``: one factor per fund from a lognormal scale mixture (``log sigma = log(s sigma_hat) + eta``,
  ``eta ~ N(0, tau^2)``; ``s`` and ``tau`` by maximum likelihood of the fund's past purchases' log residuals,
  ``sigma`` capped at the fund's log-amount sd over its purchases, or at ``--cap``), the factor being the
  mixture's mean over the point estimate's, summed over the fund's purchases;
  ``oracle_factor``: one factor per fund from the truth (1 / ratio): what a perfect per-fund scale does to the
  decisions. For ``gbdt`` runs also two re-fitted amount models on the past purchases (features cut at each
  purchase's time, early-stopped on the purchases of the customers gbdt itself held out):
  ``gamma_mean``: LightGBM ``gamma`` (log link) on ``amount + 1`` with the model's ``mu`` as offset, i.e.
  ``E[amount + 1 | x]`` in mean space (replaces ``exp(sigma^2 / 2)``); ``gamma_variance``: LightGBM ``gamma``
  on the squared log residual (the Gaussian likelihood of a per-pair variance), rescaled on the held-out
  purchases, in place of gbdt's least-squares spread booster.

    python benchmarks/amount_calibration.py --data out/world --runs out/bench/runs/gbdt/seed=0 --out out/amount

``--product-only`` measures only the product's ratios (guarded and unguarded, scored in chunks of customers so that
a 1,000,000-customer world fits in about 5 GB) and the model-free "what the data can say" row, which is computed
from the dataset's purchase events and the truth alone (``--runs`` may then be omitted): this is how the per-fund
ratios were measured on the 1,000,000-customer world, where the full analysis does not fit the machine.

Writes ``OUT/amount_calibration.json`` and ``OUT/amount_calibration.md``. The truth table is required.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from decisions import p_weighted_ratios

SIGMA_BINS = (0.0, 0.75, 1.0, 1.25, 1.5, 1.75, 1.99, 2.01)
QUADRATURE = 24


def _purchases(trained: Any, dataset: Any) -> dict[str, np.ndarray]:
    """Every past purchase the models learn from: customer and fund positions, amount, the model's guarded
    ``mu``/``sigma``/``amount`` (features cut at the purchase's own time, as in training) and, for ``gbdt``,
    the tabular rows."""
    import torch

    from eoca.models.features.tabular import tabular_rows
    from eoca.training.trainer import dataset_fund_ids

    bound = trained.bind(dataset)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("customer", "fund", "amount", "p", "mu", "sigma", "etv", "x")}
    with torch.inference_mode():
        for batch, amount in bound.purchase_history(65536):
            out = trained.model.predict(batch)
            cols["customer"].append(batch.customer.numpy())
            cols["fund"].append(batch.fund.numpy())
            cols["amount"].append(np.asarray(amount, dtype=np.float64))
            for name in ("p", "mu", "sigma", "etv"):
                cols[name].append(getattr(out, name).numpy())
            if trained.name == "gbdt":
                cols["x"].append(tabular_rows(trained.features, batch))
    res = {k: np.concatenate(v) for k, v in cols.items() if v}
    raw = {k: res[k] for k in ("p", "mu", "sigma", "etv")}
    guarded = trained.guard.apply(raw, res["fund"], dataset_fund_ids(dataset), trained.model.formula)
    res["mu"], res["sigma"], res["pred"] = (np.asarray(guarded[k], dtype=np.float64) for k in ("mu", "sigma", "amount"))
    return res


def _nll(theta: np.ndarray, resid: np.ndarray, sigma: np.ndarray, nodes: np.ndarray, weights: np.ndarray) -> float:
    """Mean negative log likelihood of log residuals under the scale mixture (``theta = (log s, tau)``)."""
    sig = np.exp(theta[0]) * sigma[:, None] * np.exp(abs(theta[1]) * nodes[None, :])
    lik = (weights[None, :] * np.exp(-0.5 * (resid[:, None] / sig) ** 2) / sig).sum(axis=1)
    return float(-np.log(np.maximum(lik, 1e-300)).mean())


def _mixture_factors(
    purch: dict[str, np.ndarray], k: int, cap: float | None
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Per fund: (mixture mean / point mean) over its purchases, and the fitted ``s``, ``tau``, cap."""
    from scipy.optimize import minimize

    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE)
    weights = weights / weights.sum()
    fund, amount, mu, sigma = purch["fund"], purch["amount"], purch["mu"], purch["sigma"]
    resid = np.log1p(amount) - mu
    factors, fits = np.ones(k), []
    for f in range(k):
        rows = np.flatnonzero(fund == f)
        if rows.size < 200:
            fits.append({"rows": float(rows.size)})
            continue
        sub = rows[:: rows.size // 20000 + 1]  # 20,000 rows pin two parameters; keeps the fit to seconds
        fit = minimize(_nll, np.array([0.0, 0.2]), args=(resid[sub], sigma[sub], nodes, weights), method="Nelder-Mead")
        log_s, tau = float(fit.x[0]), abs(float(fit.x[1]))
        top = float(np.log1p(amount[rows]).std()) if cap is None else cap
        sig = np.minimum(np.exp(log_s) * sigma[rows, None] * np.exp(tau * nodes[None, :]), top)
        mixture = (np.exp(mu[rows]) * (weights[None, :] * np.exp(sig**2 / 2)).sum(axis=1) - 1).sum()
        factors[f] = mixture / purch["pred"][rows].sum()
        fits.append({"rows": float(rows.size), "s": float(np.exp(log_s)), "tau": tau, "cap": top})
    return factors, fits


def _gbdt_refits(trained: Any, dataset: Any, purch: dict[str, np.ndarray], grid_x: np.ndarray) -> dict[str, np.ndarray]:
    """The two re-fitted gbdt amount models (module docstring), as ``E[amount | convert]`` ``[n, k]`` on the grid
    rows ``grid_x``, guarded the same way as the product (its per-fund shift and bounds)."""
    import lightgbm as lgb

    from eoca.models.guard import _FORMULA_OFFSET
    from eoca.models.losses import SIGMA_FLOOR
    from eoca.models.zoo.gbdt import HISTORY_HOLDOUT

    model = trained.model
    seed = int(trained.config.seed)
    held = (np.random.default_rng(seed).random(dataset.n_customers) < HISTORY_HOLDOUT)[purch["customer"]]
    x, y = purch["x"], purch["amount"]
    mu = model._mu(x)
    columns, categorical = list(model.columns), list(model.categorical)
    base = {
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "learning_rate": 0.03,
        "lambda_l2": 10.0,
        "feature_fraction": 0.8,
        "num_leaves": 7,
        "min_child_samples": 500,
        "objective": "gamma",
    }

    def train(label: np.ndarray, init: np.ndarray | None, feats: np.ndarray, names: list[str]) -> Any:
        tr = lgb.Dataset(
            feats[~held],
            label[~held],
            init_score=None if init is None else init[~held],
            feature_name=names,
            categorical_feature=categorical,
            free_raw_data=False,
        )
        va = lgb.Dataset(feats[held], label[held], init_score=None if init is None else init[held], reference=tr)
        return lgb.train(base, tr, 2000, valid_sets=[va], callbacks=[lgb.early_stopping(100, verbose=False)])

    shift = trained.guard._shifts([str(f) for f in dataset.funds.column("fund_id").to_pylist()])
    k = dataset.n_funds
    gmu = model._mu(grid_x).reshape(-1, k) + shift[None, :]
    offset = _FORMULA_OFFSET["eoca"]
    cap = trained.guard.amount_cap
    mean_booster = train(y + offset, mu, x, columns)
    excess = mean_booster.predict(grid_x, raw_score=True).reshape(-1, k)
    out = {"gamma_mean": np.clip(np.exp(gmu + excess) - offset, 0.0, cap)}
    xa = model._amount_x(x)
    r2 = np.maximum((np.log1p(y) - model._mu(x)) ** 2, 1e-6)
    var_booster = train(r2, None, xa, [*columns, "source"])
    scale = float(r2[held].mean() / var_booster.predict(xa[held]).mean())
    var = scale * np.maximum(var_booster.predict(model._amount_x(grid_x)), SIGMA_FLOOR**2).reshape(-1, k)
    sigma = np.clip(np.sqrt(var), SIGMA_FLOOR, trained.guard.sigma_max)
    gmu = np.clip(gmu, trained.guard.mu_min, trained.guard.mu_max)
    out["gamma_variance"] = np.clip(np.exp(gmu + sigma**2 / 2) - offset, 0.0, cap)
    return out


def realised_over_expected(dataset: Any) -> tuple[list[int], list[float]]:
    """Per fund: the number of purchase events and their summed amount over the sum of their true expected amounts
    (``exp(mu + sigma^2 / 2) - 1`` from the truth). Model-free: the same purchases every model learns from."""
    import pyarrow.compute as pc

    from eoca.simulate import truth_arrays

    events = dataset.events
    buys = events.filter(pc.equal(events.column("event_type"), "purchase"))
    cust = dataset.customer_index(buys.column("customer_id"))
    fund = dataset.fund_index(buys.column("fund_id"))
    amount = np.asarray(buys.column("amount").to_numpy(), dtype=np.float64)
    truth = truth_arrays(dataset)
    expected = np.expm1(truth.mu[cust, fund] + truth.sigma[cust, fund] ** 2 / 2)
    by_fund = [fund == f for f in range(dataset.n_funds)]
    return [int(s.sum()) for s in by_fund], [float(amount[s].sum() / expected[s].sum()) for s in by_fund]


def product_ratios(
    dataset: Any, run: Path, chunk: int = 50_000, refit_guard: bool = False, amount_levels: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The product's per-fund ratios and decision share, guarded and unguarded, scoring ``chunk`` test customers at
    a time.

    ``refit_guard``: first refit the run's guard with today's rule (:meth:`TrainedModel.fit_guard`, on the valid
    split and the past purchases), so that a run saved before a change of the guard is measured as the product
    would deliver it now; the unguarded row, which no guard touches, is then not scored again. ``amount_levels``
    (with ``refit_guard``): one row per form of the guard's step 3 (``train.amount_level``), each refitted on the
    same trained model, so that the forms are compared on the same network."""
    from eoca.risk import eligible_mask
    from eoca.simulate import truth_arrays
    from eoca.training import TrainedModel

    trained = TrainedModel.load(run)
    truth = truth_arrays(dataset)
    k = dataset.n_funds
    test = dataset.split_mask("test")
    customers = np.unique(dataset.customer_index(dataset.exposures.column("customer_id"))[test])
    p_true = truth.p[customers]
    etv_true = truth.etv[customers]
    amount_true = etv_true / np.maximum(p_true, 1e-300)
    tol = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[customers]
    eligible = eligible_mask(tol, np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64))
    oracle = float(np.where(eligible, etv_true, -np.inf).max(axis=1).sum())
    saved = trained.guard.state_dict() if trained.guard is not None else {}
    forms: list[tuple[str, bool, str | None]] = []
    if refit_guard:
        forms = [(f"product ({level})", True, level) for level in (amount_levels or (trained.config.amount_level,))]
    else:
        forms = [("product", True, None), ("unguarded", False, None)]
    variants: dict[str, Any] = {}
    refit: dict[str, Any] = {}
    for name, guarded, level in forms:
        if level is not None:
            trained.config = trained.config.model_copy(update={"amount_level": level})
            new = trained.fit_guard(dataset).state_dict()
            steps_1_2 = [key for key in saved if not key.startswith(("amount_factor", "level_", "jensen"))]
            refit[level] = {
                "saved_amount_factor": saved.get("amount_factor", 1.0),
                "amount_factor": new["amount_factor"],
                "amount_factor_source": new["amount_factor_source"],
                "jensen_b": new["jensen_b"],
                "steps_1_2_unchanged": all(saved[key] == new[key] for key in steps_1_2),
            }
        parts, probs = [], []
        for block in np.array_split(customers, max(1, -(-customers.size // chunk))):
            pred = trained.predict_pairs(
                dataset, np.repeat(block, k), np.tile(np.arange(k), block.size), guarded=guarded
            )
            if "amount" not in pred:
                return {"run": str(run), "model": trained.name, "skipped": "no amount output"}
            parts.append(np.asarray(pred["amount"], dtype=np.float64).reshape(block.size, k))
            probs.append(np.asarray(pred["p"], dtype=np.float64).reshape(block.size, k))
        amount, p = np.concatenate(parts), np.concatenate(probs)
        choice = np.where(eligible, p * amount, -np.inf).argmax(axis=1)
        variants[name] = {
            "ratios": p_weighted_ratios(amount, amount_true, p_true),
            "share": float(etv_true[np.arange(choice.size), choice].sum() / oracle),
        }
    out = {"run": str(run), "model": trained.name, "test_customers": int(customers.size), "variants": variants}
    return {**out, "guard_refit": refit} if refit else out


def analyse(dataset: Any, run: Path, cap: float | None) -> dict[str, Any]:
    """Every measurement of the module docstring for one saved run."""
    from eoca.models.features.tabular import tabular_rows
    from eoca.risk import eligible_mask
    from eoca.simulate import truth_arrays
    from eoca.training import TrainedModel

    trained = TrainedModel.load(run)
    truth = truth_arrays(dataset)
    k = dataset.n_funds
    test = dataset.split_mask("test")
    customers = np.unique(dataset.customer_index(dataset.exposures.column("customer_id"))[test])
    cust, fund = np.repeat(customers, k), np.tile(np.arange(k), customers.size)
    guarded = trained.predict_pairs(dataset, cust, fund)
    raw = trained.predict_pairs(dataset, cust, fund, guarded=False)
    if "amount" not in guarded:
        return {"run": str(run), "model": trained.name, "skipped": "no amount output"}
    p_true = truth.p[customers]
    etv_true = truth.etv[customers]
    amount_true = etv_true / np.maximum(p_true, 1e-300)
    tol = np.asarray(dataset.customers.column("risk_tolerance").to_numpy(), dtype=np.int64)[customers]
    risk = np.asarray(dataset.funds.column("risk_level").to_numpy(), dtype=np.int64)
    eligible = eligible_mask(tol, risk)
    oracle = np.where(eligible, etv_true, -np.inf).max(axis=1).sum()
    p_model = np.asarray(guarded["p"], dtype=np.float64).reshape(-1, k)

    def grid(values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1, k)

    def ratios(amount: np.ndarray) -> list[float]:
        return p_weighted_ratios(amount, amount_true, p_true)

    def share(amount: np.ndarray) -> float:
        choice = np.where(eligible, p_model * amount, -np.inf).argmax(axis=1)
        return float(etv_true[np.arange(choice.size), choice].sum() / oracle)

    amount = grid(guarded["amount"])
    product = ratios(amount)
    worst = int(np.argmax(np.abs(np.log(product))))
    rows: dict[str, Any] = {
        "product": {"ratios": product, "share": share(amount)},
        "unguarded": {"ratios": ratios(grid(raw["amount"])), "share": share(grid(raw["amount"]))},
    }
    sigma_true, sigma_pred = truth.sigma[customers][:, worst], grid(guarded.get("sigma", np.full(cust.size, np.nan)))
    mass = p_true[:, worst] * amount_true[:, worst]
    bins = []
    for lo, hi in itertools.pairwise(SIGMA_BINS):
        sel = (sigma_true >= lo) & (sigma_true < hi)
        if sel.any():
            bins.append(
                {
                    "sigma_lo": lo,
                    "sigma_hi": hi,
                    "pairs": int(sel.sum()),
                    "mass_share": float(mass[sel].sum() / mass.sum()),
                    "ratio": float((p_true[sel, worst] * amount[sel, worst]).sum() / mass[sel].sum()),
                    "mean_pred_sigma": float(sigma_pred[sel, worst].mean()),
                }
            )
    purch = _purchases(trained, dataset)
    expected = np.expm1(
        truth.mu[purch["customer"], purch["fund"]] + truth.sigma[purch["customer"], purch["fund"]] ** 2 / 2
    )
    by_fund = [purch["fund"] == f for f in range(k)]
    realised = [float(purch["amount"][s].sum() / expected[s].sum()) for s in by_fund]
    history = np.array([purch["amount"][s].sum() / purch["pred"][s].sum() for s in by_fund])
    rows["history_mean"] = {
        "factors": history.tolist(),
        "ratios": ratios(amount * history),
        "share": share(amount * history),
    }
    mixture, fits = _mixture_factors(purch, k, cap)
    rows["scale_mixture"] = {
        "factors": mixture.tolist(),
        "fits": fits,
        "ratios": ratios(amount * mixture),
        "share": share(amount * mixture),
    }
    perfect = 1.0 / np.asarray(product)
    rows["oracle_factor"] = {
        "factors": perfect.tolist(),
        "ratios": ratios(amount * perfect),
        "share": share(amount * perfect),
    }
    if trained.name == "gbdt":
        bound = trained.bind(dataset)
        grid_x = np.concatenate(
            [
                tabular_rows(trained.features, bound.pair_batch(cust[s : s + 65536], fund[s : s + 65536]))
                for s in range(0, cust.size, 65536)
            ]
        )
        for name, refit in _gbdt_refits(trained, dataset, purch, grid_x).items():
            rows[name] = {"ratios": ratios(refit), "share": share(refit)}
    return {
        "run": str(run),
        "model": trained.name,
        "worst_fund": worst,
        "worst_fund_bins": bins,
        "purchases_per_fund": [int(s.sum()) for s in by_fund],
        "purchases_realised_over_expected": realised,
        "variants": rows,
    }


def _purchases_line(r: dict[str, Any], digits: int) -> str:
    """The "what the data can say" row: per fund, realised over expected and the number of purchases."""
    return (
        "summed amount / summed true expected amount: "
        + ", ".join(f"{x:.{digits}f}" for x in r["purchases_realised_over_expected"])
        + " ("
        + ", ".join(str(n) for n in r["purchases_per_fund"])
        + " purchases)"
    )


def render(res: dict[str, Any]) -> str:
    lines = [
        "### Amount calibration per fund: diagnosis and alternatives",
        "",
        f"`{res['command']}` — {res['date']}, {res['machine']}, {res['wall_s']:.0f} s wall.",
    ]
    if "purchases_per_fund" in res:
        lines += ["", "past purchases (model-free), " + _purchases_line(res, 3)]
    for r in res["runs"]:
        if "skipped" in r:
            lines += ["", f"`{r['run']}` ({r['model']}): skipped, {r['skipped']}."]
            continue
        lines += [
            "",
            f"`{r['run']}` ({r['model']}): per-fund ratio (pred/true, weighted by the true p) and decision share",
            "",
            "| amount | "
            + " | ".join(f"fund {f}" for f in range(len(next(iter(r["variants"].values()))["ratios"])))
            + " | % of oracle | funds within 20% |",
            "|---|" + "---:|" * (len(next(iter(r["variants"].values()))["ratios"]) + 2),
        ]
        for name, v in r["variants"].items():
            share = f"{100 * v['share']:.2f}" if "share" in v else "—"
            within = sum(0.8 <= x <= 1.2 for x in v["ratios"])
            lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v["ratios"]) + f" | {share} | {within} |")
        for level, g in r.get("guard_refit", {}).items():
            lines += [
                "",
                f"guard refitted with today's rule, `amount_level: {level}`: amount factor {g['amount_factor']:.4f} "
                f"(saved run: {g['saved_amount_factor']:.4f}; {g['amount_factor_source']}); the valid split's "
                f"bounds, shifts and sigma scale {'unchanged' if g['steps_1_2_unchanged'] else 'CHANGED'}",
            ]
        if "worst_fund_bins" not in r:
            continue
        lines += [
            "",
            "past purchases, " + _purchases_line(r, 2),
            "",
            f"fund {r['worst_fund']} by true sigma: "
            + "; ".join(
                f"[{b['sigma_lo']:.2f}, {b['sigma_hi']:.2f}) {b['pairs']} pairs, {100 * b['mass_share']:.0f}% of the "
                f"mean, ratio {b['ratio']:.2f}, predicted sigma {b['mean_pred_sigma']:.2f}"
                for b in r["worst_fund_bins"]
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a simulated dataset folder (needs the truth table)")
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="saved run folders (model.pt inside)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cap", type=float, help="sigma cap of the scale mixture (default: each fund's log-amount sd)")
    ap.add_argument(
        "--product-only",
        action="store_true",
        help="only the product's guarded/unguarded ratios (chunked) and the model-free purchases row",
    )
    ap.add_argument(
        "--refit-guard",
        action="store_true",
        help="with --product-only: refit each run's guard with today's rule before scoring (see product_ratios)",
    )
    ap.add_argument(
        "--amount-level",
        default="",
        help="with --refit-guard: comma-separated forms of the guard's step 3 to compare, e.g. shared,per_fund "
        "(default: the run's own)",
    )
    args = ap.parse_args()
    if not args.runs and not args.product_only:
        ap.error("--runs is required unless --product-only is given")
    if args.refit_guard and not args.product_only:
        ap.error("--refit-guard goes with --product-only")
    if args.amount_level and not args.refit_guard:
        ap.error("--amount-level goes with --refit-guard")
    import torch

    from eoca.data import open_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dataset = open_dataset(args.data)
    res: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible (shared sandbox), one thread",
    }
    if args.product_only:
        res["purchases_per_fund"], res["purchases_realised_over_expected"] = realised_over_expected(dataset)
        levels = tuple(x for x in args.amount_level.split(",") if x)
        res["runs"] = [
            product_ratios(dataset, run, refit_guard=args.refit_guard, amount_levels=levels) for run in args.runs
        ]
    else:
        res["runs"] = [analyse(dataset, run, args.cap) for run in args.runs]
    res["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "amount_calibration.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    text = render(res)
    (args.out / "amount_calibration.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
