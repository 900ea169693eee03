"""Feature encodings of a dataset for the model zoo: fitted once on the train split, bound to any dataset.

:class:`FeatureSpace` learns everything that depends on data (standardisation statistics, vocabularies,
merchant ids, label statistics) from the **train split only** and keeps it as JSON-serialisable state, so a
checkpoint reloads without pickle. :meth:`FeatureSpace.bind` turns a dataset into :class:`BoundFeatures`,
dense per-customer / per-fund tensors plus the behaviour-event and consumption-graph arrays, from which batches
are cut by vectorised gathers.

Batches are *factorised by customer*: a batch of ``B`` (customer, fund) rows carries its customer-side inputs
once per unique customer unit (``U <= B`` rows) and an index ``row_unit`` from rows to units. Models encode the
customer side (embeddings, behaviour sequence, graph) per unit and the fund side per fund, and only the
interaction network runs per row. Scoring every customer against every fund therefore pays for the sequence
and graph branches once per customer, not once per pair.

Keys of ``Batch.inputs`` (``U`` units, ``F`` funds of the bound dataset, ``L`` sequence length):

* ``row_unit`` int64 ``[B]``: unit of each row; ``unit_customer`` int64 ``[U]``: bound customer position.
* ``c_num`` float32 ``[U, Dn]``, ``c_cat`` int64 ``[U, Dc]``, ``c_list_<i>`` int64 ``[U, Li]`` (0 = padding).
* ``f_num`` float32 ``[F, Dfn]``, ``f_cat`` int64 ``[F, Dfc]`` (every fund of the bound dataset).
* with sequences: ``seq_fund``, ``seq_type`` int64 ``[U, L]``, ``seq_amount``, ``seq_age`` float32 ``[U, L]``,
  ``seq_mask`` bool ``[U, L]`` (True = a real event; the latest event is last).
* with the graph, a sampled two-hop customer -> merchant -> customer neighbourhood of the units:
  ``g_merchant`` int64 ``[M]`` (merchant vocabulary ids), ``g_c2_num``/``g_c2_cat`` (features of the ``C2``
  second-hop customers), ``g_e1_src``/``g_e1_dst``/``g_e1_attr`` (edges second-hop customer -> merchant, attr
  ``[E1, 2]``), ``g_e2_src``/``g_e2_dst``/``g_e2_attr`` (edges merchant -> unit, attr ``[E2, 2]``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from eoca.data.dataset import SPLITS, Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.errors import DataValidationError
from eoca.models.base import Batch

log = logging.getLogger(__name__)

STATE_VERSION = 1
UNKNOWN = 0
"""Index 0 of every categorical vocabulary: values never seen in training (and missing values)."""
PAD = 0
"""Index 0 of list / sequence tokens is padding; 1 is "unknown"; known values start at 2."""
_FIRST_TOKEN = 2
MAX_LIST_LEN = 16
"""List-valued (``sequence``-type) profile features keep at most this many tokens per customer."""
DEFAULT_NEIGHBOURS = 10
"""Neighbours sampled per node and hop of the consumption graph (merchants per customer, customers per
merchant): enough for attention to weigh a customer's main merchants, small enough to keep batches cheap."""

_warned: set[str] = set()


def notice(key: str, message: str) -> None:
    """Log ``message`` (fit / bind / build happen a few times per run, so the log stays short) and raise a
    Python warning the first time per process and ``key``, so interactive users see a switched-off branch."""
    log.warning(message)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


# --- small arrow helpers ---------------------------------------------------------------------------------------
def _as_str(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.string())


def _codes(col: pa.ChunkedArray | pa.Array, vocab: list[str], offset: int) -> np.ndarray:
    """Vocabulary positions ``offset + i`` of each value; values not in ``vocab`` (or null) map to ``offset - 1``."""
    idx = pc.index_in(_as_str(col), value_set=pa.array(vocab, type=pa.string()))
    out = np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return out + offset


def _float(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _int(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _moments(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    std = float(x.std())
    # A constant column carries no information; std 1 keeps it at 0 instead of dividing by zero.
    return float(x.mean()), std if std > 1e-12 else 1.0


def _standardise(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    z = (x - mean) / std
    # Missing values become the training mean; clipping keeps an outlier in new data from saturating a layer.
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0), -10.0, 10.0).astype(np.float32)


def _vocab(col: pa.ChunkedArray | pa.Array) -> list[str]:
    values = pc.unique(pc.drop_null(_as_str(col))).to_pylist()
    return sorted(str(v) for v in values)


# --- the fitted space ------------------------------------------------------------------------------------------
@dataclass
class FeatureSpace:
    """Encodings learnt from a dataset's train split; see the module docstring.

    Use :meth:`fit` to build one and :meth:`bind` to apply it to a dataset (the same or another with the same
    funds and feature columns).
    """

    customer_numeric: list[dict[str, Any]]
    customer_categorical: list[dict[str, Any]]
    customer_lists: list[dict[str, Any]]
    fund_ids: list[str]
    fund_numeric: list[dict[str, Any]]
    fund_categorical: list[dict[str, Any]]
    has_clicks: bool
    has_sequences: bool
    has_graph: bool
    sequence_length: int
    event_amount: dict[str, float]
    event_age_scale: float
    merchant_vocab: list[str]
    edge_stats: dict[str, float]
    label_stats: dict[str, float]

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        *,
        sequence_length: int | None = None,
        use_sequences: bool = True,
        use_graph: bool = True,
    ) -> FeatureSpace:
        """Fit on ``dataset``'s train split.

        Args:
            sequence_length: behaviour events kept per customer (latest first); default the spec's.
            use_sequences, use_graph: set False to switch a branch off even when the data has it.
        """
        spec = dataset.spec
        train = dataset.split_mask("train")
        exp = dataset.exposures.filter(pa.array(train))
        train_cust = np.unique(dataset.customer_index(exp.column("customer_id")))
        customers = dataset.customers.take(pa.array(train_cust))

        c_num: list[dict[str, Any]] = []
        c_cat: list[dict[str, Any]] = []
        c_list: list[dict[str, Any]] = []
        # risk_tolerance is a canonical column, not a declared feature, yet it bounds what a customer may buy.
        mean, std = _moments(_float(customers.column("risk_tolerance")))
        c_num.append({"name": "risk_tolerance", "mean": mean, "std": std})
        for feat in spec.customers.features:
            col = customers.column(feat.name)
            if feat.type == "numeric":
                mean, std = _moments(_float(col))
                c_num.append({"name": feat.name, "mean": mean, "std": std})
            elif feat.type == "categorical":
                c_cat.append({"name": feat.name, "vocab": _vocab(col)})
            else:
                flat = pc.list_flatten(col.combine_chunks())
                lengths = _int(pc.fill_null(pc.list_value_length(col.combine_chunks()), 0))
                max_len = int(min(MAX_LIST_LEN, max(1, lengths.max(initial=1))))
                c_list.append({"name": feat.name, "vocab": _vocab(flat), "max_len": max_len})

        funds = dataset.funds
        f_num: list[dict[str, Any]] = []
        # The fund's identity and risk level are categorical features of every fund: with a handful of funds
        # they are the strongest fund-side signal. The funds table is not split (it describes the catalogue).
        f_cat: list[dict[str, Any]] = [
            {"name": "fund_id", "vocab": _as_str(funds.column("fund_id")).to_pylist()},
            {"name": "risk_level", "vocab": _vocab(funds.column("risk_level"))},
        ]
        for feat in spec.funds.features:
            col = funds.column(feat.name)
            if feat.type == "numeric":
                mean, std = _moments(_float(col))
                f_num.append({"name": feat.name, "mean": mean, "std": std})
            elif feat.type == "categorical":
                f_cat.append({"name": feat.name, "vocab": _vocab(col)})
            else:
                # A list-valued fund feature is rare; its distinct lists become one categorical per fund.
                f_cat.append({"name": feat.name, "vocab": _vocab(pc.cast(col, pa.string()))})

        name = spec.name
        if not dataset.has_clicks:
            notice(
                "fit-no-clicks", f"dataset '{name}' has no click labels: ESMM-style models train conversion directly"
            )
        if use_sequences and not dataset.has_events:
            notice("fit-no-events", f"dataset '{name}' has no behaviour events: the sequence branch is switched off")
        if use_graph and not dataset.has_graph:
            notice("fit-no-graph", f"dataset '{name}' has no consumption graph: the graph branch is switched off")
        has_sequences = bool(use_sequences and dataset.has_events)
        event_amount = {"mean": 0.0, "std": 1.0}
        age_scale = 1.0
        if has_sequences and dataset.events is not None:
            ev = dataset.events
            amt_mean, amt_std = _moments(np.log1p(_float(ev.column("amount"))))
            event_amount = {"mean": amt_mean, "std": amt_std}
            ev_time = _int(ev.column("time"))
            ref = int(_int(exp.column("time")).min()) if exp.num_rows else int(ev_time.max()) + 1
            age_scale = float(max(1.0, np.log1p(max(1, ref - int(ev_time.min())))))
        has_graph = bool(use_graph and dataset.has_graph)
        merchants: list[str] = []
        edge_stats = {"count_mean": 0.0, "count_std": 1.0, "total_mean": 0.0, "total_std": 1.0}
        if has_graph and dataset.consumption is not None:
            cons = dataset.consumption
            merchants = _vocab(cons.column("merchant_id"))
            cm, cs = _moments(np.log1p(_float(cons.column("payment_count"))))
            tm, ts = _moments(np.log1p(_float(cons.column("payment_total"))))
            edge_stats = {"count_mean": cm, "count_std": cs, "total_mean": tm, "total_std": ts}

        label_stats = _label_stats(exp, dataset.has_clicks)
        return cls(
            customer_numeric=c_num,
            customer_categorical=c_cat,
            customer_lists=c_list,
            fund_ids=f_cat[0]["vocab"],
            fund_numeric=f_num,
            fund_categorical=f_cat,
            has_clicks=dataset.has_clicks,
            has_sequences=has_sequences,
            has_graph=has_graph,
            sequence_length=int(sequence_length if sequence_length is not None else spec.sequence_length),
            event_amount=event_amount,
            event_age_scale=age_scale,
            merchant_vocab=merchants,
            edge_stats=edge_stats,
            label_stats=label_stats,
        )

    # -- serialisation -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-compatible state (str/int/float/bool/list/dict only)."""
        return {
            "version": STATE_VERSION,
            "customer_numeric": self.customer_numeric,
            "customer_categorical": self.customer_categorical,
            "customer_lists": self.customer_lists,
            "fund_ids": self.fund_ids,
            "fund_numeric": self.fund_numeric,
            "fund_categorical": self.fund_categorical,
            "has_clicks": self.has_clicks,
            "has_sequences": self.has_sequences,
            "has_graph": self.has_graph,
            "sequence_length": self.sequence_length,
            "event_amount": self.event_amount,
            "event_age_scale": self.event_age_scale,
            "merchant_vocab": self.merchant_vocab,
            "edge_stats": self.edge_stats,
            "label_stats": self.label_stats,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FeatureSpace:
        version = state.get("version")
        if version != STATE_VERSION:
            raise DataValidationError(f"feature space state has version {version!r}; this eoca reads {STATE_VERSION}")
        fields = {k: v for k, v in state.items() if k != "version"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise DataValidationError(f"feature space state is malformed: {exc}") from exc

    # -- sizes models need ---------------------------------------------------------------------------------
    @property
    def n_funds(self) -> int:
        return len(self.fund_ids)

    @property
    def customer_numeric_dim(self) -> int:
        return len(self.customer_numeric)

    @property
    def customer_cardinalities(self) -> list[int]:
        """Embedding table sizes of the customer categoricals (vocabulary + the unknown bucket)."""
        return [len(f["vocab"]) + 1 for f in self.customer_categorical]

    @property
    def customer_list_cardinalities(self) -> list[int]:
        """Token table sizes of list features (vocabulary + padding + unknown)."""
        return [len(f["vocab"]) + _FIRST_TOKEN for f in self.customer_lists]

    @property
    def fund_numeric_dim(self) -> int:
        return len(self.fund_numeric)

    @property
    def fund_cardinalities(self) -> list[int]:
        return [len(f["vocab"]) + 1 for f in self.fund_categorical]

    @property
    def n_event_funds(self) -> int:
        """Fund tokens of behaviour events: padding, unknown fund, then each fitted fund."""
        return self.n_funds + _FIRST_TOKEN

    @property
    def n_event_types(self) -> int:
        return len(EVENT_TYPES) + _FIRST_TOKEN

    @property
    def n_merchants(self) -> int:
        """Merchant embedding rows: the unknown bucket plus every merchant seen when fitting."""
        return len(self.merchant_vocab) + 1

    # -- binding --------------------------------------------------------------------------------------------
    def bind(self, dataset: Dataset) -> BoundFeatures:
        """Encode ``dataset`` with this space; raises :class:`DataValidationError` on a mismatch."""
        return BoundFeatures(self, dataset)


def _label_stats(exp: pa.Table, has_clicks: bool) -> dict[str, float]:
    """Train label statistics: base rates initialise output biases; the lognormal fit of converters' log1p
    amount is the constant amount model of conversion-only models (dnn_c, esmm)."""
    converted = _float(exp.column("converted"))
    amount = _float(exp.column("amount"))
    pos = amount[(converted > 0) & (amount > 0)]
    log_amt = np.log1p(pos)
    stats = {
        "n_train": float(exp.num_rows),
        "conversion_rate": float(converted.mean()) if converted.size else 0.0,
        "mean_amount": float(pos.mean()) if pos.size else 0.0,
        "log1p_mu": float(log_amt.mean()) if pos.size else 0.0,
        "log1p_sigma": float(log_amt.std()) if pos.size > 1 else 1.0,
        "mean_log1p_all": float(np.log1p(amount).mean()) if amount.size else 0.0,
        "click_rate": float(_float(exp.column("clicked")).mean()) if has_clicks and exp.num_rows else 0.0,
    }
    return stats


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

        funds = dataset.funds
        fnum = [_standardise(_float(funds.column(f["name"])), f["mean"], f["std"]) for f in space.fund_numeric]
        self.f_num = torch.from_numpy(np.stack(fnum, axis=1) if fnum else np.zeros((self.n_funds, 0), np.float32))
        fcat = [
            _codes(funds.column(f["name"]) if f["name"] != "fund_id" else funds.column("fund_id"), f["vocab"], 1)
            for f in space.fund_categorical
        ]
        self.f_cat = torch.from_numpy(np.stack(fcat, axis=1))

        exp = dataset.exposures
        self._exp_customer = dataset.customer_index(exp.column("customer_id"))
        self._exp_fund = dataset.fund_index(exp.column("fund_id"))
        self._exp_time = _int(exp.column("time"))
        self._converted = _float(exp.column("converted")).astype(np.float32)
        self._amount = _float(exp.column("amount")).astype(np.float32)
        self._clicked = _float(exp.column("clicked")).astype(np.float32) if dataset.has_clicks else None
        self._split_rows = {s: np.flatnonzero(dataset.split_mask(s)) for s in SPLITS}
        if space.has_clicks and not dataset.has_clicks:
            notice("bind-no-clicks", "dataset has no click labels; click-based losses are skipped for it")

        self._seq: _Sequences | None = None
        if space.has_sequences:
            if dataset.has_events and dataset.events is not None:
                self._seq = _Sequences(space, dataset, self._exp_time)
            else:
                notice("bind-no-events", "dataset has no behaviour events; sequences are empty (all padding)")
        self._graph: _Graph | None = None
        if space.has_graph:
            if dataset.has_graph and dataset.consumption is not None:
                self._graph = _Graph(space, dataset)
            else:
                notice("bind-no-graph", "dataset has no consumption graph; every customer has no merchants")

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

    def exposure_batches(
        self, split: str, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Every exposure row of ``split`` exactly once, in batches of ``batch_size`` with labels filled.

        ``shuffle=True`` is the training mode: rows are permuted with ``generator`` and graph neighbours are
        sampled at random; ``shuffle=False`` keeps file order and samples neighbours deterministically.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = self._rows(split)
        if shuffle:
            perm = torch.randperm(rows.size, generator=generator).numpy()
            rows = rows[perm]
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
    def _make_batch(
        self, cust: np.ndarray, fund: np.ndarray, time: np.ndarray | None, rng: np.random.Generator | None
    ) -> Batch:
        seq = self._seq
        unit_end: np.ndarray | None = None
        unit_now: np.ndarray | None = None
        if seq is not None and not seq.static and time is not None:
            # Rows of one customer at different times see different histories: a unit is (customer, time).
            t0 = int(time.min())
            key = cust * (int(time.max()) - t0 + 1) + (time - t0)
            _, first, row_unit = np.unique(key, return_index=True, return_inverse=True)
            unit_cust, unit_time = cust[first], time[first]
            unit_end = seq.cut(unit_cust, unit_time)
            unit_now = unit_time
        else:
            unit_cust, row_unit = np.unique(cust, return_inverse=True)
            if seq is not None:
                unit_end = seq.latest(unit_cust)
        uc = torch.from_numpy(unit_cust)
        inputs: dict[str, torch.Tensor] = {
            "row_unit": torch.from_numpy(row_unit.reshape(-1).astype(np.int64)),
            "unit_customer": uc,
            "c_num": self.c_num[uc],
            "c_cat": self.c_cat[uc],
            "f_num": self.f_num,
            "f_cat": self.f_cat,
        }
        for i, lst in enumerate(self.c_lists):
            inputs[f"c_list_{i}"] = lst[uc]
        if self.space.has_sequences:
            if seq is not None and unit_end is not None:
                inputs.update(seq.gather(unit_cust, unit_end, unit_now))
            else:
                inputs.update(_empty_sequences(unit_cust.size, self.space.sequence_length))
        if self.space.has_graph:
            if self._graph is not None:
                inputs.update(self._graph.sample(unit_cust, rng, self.c_num, self.c_cat))
            else:
                inputs.update(_empty_graph(self.c_num.shape[1], self.c_cat.shape[1]))
        return Batch(customer=torch.from_numpy(cust), fund=torch.from_numpy(fund), inputs=inputs)


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


def _empty_sequences(n_units: int, length: int) -> dict[str, torch.Tensor]:
    zeros_i = torch.zeros((n_units, length), dtype=torch.int64)
    zeros_f = torch.zeros((n_units, length), dtype=torch.float32)
    return {
        "seq_fund": zeros_i,
        "seq_type": zeros_i,
        "seq_amount": zeros_f,
        "seq_age": zeros_f,
        "seq_mask": torch.zeros((n_units, length), dtype=torch.bool),
    }


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


class _Sequences:
    """Behaviour events sorted by (customer, time), cut into the latest ``L`` before a time by index arithmetic.

    ``static`` is True when every event precedes every exposure (the simulator's layout): then a customer's
    sequence is the same for all of its rows and is cut once per customer.
    """

    def __init__(self, space: FeatureSpace, dataset: Dataset, exposure_time: np.ndarray) -> None:
        assert dataset.events is not None
        ev = dataset.events
        cust = dataset.customer_index(ev.column("customer_id"))
        time = _int(ev.column("time"))
        order = np.lexsort((time, cust))
        self.cust = cust[order]
        self.time = time[order]
        self.n_events = int(order.size)
        self.fund = _codes(ev.column("fund_id"), space.fund_ids, _FIRST_TOKEN)[order]
        self.fund[self.fund < _FIRST_TOKEN] = 1
        self.type = _codes(ev.column("event_type"), list(EVENT_TYPES), _FIRST_TOKEN)[order]
        self.type[self.type < _FIRST_TOKEN] = 1
        amt = np.log1p(np.maximum(_float(ev.column("amount")), 0.0))
        self.amount = _standardise(amt, space.event_amount["mean"], space.event_amount["std"])[order]
        self.indptr = np.searchsorted(self.cust, np.arange(dataset.n_customers + 1), side="left")
        self.length = space.sequence_length
        self.age_scale = space.event_age_scale
        first_exposure = int(exposure_time.min()) if exposure_time.size else int(self.time.max(initial=0)) + 1
        self.static = self.n_events == 0 or int(self.time.max()) < first_exposure
        # "Now" for static sequences and for scoring: the first exposure (or just after the last event), so
        # event ages are measured from the same point in training and in scoring.
        self.now = first_exposure if self.static else int(self.time.max(initial=0)) + 1
        # Composite (customer, time) key for cutting per row; time offset keeps it non-negative.
        self._t0 = int(self.time.min(initial=0))
        self._span = int(self.time.max(initial=0)) - self._t0 + 2
        self._key = self.cust * self._span + (self.time - self._t0)

    def latest(self, cust: np.ndarray) -> np.ndarray:
        """End index (exclusive) of each customer's events: the whole history."""
        return np.asarray(self.indptr[cust + 1], dtype=np.int64)

    def cut(self, cust: np.ndarray, time: np.ndarray) -> np.ndarray:
        """End index (exclusive) of each customer's events strictly before ``time``: no event at or after an
        exposure enters its sequence."""
        t = np.clip(time - self._t0, 0, self._span - 1)
        return np.searchsorted(self._key, cust * self._span + t, side="left").astype(np.int64)

    def gather(self, cust: np.ndarray, end: np.ndarray, now: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Sequence tensors ``[U, L]`` for units ``(cust, end)``; the latest event sits in the last slot."""
        length = self.length
        idx = end[:, None] - length + np.arange(length)[None, :]
        valid = idx >= self.indptr[cust][:, None]
        safe = np.where(valid, idx, 0) if self.n_events else np.zeros_like(idx)
        if self.n_events == 0:
            valid = np.zeros_like(valid)
        ref = self.now if now is None else now[:, None]
        age = np.log1p(np.maximum(ref - self.time[safe], 0)) / self.age_scale if self.n_events else np.zeros(idx.shape)
        return {
            "seq_fund": torch.from_numpy(np.where(valid, self.fund[safe], PAD)),
            "seq_type": torch.from_numpy(np.where(valid, self.type[safe], PAD)),
            "seq_amount": torch.from_numpy(np.where(valid, self.amount[safe], 0.0).astype(np.float32)),
            "seq_age": torch.from_numpy(np.where(valid, age, 0.0).astype(np.float32)),
            "seq_mask": torch.from_numpy(valid),
        }


class _Graph:
    """The customer-merchant consumption graph as CSR in both directions, with per-batch neighbour sampling.

    Neighbour lists are sorted by payment total (largest first). Sampling is *systematic*: ``S`` evenly spaced
    positions with one random phase per node, so a node with more than ``S`` neighbours gets ``S`` distinct
    ones spread over its whole list; with ``rng=None`` the phase is fixed, which makes scoring deterministic.
    """

    def __init__(self, space: FeatureSpace, dataset: Dataset, neighbours: int = DEFAULT_NEIGHBOURS) -> None:
        assert dataset.consumption is not None
        cons = dataset.consumption
        cust = dataset.customer_index(cons.column("customer_id"))
        merch = _codes(cons.column("merchant_id"), space.merchant_vocab, 1)
        es = space.edge_stats
        count = _standardise(np.log1p(_float(cons.column("payment_count"))), es["count_mean"], es["count_std"])
        total_raw = np.log1p(_float(cons.column("payment_total")))
        total = _standardise(total_raw, es["total_mean"], es["total_std"])
        self.attr = np.stack([count, total], axis=1)
        # Merchants not seen when fitting share the unknown bucket (id 0) as a node: they still connect the
        # customers who paid them, which is the information the second hop needs.
        self.merch = merch
        self.cust = cust
        n_m = space.n_merchants
        by_c = np.lexsort((-total_raw, cust))
        self.c_indptr = np.searchsorted(cust[by_c], np.arange(dataset.n_customers + 1))
        self.c_edges = by_c
        by_m = np.lexsort((-total_raw, merch))
        self.m_indptr = np.searchsorted(merch[by_m], np.arange(n_m + 1))
        self.m_edges = by_m
        self.s = neighbours

    def _sample(
        self, nodes: np.ndarray, indptr: np.ndarray, edges: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``S`` edges per node; returns (position of the node in ``nodes``, edge id), both ``[E]``."""
        start = indptr[nodes]
        deg = indptr[nodes + 1] - start
        take = np.minimum(deg, self.s)
        owner = np.repeat(np.arange(nodes.size), take)
        slot = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        phase = rng.random(nodes.size) if rng is not None else np.full(nodes.size, 0.5)
        d = deg[owner]
        # For deg <= S this is exactly slot (all neighbours); otherwise floor((slot + phase) * deg / S).
        offset = np.where(d <= self.s, slot, np.floor((slot + phase[owner]) * d / self.s).astype(np.int64))
        return owner, edges[start[owner] + np.minimum(offset, d - 1)]

    def sample(
        self, units: np.ndarray, rng: np.random.Generator | None, c_num: torch.Tensor, c_cat: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Two-hop neighbourhood of the unit customers (see the module docstring for the keys)."""
        owner2, e2 = self._sample(units, self.c_indptr, self.c_edges, rng)
        merchants, e2_src = np.unique(self.merch[e2], return_inverse=True)
        owner1, e1 = self._sample(merchants, self.m_indptr, self.m_edges, rng)
        c2, e1_src = np.unique(self.cust[e1], return_inverse=True)
        c2_t = torch.from_numpy(c2)
        return {
            "g_merchant": torch.from_numpy(merchants),
            "g_c2_num": c_num[c2_t],
            "g_c2_cat": c_cat[c2_t],
            "g_e1_src": torch.from_numpy(e1_src.reshape(-1).astype(np.int64)),
            "g_e1_dst": torch.from_numpy(owner1.astype(np.int64)),
            "g_e1_attr": torch.from_numpy(self.attr[e1]),
            "g_e2_src": torch.from_numpy(e2_src.reshape(-1).astype(np.int64)),
            "g_e2_dst": torch.from_numpy(owner2.astype(np.int64)),
            "g_e2_attr": torch.from_numpy(self.attr[e2]),
        }
