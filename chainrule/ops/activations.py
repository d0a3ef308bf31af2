"""Activations as single primitives whose gradient reuses the saved output where it can.

As in the founding tutorial, sigmoid's derivative is a·(1−a) from its output a; tanh's is 1−a².
Every formula here is written so that inputs of ±1e4 give exact, finite results without a warning
(the tutorial's `1/(1+np.exp(-z))` overflows at z = -1e4 in float32).
"""

from __future__ import annotations

import math

import numpy as np

from chainrule import kernels

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def sigmoid(z):
    """a = 1 / (1 + e^(−z)), computed as exp(−softplus(−z)) so no exp() ever overflows."""
    a = np.negative(z)
    np.logaddexp(0, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)

    def backward(g):
        return (g * a * (1 - a),)

    return a, backward


def tanh(z):
    a = np.tanh(z)

    def backward(g):
        return (g * (1 - a * a),)

    return a, backward


def relu(z):
    # At z = 0 the gradient is 0, as in PyTorch. The C kernels compute exactly these two lines, in
    # one pass each (see chainrule/kernels.py); these lines run where they decline.
    a = np.empty_like(z)
    if not kernels.relu(z, a):
        a = np.maximum(z, 0)

    def backward(g):
        gz = np.empty_like(g)
        if not kernels.relu_backward(g, z, gz):
            gz = g * (z > 0)
        return (gz,)

    return a, backward


def leaky_relu(z, negative_slope=0.01):
    a = np.where(z > 0, z, z * negative_slope)

    def backward(g):
        return (np.where(z > 0, g, g * negative_slope),)

    return a, backward


def _erf(x):
    # NumPy has no erf; math.erf is exact to double precision. It costs ~50 ns an element, so the
    # default GELU is correct first; approximate="tanh" is the fast variant.
    flat = np.fromiter(map(math.erf, x.ravel().tolist()), dtype=np.float64, count=x.size)
    return flat.reshape(x.shape).astype(x.dtype, copy=False)


def gelu(z, approximate="none"):
    """a = z · Φ(z), with Φ the standard normal CDF (approximate="tanh": the tanh formula)."""
    if approximate == "none":
        cdf = 0.5 * (1 + _erf(z / _SQRT_2))
        a = z * cdf

        def backward(g):
            pdf = _INV_SQRT_2PI * np.exp(-0.5 * z * z)
            return (g * (cdf + z * pdf),)

    elif approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (z + 0.044715 * z**3)
        t = np.tanh(inner)
        a = 0.5 * z * (1 + t)

        def backward(g):
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z)
            return (g * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * d_inner),)

    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return a, backward


def softplus(z):
    """a = ln(1 + e^z) as logaddexp(0, z): exact for large |z|; its derivative is sigmoid(z)."""
    a = np.logaddexp(0, z)

    def backward(g):
        return (g * np.exp(z - a),)  # e^(z − softplus z) = sigmoid(z), with no overflow

    return a, backward


def softmax(z, axis=-1):
    """a_i = e^(z_i − max z) / Σ_j e^(z_j − max z); shifting by the max keeps every exp <= 1."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    a = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (a * (g - (g * a).sum(axis=axis, keepdims=True)),)

    return a, backward


def log_softmax(z, axis=-1):
    """a_i = z_i − max z − ln Σ_j e^(z_j − max z); never takes the log of 0."""
    shifted = z - z.max(axis=axis, keepdims=True)
    a = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(a) * g.sum(axis=axis, keepdims=True),)

    return a, backward
