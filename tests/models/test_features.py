"""FeatureSpace / BoundFeatures: train-only fitting, serialisation, batching, leakage and missing branches."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from eoca.data import Dataset
from eoca.errors import DataValidationError
from eoca.models import FeatureSpace
from eoca.models.features import DEFAULT_NEIGHBOURS, BoundFeatures


def _assert_same_batches(a: BoundFeatures, b: BoundFeatures) -> None:
    for ba, bb in zip(
        a.exposure_batches("valid", 256, shuffle=False), b.exposure_batches("valid", 256, shuffle=False), strict=True
    ):
        assert torch.equal(ba.customer, bb.customer) and torch.equal(ba.fund, bb.fund)
        assert ba.inputs.keys() == bb.inputs.keys()
        for key in ba.inputs:
            assert torch.equal(ba.inputs[key], bb.inputs[key]), key


def test_state_dict_round_trip_gives_identical_batches(sim: Dataset) -> None:
    space = FeatureSpace.fit(sim)
    state = json.loads(json.dumps(space.state_dict()))  # must survive JSON unchanged
    restored = FeatureSpace.from_state_dict(state)
    assert restored.state_dict() == space.state_dict()
    _assert_same_batches(space.bind(sim), restored.bind(sim))


def test_exposure_batches_cover_split_once_and_labels_align(sim: Dataset) -> None:
    bound = FeatureSpace.fit(sim).bind(sim)
    labels = bound.exposure_labels("train")
    assert labels["customer_pos"].size == bound.n_exposures("train") == int(sim.split_mask("train").sum())
    batches = list(bound.exposure_batches("train", 500, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([b.customer.numpy() for b in batches]), labels["customer_pos"])
    np.testing.assert_array_equal(
        np.concatenate([b.amount.numpy() for b in batches if b.amount is not None]), labels["amount"]
    )
    g = torch.Generator().manual_seed(0)
    shuffled = np.concatenate(
        [b.customer.numpy() for b in bound.exposure_batches("train", 500, shuffle=True, generator=g)]
    )
    np.testing.assert_array_equal(np.sort(shuffled), np.sort(labels["customer_pos"]))
    first = batches[0]
    rows = first.inputs["row_unit"]
    assert torch.equal(first.inputs["unit_customer"][rows], first.customer)


def test_fit_uses_train_split_only(sim: Dataset) -> None:
    space = FeatureSpace.fit(sim)
    train = sim.split_mask("train")
    converted = np.asarray(sim.exposures.column("converted").to_numpy(), dtype=float)
    assert space.label_stats["conversion_rate"] == pytest.approx(converted[train].mean())
    assert space.label_stats["n_train"] == train.sum()


def test_pair_batch_and_sequences(sim: Dataset) -> None:
    space = FeatureSpace.fit(sim)
    bound = space.bind(sim)
    cust = np.repeat(np.arange(50), bound.n_funds)
    fund = np.tile(np.arange(bound.n_funds), 50)
    batch = bound.pair_batch(cust, fund)
    assert len(batch) == cust.size and batch.converted is None
    assert batch.inputs["unit_customer"].shape[0] == 50  # customer side encoded once per customer
    mask = batch.inputs["seq_mask"]
    assert mask.shape[1] == space.sequence_length and mask.any()
    # Right-aligned: once a slot is real, every later slot is too (latest event last).
    assert torch.equal(mask.int().cummax(dim=1).values.bool(), mask)
    with pytest.raises(IndexError):
        bound.pair_batch(np.array([10**9]), np.array([0]))


def test_events_at_or_after_exposure_never_enter_its_sequence(sim: Dataset) -> None:
    assert sim.events is not None
    # Move every event of the first customers into the exposure period: their sequences must be cut per row.
    ev = sim.events
    cust_pos = sim.customer_index(ev.column("customer_id"))
    late = cust_pos < 20
    times = np.asarray(ev.column("time").to_numpy(), dtype=np.int64)
    new_times = np.where(late, np.arange(times.size) % 5, times)  # periods 0..4 overlap exposures 0..3
    events = ev.set_column(ev.column_names.index("time"), "time", pa.array(new_times))
    shifted = Dataset(
        spec=sim.spec,
        customers=sim.customers,
        funds=sim.funds,
        exposures=sim.exposures,
        events=events,
        consumption=sim.consumption,
    )
    bound = FeatureSpace.fit(shifted).bind(shifted)
    exp_time = np.asarray(sim.exposures.column("time").to_numpy(), dtype=np.int64)
    exp_cust = sim.customer_index(sim.exposures.column("customer_id"))
    checked = 0
    for split in ("train", "valid", "test"):
        rows = np.flatnonzero(sim.split_mask(split))
        for batch in bound.exposure_batches(split, 4096, shuffle=False):
            n = len(batch)
            r, rows = rows[:n], rows[n:]
            unit = batch.inputs["row_unit"]
            counts = batch.inputs["seq_mask"].sum(dim=1)[unit].numpy()
            for i in np.flatnonzero(exp_cust[r] < 20):
                c, t = exp_cust[r][i], exp_time[r][i]
                expected = min(int(((cust_pos == c) & (new_times < t)).sum()), bound.space.sequence_length)
                assert counts[i] == expected
                checked += 1
    assert checked > 0


def test_missing_graph_and_events_switch_branches_off(hillstrom_like: Dataset) -> None:
    space = FeatureSpace.fit(hillstrom_like)
    assert not space.has_graph and not space.has_sequences and not space.has_clicks
    batch = next(space.bind(hillstrom_like).exposure_batches("train", 64, shuffle=False))
    assert not any(k.startswith(("seq_", "g_")) for k in batch.inputs)
    assert batch.clicked is None


def test_use_flags_turn_branches_off(sim: Dataset) -> None:
    space = FeatureSpace.fit(sim, use_sequences=False, use_graph=False, sequence_length=8)
    assert not space.has_sequences and not space.has_graph and space.sequence_length == 8


def test_graph_neighbours_caps_the_sampled_edges_and_is_saved_with_the_space(sim: Dataset) -> None:
    units = np.arange(sim.n_customers)

    def widest(space: FeatureSpace) -> tuple[int, int]:
        # Most edges any unit (hop 2) and any merchant (hop 1) received in one deterministic sample.
        batch = space.bind(sim).pair_batch(units, np.zeros_like(units))
        return (
            int(np.bincount(batch.inputs["g_e2_dst"].numpy()).max()),
            int(np.bincount(batch.inputs["g_e1_dst"].numpy()).max()),
        )

    default = FeatureSpace.fit(sim)
    assert default.graph_neighbours == DEFAULT_NEIGHBOURS
    assert min(widest(default)) > 2  # the cap below binds on this data
    narrow = FeatureSpace.fit(sim, graph_neighbours=2)
    assert widest(narrow) == (2, 2)
    state = json.loads(json.dumps(narrow.state_dict()))
    assert FeatureSpace.from_state_dict(state).graph_neighbours == 2
    # A space saved before the setting existed sampled the default number of edges, and still does.
    del state["graph_neighbours"]
    assert FeatureSpace.from_state_dict(state).graph_neighbours == DEFAULT_NEIGHBOURS
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="graph_neighbours"):
            FeatureSpace.fit(sim, graph_neighbours=bad)  # type: ignore[arg-type]


def test_bind_rejects_other_funds_and_missing_columns(sim: Dataset) -> None:
    space = FeatureSpace.fit(sim)
    funds = sim.funds.filter(pa.array(np.arange(sim.n_funds) > 0))
    with pytest.raises(DataValidationError, match="funds"):
        space.bind(Dataset(spec=sim.spec, customers=sim.customers, funds=funds, exposures=sim.exposures))
    customers = sim.customers.drop_columns(["age"])
    with pytest.raises(DataValidationError, match="age"):
        space.bind(Dataset(spec=sim.spec, customers=customers, funds=sim.funds, exposures=sim.exposures))
    with pytest.raises(DataValidationError, match="version"):
        FeatureSpace.from_state_dict({**space.state_dict(), "version": 99})


def test_latest_sequence_table_equals_cutting_per_batch(sim: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-built whole-history table gives bit-identical batches to cutting the sequences per batch."""
    from eoca.models.features import sequences

    space = FeatureSpace.fit(sim)
    tabled = space.bind(sim)
    cust = np.array([5, 0, 1999, 5, 17], dtype=np.int64)
    fund = np.zeros(cust.size, dtype=np.int64)
    a = tabled.pair_batch(cust, fund).inputs  # builds the table
    monkeypatch.setattr(sequences, "LATEST_TABLE_LIMIT", 0)  # from here on, every batch is cut afresh
    per_batch = space.bind(sim)
    _assert_same_batches(tabled, per_batch)
    assert tabled._seq is not None and tabled._seq._latest_table is not None
    assert per_batch._seq is not None and per_batch._seq._latest_table is None
    b = per_batch.pair_batch(cust, fund).inputs
    for key in ("seq_fund", "seq_type", "seq_amount", "seq_age", "seq_mask"):
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _runs(customers: np.ndarray) -> int:
    """How many contiguous runs of equal values ``customers`` has."""
    return int(1 + np.count_nonzero(customers[1:] != customers[:-1])) if customers.size else 0


def test_by_customer_batches_keep_each_customers_rows_together(sim: Dataset) -> None:
    bound = FeatureSpace.fit(sim).bind(sim)
    labels = bound.exposure_labels("train")
    n_cust = np.unique(labels["customer_pos"]).size
    assert n_cust < labels["customer_pos"].size  # the simulator logs several exposures per customer

    def epoch(seed: int, by_customer: bool) -> list:
        g = torch.Generator().manual_seed(seed)
        return list(bound.exposure_batches("train", 500, shuffle=True, generator=g, by_customer=by_customer))

    grouped = epoch(0, True)
    order = np.concatenate([b.customer.numpy() for b in grouped])
    # Every row once, and every customer's rows in one contiguous run (a run may straddle two batches).
    np.testing.assert_array_equal(np.sort(order), np.sort(labels["customer_pos"]))
    assert _runs(order) == n_cust
    pairs = np.concatenate([b.customer.numpy() * 100 + b.fund.numpy() for b in grouped])
    np.testing.assert_array_equal(np.sort(pairs), np.sort(labels["customer_pos"] * 100 + labels["fund_pos"]))
    # The customer side is cut once per customer of a batch: about a third of the rows here, against nearly every
    # row when rows are shuffled alone.
    units = sum(int(b.inputs["unit_customer"].numel()) for b in grouped)
    assert units <= n_cust + len(grouped)
    assert sum(int(b.inputs["unit_customer"].numel()) for b in epoch(0, False)) > 2 * units
    # Seeded: the same generator gives the same order; another seed another one.
    np.testing.assert_array_equal(np.concatenate([b.customer.numpy() for b in epoch(0, True)]), order)
    assert not np.array_equal(np.concatenate([b.customer.numpy() for b in epoch(1, True)]), order)


def test_by_customer_leaves_a_split_of_one_row_per_customer_unchanged(sim: Dataset) -> None:
    bound = FeatureSpace.fit(sim).bind(sim)
    test_customers = bound.exposure_labels("test")["customer_pos"]
    assert np.unique(test_customers).size == test_customers.size
    runs = []
    for by_customer in (False, True):
        g = torch.Generator().manual_seed(5)
        runs.append(list(bound.exposure_batches("test", 300, shuffle=True, generator=g, by_customer=by_customer)))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.customer, b.customer) and torch.equal(a.fund, b.fund)
        for key in a.inputs:
            assert torch.equal(a.inputs[key], b.inputs[key]), key
