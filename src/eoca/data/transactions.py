"""Customer-value tables built from a transaction log (customer id, time, amount[, item, quantity]).

The log is cut at ``calibration_end``: everything at or before it describes the customer (the features),
spend in ``(calibration_end, target_end]`` is the label. Every customer with a purchase at or before
``calibration_end`` is kept, spenders and non-spenders alike. Times are in days (dates are converted, see
:func:`eoca.data.sources.to_days`); one calendar day (one time value for numeric times) is one *purchase
occasion*, the unit of BG/NBD's frequency.

For a customer with occasions ``d_1 < ... < d_k`` (at or before ``calibration_end = E``), occasion spend
``v_1 .. v_k`` and ``n`` log rows, the features and their formulas are :data:`FEATURE_FORMULAS` (also in
docs/data.md). Statistics undefined for a customer (inter-purchase times of a one-time buyer) are missing (NaN)
and go through the importer's missing-value policy like any other missing feature value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FEATURE_FORMULAS: dict[str, str] = {
    "frequency": "k - 1 (repeat purchase occasions; BG/NBD's x)",
    "recency": "d_k - d_1 (days between first and last occasion; BG/NBD's t_x)",
    "T": "E - d_1 (age of the customer at calibration_end, days; BG/NBD's T)",
    "days_since_last": "E - d_k",
    "n_transactions": "n (log rows)",
    "monetary_total": "v_1 + ... + v_k",
    "monetary_mean": "(v_1 + ... + v_k) / k (mean spend per occasion)",
    "monetary_max": "max_j v_j",
    "monetary_first": "v_1 (spend on the first occasion)",
    "monetary_repeat_mean": "(v_2 + ... + v_k) / (k - 1); missing when k = 1 (Gamma-Gamma's m)",
    "ipt_mean": "(d_k - d_1) / (k - 1), mean days between occasions; missing when k = 1",
    "ipt_min": "min_j (d_{j+1} - d_j); missing when k = 1",
    "ipt_max": "max_j (d_{j+1} - d_j); missing when k = 1",
    "ipt_std": "standard deviation of the k - 1 gaps; missing when k < 3",
    "quantity_total": "sum of quantity over the n rows (with a quantity column)",
    "quantity_mean": "quantity_total / n",
    "quantity_max": "largest quantity of one row",
    "occasions_last_<w>": "occasions in the last w days before calibration_end: #{j : d_j > E - w} (trend)",
    "spend_last_<w>": "spend on those occasions: sum of v_j over d_j > E - w",
    "n_items": "distinct items bought (with an item column)",
    "item_<c>": "log rows of item category <c> (the most frequent categories; the rest count in item_other)",
}
"""Each derived feature and its formula; the label is the sum of amounts in ``(E, target_end]``."""


@dataclass
class CustomerValue:
    """The table built from a log: ids (shape (n,)), float features (NaN = missing) and the label."""

    customer_id: pa.Array
    features: dict[str, np.ndarray]
    descriptions: dict[str, str]
    label: np.ndarray
    n_rows_used: int
    n_customers_after: int
    n_rows_after_target: int


def _slug(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", value).strip("_") or "blank"


def build_customer_value(
    ids: pa.Array,
    days: np.ndarray,
    amount: np.ndarray,
    calibration_end: float,
    target_end: float,
    quantity: np.ndarray | None = None,
    item: pa.Array | None = None,
    max_item_categories: int = 20,
    recent_windows: tuple[float, ...] = (30.0, 90.0, 180.0),
) -> CustomerValue:
    """The customer-value table of a transaction log.

    Args:
        ids: customer id per log row (string or integer), shape (m,), no nulls.
        days: time per log row in days, float, shape (m,).
        amount: spend per log row, float >= 0, shape (m,).
        calibration_end, target_end: the window, in the unit of ``days``.
        quantity: optional quantity per row, shape (m,).
        item: optional item (category) per row, shape (m,).
        recent_windows: lengths w (in the unit of ``days``) of the trailing windows whose occasions and spend
            become ``occasions_last_<w>`` / ``spend_last_<w>``: whether a customer is buying more or less lately.

    Returns:
        One row per customer with an occasion at or before ``calibration_end``, in order of first appearance
        in the log.
    """
    cal = days <= calibration_end
    tgt = (days > calibration_end) & (days <= target_end)
    ids_all = np.asarray(ids.to_numpy(zero_copy_only=False))
    # Customers: the order of their first appearance among calibration rows.
    cal_ids = ids_all[cal]
    uniq, first_pos = np.unique(cal_ids, return_index=True)
    order = np.argsort(first_pos, kind="stable")
    uniq = uniq[order]
    n = uniq.size
    code = {v: i for i, v in enumerate(uniq.tolist())}
    cust = np.fromiter((code.get(v, -1) for v in ids_all.tolist()), dtype=np.int64, count=ids_all.size)

    label = np.zeros(n, dtype=np.float64)
    in_target = tgt & (cust >= 0)
    np.add.at(label, cust[in_target], amount[in_target])

    c = cust[cal]
    d = np.floor(days[cal])
    a = amount[cal]
    # Occasions: one (customer, day) pair with its spend.
    keys = np.stack([c, d.astype(np.int64)], axis=1)
    occ, occ_inv = np.unique(keys, axis=0, return_inverse=True)
    occ_inv = occ_inv.ravel()
    occ_spend = np.zeros(len(occ), dtype=np.float64)
    np.add.at(occ_spend, occ_inv, a)
    occ_c, occ_d = occ[:, 0], occ[:, 1].astype(np.float64)  # sorted by customer, then day
    k = np.bincount(occ_c, minlength=n).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(k)[:-1]]).astype(np.int64)
    ends = starts + k.astype(np.int64) - 1
    d_first, d_last = occ_d[starts], occ_d[ends]
    v_first = occ_spend[starts]
    total = np.bincount(occ_c, weights=occ_spend, minlength=n)
    vmax = np.full(n, -np.inf)
    np.maximum.at(vmax, occ_c, occ_spend)
    nan = np.full(n, np.nan)
    repeat = np.where(k > 1, (total - v_first) / np.maximum(k - 1, 1), nan)
    gaps = np.diff(occ_d)
    same = np.diff(occ_c) == 0
    gap_c, gap = occ_c[1:][same], gaps[same]
    gmin, gmax = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(gmin, gap_c, gap)
    np.maximum.at(gmax, gap_c, gap)
    gsum = np.bincount(gap_c, weights=gap, minlength=n)
    gsq = np.bincount(gap_c, weights=gap * gap, minlength=n)
    g_n = k - 1
    gmean = np.where(g_n > 0, gsum / np.maximum(g_n, 1), nan)
    gvar = np.where(g_n > 1, (gsq - g_n * gmean**2) / np.maximum(g_n - 1, 1), nan)
    feats: dict[str, np.ndarray] = {
        "frequency": k - 1,
        "recency": d_last - d_first,
        "T": calibration_end - d_first,
        "days_since_last": calibration_end - d_last,
        "n_transactions": np.bincount(c, minlength=n).astype(np.float64),
        "monetary_total": total,
        "monetary_mean": total / k,
        "monetary_max": vmax,
        "monetary_first": v_first,
        "monetary_repeat_mean": repeat,
        "ipt_mean": gmean,
        "ipt_min": np.where(g_n > 0, gmin, nan),
        "ipt_max": np.where(g_n > 0, gmax, nan),
        "ipt_std": np.sqrt(np.maximum(gvar, 0.0)),
    }
    desc = {name: FEATURE_FORMULAS[name] for name in feats}
    for w in recent_windows:
        recent = occ_d > calibration_end - w
        tag = f"{w:g}"
        feats[f"occasions_last_{tag}"] = np.bincount(occ_c[recent], minlength=n).astype(np.float64)
        feats[f"spend_last_{tag}"] = np.bincount(occ_c[recent], weights=occ_spend[recent], minlength=n)
        desc[f"occasions_last_{tag}"] = f"occasions in the last {tag} days before calibration_end (d_j > E - {tag})"
        desc[f"spend_last_{tag}"] = f"spend on the occasions of the last {tag} days before calibration_end"
    if quantity is not None:
        q = quantity[cal]
        qt = np.bincount(c, weights=q, minlength=n)
        qmax = np.full(n, -np.inf)
        np.maximum.at(qmax, c, q)
        feats.update({"quantity_total": qt, "quantity_mean": qt / feats["n_transactions"], "quantity_max": qmax})
        desc.update({f: FEATURE_FORMULAS[f] for f in ("quantity_total", "quantity_mean", "quantity_max")})
    if item is not None:
        items = np.asarray(item.to_numpy(zero_copy_only=False), dtype=object)[cal].astype(str)
        pairs = np.unique(np.stack([c.astype(str), items], axis=1), axis=0)
        feats["n_items"] = np.bincount(pairs[:, 0].astype(np.int64), minlength=n).astype(np.float64)
        desc["n_items"] = FEATURE_FORMULAS["n_items"]
        cats, counts = np.unique(items, return_counts=True)
        top = cats[np.argsort(-counts, kind="stable")][:max_item_categories]
        used: set[str] = set()
        for cat in top:
            name = f"item_{_slug(cat)}"
            while name in used or name in feats:
                name += "_"
            used.add(name)
            feats[name] = np.bincount(c[items == cat], minlength=n).astype(np.float64)
            desc[name] = f"log rows of item {cat!r}"
        rest = ~np.isin(items, top)
        if rest.any():
            feats["item_other"] = np.bincount(c[rest], minlength=n).astype(np.float64)
            desc["item_other"] = "log rows of the other, less frequent items"
    after = (days > calibration_end) & (cust < 0)
    return CustomerValue(
        customer_id=pa.array(uniq.tolist(), type=ids.type),
        features=feats,
        descriptions=desc,
        label=label,
        n_rows_used=int((cal | in_target).sum()),
        n_customers_after=int(np.unique(ids_all[after & (days <= target_end)]).size),
        n_rows_after_target=int((days > target_end).sum()),
    )
