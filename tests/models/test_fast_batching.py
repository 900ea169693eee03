"""The speed-oriented batching and training code computes exactly what the plain formulas compute.

Each test compares the fast implementation (cutting a history by counting the customer's own events, gathering only
real events, pair counts by ``bincount``, graph sampling over CSR-ordered edge arrays, one dropout draw for several
towers, gradients accumulated in place into the flat gradient) with a direct reference written here, and expects
equal values bit for bit: the training speed-ups of issue 10 must not change a trained model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoca.data import Dataset
from eoca.data.schema import EVENT_TYPES
from eoca.models import FeatureSpace, build_model
from eoca.models.features import sequences as sequences_module
from eoca.models.features.encoding import _FIRST_TOKEN, PAD, PAIR_FEATURES_PER_LEVEL
from eoca.models.features.sequences import BehaviourSequences
from eoca.models.layers import Tower, run_towers
from eoca.training.trainer import FlatParameters


@pytest.fixture(scope="module")
def seq(sim: Dataset, space: FeatureSpace) -> BehaviourSequences:
    bound = space.bind(sim)
    assert bound._seq is not None
    return bound._seq


def _units(seq: BehaviourSequences, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cust = rng.integers(0, seq.n_customers, n)
    # Times before the first event, inside the history and after the last event.
    time = rng.integers(int(seq.time.min()) - 3, int(seq.time.max()) + 3, n)
    return cust, time


def test_cut_equals_a_binary_search_of_the_customer_time_keys(seq: BehaviourSequences) -> None:
    cust, time = _units(seq, 3000, 0)
    t0 = int(seq.time.min())
    span = int(seq.time.max()) - t0 + 2
    key = seq.cust * span + (seq.time - t0)
    want = np.searchsorted(key, cust * span + np.clip(time - t0, 0, span - 1), side="left")
    got = seq.cut(cust, time)
    inside = (got > seq.indptr[cust]) & (got < seq.indptr[cust + 1])
    assert inside.sum() > 100, "the cut falls inside many customers' histories"
    assert got.dtype == np.int64 and np.array_equal(got, want)
    # Strictly before: no event at or after the cut time is inside.
    assert all(seq.time[e - 1] < t for e, c, t in zip(got, cust, time, strict=True) if e > seq.indptr[c])


def _gather_reference(seq: BehaviourSequences, cust: np.ndarray, end: np.ndarray, now: np.ndarray) -> dict:
    length = seq.length
    idx = end[:, None] - length + np.arange(length)[None, :]
    valid = idx >= seq.indptr[cust][:, None]
    safe = np.where(valid, idx, 0)
    age = np.log1p(np.maximum(now[:, None] - seq.time[safe], 0)) / seq.age_scale
    return {
        "seq_fund": np.where(valid, seq.fund[safe], PAD),
        "seq_type": np.where(valid, seq.type[safe], PAD),
        "seq_amount": np.where(valid, seq.amount[safe], 0.0).astype(np.float32),
        "seq_age": np.where(valid, age, 0.0).astype(np.float32),
        "seq_mask": valid,
    }


def test_gather_reads_only_real_events_and_equals_the_padded_reference(seq: BehaviourSequences) -> None:
    cust, time = _units(seq, 2000, 1)
    end = seq.cut(cust, time)
    got = seq.gather(cust, end, time)
    want = _gather_reference(seq, cust, end, time)
    assert want["seq_mask"].any() and not want["seq_mask"].all()
    for key, value in want.items():
        assert got[key].dtype == torch.from_numpy(value).dtype, key
        assert np.array_equal(got[key].numpy(), value), key
    # The whole-history table (scoring, static sequences) goes through the same path with "now".
    everyone = np.arange(seq.n_customers)
    latest = seq.gather(everyone, seq.latest(everyone))
    ref = _gather_reference(seq, everyone, seq.latest(everyone), np.full(everyone.size, seq.now))
    assert all(np.array_equal(latest[k].numpy(), v) for k, v in ref.items())


def _pair_counts_reference(
    seq: BehaviourSequences, cust: np.ndarray, end: np.ndarray, fund_fit: np.ndarray, now: np.ndarray
) -> np.ndarray:
    n_fit, k, n_types = seq.groups.size, PAIR_FEATURES_PER_LEVEL, len(EVENT_TYPES)
    slots = n_fit + seq.n_groups
    acc = np.zeros((cust.size * slots, k))
    for u, (c, e) in enumerate(zip(cust, end, strict=True)):
        for i in range(int(seq.indptr[c]), int(e)):
            fund = int(seq.fund[i]) - _FIRST_TOKEN
            if fund < 0:
                continue
            etype = int(seq.type[i]) - _FIRST_TOKEN
            age = float(max(now[u] - seq.time[i], 0))
            for slot in (fund, n_fit + int(seq.groups[fund])):
                row = u * slots + slot
                if etype >= 0:
                    acc[row, etype] += 1.0
                    if age <= seq.window:
                        acc[row, n_types + etype] += 1.0
                if etype == EVENT_TYPES.index("purchase"):
                    acc[row, 2 * n_types] += seq.raw_amount[i]
                acc[row, 2 * n_types + 1] = max(acc[row, 2 * n_types + 1], 1.0 / (1.0 + age / seq.window))
    acc[:, : 2 * n_types + 1] = np.log1p(acc[:, : 2 * n_types + 1])
    acc3 = acc.reshape(cust.size, slots, k)
    return np.concatenate([acc3[:, fund_fit], acc3[:, n_fit + seq.groups[fund_fit]]], axis=2).astype(np.float32)


@pytest.mark.parametrize("block", [8192, 7])
def test_pair_counts_equal_an_event_by_event_reference(
    seq: BehaviourSequences, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 units in one block, and in 43 blocks of at most 7 (the last one short): the same values either way.
    monkeypatch.setattr(sequences_module, "PAIR_COUNT_BLOCK", block)
    cust, time = _units(seq, 300, 2)
    end = seq.cut(cust, time)
    fund_fit = np.arange(seq.groups.size)[::-1].copy()  # a bound dataset may order its funds differently
    got = seq.pair_counts(cust, end, fund_fit, time).numpy()
    want = _pair_counts_reference(seq, cust, end, fund_fit, time)
    assert np.count_nonzero(want) > 100
    assert got.shape == want.shape and np.array_equal(got, want)


def test_graph_sampling_returns_the_edges_of_the_sampled_positions(sim: Dataset, space: FeatureSpace) -> None:
    bound = space.bind(sim)
    graph = bound._graph
    assert graph is not None
    cons = sim.consumption
    assert cons is not None
    units = np.arange(0, sim.n_customers, 3)
    out = graph.sample(units, np.random.default_rng(5), bound.c_num, bound.c_cat)
    # Every sampled first-hop edge joins its unit's customer to the merchant it names, with that edge's features.
    cust_ids = sim.customer_index(cons.column("customer_id"))
    merchants = out["g_merchant"].numpy()
    e2_dst, e2_src = out["g_e2_dst"].numpy(), out["g_e2_src"].numpy()
    assert e2_dst.size > 0
    for dst, src, attr in zip(e2_dst, e2_src, out["g_e2_attr"].numpy(), strict=True):
        c = units[dst]
        lo, hi = graph.c_indptr[c], graph.c_indptr[c + 1]
        hits = (graph.c_merch[lo:hi] == merchants[src]) & np.all(graph.c_attr[lo:hi] == attr, axis=1)
        assert hits.any()
    assert np.isin(units[e2_dst], cust_ids).all()
    # Deterministic sampling (scoring) is reproducible; the random phase changes which edges of a busy node come.
    again = graph.sample(units, None, bound.c_num, bound.c_cat)
    assert all(torch.equal(v, graph.sample(units, None, bound.c_num, bound.c_cat)[k]) for k, v in again.items())


def test_run_towers_equals_the_towers_run_one_by_one() -> None:
    torch.manual_seed(0)
    towers = [Tower(12, 16, 1, 0.2, [0.5]), Tower(12, 16, 1, 0.2), Tower(12, 16, 2, 0.2, [1.0, -1.0])]
    inputs = [torch.randn(50, 12, requires_grad=True) for _ in towers]
    results = []
    for fused in (False, True):
        for t in towers:
            t.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        outs = run_towers(towers, inputs) if fused else [t(x) for t, x in zip(towers, inputs, strict=True)]
        loss = sum((o * (i + 1)).sum() for i, o in enumerate(outs))
        grads = torch.autograd.grad(loss, [*inputs, *(p for t in towers for p in t.parameters())])
        results.append(([o.detach() for o in outs], grads, torch.rand(3)))
    (o0, g0, r0), (o1, g1, r1) = results
    assert all(torch.equal(a, b) for a, b in zip(o0, o1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    assert torch.equal(r0, r1), "the generator is left where the one-by-one draws leave it"
    # In eval mode (no dropout) the towers run one by one.
    for t in towers:
        t.eval()
    assert all(torch.equal(a, t(x)) for a, t, x in zip(run_towers(towers, inputs), towers, inputs, strict=True))


def test_flat_gradient_is_filled_in_place_by_backward(sim: Dataset, space: FeatureSpace) -> None:
    torch.manual_seed(0)
    model = build_model("esdpm", space)
    model.train()
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    holder = FlatParameters(model)
    bound = space.bind(sim)
    batch = next(iter(bound.exposure_batches("train", 256, shuffle=True, generator=torch.Generator().manual_seed(3))))
    for _ in range(2):  # the second step proves zero_grad restores the views
        holder.zero_grad()
        torch.manual_seed(1)
        model.loss(batch).backward()
        holder.gather_grad()
        assert holder.flat.grad is not None
        in_place = [p.grad for p in holder.params]
    plain = build_model("esdpm", space)
    plain.load_state_dict({**plain.state_dict(), **reference})
    plain.train()
    torch.manual_seed(1)
    plain.loss(batch).backward()
    want = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in plain.parameters()])
    assert torch.equal(holder.flat.grad, want)
    assert all(
        g is not None and g.data_ptr() == v.data_ptr() for g, v in zip(in_place, holder._grad_views, strict=True)
    )


def test_past_purchase_memo_gives_the_batches_cut_per_batch(
    sim: Dataset, space: FeatureSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eoca.models.features.batching as batching

    memo = space.bind(sim)
    assert memo._history_table() is not None  # made at first use, under the default size limit
    monkeypatch.setattr(batching, "HISTORY_TABLE_BYTES", 0)
    plain = space.bind(sim)
    assert plain._history_table() is None
    for epoch in range(2):  # the second pass is served from the memo
        got = list(memo.purchase_history(97, generator=torch.Generator().manual_seed(epoch), limit=600))
        want = list(plain.purchase_history(97, generator=torch.Generator().manual_seed(epoch), limit=600))
        assert len(got) == len(want) > 1
        for (g, ga), (w, wa) in zip(got, want, strict=True):
            assert np.array_equal(ga, wa) and g.inputs.keys() == w.inputs.keys()
            for key in w.inputs:
                assert g.inputs[key].dtype == w.inputs[key].dtype, key
                assert torch.equal(g.inputs[key], w.inputs[key]), key
    table = memo._history_table()
    assert table is not None and 0 < int(table.filled.sum()) < table.filled.size
