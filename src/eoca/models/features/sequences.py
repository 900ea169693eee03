"""Behaviour events: the latest ``L`` events of a customer strictly before a time, as padded tensors."""

from __future__ import annotations

import numpy as np
import torch

from eoca.data.dataset import Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.models.features.encoding import _FIRST_TOKEN, PAD, _codes, _float, _int, _standardise
from eoca.models.features.fitting import FeatureSpace

LATEST_TABLE_LIMIT = 1 << 24
"""Customers x sequence slots up to which every customer's whole-history sequence is cut once into a table
(about 13 bytes a slot: 200 MiB at the limit) that batches then index, instead of cutting it again per batch."""


def empty_sequences(n_units: int, length: int) -> dict[str, torch.Tensor]:
    zeros_i = torch.zeros((n_units, length), dtype=torch.int64)
    zeros_f = torch.zeros((n_units, length), dtype=torch.float32)
    return {
        "seq_fund": zeros_i,
        "seq_type": zeros_i,
        "seq_amount": zeros_f,
        "seq_age": zeros_f,
        "seq_mask": torch.zeros((n_units, length), dtype=torch.bool),
    }


class BehaviourSequences:
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
        self.n_customers = dataset.n_customers
        self._latest_table: dict[str, torch.Tensor] | None = None

    def latest(self, cust: np.ndarray) -> np.ndarray:
        """End index (exclusive) of each customer's events: the whole history."""
        return np.asarray(self.indptr[cust + 1], dtype=np.int64)

    def latest_sequences(self, cust: np.ndarray) -> dict[str, torch.Tensor]:
        """``gather(cust, latest(cust))``, the whole history as of ``now``: static sequences and scoring use it
        for every batch, so within :data:`LATEST_TABLE_LIMIT` it is cut once for all customers (token ids kept
        in the narrowest integer type) and each batch is one row gather per tensor."""
        if self.n_customers * self.length > LATEST_TABLE_LIMIT:
            return self.gather(cust, self.latest(cust))
        if self._latest_table is None:
            everyone = np.arange(self.n_customers, dtype=np.int64)
            table = self.gather(everyone, self.latest(everyone))
            for key in ("seq_fund", "seq_type"):
                top = int(table[key].max()) if table[key].numel() else 0
                table[key] = table[key].to(torch.int16 if top < 2**15 else torch.int32)
            self._latest_table = table
        rows = torch.from_numpy(np.asarray(cust, dtype=np.int64))
        return {
            key: t.index_select(0, rows).to(torch.int64) if key in ("seq_fund", "seq_type") else t.index_select(0, rows)
            for key, t in self._latest_table.items()
        }

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
