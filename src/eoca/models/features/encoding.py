"""Shared encoding constants and Arrow -> NumPy helpers of the feature package."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eoca.data.schema import EVENT_TYPES

log = logging.getLogger("eoca.models.features")

STATE_VERSION = 2
UNKNOWN = 0
"""Index 0 of every categorical vocabulary: values never seen in training (and missing values)."""
PAD = 0
"""Index 0 of list / sequence tokens is padding; 1 is "unknown"; known values start at 2."""
_FIRST_TOKEN = 2
PAIR_FEATURE_NAMES: tuple[str, ...] = (
    *(f"n_{t}" for t in EVENT_TYPES),
    *(f"n_{t}_recent" for t in EVENT_TYPES),
    "purchase_amount",
    "recency",
)
"""Candidate-aware behaviour counts, computed per (customer, candidate fund) and per (customer, candidate fund
type): ``log1p`` event counts by type over the whole history and over the recent window, ``log1p`` of the total
purchase amount, and ``1 / (1 + age of the latest event / window)`` (0 without events)."""
PAIR_FEATURES_PER_LEVEL = len(PAIR_FEATURE_NAMES)
CUSTOMER_SUMMARY_NAMES: tuple[str, ...] = (
    *(f"n_{t}" for t in EVENT_TYPES),
    "purchase_log_mean",
    "purchase_log_sd",
)
"""Behaviour summary of a customer over every fund (the row's events strictly before its exposure): ``log1p``
event counts by type, then the mean and standard deviation of ``log1p(amount)`` over the purchases (0 without
purchases; the sd 0 with fewer than two). Past purchases are draws of the customer's own amount law, so they
place the customer's ticket size and spread; the counts are the denominators that turn a fund's counts into
shares of the customer's attention."""
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


def stable_keys(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 63-bit FNV-1a hash of each value's text, int64 ``(n,)``: the same id gives the same key in every dataset
    and run (Python's ``hash`` is salted per process), which per-customer learned terms need."""
    text = np.asarray(_as_str(col).to_numpy(zero_copy_only=False), dtype=np.str_)
    raw = np.char.encode(text, "utf-8") if text.size else np.zeros(0, dtype="S1")
    width = max(int(raw.dtype.itemsize), 1)
    codes = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(-1, width) if raw.size else np.zeros((0, 1), np.uint8)
    lengths = np.char.str_len(raw) if raw.size else np.zeros(0, dtype=np.int64)
    h = np.full(codes.shape[0], 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(width):
            step = (h ^ codes[:, j].astype(np.uint64)) * prime
            h = np.where(j < lengths, step, h)
    return (h & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)


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
