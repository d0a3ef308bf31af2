"""Finite-difference gradient checking, shared by the tests and by users checking their own ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from chainrule.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central differences; the message names where."""


def central_differences(
    loss_at: Callable[[], float], array: np.ndarray, eps: float, only: list[int] | None = None
) -> np.ndarray:
    """(L(v + eps) − L(v − eps)) / 2eps for each element of `array` (all, or the flat indices in
    `only`; the others are NaN), where `loss_at()` evaluates L with `array` as it currently is.

    `array` must be a contiguous float64 array that `loss_at` reads; each element is moved and
    put back in place.
    """
    numeric = np.full(array.shape, np.nan)
    flat = array.reshape(-1)  # a view, since the array is contiguous
    with no_grad():
        for i in range(flat.size) if only is None else only:
            original = flat[i]
            flat[i] = original + eps
            plus = loss_at()
            flat[i] = original - eps
            minus = loss_at()
            flat[i] = original
            numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return numeric


def numerical_gradient(
    fn: Callable[..., Tensor], inputs: list[Tensor], index: int, eps: float
) -> np.ndarray:
    """d sum(fn(*inputs)) / d inputs[index] by central differences, one element at a time."""
    return central_differences(lambda: float(np.sum(fn(*inputs).data)), inputs[index].data, eps)


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Compare backward() of sum(fn(*inputs)) with central differences, in float64.

    Every floating input is copied to a float64 leaf that requires grad; non-float inputs (class
    indices, masks) are passed through unchanged. Each element is moved by ±eps and
    ∂L/∂xᵢ ≈ (L(x + eps·eᵢ) − L(x − eps·eᵢ)) / 2eps is compared with the analytic gradient within
    `atol + rtol·|numeric|`. Returns True, or raises GradcheckError naming the input, the element
    index and both values. The cost is two forward passes per input element: keep inputs small.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gradcheck(lambda x, W: (x @ W).tanh(), rng.normal(size=(3, 2)), rng.normal(size=(2, 4)))
    True
    >>> def wrong_square(x):  # an op whose backward claims d(x²)/dx = 3x
    ...     def backward(g):
    ...         return (g * 3 * x,)
    ...     return x * x, backward
    >>> from chainrule.tensor import apply
    >>> gradcheck(lambda x: apply(wrong_square, x), np.array([1.0, 2.0]))
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    GradcheckError: gradient of input 0 (shape (2,)) at index (0,): analytic 3, numeric 2 (...)
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
