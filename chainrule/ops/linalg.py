"""Matrix products: `matmul` (2-D, batched, and 1-D as NumPy) and the fused `linear` layer op.

`needs` (one flag per input, passed by the caller) lets the backward skip a GEMM whose result nobody
wants: the gradient with respect to a network's input batch is usually thrown away.
"""

from __future__ import annotations

import numpy as np


def _alignment_error(a, b):
    if a.ndim == 0 or b.ndim == 0:
        return ValueError(
            f"matmul: both operands need at least one dimension, got {a.shape} and {b.shape}"
        )
    inner_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if a.shape[-1] != inner_b:
        return ValueError(
            f"matmul: shapes {a.shape} and {b.shape} are not aligned: {a.shape[-1]} "
            f"(last dimension of the first) != {inner_b} (its dimension in the second)"
        )
    return ValueError(
        f"matmul: the batch dimensions of {a.shape} and {b.shape} cannot be broadcast"
    )


def _swap(x):
    return np.swapaxes(x, -1, -2)


def matmul(a, b, needs=(True, True)):
    try:
        out = np.matmul(a, b)
    except ValueError:
        raise _alignment_error(a, b) from None

    def backward(g):
        ga = gb = None
        if a.ndim == 1 and b.ndim == 1:  # dot product
            return (g * b if needs[0] else None), (g * a if needs[1] else None)
        if a.ndim == 1:  # (k,) @ (..., k, m) -> (..., m)
            if needs[0]:
                ga = np.matmul(b, g[..., None])[..., 0]
            if needs[1]:
                gb = a[:, None] * g[..., None, :]
        elif b.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
            if needs[0]:
                ga = g[..., None] * b
            if needs[1]:
                gb = np.matmul(_swap(a), g[..., None])[..., 0]
        else:
            if needs[0]:
                ga = np.matmul(g, _swap(b))
            if needs[1]:
                gb = np.matmul(_swap(a), g)
        return ga, gb

    return out, backward


def linear(x, weight, bias=None, needs=(True, True, True)):
    """z = x · Wᵀ + b, the tutorial's `z = w·a_prev + b` for a batch of rows.

    One node instead of three (matmul, transpose, add); the gradients are the tutorial's:
    dL/dx = g · W,  dL/dW = gᵀ · x,  dL/db = Σ_rows g.
    Shapes: x (batch, in), W (out, in), b (out,).
    """
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"Linear({weight.shape[1]}, {weight.shape[0]}) expects inputs with {weight.shape[1]} "
            f"features in the last dimension, got an array of shape {x.shape}"
        )
    out = x @ weight.T
    if bias is not None:
        out += bias

    def backward(g):
        gx = g @ weight if needs[0] else None
        g2 = g if x.ndim == 2 else g.reshape(-1, g.shape[-1])  # fold leading batch dimensions
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        gw = g2.T @ x2 if needs[1] else None
        gb = column_sums(g2) if (bias is not None and needs[2]) else None
        return gx, gw, gb

    return out, backward


def column_sums(g):
    """Σ over the rows of a 2-D array. From 64 rows on, a product with a vector of ones (BLAS) is
    2-4× faster than NumPy's sum over axis 0, which adds the rows one at a time."""
    if g.shape[0] < 64 or g.dtype.kind != "f":
        return g.sum(axis=0)
    return np.ones(g.shape[0], dtype=g.dtype) @ g
