"""Layers for images (N, C, H, W) and sequences (N, C, L): Conv2d, Conv1d, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d, BatchNorm2d, Dropout2d.

Modules hold parameters, state and the checks that name the layer; the math is in
`chainrule.functional` (and its gradients in `chainrule.ops.conv`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chainrule import functional as F
from chainrule import tracing
from chainrule.nn import init
from chainrule.nn.layers import Dropout, _as_input, _check_dtype
from chainrule.nn.module import Module, Parameter
from chainrule.ops import conv as conv_ops
from chainrule.random import get_rng
from chainrule.tensor import Tensor


def _positive(name: str, **sizes: int) -> None:
    for what, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")


class _ConvNd(Module):
    """What Conv2d and Conv1d share: parameters, initialisation, the checks, the repr."""

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple,
        stride: tuple,
        padding: Any,
        dilation: tuple,
        groups: int,
        bias: bool,
        dtype: Any,
        rng: Any,
    ) -> None:
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
        self.padding = padding
        self.groups = int(groups)
        dtype = _check_dtype(dtype)
        self.weight = Parameter(
            np.zeros((out_channels, in_channels // groups, *kernel), dtype=dtype)
        )
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    @staticmethod
    def _check_channels(name: str, in_channels: Any, out_channels: Any, groups: Any) -> None:
        _positive(name, in_channels=in_channels, out_channels=out_channels, groups=groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must both "
                f"be divisible by groups ({groups})"
            )

    def reset_parameters(self, rng: Any = None) -> None:
        """As PyTorch: W ~ Kaiming-uniform with a = √5, i.e. U(±1/√fan_in), and b ~ U(±1/√fan_in),
        fan_in = in_channels/groups · kernel area."""
        rng = get_rng(rng)  # one generator for both, so an int seed does not repeat its numbers
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        if self.bias is not None:
            fan_in = self.weight.size // self.out_channels
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound, rng)

    def extra_repr(self) -> str:
        one = len(self.kernel_size) == 1
        show = (lambda v: v[0]) if one else (lambda v: v)  # noqa: E731
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={show(self.kernel_size)}"
        if self.stride != (1,) * len(self.stride):
            text += f", stride={show(self.stride)}"
        if self.padding not in ("valid", 0, (0, 0)):
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * len(self.dilation):
            text += f", dilation={show(self.dilation)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) over (N, C_in, H, W) -> (N, C_out, Ho, Wo).

    weight (out_channels, in_channels/groups, kh, kw), bias (out_channels,); padding an int, a
    pair, 'valid' or 'same' (stride 1). Initialised as PyTorch's, seeded by `rng`.

    >>> Conv2d(1, 16, 3, padding="same", rng=0)(np.zeros((2, 1, 8, 8), np.float32)).shape
    (2, 16, 8, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        dtype: Any = None,
        rng: Any = None,
    ) -> None:
        name = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        self._check_channels(name, in_channels, out_channels, groups)
        kernel = conv_ops.pair(kernel_size, "kernel_size", name)
        stride = conv_ops.pair(stride, "stride", name)
        dilation = conv_ops.pair(dilation, "dilation", name)
        self._padding = conv_ops.conv_padding(padding, kernel, stride, dilation, name)
        if not isinstance(padding, str):
            padding = conv_ops.pair(padding, "padding", name, minimum=0)
        self._setup(
            in_channels, out_channels, kernel, stride, padding, dilation, groups, bias, dtype, rng
        )

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x, self.weight.dtype)
        # The op checks too; checking here names the layer in the message.
        conv_ops.conv_output_shape(
            x.shape,
            self.weight.shape,
            None,
            self.stride,
            self._padding,
            self.dilation,
            self.groups,
            repr(self),
        )
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) -> (N, C_out, Lo); weight (out_channels,
    in_channels/groups, k), bias (out_channels,). padding an int, 'valid' or 'same' (stride 1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: Any = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        dtype: Any = None,
        rng: Any = None,
    ) -> None:
        name = f"Conv1d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        self._check_channels(name, in_channels, out_channels, groups)
        _positive(name, kernel_size=kernel_size, stride=stride, dilation=dilation)
        if isinstance(padding, str):
            conv_ops.conv_padding(padding, (1, kernel_size), (1, stride), (1, dilation), name)
        elif isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(
                f"{name}: padding must be 'valid', 'same' or an int >= 0, got {padding!r}"
            )
        else:
            padding = int(padding)
        self._setup(
            in_channels,
            out_channels,
            (int(kernel_size),),
            (int(stride),),
            padding,
            (int(dilation),),
            groups,
            bias,
            dtype,
            rng,
        )

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x, self.weight.dtype)
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self!r} expects input of shape (batch, {self.in_channels}, length), got shape "
                f"{x.shape}"
            )
        return F.conv1d(
            x,
            self.weight,
            self.bias,
            self.stride[0],
            self.padding,
            self.dilation[0],
            self.groups,
        )


class _Pool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        name = f"{type(self).__name__}(kernel_size={kernel_size})"
        self.kernel_size = conv_ops.pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else conv_ops.pair(stride, "stride", name)
        self.padding = conv_ops.pair(padding, "padding", name, minimum=0)
        if 2 * self.padding[0] > self.kernel_size[0] or 2 * self.padding[1] > self.kernel_size[1]:
            raise ValueError(
                f"{name}: padding {self.padding} must be at most half the kernel size "
                f"{self.kernel_size}"
            )

    def _checked(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        conv_ops.pool_output_shape(x.shape, self.kernel_size, self.stride, self.padding, repr(self))
        return x

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """The maximum of each window: (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to the kernel."""

    def forward(self, x: Any) -> Tensor:
        return F.max_pool2d(self._checked(x), self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """The mean of each window of the zero-padded input: (N, C, H, W) -> (N, C, Ho, Wo)."""

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Any) -> Tensor:
        return F.avg_pool2d(
            self._checked(x), self.kernel_size, self.stride, self.padding, self.count_include_pad
        )


class AdaptiveAvgPool2d(Module):
    """Average pooling to an output_size grid whatever the input's size; 1 is global average
    pooling, (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self, output_size: Any = 1) -> None:
        self.output_size = conv_ops.pair(output_size, "output_size", "AdaptiveAvgPool2d")

    def forward(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 4:
            raise ValueError(
                f"{self!r} expects input of shape (batch, channels, height, width), got shape "
                f"{x.shape}"
            )
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class BatchNorm2d(Module):
    """Normalise each channel over the batch and both spatial axes: γ·(x − μ)/√(σ² + ε) + β.

    As PyTorch: training uses the batch statistics (biased variance) and updates running estimates
    r ← (1 − momentum)·r + momentum·batch (the unbiased variance); eval uses the estimates.
    weight γ and bias β (num_features,); buffers running_mean and running_var (num_features,).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        dtype: Any = None,
    ) -> None:
        _positive("BatchNorm2d", num_features=num_features)
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must be in [0, 1], got {momentum}")
        if eps <= 0:
            raise ValueError(f"BatchNorm2d: eps must be positive, got {eps}")
        dtype = _check_dtype(dtype)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype=dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x, self.running_mean.dtype)
        if tracing.active is not None:  # a compiled step is traced once per mode
            tracing.active.guard(lambda: self.training)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d({self.num_features}) expects input of shape (batch, "
                f"{self.num_features}, height, width), got shape {x.shape}"
            )
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class Dropout2d(Dropout):
    """Zero whole channels with probability p while training (scaling the rest by 1/(1−p));
    identity in eval. Input (N, C, H, W); `rng` as in `nn.Dropout`."""

    def forward(self, x: Any) -> Tensor:
        self._trace_per_mode()
        return F.dropout2d(x, self.p, self.training, self.rng)
