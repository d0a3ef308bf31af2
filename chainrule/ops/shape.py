"""Ops that move values without changing them: reshape, transpose, indexing, concatenate, stack.

Their gradients move the incoming gradient back to where each value came from.
"""

from __future__ import annotations

import numpy as np


def reshape(a, shape):
    try:
        out = a.reshape(shape)
    except ValueError:
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) into {shape}"
        ) from None

    def backward(g):
        return (g.reshape(a.shape),)

    return out, backward


def transpose(a, axes=None):
    """Reverse the axes (`.T`) or permute them as `axes` says."""
    try:
        out = np.transpose(a, axes)
    except ValueError:
        raise ValueError(f"transpose: axes {axes} do not fit a tensor of shape {a.shape}") from None
    inverse = None if axes is None else np.argsort(axes)

    def backward(g):
        return (np.transpose(g, inverse),)

    return out, backward


def _is_basic(index):
    """Slices, integers, None and Ellipsis select each element at most once (no repeats)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)


def getitem(a, index):
    try:
        out = a[index]
    except IndexError as error:
        raise IndexError(f"index into a tensor of shape {a.shape}: {error}") from None
    basic = _is_basic(index)

    def backward(g):
        full = np.zeros_like(a)
        if basic:
            full[index] = g
        else:
            # Integer-array indexing may pick an element twice: add.at accumulates every pick.
            np.add.at(full, index, g)
        return (full,)

    return out, backward


def concatenate(*arrays, axis=0):
    try:
        out = np.concatenate(arrays, axis=axis)
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"concatenate along axis {axis}: shapes {shapes} do not fit") from None
    ends = np.cumsum([a.shape[axis] for a in arrays])[:-1]

    def backward(g):
        return tuple(np.split(g, ends, axis=axis))

    return out, backward


def stack(*arrays, axis=0):
    try:
        out = np.stack(arrays, axis=axis)
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"stack: shapes {shapes} are not all equal") from None

    def backward(g):
        return tuple(np.moveaxis(g, axis, 0))

    return out, backward
