"""Fitting a :class:`FeatureSpace` on a dataset's train split, and its JSON-compatible state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eoca.data.dataset import Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.errors import DataValidationError
from eoca.models.features.encoding import (
    _FIRST_TOKEN,
    DEFAULT_NEIGHBOURS,
    MAX_LIST_LEN,
    PAIR_FEATURES_PER_LEVEL,
    STATE_VERSION,
    _as_str,
    _float,
    _int,
    _moments,
    _vocab,
    notice,
)

if TYPE_CHECKING:
    from eoca.models.features.batching import BoundFeatures


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
    fund_groups: list[int]
    fund_group_source: str
    recent_window: float
    graph_neighbours: int = DEFAULT_NEIGHBOURS
    """Edges sampled per node and hop of the consumption graph (a state saved before this field existed
    sampled :data:`~eoca.models.features.encoding.DEFAULT_NEIGHBOURS`, the default)."""

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        *,
        sequence_length: int | None = None,
        use_sequences: bool = True,
        use_graph: bool = True,
        graph_neighbours: int = DEFAULT_NEIGHBOURS,
    ) -> FeatureSpace:
        """Fit on ``dataset``'s train split.

        Args:
            sequence_length: behaviour events kept per customer (latest first); default the spec's.
            use_sequences, use_graph: set False to switch a branch off even when the data has it.
            graph_neighbours: edges sampled per node and hop of the consumption graph (at least 1).
        """
        if isinstance(graph_neighbours, bool) or not isinstance(graph_neighbours, int) or graph_neighbours < 1:
            raise ValueError(f"graph_neighbours must be an integer >= 1, got {graph_neighbours!r}")
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
        recent_window = 1.0
        if has_sequences and dataset.events is not None:
            ev = dataset.events
            amt_mean, amt_std = _moments(np.log1p(_float(ev.column("amount"))))
            event_amount = {"mean": amt_mean, "std": amt_std}
            ev_time = _int(ev.column("time"))
            ref = int(_int(exp.column("time")).min()) if exp.num_rows else int(ev_time.max()) + 1
            age_scale = float(max(1.0, np.log1p(max(1, ref - int(ev_time.min())))))
            recent_window = recent_window_of(ev_time, ref)
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
        group_source, groups = _fund_groups(funds, f_cat)
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
            fund_groups=groups,
            fund_group_source=group_source,
            recent_window=recent_window,
            graph_neighbours=graph_neighbours,
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
            "fund_groups": self.fund_groups,
            "fund_group_source": self.fund_group_source,
            "recent_window": self.recent_window,
            "graph_neighbours": self.graph_neighbours,
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
    def n_fund_groups(self) -> int:
        """Distinct fund groups (fund types) of :attr:`fund_groups`."""
        return max(self.fund_groups, default=-1) + 1

    @property
    def pair_dim(self) -> int:
        """Width ``P`` of the candidate-aware behaviour counts ``pair_x [U, F, P]`` (0 without events)."""
        return 2 * PAIR_FEATURES_PER_LEVEL if self.has_sequences else 0

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
        from eoca.models.features.batching import BoundFeatures

        return BoundFeatures(self, dataset)


def recent_window_of(event_time: np.ndarray, ref: int) -> float:
    """The "recent" window of the pair counts: the median age, at ``ref`` (the first training exposure), of the
    events before it (at least 1 time unit), so about half of a typical history counts as recent."""
    ages = ref - event_time[event_time < ref]
    return float(max(1.0, np.median(ages))) if ages.size else 1.0


def _fund_groups(funds: pa.Table, f_cat: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """Group index of every fitted fund (in ``fund_ids`` order) and the column it comes from.

    The group is the fund type: the declared categorical ``fund_type`` when the funds table has one, else the
    canonical ``risk_level`` (every dataset has it), so "this customer keeps buying bond funds" is expressible.
    """
    names = [f["name"] for f in f_cat]
    source = "fund_type" if "fund_type" in names else "risk_level"
    values = _as_str(funds.column(source)).to_pylist()
    ids = _as_str(funds.column("fund_id")).to_pylist()
    vocab = sorted({str(v) for v in values})
    by_id = {i: vocab.index(str(v)) for i, v in zip(ids, values, strict=True)}
    return source, [by_id[i] for i in f_cat[0]["vocab"]]


def _label_stats(exp: pa.Table, has_clicks: bool) -> dict[str, float]:
    """Train label statistics: base rates initialise output biases; the lognormal fit of converters' log1p
    amount is the constant amount model of conversion-only models (dnn_c, esmm)."""
    converted = _float(exp.column("converted"))
    amount = _float(exp.column("amount"))
    w = _float(exp.column("weight")) if "weight" in exp.column_names else None
    pos = amount[(converted > 0) & (amount > 0)]
    log_amt = np.log1p(pos)
    stats = {
        "n_train": float(exp.num_rows),
        # Sampling weights (oversampled data) make the base rate the population's, where output biases start.
        "conversion_rate": float(np.average(converted, weights=w)) if converted.size else 0.0,
        "mean_amount": float(pos.mean()) if pos.size else 0.0,
        "log1p_mu": float(log_amt.mean()) if pos.size else 0.0,
        "log1p_sigma": float(log_amt.std()) if pos.size > 1 else 1.0,
        "log1p_min": float(log_amt.min()) if pos.size else 0.0,
        "log1p_max": float(log_amt.max()) if pos.size else 0.0,
        "max_amount": float(pos.max()) if pos.size else 0.0,
        "n_converters": float(pos.size),
        "mean_log1p_all": float(np.average(np.log1p(amount), weights=w)) if amount.size else 0.0,
        "click_rate": float(_float(exp.column("clicked")).mean()) if has_clicks and exp.num_rows else 0.0,
    }
    return stats
