"""Layers: Linear, activations as modules, Dropout, BatchNorm1d, LayerNorm, Flatten, Identity.

Modules hold parameters and state; the math is in `chainrule.functional`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chainrule import functional as F
from chainrule import tracing
from chainrule.nn import init
from chainrule.nn.module import Module, Parameter
from chainrule.random import get_rng
from chainrule.tensor import DEFAULT_DTYPE, Tensor, wrap


def _check_dtype(dtype: Any) -> np.dtype:
    dtype = np.dtype(DEFAULT_DTYPE if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"layers hold float32 or float64 parameters, got dtype {dtype}")
    return dtype


def _as_input(x: Any, dtype: np.dtype) -> Tensor:
    """Inputs take the layer's dtype, so a float64 array never silently upcasts a float32 network."""
    if (
        type(x) is np.ndarray and x.dtype == dtype
    ):  # the common case: a float array, no checks needed
        return wrap(x)
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else x.astype(dtype)
    return Tensor(np.asarray(x, dtype=dtype))


class Linear(Module):
    """z = x·Wᵀ + b. weight (out_features, in_features), bias (out_features,).

    Initialised as PyTorch does: W and b ~ U(−1/√in, 1/√in).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = None,
        rng: Any = None,
    ) -> None:
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"Linear needs positive sizes, got Linear({in_features}, {out_features})"
            )
        dtype = _check_dtype(dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(np.zeros((out_features, in_features), dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def reset_parameters(self, rng: Any = None) -> None:
        rng = get_rng(rng)  # one generator for both, so an int seed does not repeat its numbers
        bound = 1.0 / math.sqrt(self.in_features)
        init.uniform_(self.weight, -bound, bound, rng)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, rng)

    def forward(self, x: Any) -> Tensor:
        # ops.linear checks the feature count and names Linear(in, out) and the input's shape.
        return F.linear(_as_input(x, self.weight.dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _Activation(Module):
    """An activation with no parameters; subclasses set `function`."""

    def forward(self, x: Any) -> Tensor:
        return type(self).function(x if isinstance(x, Tensor) else Tensor(x))


class Sigmoid(_Activation):
    function = staticmethod(F.sigmoid)


class Tanh(_Activation):
    function = staticmethod(F.tanh)


class ReLU(_Activation):
    function = staticmethod(F.relu)


class Softplus(_Activation):
    function = staticmethod(F.softplus)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Any) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim: int = -1) -> None:
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Identity(Module):
    def forward(self, x: Any) -> Tensor:
        return x if isinstance(x, Tensor) else Tensor(x)


class Flatten(Module):
    """(batch, d1, d2, ...) -> (batch, d1·d2·...)."""

    def forward(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        return x.reshape(x.shape[0], -1)


class Dropout(Module):
    """Zeroes inputs with probability p while training (scaling the rest by 1/(1−p)); identity in eval."""

    def __init__(self, p: float = 0.5, rng: Any = None) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = (
            rng
            if rng is None or isinstance(rng, np.random.Generator)
            else np.random.default_rng(rng)
        )

    def forward(self, x: Any) -> Tensor:
        if tracing.active is not None:  # a compiled step is traced once per mode
            tracing.active.guard(lambda: self.training)
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BatchNorm1d(Module):
    """Normalise each feature over the batch: ŷ = γ·(x − μ_B)/√(σ²_B + ε) + β.

    Training uses the batch statistics (biased variance) and updates running estimates with
    `momentum` (the unbiased variance, as PyTorch); eval uses the running estimates.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        dtype: Any = None,
    ) -> None:
        dtype = _check_dtype(dtype)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))

    def forward(self, x: Any) -> Tensor:
        dtype = self.running_mean.dtype
        x = _as_input(x, dtype)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm1d({self.num_features}) expects inputs of shape (batch, {self.num_features}), "
                f"got {x.shape}"
            )
        if tracing.active is not None:  # a compiled step is traced once per mode
            tracing.active.guard(lambda: self.training)
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("BatchNorm1d needs more than one sample per batch while training")
            mean = x.mean(axis=0)
            centred = x - mean
            variance = (centred * centred).mean(axis=0)
            n = x.shape[0]
            m = self.momentum

            def update_running(mean: np.ndarray, variance: np.ndarray) -> None:
                self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(dtype)
                self.running_var = ((1 - m) * self.running_var + m * variance * n / (n - 1)).astype(
                    dtype
                )

            update_running(mean.data, variance.data)
            if tracing.active is not None:  # a side effect outside the graph: replayed too
                tracing.active.effect(update_running, (mean.data, variance.data))
            normalized = centred / (variance + self.eps).sqrt()
        else:
            running_mean = self.running_mean
            root_var = np.sqrt(self.running_var + self.eps)
            if tracing.active is not None:  # read afresh at each replay: training moves them
                eps = self.eps
                tracing.active.source(running_mean, lambda: self.running_mean)
                tracing.active.source(root_var, lambda: np.sqrt(self.running_var + eps))
            normalized = (x - Tensor(running_mean)) / Tensor(root_var)
        if self.weight is not None:
            normalized = normalized * self.weight + self.bias
        return normalized

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(Module):
    """Normalise each sample over its last dimensions: γ·(x − μ)/√(σ² + ε) + β."""

    def __init__(
        self,
        normalized_shape: Any,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        dtype: Any = None,
    ) -> None:
        dtype = _check_dtype(dtype)
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        self.normalized_shape = shape
        self.eps = float(eps)
        self.weight = Parameter(np.ones(shape, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype=dtype)) if elementwise_affine else None
        self._dtype = dtype

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x, self._dtype if self.weight is None else self.weight.dtype)
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"LayerNorm{self.normalized_shape} expects inputs ending in {self.normalized_shape}, got {x.shape}"
            )
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        variance = (centred * centred).mean(axis=axes, keepdims=True)
        normalized = centred / (variance + self.eps).sqrt()
        if self.weight is not None:
            normalized = normalized * self.weight + self.bias
        return normalized

    def _convert(self, dtype: np.dtype) -> None:
        super()._convert(dtype)
        self._dtype = dtype

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"
