"""Peers: the methods a user already compares against, fitted on the same split and scored into the same
comparison table as the zoo (``eoca evaluate --models esdpm,bgnbd``).

A peer is not a neural zoo model: it has no training config and no checkpoint, only :meth:`Peer.fit` on the
dataset's train split and predictions per customer. The LightGBM hurdle model ``gbdt`` lives in the zoo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from eoca.data import Dataset
from eoca.errors import ConfigError

PEER_NAMES: tuple[str, ...] = ("bgnbd",)


class Peer(ABC):
    """A non-zoo model: fitted on the train split, predicting ``p`` and ``etv`` per customer."""

    name: str = "peer"
    tasks: frozenset[str] = frozenset({"conversion", "etv"})

    @abstractmethod
    def fit(self, dataset: Dataset) -> Peer:
        """Fit on the customers of ``dataset``'s train split."""

    @abstractmethod
    def predict_customers(self, dataset: Dataset, customer_pos: np.ndarray) -> dict[str, np.ndarray]:
        """``p`` and ``etv`` (float, shape (n,)) of the customers at positions ``customer_pos``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The method (``method``: one line) and its fitted parameters, for comparison.json."""

    def predict_pairs_for(self, dataset: Dataset) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
        """A (customer_pos, fund_pos) predictor: a peer predicts per customer, the same for every item."""

        def predict(customer_pos: np.ndarray, fund_pos: np.ndarray) -> dict[str, np.ndarray]:
            return self.predict_customers(dataset, np.asarray(customer_pos, dtype=np.int64))

        return predict


def make_peer(name: str, **params: Any) -> Peer:
    """A fresh, unfitted peer ``name`` (one of :data:`PEER_NAMES`)."""
    if name == "bgnbd":
        from eoca.peers.bgnbd import BgNbdGammaGamma

        return BgNbdGammaGamma(**params)
    raise ConfigError(f"unknown peer {name!r}; peers: {', '.join(PEER_NAMES)}")


def train_customers(dataset: Dataset) -> np.ndarray:
    """Positions (sorted, unique) of the customers with a train-split exposure."""
    rows = dataset.split_mask("train")
    return np.unique(dataset.customer_index(dataset.exposures.column("customer_id"))[rows])


__all__ = ["PEER_NAMES", "Peer", "make_peer", "train_customers"]
