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
  ``seq_mask`` bool ``[U, L]`` (True = a real event; the latest event is last), and the candidate-aware
  counts ``pair_x`` float32 ``[U, F, 2 * P]`` (see ``PAIR_FEATURE_NAMES``; only events strictly before the
  row's exposure time), and the customer's behaviour summary over every fund ``cust_x`` float32 ``[U, C]``
  (see ``CUSTOMER_SUMMARY_NAMES``; same time cut).
* with the graph, a sampled two-hop customer -> merchant -> customer neighbourhood of the units:
  ``g_merchant`` int64 ``[M]`` (merchant vocabulary ids), ``g_c2_num``/``g_c2_cat`` (features of the ``C2``
  second-hop customers), ``g_e1_src``/``g_e1_dst``/``g_e1_attr`` (edges second-hop customer -> merchant, attr
  ``[E1, 2]``), ``g_e2_src``/``g_e2_dst``/``g_e2_attr`` (edges merchant -> unit, attr ``[E2, 2]``).

Modules: :mod:`~eoca.models.features.fitting` (the fitted space), :mod:`~eoca.models.features.batching`
(binding and batches), :mod:`~eoca.models.features.sequences` (behaviour events),
:mod:`~eoca.models.features.graph` (consumption graph), :mod:`~eoca.models.features.encoding` (shared helpers).
"""

from __future__ import annotations

from eoca.models.features.batching import BoundFeatures
from eoca.models.features.encoding import (
    CUSTOMER_SUMMARY_NAMES,
    DEFAULT_NEIGHBOURS,
    MAX_LIST_LEN,
    PAD,
    PAIR_FEATURE_NAMES,
    STATE_VERSION,
    UNKNOWN,
    notice,
)
from eoca.models.features.fitting import FeatureSpace

__all__ = [
    "CUSTOMER_SUMMARY_NAMES",
    "DEFAULT_NEIGHBOURS",
    "MAX_LIST_LEN",
    "PAD",
    "PAIR_FEATURE_NAMES",
    "STATE_VERSION",
    "UNKNOWN",
    "BoundFeatures",
    "FeatureSpace",
    "notice",
]
