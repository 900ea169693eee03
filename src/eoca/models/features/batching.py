"""Binding a dataset to a fitted :class:`FeatureSpace` and cutting customer-factorised batches from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from eoca.data.dataset import SPLITS, Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.errors import DataValidationError
from eoca.models.base import Batch
from eoca.models.features.encoding import (
    _FIRST_TOKEN,
    CUSTOMER_SUMMARY_NAMES,
    PAIR_FEATURES_PER_LEVEL,
    _as_str,
    _codes,
    _float,
    _int,
    _standardise,
    notice,
    stable_keys,
)
from eoca.models.features.fitting import FeatureSpace
from eoca.models.features.graph import ConsumptionGraph
from eoca.models.features.sequences import (
    BehaviourSequences,
    empty_customer_summary,
    empty_pair_counts,
    empty_sequences,
)

HISTORY_TABLE_BYTES = 256 * 2**20
"""Size up to which the behaviour inputs of every past purchase are cut once per binding into a table that
batches index (about 1.1 kB a purchase with 8 funds and 32 slots: 176 MB for the default world's 162,707), instead
of being cut again for every batch of every epoch."""


# --- bound tensors ------------------------------------------------------------------------------------------------
class BoundFeatures:
    """A dataset encoded by a :class:`FeatureSpace`; cuts :class:`Batch` es by vectorised gathers.

    Attributes:
        n_customers, n_funds: rows of the bound customers / funds tables (batch positions index them).
    """

    def __init__(self, space: FeatureSpace, dataset: Dataset) -> None:
        self.space = space
        self.n_customers = dataset.n_customers
        self.n_funds = dataset.n_funds
        self._check_columns(dataset)
        cust = dataset.customers
        num = [_standardise(_float(cust.column(f["name"])), f["mean"], f["std"]) for f in space.customer_numeric]
        self.c_num = torch.from_numpy(np.stack(num, axis=1) if num else np.zeros((self.n_customers, 0), np.float32))
        cat = [_codes(cust.column(f["name"]), f["vocab"], 1) for f in space.customer_categorical]
        self.c_cat = torch.from_numpy(np.stack(cat, axis=1) if cat else np.zeros((self.n_customers, 0), np.int64))
        self.c_lists = [torch.from_numpy(_pad_lists(cust.column(f["name"]), f)) for f in space.customer_lists]
        self.c_key = torch.from_numpy(stable_keys(cust.column("customer_id")))

        funds = dataset.funds
        fnum = [_standardise(_float(funds.column(f["name"])), f["mean"], f["std"]) for f in space.fund_numeric]
        self.f_num = torch.from_numpy(np.stack(fnum, axis=1) if fnum else np.zeros((self.n_funds, 0), np.float32))
        fcat = [
            _codes(funds.column(f["name"]) if f["name"] != "fund_id" else funds.column("fund_id"), f["vocab"], 1)
            for f in space.fund_categorical
        ]
        self.f_cat = torch.from_numpy(np.stack(fcat, axis=1))
        # Fitted position of each bound fund: pair counts are kept per fitted fund, batches index bound funds.
        self._fund_fit = _codes(funds.column("fund_id"), space.fund_ids, 0)
        self._fund_token = torch.from_numpy(self._fund_fit + _FIRST_TOKEN)

        exp = dataset.exposures
        self._exp_customer = dataset.customer_index(exp.column("customer_id"))
        self._exp_fund = dataset.fund_index(exp.column("fund_id"))
        self._exp_time = _int(exp.column("time"))
        self._converted = _float(exp.column("converted")).astype(np.float32)
        self._amount = _float(exp.column("amount")).astype(np.float32)
        self._clicked = _float(exp.column("clicked")).astype(np.float32) if dataset.has_clicks else None
        self._weight = _float(exp.column("weight")) if "weight" in exp.column_names else None
        self._split_rows = {s: np.flatnonzero(dataset.split_mask(s)) for s in SPLITS}
        self._split_repeats: dict[str, bool] = {}
        if space.has_clicks and not dataset.has_clicks:
            notice("bind-no-clicks", "dataset has no click labels; click-based losses are skipped for it")

        self._seq: BehaviourSequences | None = None
        if space.has_sequences:
            if dataset.has_events and dataset.events is not None:
                self._seq = BehaviourSequences(space, dataset, self._exp_time)
            else:
                notice("bind-no-events", "dataset has no behaviour events; sequences are empty (all padding)")
        self._graph: ConsumptionGraph | None = None
        if space.has_graph:
            if dataset.has_graph and dataset.consumption is not None:
                self._graph = ConsumptionGraph(space, dataset)
            else:
                notice("bind-no-graph", "dataset has no consumption graph; every customer has no merchants")
        # The past purchases of purchase_history, found on first use.
        self._history_cache: np.ndarray | None = None
        self._history_fund = np.zeros(0, dtype=np.int64)
        # Every past purchase's sequence tensors, pair counts and summary, each cut once (see _history_table).
        self._history_features: _HistoryTable | None = None

    def _check_columns(self, dataset: Dataset) -> None:
        space = self.space
        ids = _as_str(dataset.funds.column("fund_id")).to_pylist()
        if sorted(ids) != sorted(space.fund_ids):
            raise DataValidationError(
                f"dataset '{dataset.spec.name}' has funds {ids[:10]}, but the model was fitted on funds "
                f"{space.fund_ids[:10]}; models score only the funds they were trained on"
            )
        wanted = {
            "customers": [
                f["name"] for f in space.customer_numeric + space.customer_categorical + space.customer_lists
            ],
            "funds": [f["name"] for f in space.fund_numeric + space.fund_categorical],
        }
        for table, names in wanted.items():
            have = set(getattr(dataset, table).column_names)
            missing = [n for n in names if n not in have]
            if missing:
                raise DataValidationError(
                    f"dataset '{dataset.spec.name}' table '{table}' lacks feature column(s) {missing} the model "
                    "was fitted with"
                )

    # -- labels ---------------------------------------------------------------------------------------------
    def n_exposures(self, split: str) -> int:
        return int(self._rows(split).size)

    def _rows(self, split: str) -> np.ndarray:
        if split not in self._split_rows:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._split_rows[split]

    def exposure_labels(self, split: str) -> dict[str, np.ndarray]:
        """Labels of the split's rows, in the order of ``exposure_batches(split, ..., shuffle=False)``."""
        rows = self._rows(split)
        out = {
            "customer_pos": self._exp_customer[rows],
            "fund_pos": self._exp_fund[rows],
            "converted": self._converted[rows],
            "amount": self._amount[rows],
        }
        if self._clicked is not None:
            out["clicked"] = self._clicked[rows]
        return out

    def _repeats_customers(self, split: str) -> bool:
        """Whether some customer has more than one row in ``split`` (cached per split)."""
        if split not in self._split_repeats:
            cust = self._exp_customer[self._rows(split)]
            self._split_repeats[split] = bool(np.unique(cust).size < cust.size)
        return self._split_repeats[split]

    def split_weights(self, split: str) -> np.ndarray | None:
        """Sampling weights of ``split``'s rows (float64 ``[n]``, in ``exposure_batches(shuffle=False)``
        order), or None when the dataset has no weight column."""
        return None if self._weight is None else self._weight[self._rows(split)]

    def exposure_batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        by_customer: bool = False,
    ) -> Iterator[Batch]:
        """Every exposure row of ``split`` exactly once, in batches of ``batch_size`` with labels filled.

        ``shuffle=True`` is the training mode: rows are permuted with ``generator`` and graph neighbours are
        sampled at random; ``shuffle=False`` keeps file order and samples neighbours deterministically.

        Sampling weights (an oversampled design): in training mode the split's rows are instead drawn with
        replacement with probability proportional to their weight, as many draws as rows, so every loss's
        expectation is the population-weighted loss without any model weighting its own loss.

        ``by_customer`` (training mode): the shuffled rows are then ordered by a random permutation of the
        customers, so a customer's rows share a batch (their order within the customer stays random). The
        customer side of the network (profile, behaviour encoder, consumption graph, and the batch's sequence
        and graph inputs) is computed once per customer of a batch, not once per row. A split with one row per
        customer has nothing to group: its batches are then those of ``by_customer=False``, bit for bit.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = self._rows(split)
        if shuffle and self._weight is not None and rows.size:
            w = self._weight[rows]
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            rows = rows[np.random.default_rng(seed).choice(rows.size, size=rows.size, p=w / w.sum())]
        elif shuffle:
            perm = torch.randperm(rows.size, generator=generator).numpy()
            rows = rows[perm]
        if shuffle and by_customer and self._repeats_customers(split):
            rank = torch.randperm(self.n_customers, generator=generator).numpy()
            rows = rows[np.argsort(rank[self._exp_customer[rows]], kind="stable")]
        rng: np.random.Generator | None = None
        if shuffle:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            rng = np.random.default_rng(seed)
        for start in range(0, rows.size, batch_size):
            r = rows[start : start + batch_size]
            batch = self._make_batch(self._exp_customer[r], self._exp_fund[r], self._exp_time[r], rng)
            batch.converted = torch.from_numpy(self._converted[r])
            batch.amount = torch.from_numpy(self._amount[r])
            if self._clicked is not None:
                batch.clicked = torch.from_numpy(self._clicked[r])
            yield batch

    def pair_batch(self, customer_pos: np.ndarray, fund_pos: np.ndarray) -> Batch:
        """An unlabelled batch of arbitrary (customer, fund) pairs, e.g. for scoring every customer x fund.

        The behaviour sequence is each customer's latest events (all of them, as of "now").
        """
        cust = np.asarray(customer_pos, dtype=np.int64)
        fund = np.asarray(fund_pos, dtype=np.int64)
        if cust.shape != fund.shape or cust.ndim != 1:
            raise ValueError(f"customer_pos and fund_pos must be 1-D of equal length, got {cust.shape}, {fund.shape}")
        if cust.size and (cust.min() < 0 or cust.max() >= self.n_customers):
            raise IndexError(f"customer positions must lie in [0, {self.n_customers})")
        if fund.size and (fund.min() < 0 or fund.max() >= self.n_funds):
            raise IndexError(f"fund positions must lie in [0, {self.n_funds})")
        return self._make_batch(cust, fund, None, None)

    # -- batch assembly -----------------------------------------------------------------------------------------
    def n_purchase_history(self) -> int:
        """How many rows :meth:`purchase_history` yields in all (0 without behaviour events)."""
        return int(self._history_index().size)

    def purchase_history(
        self, batch_size: int, *, generator: torch.Generator | None = None, limit: int | None = None
    ) -> Iterator[tuple[Batch, np.ndarray]]:
        """The behaviour history's purchases as labelled amount rows: ``(batch, amount)`` per batch of at most
        ``batch_size`` purchase events, each a (customer, fund) row whose features see only the events strictly
        before the purchase (its own amount never enters them); ``amount`` float64 ``[B]`` (> 0).

        Only purchases before the earliest validation or test exposure are used, so no event of a held-out
        period (possibly a held-out conversion logged again as a purchase) informs a model fitted on them; a
        past purchase is a draw of the same customer's amount for that fund that a conversion would be.
        Purchases of funds the bound dataset lacks are skipped. Nothing is yielded without behaviour events.

        ``generator`` (training mode): the purchases in a random order drawn from it; ``limit``: at most that
        many of them (the first of that order).
        """
        seq = self._seq
        idx = self._history_index()
        if seq is None or idx.size == 0:
            return
        pos = np.arange(idx.size)
        if generator is not None:
            pos = torch.randperm(idx.size, generator=generator).numpy()
        if limit is not None:
            pos = pos[: max(int(limit), 0)]
        fund = self._history_fund
        table = self._history_table()
        for start in range(0, pos.size, batch_size):
            p = pos[start : start + batch_size]
            i = idx[p]
            batch = self._make_batch(seq.cust[i], fund[i], seq.time[i], None, cut=True, table_rows=p, table=table)
            yield batch, seq.raw_amount[i]

    def _history_table(self) -> _HistoryTable | None:
        """The memo of past purchases' behaviour inputs (:class:`_HistoryTable`), or None above
        :data:`HISTORY_TABLE_BYTES`."""
        seq = self._seq
        idx = self._history_index()
        if self._history_features is not None or seq is None or idx.size == 0:
            return self._history_features
        width = self.n_funds * 2 * PAIR_FEATURES_PER_LEVEL * 4 + len(CUSTOMER_SUMMARY_NAMES) * 4
        if idx.size * (seq.length * 13 + width) > HISTORY_TABLE_BYTES:
            return None
        self._history_features = _HistoryTable(seq, idx, self._fund_fit)
        return self._history_features

    def _history_index(self) -> np.ndarray:
        """Event indices of the purchases :meth:`purchase_history` uses, in event order (cached), and
        ``self._history_fund`` (every event's fund position in the bound dataset, -1 if absent)."""
        if self._history_cache is not None:
            return self._history_cache
        seq = self._seq
        if seq is None or seq.n_events == 0:
            self._history_cache = np.zeros(0, dtype=np.int64)
            return self._history_cache
        held = np.concatenate([self._rows("valid"), self._rows("test")])
        cutoff = int(self._exp_time[held].min()) if held.size else None
        fund_of_fit = np.full(len(self.space.fund_ids), -1, dtype=np.int64)
        fund_of_fit[self._fund_fit] = np.arange(self.n_funds)
        fit_pos = seq.fund - _FIRST_TOKEN
        fund = np.where(fit_pos >= 0, fund_of_fit[np.maximum(fit_pos, 0)], -1)
        keep = (seq.type == EVENT_TYPES.index("purchase") + _FIRST_TOKEN) & (seq.raw_amount > 0) & (fund >= 0)
        if cutoff is not None:
            keep &= seq.time < cutoff
        self._history_fund = fund
        self._history_cache = np.flatnonzero(keep)
        return self._history_cache

    def _make_batch(
        self,
        cust: np.ndarray,
        fund: np.ndarray,
        time: np.ndarray | None,
        rng: np.random.Generator | None,
        *,
        cut: bool = False,
        table_rows: np.ndarray | None = None,
        table: _HistoryTable | None = None,
    ) -> Batch:
        """``cut``: cut every row's history at its ``time`` even when the sequences are static. ``table``: the
        memo of the rows' behaviour inputs (:meth:`_history_table`), row ``table_rows[r]`` for batch row ``r``."""
        seq = self._seq
        unit_end: np.ndarray | None = None
        unit_now: np.ndarray | None = None
        unit_table_rows: np.ndarray | None = None
        if seq is not None and time is not None and (cut or not seq.static):
            # Rows of one customer at different times see different histories: a unit is (customer, time).
            t0 = int(time.min())
            key = cust * (int(time.max()) - t0 + 1) + (time - t0)
            _, first, row_unit = np.unique(key, return_index=True, return_inverse=True)
            unit_cust, unit_time = cust[first], time[first]
            unit_now = unit_time
            if table is not None and table_rows is not None:
                # A unit is one (customer, time): any of its rows holds its inputs; take the first.
                unit_table_rows = np.asarray(table_rows, dtype=np.int64)[first]
            else:
                unit_end = seq.cut(unit_cust, unit_time)
        else:
            unit_cust, row_unit = np.unique(cust, return_inverse=True)
        uc = torch.from_numpy(unit_cust)
        inputs: dict[str, torch.Tensor] = {
            "row_unit": torch.from_numpy(row_unit.reshape(-1).astype(np.int64)),
            "unit_customer": uc,
            "c_num": self.c_num.index_select(0, uc),
            "c_cat": self.c_cat.index_select(0, uc),
            "c_key": self.c_key.index_select(0, uc),
            "f_num": self.f_num,
            "f_cat": self.f_cat,
        }
        for i, lst in enumerate(self.c_lists):
            inputs[f"c_list_{i}"] = lst.index_select(0, uc)
        if self.space.has_sequences:
            if seq is None:
                inputs.update(empty_sequences(unit_cust.size, self.space.sequence_length))
                inputs["pair_x"] = empty_pair_counts(unit_cust.size, self.n_funds)
                inputs["cust_x"] = empty_customer_summary(unit_cust.size)
            elif unit_table_rows is not None and table is not None:
                inputs.update(table.rows(unit_table_rows))
            elif unit_end is not None:
                inputs.update(seq.gather(unit_cust, unit_end, unit_now))
                inputs["pair_x"] = seq.pair_counts(unit_cust, unit_end, self._fund_fit, unit_now)
                inputs["cust_x"] = seq.customer_summary(unit_cust, unit_end)
            else:
                inputs.update(seq.latest_sequences(unit_cust))
                inputs["pair_x"] = seq.latest_pair_counts(unit_cust, self._fund_fit)
                inputs["cust_x"] = seq.latest_customer_summary(unit_cust)
            inputs["f_token"] = self._fund_token
        if self.space.has_graph:
            if self._graph is not None:
                inputs.update(self._graph.sample(unit_cust, rng, self.c_num, self.c_cat))
            else:
                inputs.update(_empty_graph(self.c_num.shape[1], self.c_cat.shape[1]))
        return Batch(customer=torch.from_numpy(cust), fund=torch.from_numpy(fund), inputs=inputs)


class _HistoryTable:
    """Memo of the behaviour inputs of a binding's past purchases (:meth:`BoundFeatures.purchase_history`'s rows):
    sequence tensors, pair counts and summary, each cut at the purchase's own time, the first time a batch asks
    for that purchase, and gathered from here afterwards.

    A purchase's inputs depend only on its customer and time, yet every epoch cut them again for each of its
    batches. Filling on demand costs no more than cutting did (each
    purchase is cut once, with the same functions, so the values are the same bit for bit) and pays back from
    the first purchase served twice. Token ids are kept in the narrowest integer type, as in the whole-history
    table; the tensors are allocated whole at first use (:data:`HISTORY_TABLE_BYTES` bounds them).
    """

    def __init__(self, seq: BehaviourSequences, events: np.ndarray, fund_fit: np.ndarray) -> None:
        self.seq, self.events, self.fund_fit = seq, events, fund_fit
        self.filled = np.zeros(events.size, dtype=bool)
        top = int(seq.fund.max(initial=0)), int(seq.type.max(initial=0))
        n, length = events.size, seq.length
        self.tensors: dict[str, torch.Tensor] = {
            "seq_fund": torch.zeros((n, length), dtype=torch.int16 if top[0] < 2**15 else torch.int32),
            "seq_type": torch.zeros((n, length), dtype=torch.int16 if top[1] < 2**15 else torch.int32),
            "seq_amount": torch.zeros((n, length), dtype=torch.float32),
            "seq_age": torch.zeros((n, length), dtype=torch.float32),
            "seq_mask": torch.zeros((n, length), dtype=torch.bool),
            "pair_x": torch.zeros((n, fund_fit.size, 2 * PAIR_FEATURES_PER_LEVEL), dtype=torch.float32),
            "cust_x": torch.zeros((n, len(CUSTOMER_SUMMARY_NAMES)), dtype=torch.float32),
        }

    def rows(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """The inputs of the purchases at ``positions`` (into ``events``), token ids as int64, ``[U, ...]``."""
        missing = np.unique(positions[~self.filled[positions]])
        if missing.size:
            seq = self.seq
            i = self.events[missing]
            cust, time = seq.cust[i], seq.time[i]
            end = seq.cut(cust, time)
            fresh = seq.gather(cust, end, time)
            fresh["pair_x"] = seq.pair_counts(cust, end, self.fund_fit, time)
            fresh["cust_x"] = seq.customer_summary(cust, end)
            where = torch.from_numpy(missing)
            for key, t in fresh.items():
                self.tensors[key].index_copy_(0, where, t.to(self.tensors[key].dtype))
            self.filled[missing] = True
        at = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        return {
            key: t.index_select(0, at).to(torch.int64) if key in ("seq_fund", "seq_type") else t.index_select(0, at)
            for key, t in self.tensors.items()
        }


_SHARED_INPUTS = ("f_num", "f_cat", "f_token")
"""Inputs that describe every fund of the bound dataset, the same in every batch of a binding."""

_INDEX_INPUTS = {
    "row_unit": "unit_customer",
    "g_e2_dst": "unit_customer",
    "g_e2_src": "g_merchant",
    "g_e1_dst": "g_merchant",
    "g_e1_src": "g_c2_num",
}
"""Inputs holding positions into another input's rows (key -> the input they index): offset on concatenation."""


def concat_batches(first: Batch, second: Batch) -> Batch:
    """One batch holding the rows of ``first`` then those of ``second`` (two batches of one binding), so a model
    runs both through a single forward and backward pass.

    Units, graph nodes and edges of ``second`` follow those of ``first``, with its positions (``row_unit`` and
    the graph's edge ends, see :data:`_INDEX_INPUTS`) shifted past ``first``'s; every unit keeps its own inputs,
    so each row sees exactly what it saw in its own batch. Labels are ``first``'s (rows ``[:len(first)]``):
    ``second`` is unlabelled, or labelled by the caller.
    """
    a, b = first.inputs, second.inputs
    if a.keys() != b.keys():
        raise ValueError(f"batches with different inputs cannot be joined: {sorted(a.keys() ^ b.keys())}")
    inputs: dict[str, torch.Tensor] = {}
    for key, t in a.items():
        if key in _SHARED_INPUTS:
            inputs[key] = t
        elif key in _INDEX_INPUTS:
            inputs[key] = torch.cat([t, b[key] + a[_INDEX_INPUTS[key]].shape[0]])
        else:
            inputs[key] = torch.cat([t, b[key]])
    return Batch(
        customer=torch.cat([first.customer, second.customer]),
        fund=torch.cat([first.fund, second.fund]),
        inputs=inputs,
        converted=first.converted,
        amount=first.amount,
        clicked=first.clicked,
    )


def _pad_lists(col: pa.ChunkedArray, feat: dict[str, Any]) -> np.ndarray:
    """List feature -> int64 ``[N, max_len]`` tokens (latest ``max_len`` kept, 0 = padding)."""
    arr = col.combine_chunks()
    n = len(arr)
    max_len = int(feat["max_len"])
    out = np.zeros((n, max_len), dtype=np.int64)
    lengths = _int(pc.fill_null(pc.list_value_length(arr), 0))
    tokens = _codes(pc.list_flatten(arr), feat["vocab"], _FIRST_TOKEN)
    tokens[tokens < _FIRST_TOKEN] = 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    take = np.minimum(lengths, max_len)
    row = np.repeat(np.arange(n), take)
    pos_in_row = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    src = np.repeat(offsets[1:] - take, take) + pos_in_row
    out[row, pos_in_row] = tokens[src]
    return out


def _empty_graph(dn: int, dc: int) -> dict[str, torch.Tensor]:
    empty_i = torch.zeros(0, dtype=torch.int64)
    return {
        "g_merchant": empty_i,
        "g_c2_num": torch.zeros((0, dn), dtype=torch.float32),
        "g_c2_cat": torch.zeros((0, dc), dtype=torch.int64),
        "g_e1_src": empty_i,
        "g_e1_dst": empty_i,
        "g_e1_attr": torch.zeros((0, 2), dtype=torch.float32),
        "g_e2_src": empty_i,
        "g_e2_dst": empty_i,
        "g_e2_attr": torch.zeros((0, 2), dtype=torch.float32),
    }
