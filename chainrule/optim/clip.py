"""Gradient clipping, as torch.nn.utils: rescale all gradients to a maximum total norm, or clamp
each entry. Gradients are replaced by clipped copies, never written in place (they may be shared).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from chainrule import tracing
from chainrule.tensor import Tensor


def _parameters(owner: str, parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{owner}: item {i} is a {type(p).__name__}, not a Parameter")
    return params


def _vector_norm(g: np.ndarray, norm_type: float) -> float:
    flat = g.ravel()
    if norm_type == 2.0:
        return math.sqrt(float(np.dot(flat, flat)))
    if norm_type == math.inf:
        return float(np.max(np.abs(flat))) if flat.size else 0.0
    if norm_type == 1.0:
        return float(np.sum(np.abs(flat)))
    return float(np.sum(np.abs(flat) ** norm_type)) ** (1.0 / norm_type)


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    r"""Scale every gradient by one factor so that their joint norm is at most `max_norm`.

    total = ‖(‖g₁‖, ‖g₂‖, …)‖ (the p-norm of all gradients as one vector, p = norm_type, inf
    allowed); each g ← g · min(1, max_norm / (total + 1e-6)). Parameters without a gradient are
    skipped. Returns `total`, measured before clipping, as a Python float.
    """
    params = _parameters("clip_grad_norm_", parameters)
    if tracing.active is not None:  # a compiled step clips at each replay (returns no norm)
        arguments = (params, max_norm, norm_type, error_if_nonfinite)
        tracing.active.effect(lambda: _clip_grad_norm(*arguments))
    return _clip_grad_norm(params, max_norm, norm_type, error_if_nonfinite)


def _clip_grad_norm(
    params: list[Tensor], max_norm: float, norm_type: float, error_if_nonfinite: bool
) -> float:
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (or inf), got {norm_type}")
    with_grads = [p for p in params if p.grad is not None]
    if not with_grads:
        return 0.0
    norms = [_vector_norm(p.grad, norm_type) for p in with_grads]
    if norm_type == math.inf:
        total = max(norms)
    else:
        total = math.fsum(n**norm_type for n in norms) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total {norm_type:g}-norm of the gradients is {total}; pass "
            "error_if_nonfinite=False to clip anyway"
        )
    scale = max_norm / (total + 1e-6)
    if not scale >= 1.0:  # NaN included: a NaN norm spreads to every gradient, as in PyTorch
        for p in with_grads:
            p.grad = p.grad * scale
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp each gradient entry to [−clip_value, clip_value]; skip parameters without one."""
    params = _parameters("clip_grad_value_", parameters)
    if tracing.active is not None:  # a compiled step clips at each replay
        tracing.active.effect(lambda: _clip_grad_value(params, clip_value))
    _clip_grad_value(params, clip_value)


def _clip_grad_value(params: list[Tensor], clip_value: float) -> None:
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in params:
        if p.grad is not None:
            p.grad = np.clip(p.grad, -clip_value, clip_value)
