"""Reductions (sum, mean, max) over an axis or all axes, with their vector-Jacobian products.

A reduction's gradient is the incoming gradient stretched back over the reduced axes.
"""

from __future__ import annotations

import numpy as np


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    try:
        return tuple(
            sorted(int(a) % ndim if -ndim <= a < ndim else _bad_axis(a, ndim) for a in axes)
        )
    except ZeroDivisionError:
        raise ValueError(f"axis {axis} is out of range for a 0-d tensor") from None


def _bad_axis(axis, ndim):
    raise ValueError(f"axis {axis} is out of range for a tensor with {ndim} dimensions")


def _stretch(g, a_shape, axes, keepdims):
    """Give g (reduced over `axes`) back the reduced axes, as a broadcast view of a's shape."""
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, a_shape)


def sum(a, axis=None, keepdims=False):
    axes = _normalize_axis(axis, a.ndim) if a.ndim else ()
    out = np.sum(a, axis=axes, keepdims=keepdims)

    def backward(g):
        return (_stretch(g, a.shape, axes, keepdims),)

    return out, backward


def mean(a, axis=None, keepdims=False):
    axes = _normalize_axis(axis, a.ndim) if a.ndim else ()
    count = int(np.prod([a.shape[i] for i in axes])) if axes else 1
    if count == 0:
        raise ValueError(f"mean of an empty selection: tensor of shape {a.shape}, axis {axis}")
    out = np.mean(a, axis=axes, keepdims=keepdims)

    def backward(g):
        return (_stretch(g / count, a.shape, axes, keepdims),)

    return out, backward


def max(a, axis=None, keepdims=False):
    """Maximum; when several entries tie for it, the gradient is shared equally among them."""
    if a.size == 0:
        raise ValueError(f"max of an empty tensor of shape {a.shape}")
    axes = _normalize_axis(axis, a.ndim) if a.ndim else ()
    out_kept = np.max(a, axis=axes, keepdims=True)
    out = out_kept if keepdims else np.squeeze(out_kept, axis=axes)

    def backward(g):
        winners = a == out_kept
        share = winners / winners.sum(axis=axes, keepdims=True)
        g_kept = g if keepdims else np.expand_dims(g, axes)
        return ((g_kept * share).astype(a.dtype, copy=False),)

    return out, backward
