"""Elementwise arithmetic and math: each forward with its vector-Jacobian product directly below.

Binary ops follow NumPy broadcasting; their gradients come back in the broadcast shape and the
engine sums them to each input's shape. Activations are in `activations.py`.
"""

from __future__ import annotations

import numpy as np


def _broadcast_error(op: str, a: np.ndarray, b: np.ndarray) -> ValueError:
    return ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together")


def add(a, b):
    try:
        out = a + b
    except ValueError:
        raise _broadcast_error("add", a, b) from None

    def backward(g):
        return g, g

    return out, backward


def sub(a, b):
    try:
        out = a - b
    except ValueError:
        raise _broadcast_error("sub", a, b) from None

    def backward(g):
        return g, -g

    return out, backward


def mul(a, b):
    try:
        out = a * b
    except ValueError:
        raise _broadcast_error("mul", a, b) from None

    def backward(g):
        return g * b, g * a

    return out, backward


def div(a, b):
    try:
        out = a / b
    except ValueError:
        raise _broadcast_error("div", a, b) from None

    def backward(g):
        g_over_b = g / b
        return g_over_b, -g_over_b * out

    return out, backward


def neg(a):
    def backward(g):
        return (-g,)

    return -a, backward


def pow_scalar(a, exponent):
    """a ** c for a Python number c: d/da = c · a^(c-1)."""
    out = a**exponent

    def backward(g):
        if exponent == 2:  # the common square: no second power needed
            return (g * (2 * a),)
        return (g * (exponent * a ** (exponent - 1)),)

    return out, backward


def pow(a, b):
    """a ** b for two tensors: d/da = b · a^(b-1), d/db = a^b · ln a (taken as 0 where a <= 0)."""
    try:
        out = a**b
    except ValueError:
        raise _broadcast_error("pow", a, b) from None

    def backward(g):
        log_a = np.log(np.where(a > 0, a, 1))
        return g * b * a ** (b - 1), g * out * log_a

    return out, backward


def exp(a):
    out = np.exp(a)

    def backward(g):
        return (g * out,)

    return out, backward


def log(a):
    def backward(g):
        return (g / a,)

    return np.log(a), backward


def sqrt(a):
    out = np.sqrt(a)

    def backward(g):
        return (g / (2 * out),)

    return out, backward


def abs(a):
    # At 0 the subgradient 0 is used, as in PyTorch.
    def backward(g):
        return (g * np.sign(a),)

    return np.abs(a), backward


def clip(a, low=None, high=None):
    """Clamp to [low, high]; the gradient passes where low <= a <= high (PyTorch's convention)."""
    if low is None and high is None:
        raise ValueError("clip: give at least one of min and max")
    out = np.clip(a, low, high)

    def backward(g):
        inside = np.ones(a.shape, dtype=bool)
        if low is not None:
            inside &= a >= low
        if high is not None:
            inside &= a <= high
        return (g * inside,)

    return out, backward


def _pick(op, a, b, a_wins):
    """maximum / minimum: the gradient goes to the chosen input; ties split it in half (PyTorch)."""
    try:
        out = op(a, b)
    except ValueError:
        raise _broadcast_error(op.__name__, a, b) from None

    def backward(g):
        tie = a == b
        share_a = np.where(tie, 0.5, a_wins(a, b)).astype(g.dtype, copy=False)
        return g * share_a, g * (1 - share_a)

    return out, backward


def maximum(a, b):
    return _pick(np.maximum, a, b, np.greater)


def minimum(a, b):
    return _pick(np.minimum, a, b, np.less)


def where(a, b, condition):
    """condition ? a : b. The condition carries no gradient."""
    condition = np.asarray(condition, dtype=bool)
    try:
        out = np.where(condition, a, b)
    except ValueError:
        raise ValueError(
            f"where: condition {condition.shape}, x {a.shape} and y {b.shape} cannot be broadcast "
            "together"
        ) from None

    def backward(g):
        return np.where(condition, g, 0), np.where(condition, 0, g)

    return out, backward


def cast(a, dtype):
    def backward(g):
        return (g.astype(a.dtype),)

    return a.astype(dtype), backward
