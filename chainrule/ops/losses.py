"""Losses as fused primitives: one node each, stable at extreme inputs, gradient written beside it.

Fused because a loss is the first link of every backward pass and the composite forms (log of a
softmax, log of a sigmoid) lose precision or overflow at large logits. `reduction` is 'mean' | 'sum'
| 'none', as in PyTorch; for 'none' the loss keeps one value per element (per sample for
cross-entropy).
"""

from __future__ import annotations

import functools

import numpy as np

from chainrule import kernels
from chainrule.ops.activations import sigmoid

REDUCTIONS = ("mean", "sum", "none")

# torch.nn.BCELoss clamps each log term at -100 so that probabilities of exactly 0 or 1 give a
# finite loss; we do the same, so our values match PyTorch there too.
_LOG_FLOOR = -100.0


def _reduce(per_element, reduction, count):
    """Reduce a per-element loss; return it and the scale each element's gradient gets from g."""
    # np.add.reduce(·, axis=None) is what .sum() calls, without its Python wrapper.
    if reduction == "mean":
        return np.add.reduce(per_element, axis=None) / max(count, 1), 1.0 / max(count, 1)
    if reduction == "sum":
        return np.add.reduce(per_element, axis=None), 1.0
    return per_element, None


@functools.lru_cache(maxsize=64)
def _constant(kind, size, dtype):
    """A read-only arange (row indices) or ones vector (row sums as a product), made once per
    size: cross-entropy needs both at every step, and small networks feel each allocation."""
    array = np.arange(size) if kind == "rows" else np.ones(size, dtype=dtype)
    array.flags.writeable = False
    return array


_UNSIGNED = {np.dtype(f"i{n}"): np.dtype(f"u{n}") for n in (1, 2, 4, 8)}


def _classes_in_range(target, classes):
    """Whether integer labels all lie in [0, classes), in one reduction: read as unsigned
    integers (a view, no copy) a negative label is huge, so the largest is below `classes`
    exactly when every label is in range."""
    unsigned = target.view(_UNSIGNED[target.dtype]) if target.dtype.kind == "i" else target
    return int(np.maximum.reduce(unsigned)) < classes


def _upstream(g, scale):
    """The gradient arriving at each element: g·scale for a reduced loss, g itself for 'none'."""
    return g if scale is None else g * scale


def mse_loss(prediction, target, reduction="mean"):
    """L = mean((ŷ − y)²), PyTorch's MSELoss (the tutorial's ½ factor is applied by its caller)."""
    diff = prediction - target
    loss, scale = _reduce(diff * diff, reduction, diff.size)

    def backward(g):
        grad = _upstream(g, scale) * 2 * diff
        return grad, -grad

    return np.asarray(loss, dtype=prediction.dtype), backward


def huber_loss(prediction, target, reduction="mean", delta=1.0):
    """½d² where |d| <= delta, else delta·(|d| − ½·delta); d = ŷ − y. Gradient: clip(d, ±delta)."""
    diff = prediction - target
    absolute = np.abs(diff)
    per_element = np.where(absolute <= delta, 0.5 * diff * diff, delta * (absolute - 0.5 * delta))
    loss, scale = _reduce(per_element, reduction, diff.size)

    def backward(g):
        grad = _upstream(g, scale) * np.clip(diff, -delta, delta)
        return grad, -grad

    return np.asarray(loss, dtype=prediction.dtype), backward


def _safe_log(p):
    """ln p with ln 0 taken as the floor instead of -inf (and no divide-by-zero warning)."""
    out = np.full_like(p, _LOG_FLOOR)
    np.log(p, out=out, where=p > 0)
    return np.maximum(out, _LOG_FLOOR)


def _check_unit_interval(name, target):
    """Targets of a binary cross-entropy are probabilities: 2 or −1 would train toward nonsense.

    Two reductions and no temporary array; min and max propagate NaN, which fails the test too.
    """
    if target.size and not (target.min() >= 0 and target.max() <= 1):
        raise ValueError(
            f"{name}: targets must be probabilities in [0, 1], got values from "
            f"{np.nanmin(target):.6g} to {np.nanmax(target):.6g}"
            + (" (and NaN)" if np.isnan(target).any() else "")
        )


def binary_cross_entropy(probability, target, reduction="mean"):
    """L = −[y ln p + (1 − y) ln(1 − p)] for probabilities p in [0, 1]."""
    _check_unit_interval("binary_cross_entropy", target)
    per_element = -(target * _safe_log(probability) + (1 - target) * _safe_log(1 - probability))
    loss, scale = _reduce(per_element, reduction, per_element.size)

    def backward(g):
        # dL/dp = (p − y) / (p (1 − p)); the floor keeps it finite at p = 0 or 1 (PyTorch: 1e-12).
        denominator = np.maximum(probability * (1 - probability), 1e-12)
        grad_p = _upstream(g, scale) * (probability - target) / denominator
        grad_y = _upstream(g, scale) * (_safe_log(1 - probability) - _safe_log(probability))
        return grad_p, grad_y

    return np.asarray(loss, dtype=probability.dtype), backward


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """BCE of sigmoid(z) computed from z: max(z, 0) − z·y + ln(1 + e^(−|z|)). dL/dz = σ(z) − y."""
    _check_unit_interval("binary_cross_entropy_with_logits", target)
    per_element = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    loss, scale = _reduce(per_element, reduction, per_element.size)

    def backward(g):
        probability = sigmoid(logits)[0]
        upstream = _upstream(g, scale)
        return upstream * (probability - target), upstream * -logits

    return np.asarray(loss, dtype=logits.dtype), backward


def _cross_entropy_fused(logits, target, reduction, batch, classes):
    """The code below for int64 class indices in one C pass each way (kernels.cross_entropy): a
    small network's loss was ~15 NumPy calls. None where the kernel declines (no extension, an
    array that does not fit, a target out of range: the NumPy code then names it)."""
    e = np.empty_like(logits)
    sums = np.empty(batch, dtype=logits.dtype)
    total = kernels.cross_entropy(logits, target, e, sums, batch, classes)
    if total is False:
        return None
    loss, scale = np.asarray(total, dtype=logits.dtype), 1.0  # a float32 total is exact in double
    if reduction == "mean":  # divided in the logits' precision, as the replay interpreter does
        loss, scale = np.asarray(loss / batch), 1.0 / batch

    def backward(g):
        upstream = g * scale
        grad = np.empty_like(e)
        if kernels.cross_entropy_backward(grad, target, e, sums, batch, classes, float(upstream)):
            return grad, None
        grad = e / sums[:, None]
        grad[np.arange(batch), target] -= 1
        grad *= upstream
        return grad, None

    return loss, backward


def cross_entropy(logits, target, reduction="mean"):
    """Softmax cross-entropy from logits (batch, classes); dL/dz = softmax(z) − onehot(y).

    `target` holds class indices (batch,) or class probabilities (batch, classes).
    """
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(
            "cross_entropy expects logits of shape (batch, classes) with at least one class, got "
            f"shape {logits.shape}"
        )
    batch, classes = logits.shape
    if reduction != "none" and target.dtype == np.int64 and target.shape == (batch,):
        fused = _cross_entropy_fused(logits, target, reduction, batch, classes)
        if fused is not None:
            return fused
    rows = _constant("rows", batch, None)
    # Row maxima and row sums of a (batch, classes) array, the fast way: NumPy reduces along a
    # short last axis one row at a time (11 µs for 200×10), while argmax has a row-wise loop and
    # a matrix-vector product with ones is BLAS (2 µs each). argmax picks NaN, as max would.
    shifted = logits - logits[rows, logits.argmax(axis=1)][:, None]
    exp_shifted = np.exp(shifted)
    sums = (exp_shifted @ _constant("ones", classes, exp_shifted.dtype))[:, None]
    log_sums = np.log(sums)
    if target.ndim == 1:
        if target.dtype.kind not in "iu":
            fractional = target.dtype.kind == "f" and not np.array_equal(target, np.round(target))
            raise TypeError(
                f"cross_entropy: class-index targets must be integers, got dtype {target.dtype}"
                + (" with fractional values (a regression target? use mse)" if fractional else "")
                + " (pass probabilities as a (batch, classes) array instead)"
            )
        if target.shape[0] != batch:
            raise ValueError(f"cross_entropy: {batch} rows of logits but {target.shape[0]} targets")
        if batch and not _classes_in_range(target, classes):
            raise ValueError(
                f"cross_entropy: target classes must be in [0, {classes}), got values from "
                f"{target.min()} to {target.max()}"
            )
        per_sample = log_sums[:, 0] - shifted[rows, target]  # −log softmax at the target class
    elif target.shape == logits.shape:
        # Probabilities lie in [0, 1]: a regression target of the same shape (one output column,
        # values like 3.7) would otherwise train silently toward a loss that is always 0.
        # Over one class a distribution is all ones (softmax of one logit is 1, the loss 0): a
        # fractional value there is a regression target given to the wrong loss.
        if classes == 1 and not np.array_equal(target, np.round(target)):
            raise ValueError(
                "cross_entropy: targets of shape (batch, 1) with fractional values are not class "
                "probabilities (over one class they are all 1); a regression target needs mse "
                "or huber"
            )
        if target.size and not (target.min() >= 0 and target.max() <= 1):
            raise ValueError(
                f"cross_entropy: probability targets must lie in [0, 1], got values from "
                f"{np.nanmin(target):.6g} to {np.nanmax(target):.6g}; class indices must be "
                "integers of shape (batch,), and a regression target needs mse or huber"
            )
        per_sample = -(target * (shifted - log_sums)).sum(axis=1)
    else:
        raise ValueError(
            f"cross_entropy: target of shape {target.shape} fits neither class indices ({batch},) "
            f"nor probabilities {logits.shape}"
        )
    loss, scale = _reduce(per_sample, reduction, batch)

    def backward(g):
        # A reduced loss scales by a number; 'none' by each sample's own g, one per row.
        upstream = g * scale if scale is not None else g[:, None]
        grad = exp_shifted / sums  # softmax(z), kept from the forward pass
        if target.ndim == 1:
            grad[rows, target] -= 1
        else:
            grad *= target.sum(axis=1, keepdims=True)
            grad -= target
        grad *= upstream
        return grad, None

    return np.asarray(loss, dtype=logits.dtype), backward
