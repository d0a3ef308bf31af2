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
    """Inputs take the layer's dtype: a float64 array never silently upcasts a float32 network."""
    # The common case: a float array of the right dtype, no checks needed.
    if type(x) is np.ndarray and x.dtype == dtype:
        return wrap(x)
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else x.astype(dtype)
    return Tensor(np.asarray(x, dtype=dtype))


class Linear(Module):
    """Fully connected layer z = x·Wᵀ + b: x (batch, in_features) -> z (batch, out_features).

    weight W (out_features, in_features), bias b (out_features,), or no bias with `bias=False`.
    Initialised as PyTorch does: W and b ~ U(−1/√in, 1/√in), drawn from `rng` (a Generator, a
    seed, or None for the library's default). `dtype` is float32 (default) or float64; inputs
    are converted to it.

    >>> import numpy as np
    >>> from chainrule import nn
    >>> layer = nn.Linear(3, 2, rng=0)
    >>> layer.weight.shape, layer.bias.shape
    ((2, 3), (2,))
    >>> z = layer(np.ones((5, 3)))  # (batch, in_features) -> (batch, out_features)
    >>> z.shape, z.dtype
    ((5, 2), dtype('float32'))
    >>> z.sum().backward()
    >>> layer.weight.grad  # ∂Σz/∂W[j, i] = Σ over the batch of x[:, i]
    array([[5., 5., 5.],
           [5., 5., 5.]], dtype=float32)
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
        """Draw W and b again from U(−1/√in, 1/√in); `rng` is a Generator, a seed, or None."""
        rng = get_rng(rng)  # one generator for both, so an int seed does not repeat its numbers
        bound = 1.0 / math.sqrt(self.in_features)
        init.uniform_(self.weight, -bound, bound, rng)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, rng)

    def forward(self, x: Any) -> Tensor:
        """z = x·Wᵀ + b: x (batch, in_features) -> z (batch, out_features), in the layer's dtype."""
        # ops.linear checks the feature count and names Linear(in, out) and the input's shape.
        return F.linear(_as_input(x, self.weight.dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class _Activation(Module):
    """An activation with no parameters; subclasses set `function`."""

    def forward(self, x: Any) -> Tensor:
        return type(self).function(x if isinstance(x, Tensor) else Tensor(x))


class Sigmoid(_Activation):
    """σ(x) = 1 / (1 + e⁻ˣ) elementwise, as a module (see `functional.sigmoid`)."""

    function = staticmethod(F.sigmoid)


class Tanh(_Activation):
    """tanh(x) elementwise, as a module (see `functional.tanh`)."""

    function = staticmethod(F.tanh)


class ReLU(_Activation):
    """max(x, 0) elementwise, as a module (see `functional.relu`)."""

    function = staticmethod(F.relu)


class Softplus(_Activation):
    """ln(1 + eˣ) elementwise, a smooth ReLU, as a module (see `functional.softplus`)."""

    function = staticmethod(F.softplus)


class LeakyReLU(Module):
    """x where x > 0, else negative_slope·x, elementwise (see `functional.leaky_relu`)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """x·Φ(x) elementwise, Φ the standard normal CDF (see `functional.gelu`).

    `approximate='tanh'` uses the faster tanh formula.
    """

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Any) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Softmax(Module):
    """softmax along `dim` (default: the last axis, one row per sample): each slice sums to 1.

    For training, prefer `CrossEntropyLoss` on the logits over Softmax followed by a log.
    """

    def __init__(self, dim: int = -1) -> None:
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Identity(Module):
    """Returns its input unchanged (as a Tensor): a placeholder where a layer is optional."""

    def forward(self, x: Any) -> Tensor:
        return x if isinstance(x, Tensor) else Tensor(x)


class Flatten(Module):
    """Flatten all but the first axis: (batch, d1, d2, ...) -> (batch, d1·d2·...)."""

    def forward(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        return x.reshape(x.shape[0], -1)


class Dropout(Module):
    """Zeroes inputs with probability p while training, scaling the rest by 1/(1−p).

    In eval mode (`model.eval()`) it passes inputs through. `rng`: a Generator, a seed, or None for
    the library's default; any shape in, the same shape out.
    """

    def __init__(self, p: float = 0.5, rng: Any = None) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"{type(self).__name__} probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = (
            rng
            if rng is None or isinstance(rng, np.random.Generator)
            else np.random.default_rng(rng)
        )

    def forward(self, x: Any) -> Tensor:
        self._trace_per_mode()
        return F.dropout(x, self.p, self.training, self.rng)

    def _trace_per_mode(self) -> None:
        if tracing.active is not None:  # a compiled step is traced once per mode
            tracing.active.guard(lambda: self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BatchNorm1d(Module):
    """Normalise each feature over the batch: ŷ = γ·(x − μ_B)/√(σ²_B + ε) + β; x (batch, features).

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
                f"BatchNorm1d({self.num_features}) expects inputs of shape "
                f"(batch, {self.num_features}), got {x.shape}"
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
    """Normalise each sample over its last dimensions: γ·(x − μ)/√(σ² + ε) + β.

    `normalized_shape` is those trailing dimensions (an int for one); γ and β have that shape.
    """

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
                f"LayerNorm{self.normalized_shape} expects inputs ending in "
                f"{self.normalized_shape}, got {x.shape}"
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
