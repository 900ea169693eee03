"""The training step that runs the exposure batch and the past purchases in one pass (issue 10) computes what the
two separate passes compute: the joined batch gives every row the inputs of its own batch (positions shifted
exactly), and without dropout the joint loss and its gradients equal those of the two passes up to float
rounding (sums over more rows in another order)."""

from __future__ import annotations

import pytest
import torch

from eoca.data import Dataset
from eoca.models import FeatureSpace, build_model
from eoca.models.base import Batch
from eoca.models.features.batching import _INDEX_INPUTS, _SHARED_INPUTS, concat_batches


@pytest.fixture(scope="module")
def pair(sim: Dataset, space: FeatureSpace) -> tuple[Batch, Batch, torch.Tensor]:
    bound = space.bind(sim)
    gen = torch.Generator().manual_seed(5)
    exposures = next(iter(bound.exposure_batches("train", 300, shuffle=True, generator=gen)))
    past, amount = next(iter(bound.purchase_history(170, generator=gen)))
    assert "g_e1_src" in exposures.inputs and int(past.inputs["seq_mask"].sum()) > 0
    return exposures, past, torch.from_numpy(amount).to(torch.float32)


def test_joined_batch_keeps_each_batchs_inputs_with_positions_shifted(pair: tuple[Batch, Batch, torch.Tensor]) -> None:
    a, b, _ = pair
    joined = concat_batches(a, b)
    assert len(joined) == len(a) + len(b)
    assert torch.equal(joined.customer, torch.cat([a.customer, b.customer]))
    assert joined.converted is a.converted and joined.amount is a.amount
    for key, t in joined.inputs.items():
        if key in _SHARED_INPUTS:
            assert torch.equal(t, a.inputs[key]) and torch.equal(t, b.inputs[key]), key
            continue
        n = a.inputs[key].shape[0]
        assert torch.equal(t[:n], a.inputs[key]), key
        shift = a.inputs[_INDEX_INPUTS[key]].shape[0] if key in _INDEX_INPUTS else 0
        assert torch.equal(t[n:] - shift, b.inputs[key]) if shift else torch.equal(t[n:], b.inputs[key]), key
    assert int(joined.inputs["row_unit"].max()) < joined.inputs["unit_customer"].shape[0]
    assert int(joined.inputs["g_e2_dst"][len(a.inputs["g_e2_dst"]) :].min()) >= a.inputs["unit_customer"].shape[0]


@pytest.mark.parametrize("name", ["esdpm", "mtl_ziln"])
def test_joint_step_equals_the_two_passes_without_dropout(
    space: FeatureSpace, pair: tuple[Batch, Batch, torch.Tensor], name: str
) -> None:
    a, b, amount = pair
    torch.manual_seed(0)
    model = build_model(name, space)
    model.eval()  # no dropout: the two computations differ only by float rounding

    def grads(loss: torch.Tensor) -> tuple[float, torch.Tensor]:
        model.zero_grad(set_to_none=False)
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])

    joint, g_joint = grads(model.loss_with_history(a, b, amount))
    two, g_two = grads(model.loss(a) + model.amount_history_loss(b, amount) / len(a))
    assert joint == pytest.approx(two, rel=1e-5)
    assert g_joint.shape == g_two.shape and torch.allclose(g_joint, g_two, rtol=1e-4, atol=1e-6)
    # The rows of the joint pass are those of the separate passes.
    with torch.no_grad():
        out = model.predict(concat_batches(a, b))
        want = torch.cat([model.predict(a).etv, model.predict(b).etv])
    assert torch.allclose(out.etv, want, rtol=1e-5, atol=1e-7)
