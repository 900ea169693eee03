"""One flat row per (customer, fund) pair for tree models: the same encodings the networks read, as a matrix.

Columns, in order: the customer's standardised numeric features, the customer's categorical codes, the fund's
numeric features, the fund's categorical codes (``fund_id`` first), then the candidate-aware behaviour counts
``pair_x`` of the pair (when the space has behaviour events). List-valued profile features contribute their
token count only, and the consumption graph is not used: trees need fixed-width inputs, and the counts carry
the behaviour signal that matters for choosing a fund.
"""

from __future__ import annotations

import numpy as np

from eoca.data.schema import EVENT_TYPES
from eoca.models.base import Batch
from eoca.models.features.encoding import CUSTOMER_SUMMARY_NAMES, PAIR_FEATURE_NAMES
from eoca.models.features.fitting import FeatureSpace


def tabular_columns(space: FeatureSpace) -> tuple[list[str], list[int]]:
    """Column names of :func:`tabular_rows` and the indices of its categorical columns."""
    names = [f"c_{f['name']}" for f in space.customer_numeric]
    categorical: list[int] = []
    for f in space.customer_categorical:
        categorical.append(len(names))
        names.append(f"c_{f['name']}")
    names += [f"c_{f['name']}_len" for f in space.customer_lists]
    names += [f"f_{f['name']}" for f in space.fund_numeric]
    for f in space.fund_categorical:
        categorical.append(len(names))
        names.append(f"f_{f['name']}")
    if space.pair_dim:
        names += [f"pair_{n}" for n in PAIR_FEATURE_NAMES] + [f"type_{n}" for n in PAIR_FEATURE_NAMES]
        names += [f"cust_{n}" for n in CUSTOMER_SUMMARY_NAMES] + ["type_event_share", "pair_purchase_log_excess"]
    return names, categorical


def _ratios(space: FeatureSpace, pair: np.ndarray, summary: np.ndarray) -> np.ndarray:
    """The two ratio columns of :func:`tabular_rows` (see the module docstring), float32 ``[B, 2]``."""
    n_types = len(EVENT_TYPES)
    k = len(PAIR_FEATURE_NAMES)
    # pair holds log1p counts: the fund's first k columns, its type's next k; summary starts with the customer's.
    type_events = np.expm1(pair[:, k : k + n_types]).sum(axis=1)
    all_events = np.expm1(summary[:, :n_types]).sum(axis=1)
    share = np.log((type_events + 0.5) / (all_events + 0.5 * space.n_fund_groups))
    purchase = EVENT_TYPES.index("purchase")
    n_buy = np.expm1(pair[:, purchase])
    fund_mean = np.log(np.expm1(pair[:, PAIR_FEATURE_NAMES.index("purchase_amount")]) / np.maximum(n_buy, 1.0) + 1.0)
    excess = np.where(n_buy > 0.5, fund_mean - summary[:, CUSTOMER_SUMMARY_NAMES.index("purchase_log_mean")], 0.0)
    return np.column_stack([share, excess]).astype(np.float32)


def tabular_rows(space: FeatureSpace, batch: Batch) -> np.ndarray:
    """The batch as float32 ``[B, D]`` (``D`` = ``len(tabular_columns(space)[0])``); categorical codes are exact
    small integers stored as floats (0 = unknown)."""
    x = batch.inputs
    unit = x["row_unit"].numpy()
    fund = batch.fund.numpy()
    parts = [
        x["c_num"].numpy()[unit],
        x["c_cat"].numpy()[unit].astype(np.float32),
        *[(x[f"c_list_{i}"].numpy()[unit] > 0).sum(axis=1, keepdims=True) for i in range(len(space.customer_lists))],
        x["f_num"].numpy()[fund],
        x["f_cat"].numpy()[fund].astype(np.float32),
    ]
    if space.pair_dim:
        pair = x["pair_x"].numpy()[unit, fund]
        summary = x["cust_x"].numpy()[unit]
        parts += [pair, summary, _ratios(space, pair, summary)]
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
