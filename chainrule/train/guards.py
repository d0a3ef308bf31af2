"""The guards of a training run: the errors and warnings it raises, and the checks that name
where NaN or Inf appeared, so a failure says which epoch, step and parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chainrule.nn.module import Module, Sequential
from chainrule.tensor import Tensor, no_grad

__all__ = [
    "DivergenceWarning",
    "NonFiniteError",
    "check_training_data",
    "first_non_finite",
    "first_non_finite_output",
    "weights_finite",
]


class NonFiniteError(ArithmeticError):
    """Training produced NaN or Inf; the message names the epoch, the step and where it appeared."""


class DivergenceWarning(UserWarning):
    """The loss grew far beyond where it started: the learning rate is likely too large."""


def first_non_finite(model: Module) -> str | None:
    """'weight NAME' or 'gradient of NAME' for the first parameter holding NaN/Inf, or None."""
    for name, parameter in model.named_parameters():
        if not np.isfinite(parameter.data).all():
            return f"weight {name}"
        if parameter.grad is not None and not np.isfinite(parameter.grad).all():
            return f"gradient of {name}"
    return None


def first_non_finite_output(model: Module, x: np.ndarray) -> str:
    """Which layer first produces NaN/Inf on x (run again layer by layer, without a graph)."""
    if not isinstance(model, Sequential):
        return "the model output"
    with no_grad():
        value: Any = x
        for index, layer in enumerate(model):
            value = layer(value)
            if not np.isfinite(value.data).all():
                return f"the output of layer {index} ({type(layer).__name__})"
    return "the loss"


def weights_finite(parameters: Sequence[Tensor]) -> bool:
    """Whether every weight is finite."""
    # One BLAS dot per parameter (the fastest full pass NumPy has): a sum of squares is finite
    # unless a weight is NaN/Inf or huge, and for huge weights isfinite() decides.
    for parameter in parameters:
        flat = parameter.data.reshape(-1)
        if not math.isfinite(np.dot(flat, flat)) and not np.isfinite(flat).all():
            return False
    return True


def check_training_data(X: np.ndarray, y: np.ndarray) -> None:
    """Refuse data that cannot train: wrong shapes, no rows, non-numbers, NaN or Inf."""
    if X.ndim < 2:
        raise ValueError(
            "training inputs must be at least a 2-D array: (samples, features) or (samples, "
            f"channels, height, width), got shape {X.shape}"
        )
    if len(X) != len(y):
        raise ValueError(f"{len(X)} input rows but {len(y)} targets")
    if len(X) == 0:
        raise ValueError("no training samples")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"training inputs must be numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        row = int(np.argwhere(~np.isfinite(X))[0][0])
        raise ValueError(f"training inputs contain NaN or Inf (first in row {row})")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("training targets contain NaN or Inf")
