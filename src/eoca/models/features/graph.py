"""The customer-merchant consumption graph and its per-batch two-hop neighbourhood sampling."""

from __future__ import annotations

import numpy as np
import torch

from eoca.data.dataset import Dataset
from eoca.models.features.encoding import _codes, _float, _standardise
from eoca.models.features.fitting import FeatureSpace


class ConsumptionGraph:
    """The customer-merchant consumption graph as CSR in both directions, with per-batch neighbour sampling.

    Neighbour lists are sorted by payment total (largest first). Sampling is *systematic*: ``S`` (the space's
    ``graph_neighbours``) evenly spaced positions with one random phase per node, so a node with more than ``S``
    neighbours gets ``S`` distinct ones spread over its whole list; with ``rng=None`` the phase is fixed, which
    makes scoring deterministic.
    """

    def __init__(self, space: FeatureSpace, dataset: Dataset) -> None:
        assert dataset.consumption is not None
        cons = dataset.consumption
        cust = dataset.customer_index(cons.column("customer_id"))
        merch = _codes(cons.column("merchant_id"), space.merchant_vocab, 1)
        es = space.edge_stats
        count = _standardise(np.log1p(_float(cons.column("payment_count"))), es["count_mean"], es["count_std"])
        total_raw = np.log1p(_float(cons.column("payment_total")))
        total = _standardise(total_raw, es["total_mean"], es["total_std"])
        attr = np.stack([count, total], axis=1)
        # Merchants not seen when fitting share the unknown bucket (id 0) as a node: they still connect the
        # customers who paid them, which is the information the second hop needs.
        n_m = space.n_merchants
        by_c = np.lexsort((-total_raw, cust))
        self.c_indptr = np.searchsorted(cust[by_c], np.arange(dataset.n_customers + 1))
        by_m = np.lexsort((-total_raw, merch))
        self.m_indptr = np.searchsorted(merch[by_m], np.arange(n_m + 1))
        # What sampling reads of an edge, stored in each direction's CSR order: a node's sampled edges are then
        # neighbours in memory, where gathering them by edge id read one scattered cache line per edge of a
        # table of millions (the largest cost of sampling a batch).
        self.c_merch, self.c_attr = merch[by_c], attr[by_c]
        self.m_cust, self.m_attr = cust[by_m], attr[by_m]
        self.s = space.graph_neighbours

    def _sample(
        self, nodes: np.ndarray, indptr: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``S`` edges per node; returns (position of the node in ``nodes``, position of the edge in the
        direction's CSR order), both ``[E]``."""
        start = indptr[nodes]
        deg = indptr[nodes + 1] - start
        take = np.minimum(deg, self.s)
        owner = np.repeat(np.arange(nodes.size), take)
        slot = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        phase = rng.random(nodes.size) if rng is not None else np.full(nodes.size, 0.5)
        d = deg[owner]
        # For deg <= S this is exactly slot (all neighbours); otherwise floor((slot + phase) * deg / S).
        offset = np.where(d <= self.s, slot, np.floor((slot + phase[owner]) * d / self.s).astype(np.int64))
        return owner, start[owner] + np.minimum(offset, d - 1)

    def sample(
        self, units: np.ndarray, rng: np.random.Generator | None, c_num: torch.Tensor, c_cat: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Two-hop neighbourhood of the unit customers (see the module docstring for the keys)."""
        owner2, e2 = self._sample(units, self.c_indptr, rng)
        merchants, e2_src = _unique_small(self.c_merch[e2], self.m_indptr.size - 1)
        owner1, e1 = self._sample(merchants, self.m_indptr, rng)
        c2, e1_src = np.unique(self.m_cust[e1], return_inverse=True)
        # np.take gathers rows of a 2-D table several times faster than fancy indexing (the same values).
        c2_t = torch.from_numpy(c2)
        return {
            "g_merchant": torch.from_numpy(merchants),
            "g_c2_num": c_num.index_select(0, c2_t),
            "g_c2_cat": c_cat.index_select(0, c2_t),
            "g_e1_src": torch.from_numpy(e1_src.reshape(-1).astype(np.int64)),
            "g_e1_dst": torch.from_numpy(owner1.astype(np.int64)),
            "g_e1_attr": torch.from_numpy(np.take(self.m_attr, e1, axis=0)),
            "g_e2_src": torch.from_numpy(e2_src.reshape(-1).astype(np.int64)),
            "g_e2_dst": torch.from_numpy(owner2.astype(np.int64)),
            "g_e2_attr": torch.from_numpy(np.take(self.c_attr, e2, axis=0)),
        }


def _unique_small(values: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for ids in ``[0, n_values)``, by a presence table instead of a
    sort: a batch samples thousands of edges into a merchant vocabulary of a few hundred."""
    present = np.zeros(n_values, dtype=bool)
    present[values] = True
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[values]
