"""Behaviour events: the latest ``L`` events of a customer strictly before a time, as padded tensors."""

from __future__ import annotations

import numpy as np
import torch

from eoca.data.dataset import Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.models.features.encoding import (
    _FIRST_TOKEN,
    CUSTOMER_SUMMARY_NAMES,
    PAD,
    PAIR_FEATURES_PER_LEVEL,
    _codes,
    _float,
    _int,
    _standardise,
)
from eoca.models.features.fitting import FeatureSpace

LATEST_TABLE_LIMIT = 1 << 24
"""Customers x sequence slots up to which every customer's whole-history sequence is cut once into a table
(about 13 bytes a slot: 200 MiB at the limit) that batches then index, instead of cutting it again per batch."""


PAIR_COUNT_BLOCK = 8192
"""Units per block of :meth:`BehaviourSequences.pair_counts`: its temporaries (about 4 kB a unit with 8 funds) then
stay a few tens of MB, reused from block to block."""


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
        raw = np.maximum(np.nan_to_num(_float(ev.column("amount")), nan=0.0), 0.0)
        self.raw_amount = raw[order]
        amt = np.log1p(raw)
        self.amount = _standardise(amt, space.event_amount["mean"], space.event_amount["std"])[order]
        self.indptr = np.searchsorted(self.cust, np.arange(dataset.n_customers + 1), side="left")
        self.length = space.sequence_length
        self.window = float(space.recent_window)
        self.groups = np.asarray(space.fund_groups, dtype=np.int64)
        self.n_groups = space.n_fund_groups
        self.age_scale = space.event_age_scale
        first_exposure = int(exposure_time.min()) if exposure_time.size else int(self.time.max(initial=0)) + 1
        self.static = self.n_events == 0 or int(self.time.max()) < first_exposure
        # "Now" for static sequences and for scoring: the first exposure (or just after the last event), so
        # event ages are measured from the same point in training and in scoring.
        self.now = first_exposure if self.static else int(self.time.max(initial=0)) + 1
        self.n_customers = dataset.n_customers
        self._latest_table: dict[str, torch.Tensor] | None = None
        self._latest_pairs: torch.Tensor | None = None
        self._latest_summary: torch.Tensor | None = None

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

    def latest_pair_counts(self, cust: np.ndarray, fund_fit: np.ndarray) -> torch.Tensor:
        """``pair_counts(cust, latest(cust))`` as of ``now``; like :meth:`latest_sequences`, computed once for all
        customers into a table when it fits under :data:`LATEST_TABLE_LIMIT` floats, then gathered per batch."""
        width = fund_fit.size * 2 * PAIR_FEATURES_PER_LEVEL
        if self.n_customers * width > LATEST_TABLE_LIMIT:
            return self.pair_counts(cust, self.latest(cust), fund_fit)
        if self._latest_pairs is None:
            everyone = np.arange(self.n_customers, dtype=np.int64)
            self._latest_pairs = self.pair_counts(everyone, self.latest(everyone), fund_fit)
        return self._latest_pairs.index_select(0, torch.from_numpy(np.asarray(cust, dtype=np.int64)))

    def latest_customer_summary(self, cust: np.ndarray) -> torch.Tensor:
        """``customer_summary(cust, latest(cust))``, from a table computed once for all customers."""
        if self._latest_summary is None:
            everyone = np.arange(self.n_customers, dtype=np.int64)
            self._latest_summary = self.customer_summary(everyone, self.latest(everyone))
        return self._latest_summary.index_select(0, torch.from_numpy(np.asarray(cust, dtype=np.int64)))

    def _expand(self, cust: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every event of units ``(cust, end)``: (unit position, event index), both ``[E]``."""
        start = self.indptr[cust]
        take = np.maximum(end - start, 0)
        owner = np.repeat(np.arange(cust.size), take)
        idx = np.repeat(start - np.cumsum(take) + take, take) + np.arange(int(take.sum()))
        return owner, idx

    def customer_summary(self, cust: np.ndarray, end: np.ndarray) -> torch.Tensor:
        """The :data:`~eoca.models.features.encoding.CUSTOMER_SUMMARY_NAMES` of units ``(cust, end)``,
        float32 ``[U, C]``: every event of the customer before ``end``, whatever its fund."""
        n_units = cust.size
        n_types = len(EVENT_TYPES)
        owner, idx = self._expand(cust, end)
        etype = self.type[idx] - _FIRST_TOKEN
        ok = etype >= 0
        counts = np.bincount(owner[ok] * n_types + etype[ok], minlength=n_units * n_types).reshape(n_units, n_types)
        buy = etype == EVENT_TYPES.index("purchase")
        log_amount = np.log1p(self.raw_amount[idx[buy]])
        n = np.bincount(owner[buy], minlength=n_units).astype(np.float64)
        s1 = np.bincount(owner[buy], log_amount, minlength=n_units)
        s2 = np.bincount(owner[buy], log_amount**2, minlength=n_units)
        mean = np.divide(s1, n, out=np.zeros(n_units), where=n > 0)
        var = np.divide(s2, n, out=np.zeros(n_units), where=n > 1) - np.where(n > 1, mean**2, 0.0)
        out = np.column_stack([np.log1p(counts), mean, np.sqrt(np.maximum(var, 0.0))])
        assert out.shape[1] == len(CUSTOMER_SUMMARY_NAMES)
        return torch.from_numpy(out.astype(np.float32))

    def cut(self, cust: np.ndarray, time: np.ndarray) -> np.ndarray:
        """End index (exclusive) of each customer's events strictly before ``time``: no event at or after an
        exposure enters its sequence."""
        # A customer's events are contiguous and sorted by time, so the end is the customer's first event plus the
        # number of its events before ``time``: a count over the units' own events, which lie together in memory,
        # where a binary search of the whole (customer, time) key table missed the cache at every step.
        start = self.indptr[cust]
        owner, idx = self._expand(cust, self.indptr[cust + 1])
        before = self.time[idx] < np.asarray(time)[owner]
        return (start + np.bincount(owner[before], minlength=cust.size)).astype(np.int64)

    def gather(self, cust: np.ndarray, end: np.ndarray, now: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Sequence tensors ``[U, L]`` for units ``(cust, end)``; the latest event sits in the last slot."""
        length = self.length
        n_units = cust.size
        start = np.maximum(self.indptr[cust], end - length) if self.n_events else end
        take = np.maximum(end - start, 0)
        # Only the real events are read and converted (most units have far fewer than L): unit u's events fill
        # its last take[u] slots, in order.
        unit = np.repeat(np.arange(n_units), take)
        first = np.cumsum(take) - take
        pos = np.arange(int(take.sum())) - np.repeat(first, take)
        idx = np.repeat(start, take) + pos
        slot = unit * length + np.repeat(length - take, take) + pos
        ref = np.full(n_units, self.now, dtype=np.int64) if now is None else np.asarray(now)
        fund = np.full(n_units * length, PAD, dtype=self.fund.dtype)
        etype = np.full(n_units * length, PAD, dtype=self.type.dtype)
        amount = np.zeros(n_units * length, dtype=np.float32)
        age = np.zeros(n_units * length, dtype=np.float32)
        valid = np.zeros(n_units * length, dtype=bool)
        fund[slot] = self.fund[idx]
        etype[slot] = self.type[idx]
        amount[slot] = self.amount[idx]
        age[slot] = np.log1p(np.maximum(ref[unit] - self.time[idx], 0)) / self.age_scale
        valid[slot] = True
        shape = (n_units, length)
        return {
            "seq_fund": torch.from_numpy(fund.reshape(shape)),
            "seq_type": torch.from_numpy(etype.reshape(shape)),
            "seq_amount": torch.from_numpy(amount.reshape(shape)),
            "seq_age": torch.from_numpy(age.reshape(shape)),
            "seq_mask": torch.from_numpy(valid.reshape(shape)),
        }

    def pair_counts(
        self, cust: np.ndarray, end: np.ndarray, fund_fit: np.ndarray, now: np.ndarray | None = None
    ) -> torch.Tensor:
        """Candidate-aware behaviour counts ``[U, F, 2 * P]`` of units ``(cust, end)`` for every fund (see
        :meth:`_pair_counts`), in blocks of at most :data:`PAIR_COUNT_BLOCK` units. Each unit's counts depend on
        its own events only, so the blocks give the same values bit for bit. One pass over every customer (the
        scoring table) allocated float64 temporaries of over 400 MB on the default world (a ``U x slots x P``
        table of 112 MB, two gathers and their concatenation), and a fresh process spent more CPU time faulting
        those pages in than counting."""
        n_units = cust.size
        if n_units <= PAIR_COUNT_BLOCK:
            return self._pair_counts(cust, end, fund_fit, now)
        out = torch.empty((n_units, np.asarray(fund_fit).size, 2 * PAIR_FEATURES_PER_LEVEL), dtype=torch.float32)
        for lo in range(0, n_units, PAIR_COUNT_BLOCK):
            hi = lo + PAIR_COUNT_BLOCK
            out[lo:hi] = self._pair_counts(cust[lo:hi], end[lo:hi], fund_fit, None if now is None else now[lo:hi])
        return out

    def _pair_counts(
        self, cust: np.ndarray, end: np.ndarray, fund_fit: np.ndarray, now: np.ndarray | None = None
    ) -> torch.Tensor:
        """Candidate-aware behaviour counts ``[U, F, 2 * P]`` of units ``(cust, end)`` for every fund.

        Every event of the unit's customer before ``end`` counts (the whole history, not only the latest ``L``),
        so a row sees exactly the events strictly before its exposure time (see :meth:`cut`). ``fund_fit`` maps
        the bound dataset's fund positions to fitted fund positions; slot ``f`` holds the
        :data:`~eoca.models.features.encoding.PAIR_FEATURE_NAMES` of the (unit, fund ``f``) pair followed by
        those of (unit, fund ``f``'s type).
        """
        n_units = cust.size
        n_fit = self.groups.size
        k = PAIR_FEATURES_PER_LEVEL
        n_types = len(EVENT_TYPES)
        slots = n_fit + self.n_groups
        owner, idx = self._expand(cust, end)
        fund = self.fund[idx] - _FIRST_TOKEN
        known = fund >= 0
        owner, idx, fund = owner[known], idx[known], fund[known]
        etype = self.type[idx] - _FIRST_TOKEN
        ref = np.full(n_units, self.now, dtype=np.int64) if now is None else np.asarray(now, dtype=np.int64)
        age = np.maximum(ref[owner] - self.time[idx], 0).astype(np.float64)
        recent = age <= self.window
        ok = etype >= 0
        ok_recent = ok & recent
        spend = np.where(etype == EVENT_TYPES.index("purchase"), self.raw_amount[idx], 0)
        closeness = 1.0 / (1.0 + age / self.window)
        rows = [owner * slots + slot for slot in (fund, n_fit + self.groups[fund])]
        # Every count and every spend total in one weighted bincount: it adds in input order as np.add.at does
        # (the same sums, bit for bit; counts are sums of 1.0, exact). The fund slots and the type slots are
        # disjoint rows and counts, recent counts and spend disjoint columns, so each cell gets the terms of one
        # part only, in their order. One pass over the [U * slots, k] table, where a bincount per part wrote it six
        # times.
        cells = [
            part
            for row in rows
            for part in (
                row[ok] * k + etype[ok],
                row[ok_recent] * k + n_types + etype[ok_recent],
                row * k + 2 * n_types,
            )
        ]
        terms = [part for _ in rows for part in (np.ones(int(ok.sum())), np.ones(int(ok_recent.sum())), spend)]
        flat = np.bincount(np.concatenate(cells), np.concatenate(terms), minlength=n_units * slots * k)
        acc = flat.reshape(n_units * slots, k)
        np.maximum.at(acc[:, 2 * n_types + 1], np.concatenate(rows), np.concatenate([closeness, closeness]))
        acc[:, : 2 * n_types + 1] = np.log1p(acc[:, : 2 * n_types + 1])
        acc3 = acc.reshape(n_units, slots, k)
        fit = np.asarray(fund_fit, dtype=np.int64)
        out = np.concatenate([acc3[:, fit], acc3[:, n_fit + self.groups[fit]]], axis=2)
        return torch.from_numpy(out.astype(np.float32))


def empty_customer_summary(n_units: int) -> torch.Tensor:
    """All-zero customer summaries ``[U, C]`` for a dataset without behaviour events."""
    return torch.zeros((n_units, len(CUSTOMER_SUMMARY_NAMES)), dtype=torch.float32)


def empty_pair_counts(n_units: int, n_funds: int) -> torch.Tensor:
    """All-zero pair counts ``[U, F, 2 * P]`` for a dataset without behaviour events."""
    return torch.zeros((n_units, n_funds, 2 * PAIR_FEATURES_PER_LEVEL), dtype=torch.float32)
