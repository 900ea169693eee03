"""The trainer's Adam step (:func:`eoca.training.trainer.adam_step`) is torch's Adam, bit for bit."""

from __future__ import annotations

import pytest
import torch

from eoca.training.trainer import adam_step


def _run(fast: bool, weight_decay: float, steps: int = 25) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(1000, generator=gen))
    opt = torch.optim.Adam([param], lr=0.01, weight_decay=weight_decay, foreach=True)
    for _ in range(steps):
        # Gradients of very different scales, and exact zeros, as a sparse batch gives.
        grad = torch.randn(1000, generator=gen) * torch.logspace(-6, 2, 1000)
        grad[::7] = 0.0
        param.grad = grad
        if fast:
            adam_step(opt, param)
        else:
            opt.step()
    return param.detach().clone(), {k: v.clone() for k, v in opt.state[param].items()}


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_adam_step_equals_torch_adam_bit_for_bit(weight_decay: float) -> None:
    plain, plain_state = _run(False, weight_decay)
    fast, fast_state = _run(True, weight_decay)
    assert torch.equal(plain, fast)
    assert plain_state.keys() == fast_state.keys() == {"step", "exp_avg", "exp_avg_sq"}
    for key in plain_state:
        assert torch.equal(plain_state[key], fast_state[key]), key
        assert plain_state[key].dtype == fast_state[key].dtype, key


def test_adam_step_falls_back_to_torch_for_what_it_does_not_cover() -> None:
    # amsgrad keeps a fourth state tensor: the fast path must hand over to torch, which creates it.
    param = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([param], lr=0.1, amsgrad=True)
    for _ in range(3):
        param.grad = torch.full((4,), 0.5)
        adam_step(opt, param)
    assert "max_exp_avg_sq" in opt.state[param]
    assert float(opt.state[param]["step"]) == 3.0


def test_adam_step_leaves_a_non_foreach_adam_to_torch() -> None:
    results = []
    for fast in (False, True):
        param = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 50))
        opt = torch.optim.Adam([param], lr=0.05, foreach=False)
        for i in range(5):
            param.grad = torch.linspace(-1.0, 1.0, 50) * (i + 1)
            adam_step(opt, param) if fast else opt.step()
        results.append(param.detach().clone())
    assert torch.equal(results[0], results[1])
