"""Batch normalisation over the channel axis (axis 1) of (N, C, ...) arrays, as one op.

One node instead of the ten or so a composition of mean, subtract, square and divide records, and
a backward that is the textbook's closed form rather than the chain rule through each of them.
"""

from __future__ import annotations

import numpy as np


def batch_norm(x, weight=None, bias=None, mean=None, var=None, eps=1e-5, training=True):
    """y = γ·(x − μ)/√(σ² + ε) + β per channel. x (N, C, ...), γ and β (C,) or absent; μ and σ²
    (C,) the running estimates when not training. Training, the op takes the batch's mean and
    biased variance over every axis but 1 itself, so a compiled step's replay takes the new
    batch's (statistics passed in would be the traced batch's).

    With x̂ = (x − μ)/√(σ² + ε), ĝ = γ·g and means m(·) over the same axes:
    dL/dβ = Σ g,  dL/dγ = Σ g·x̂,  dL/dx = (ĝ − m(ĝ) − x̂·m(ĝ·x̂))/√(σ² + ε) when μ, σ² are the
    batch's (they depend on x), and ĝ/√(σ² + ε) when they are fixed estimates.
    """
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    axes = (0, *range(2, x.ndim))
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    inverse = (1 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    normalized = (x - mean.reshape(shape)) * inverse.reshape(shape)
    if weight is None:
        out = normalized
    else:
        out = normalized * weight.reshape(shape) + bias.reshape(shape)

    def backward(g):
        gw = gb = None
        if weight is not None:
            gb = g.sum(axis=axes)
            gw = (g * normalized).sum(axis=axes)
            g = g * weight.reshape(shape)
        if training:
            projection = (g * normalized).mean(axis=axes, keepdims=True)
            g = g - g.mean(axis=axes, keepdims=True) - normalized * projection
        return g * inverse.reshape(shape), gw, gb

    return out, backward
