"""PyTorch as an oracle: run a computation in chainrule and in torch, compare values and gradients.

The gradient is compared along a random upstream direction g (a vector-Jacobian product), so a
non-scalar output is checked without building its whole Jacobian.
"""

from __future__ import annotations

import numpy as np
import torch

import chainrule as cr


def assert_matches_torch(cr_fn, torch_fn, *arrays, rtol=1e-7, atol=1e-10, seed=0):
    """cr_fn(*Tensors) and torch_fn(*torch tensors) agree in value and in every input's gradient."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    ours = [cr.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    out = cr_fn(*ours)
    expected = torch_fn(*theirs)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=rtol, atol=atol)
    assert out.dtype == np.float64
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    for i, (mine, reference) in enumerate(zip(ours, theirs)):
        expected_grad = (
            np.zeros(arrays[i].shape) if reference.grad is None else reference.grad.numpy()
        )
        actual_grad = np.zeros(arrays[i].shape) if mine.grad is None else mine.grad
        assert actual_grad.shape == arrays[i].shape, (
            f"input {i}: gradient shape {actual_grad.shape}"
        )
        np.testing.assert_allclose(
            actual_grad, expected_grad, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}"
        )
