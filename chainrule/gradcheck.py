"""Finite-difference gradient checking, shared by the tests and by users checking their own ops."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from chainrule.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central differences; the message names where."""


def numerical_gradient(fn: Callable[..., Tensor], inputs: list[Tensor], index: int, eps: float) -> np.ndarray:
    """d sum(fn(*inputs)) / d inputs[index] by central differences, one element at a time."""
    x = inputs[index].data
    grad = np.zeros_like(x)
    flat = x.reshape(-1)  # a view: x is a contiguous float64 copy made by gradcheck
    for i in range(flat.size):
        with no_grad():
            plus, minus = _nudged_sums(fn, inputs, flat, i, eps)
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def _nudged_sums(fn, inputs, flat, i, eps):
    """sum(fn) with element i moved up and down by eps, then put back."""
    original = flat[i]
    flat[i] = original + eps
    plus = float(np.sum(fn(*inputs).data))
    flat[i] = original - eps
    minus = float(np.sum(fn(*inputs).data))
    flat[i] = original
    return plus, minus


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Compare backward() of sum(fn(*inputs)) with central differences, in float64.

    Every floating input is copied to a float64 leaf that requires grad; non-float inputs (class
    indices, masks) are passed through unchanged. Returns True, or raises GradcheckError naming the
    input, the element index and both values.
    """
    leaves = []
    for value in inputs:
        array = np.asarray(value.data if isinstance(value, Tensor) else value)
        if array.dtype.kind == "f":
            leaves.append(Tensor(np.array(array, dtype=np.float64), requires_grad=True))
        else:
            leaves.append(Tensor(array))
    out = fn(*leaves)
    (out.sum() if out.ndim else out).backward()
    for index, leaf in enumerate(leaves):
        if not leaf.requires_grad:
            continue
        analytic = leaf.grad if leaf.grad is not None else np.zeros_like(leaf.data)
        numeric = numerical_gradient(fn, leaves, index, eps)
        bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise GradcheckError(
                f"gradient of input {index} (shape {leaf.shape}) at index {where}: analytic "
                f"{analytic[where]:.8g}, numeric {numeric[where]:.8g} "
                f"({int(bad.sum())} of {bad.size} elements differ beyond atol={atol}, rtol={rtol})"
            )
    return True
