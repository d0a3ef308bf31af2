"""The math of networks as functions on Tensors: activations, linear, losses, dropout.

Every function here records one primitive from `chainrule.ops` (where its gradient is written), or
composes a few. Modules in `chainrule.nn` hold parameters and call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chainrule import ops, tracing
from chainrule.ops import conv as conv_ops
from chainrule.ops.losses import REDUCTIONS
from chainrule.random import get_rng
from chainrule.tensor import Tensor, apply, lift, wrap


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# ---- elementwise math --------------------------------------------------------------------------
def exp(x: Any) -> Tensor:
    """eˣ elementwise; any shape in, the same shape out. Gradient: g·eˣ."""
    return apply(ops.exp, _tensor(x))


def log(x: Any) -> Tensor:
    """Natural logarithm ln x elementwise; the same shape out. Gradient: g / x."""
    return apply(ops.log, _tensor(x))


def sqrt(x: Any) -> Tensor:
    """√x elementwise; the same shape out. Gradient: g / (2√x)."""
    return apply(ops.sqrt, _tensor(x))


def abs(x: Any) -> Tensor:
    """|x| elementwise; the same shape out. Gradient: g·sign(x) (0 at x = 0)."""
    return apply(ops.abs, _tensor(x))


def clip(x: Any, min: Any = None, max: Any = None) -> Tensor:
    """x limited to [min, max] elementwise (either bound may be None); `clamp` is the same function.

    The gradient passes where x is inside the bounds and is 0 where a bound was applied.
    """
    return apply(ops.clip, _tensor(x), low=min, high=max)


clamp = clip


def maximum(a: Any, b: Any) -> Tensor:
    """The elementwise larger of a and b (broadcast); a Python number takes the other's dtype."""
    a, b = _pair(a, b)
    return apply(ops.maximum, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """The elementwise smaller of a and b (broadcast); a Python number takes the other's dtype."""
    a, b = _pair(a, b)
    return apply(ops.minimum, a, b)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """x where condition holds, else y, broadcast together; the condition carries no gradient."""
    x, y = _pair(x, y)
    condition = condition.data if isinstance(condition, Tensor) else condition
    return apply(ops.where, x, y, condition=condition)


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Two operands as tensors; a Python number takes the other operand's dtype."""
    if isinstance(a, Tensor):
        return a, lift(b, a)
    b = _tensor(b)
    return lift(a, b), b


# ---- shape ---------------------------------------------------------------------------------
def matmul(a: Any, b: Any) -> Tensor:
    """The matrix product a @ b, with NumPy's `matmul` rules: (n, k) @ (k, m) -> (n, m)."""
    a, b = _tensor(a), _tensor(b)
    return apply(ops.matmul, a, b, needs=(a.requires_grad, b.requires_grad))


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis, as `np.concatenate`; `cat` is the same function.

    Shapes must agree except along `axis`; each input's gradient is its slice of the output's.
    """
    if len(tensors) == 0:
        raise ValueError("concatenate needs at least one tensor")
    return apply(ops.concatenate, *[_tensor(t) for t in tensors], axis=axis)


cat = concatenate


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis, as `np.stack`: k of shape s -> (k, *s)."""
    if len(tensors) == 0:
        raise ValueError("stack needs at least one tensor")
    return apply(ops.stack, *[_tensor(t) for t in tensors], axis=axis)


# ---- activations -------------------------------------------------------------------------
def sigmoid(x: Any) -> Tensor:
    """σ(x) = 1 / (1 + e⁻ˣ) elementwise; the gradient g·a·(1 − a) reuses the output a."""
    return apply(ops.sigmoid, _tensor(x))


def tanh(x: Any) -> Tensor:
    """tanh(x) elementwise; the gradient g·(1 − a²) reuses the output a."""
    return apply(ops.tanh, _tensor(x))


def relu(x: Any) -> Tensor:
    """max(x, 0) elementwise; the gradient is g where x > 0, else 0 (0 at x = 0, as PyTorch)."""
    return apply(ops.relu, _tensor(x))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else negative_slope·x, elementwise."""
    return apply(ops.leaky_relu, _tensor(x), negative_slope=negative_slope)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """GELU(x) = x·Φ(x), Φ the standard normal CDF, elementwise.

    `approximate="tanh"` uses ½x(1 + tanh(√(2/π)(x + 0.044715x³))), faster and within about 1e-3.
    """
    return apply(ops.gelu, _tensor(x), approximate=approximate)


def softplus(x: Any) -> Tensor:
    """ln(1 + eˣ) elementwise, exact for large |x|; its derivative is σ(x)."""
    return apply(ops.softplus, _tensor(x))


def softmax(x: Any, axis: int = -1) -> Tensor:
    """softmax(x)ᵢ = e^(xᵢ) / Σⱼ e^(xⱼ) along `axis`: the same shape out, each slice sums to 1.

    >>> import chainrule as cr
    >>> softmax(cr.tensor([[0.0, 0.0], [0.0, 10.0]])).data.round(4)
    array([[0.5, 0.5],
           [0. , 1. ]], dtype=float32)
    """
    return apply(ops.softmax, _tensor(x), axis=axis)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """ln softmax(x) along `axis`, computed without taking the log of 0: xᵢ − ln Σⱼ e^(xⱼ)."""
    return apply(ops.log_softmax, _tensor(x), axis=axis)


# ---- layers ------------------------------------------------------------------------------
def linear(x: Any, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """z = x·Wᵀ + b: x (batch, in), weight W (out, in), bias b (out,) or None -> z (batch, out)."""
    x = _tensor(x)
    if bias is None:
        return apply(ops.linear, x, weight, needs=(x.requires_grad, weight.requires_grad, False))
    return apply(
        ops.linear,
        x,
        weight,
        bias,
        needs=(x.requires_grad, weight.requires_grad, bias.requires_grad),
    )


def dropout(x: Any, p: float = 0.5, training: bool = True, rng: Any = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1−p) (inverted dropout).

    `rng` is a numpy Generator, a seed, or None for the library's default generator.
    """
    x = _tensor(x)
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return x * Tensor(_keep_mask(x.shape, p, x.dtype, rng))


def _keep_mask(shape: tuple, p: float, dtype: np.dtype, rng: Any) -> np.ndarray:
    """Inverted dropout's mask of `shape`: 1/(1−p) where kept, 0 where dropped. A compiled step
    draws it anew at each replay, from the same generator in the same order as eager."""

    def draw() -> np.ndarray:
        return (get_rng(rng).random(shape) >= p).astype(dtype) / (1 - p)

    keep = draw()
    if tracing.active is not None:
        tracing.active.source(keep, draw)
    return keep


# ---- losses ------------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )


def _loss_operands(name: str, prediction: Any, target: Any) -> tuple[Tensor, Tensor]:
    """Prediction and target as tensors of one dtype and shape (targets take the prediction's)."""
    prediction = _tensor(prediction)
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=prediction.dtype))
    elif target.dtype != prediction.dtype and not target.requires_grad:
        target = Tensor(target.data.astype(prediction.dtype))
    if prediction.shape != target.shape:
        raise ValueError(
            f"{name}: prediction of shape {prediction.shape} and target of shape {target.shape} "
            "differ (reshape the target, e.g. y.reshape(-1, 1))"
        )
    return prediction, target


def mse_loss(prediction: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error L = mean((ŷ − y)²), as torch.nn.functional.mse_loss.

    prediction and target of one shape (the target takes the prediction's dtype). `reduction`:
    'mean' (a scalar, the default), 'sum', or 'none' (the squared error per element). dL/dŷ =
    2(ŷ − y)/n for the mean over n elements. The founding tutorial's L = ½ Σ (ŷ − y)² is
    `0.5 * mse_loss(y_hat, y, reduction="sum")`.

    >>> import chainrule as cr
    >>> y_hat = cr.tensor([1.0, 2.0], requires_grad=True)
    >>> loss = mse_loss(y_hat, [0.0, 0.0])  # (1² + 2²) / 2
    >>> loss
    tensor(2.5, grad_fn=mse_loss)
    >>> loss.backward()
    >>> y_hat.grad  # 2(ŷ − y) / 2
    array([1., 2.], dtype=float32)
    """
    _check_reduction(reduction)
    prediction, target = _loss_operands("mse_loss", prediction, target)
    return apply(ops.mse_loss, prediction, target, reduction=reduction)


def huber_loss(prediction: Any, target: Any, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """Huber loss: ½d² where |d| <= delta, else delta·(|d| − ½·delta), with d = ŷ − y.

    prediction and target of one shape; `reduction` is 'mean' (a scalar, the default), 'sum', or
    'none' (one loss per element). The gradient is d clipped to ±delta: quadratic near the target,
    linear (robust to outliers) far from it. As torch.nn.functional.huber_loss.
    """
    _check_reduction(reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    prediction, target = _loss_operands("huber_loss", prediction, target)
    return apply(ops.huber_loss, prediction, target, reduction=reduction, delta=delta)


def binary_cross_entropy(probability: Any, target: Any, reduction: str = "mean") -> Tensor:
    """L = −[y ln p + (1 − y) ln(1 − p)] for probabilities p in [0, 1] and targets y of p's shape.

    Each log is floored at −100, as in PyTorch, so p of exactly 0 or 1 gives a finite loss.
    `reduction`: 'mean' (default), 'sum' or 'none'. For raw scores use
    `binary_cross_entropy_with_logits`, which is exact where σ saturates.
    """
    _check_reduction(reduction)
    probability, target = _loss_operands("binary_cross_entropy", probability, target)
    data = probability.data
    if data.size and (np.isnan(data).any() or data.min() < 0 or data.max() > 1):
        raise ValueError(
            "binary_cross_entropy: inputs must be probabilities in [0, 1] (got values from "
            f"{np.nanmin(data):.4g} to {np.nanmax(data):.4g}); for raw scores use "
            "binary_cross_entropy_with_logits"
        )
    return apply(ops.binary_cross_entropy, probability, target, reduction=reduction)


def binary_cross_entropy_with_logits(logits: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of σ(z), computed from the logits z: max(z, 0) − z·y + ln(1 + e^(−|z|)).

    logits and targets of one shape; dL/dz = σ(z) − y. `reduction`: 'mean' (default), 'sum' or
    'none'. Stable at any logit, unlike `binary_cross_entropy(sigmoid(z), y)`.

    >>> import chainrule as cr
    >>> round(binary_cross_entropy_with_logits(cr.tensor([0.0, 0.0]), [0.0, 1.0]).item(), 4)
    0.6931
    """
    _check_reduction(reduction)
    logits, target = _loss_operands("binary_cross_entropy_with_logits", logits, target)
    return apply(ops.binary_cross_entropy_with_logits, logits, target, reduction=reduction)


def cross_entropy(logits: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy from logits: L = −ln softmax(z)[y], averaged over the batch.

    logits z (batch, classes), raw scores (no softmax before it: it is applied here, stably).
    target: class indices (batch,) as integers (NumPy array, list or Tensor), or class
    probabilities (batch, classes). `reduction`: 'mean' (default), 'sum' or 'none' (one loss per
    sample, shape (batch,)). dL/dz = softmax(z) − onehot(y), divided by the batch for the mean.

    >>> import chainrule as cr
    >>> logits = cr.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    >>> loss = cross_entropy(logits, [0, 1])  # both rows right, with confidence σ(2) = 0.88
    >>> round(loss.item(), 4)
    0.1269
    >>> loss.backward()
    >>> logits.grad.round(4)  # (softmax(z) − onehot(y)) / batch
    array([[-0.0596,  0.0596],
           [ 0.0596, -0.0596]], dtype=float32)
    """
    _check_reduction(reduction)
    logits = _tensor(logits)
    target_array = np.asarray(target.data if isinstance(target, Tensor) else target)
    kind = target_array.dtype.kind
    if kind == "f":
        target_array = target_array.astype(logits.dtype, copy=False)
    # Labels need no gradient and no graph: a bare wrapper (Tensor() would check them again).
    labels = wrap(target_array) if kind in "fiub" else Tensor(target_array)
    return apply(ops.cross_entropy, logits, labels, reduction=reduction)


def nll_loss(log_probabilities: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood L = −log_probabilities[i, yᵢ], averaged over the batch.

    log_probabilities (batch, classes), e.g. from `log_softmax`; target: integer class indices
    (batch,). `reduction`: 'mean' (default), 'sum' or 'none' (shape (batch,)).
    `nll_loss(log_softmax(z), y)` equals `cross_entropy(z, y)`.
    """
    _check_reduction(reduction)
    log_probabilities = _tensor(log_probabilities)
    target_array = np.asarray(target.data if isinstance(target, Tensor) else target)
    if target_array.ndim != 1 or target_array.dtype.kind not in "iu":
        raise ValueError(
            "nll_loss: target must be integer class indices of shape (batch,), got shape "
            f"{target_array.shape} and dtype {target_array.dtype}"
        )
    if log_probabilities.ndim != 2 or log_probabilities.shape[0] != len(target_array):
        raise ValueError(
            f"nll_loss: log-probabilities of shape {log_probabilities.shape} need shape "
            f"(batch, classes) with one target per row, got {len(target_array)} targets"
        )
    classes = log_probabilities.shape[1]
    if target_array.size and (target_array.min() < 0 or target_array.max() >= classes):
        raise ValueError(
            f"nll_loss: target classes must be in [0, {classes}), got values from "
            f"{target_array.min()} to {target_array.max()}"
        )
    picked = log_probabilities[np.arange(len(target_array)), target_array]
    if reduction == "mean":
        return -picked.mean()
    if reduction == "sum":
        return -picked.sum()
    return -picked


# ---- convolution, pooling and normalisation over channels (NCHW) ------------------------------
def conv2d(
    x: Any,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation, as torch.nn.functional.conv2d. x (N, C, H, W), weight (O, C/groups,
    kh, kw), bias (O,) -> (N, O, Ho, Wo) with Ho = ⌊(H + pads − dilation·(kh − 1) − 1)/stride⌋ + 1.

    stride, dilation: int or pair; padding: int, pair, 'valid' or 'same' (stride 1 only).

    >>> conv2d(Tensor(np.ones((1, 1, 4, 4))), Tensor(np.ones((2, 1, 3, 3))), padding=1).shape
    (1, 2, 4, 4)
    """
    x, weight = _tensor(x), _tensor(weight)
    if weight.ndim != 4:
        raise ValueError(
            f"conv2d: the weight must have shape (out_channels, in_channels/groups, kh, kw), got "
            f"{weight.shape}"
        )
    stride = conv_ops.pair(stride, "stride", "conv2d")
    dilation = conv_ops.pair(dilation, "dilation", "conv2d")
    pads = conv_ops.conv_padding(padding, weight.shape[2:], stride, dilation, "conv2d")
    return _convolution(ops.conv2d, x, weight, bias, stride, pads, dilation, groups)


def conv1d(
    x: Any,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: Any = 0,
    dilation: int = 1,
    groups: int = 1,
) -> Tensor:
    """1-D cross-correlation, as torch.nn.functional.conv1d. x (N, C, L), weight (O, C/groups, k),
    bias (O,) -> (N, O, Lo). padding: int, 'valid' or 'same' (stride 1 only)."""
    x, weight = _tensor(x), _tensor(weight)
    if weight.ndim != 3:
        raise ValueError(
            f"conv1d: the weight must have shape (out_channels, in_channels/groups, k), got "
            f"{weight.shape}"
        )
    # As a convolution over a unit height: the checks and 'same' are conv2d's.
    _, stride = conv_ops.pair((1, stride), "stride", "conv1d")
    _, dilation = conv_ops.pair((1, dilation), "dilation", "conv1d")
    padding = padding if isinstance(padding, str) else (0, padding)
    kernel = (1, weight.shape[2])
    _, pads = conv_ops.conv_padding(padding, kernel, (1, stride), (1, dilation), "conv1d")
    return _convolution(ops.conv1d, x, weight, bias, stride, pads, dilation, groups)


def _convolution(op, x, weight, bias, stride, padding, dilation, groups):
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op.__name__}: groups must be a positive int, got {groups!r}")
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups))
    if bias is None:
        needs = (x.requires_grad, weight.requires_grad, False)
        return apply(op, x, weight, needs=needs, **options)
    bias = _tensor(bias)
    needs = (x.requires_grad, weight.requires_grad, bias.requires_grad)
    return apply(op, x, weight, bias, needs=needs, **options)


def _pool_arguments(name, kernel_size, stride, padding):
    kernel = conv_ops.pair(kernel_size, "kernel_size", name)
    stride = kernel if stride is None else conv_ops.pair(stride, "stride", name)
    return kernel, stride, conv_ops.pair(padding, "padding", name, minimum=0)


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """The maximum of each window, as torch.nn.functional.max_pool2d (stride defaults to the
    kernel size; padding at most half the kernel). (N, C, H, W) -> (N, C, Ho, Wo)."""
    kernel, stride, padding = _pool_arguments("max_pool2d", kernel_size, stride, padding)
    return apply(ops.max_pool2d, _tensor(x), kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    count_include_pad: bool = True,
) -> Tensor:
    """The mean of each window of the zero-padded input, as torch.nn.functional.avg_pool2d
    (count_include_pad: divide by kh·kw even where the window covers padding)."""
    kernel, stride, padding = _pool_arguments("avg_pool2d", kernel_size, stride, padding)
    return apply(
        ops.avg_pool2d,
        _tensor(x),
        kernel=kernel,
        stride=stride,
        padding=padding,
        count_include_pad=bool(count_include_pad),
    )


def adaptive_avg_pool2d(x: Any, output_size: Any = 1) -> Tensor:
    """Average pooling to a fixed (oh, ow) grid whatever the input size, as PyTorch's;
    output_size 1 is global average pooling: (N, C, H, W) -> (N, C, 1, 1)."""
    size = conv_ops.pair(output_size, "output_size", "adaptive_avg_pool2d")
    return apply(ops.adaptive_avg_pool2d, _tensor(x), output_size=size)


def dropout2d(x: Any, p: float = 0.5, training: bool = True, rng: Any = None) -> Tensor:
    """Zero whole channels with probability p (one draw per sample and channel) and scale the rest
    by 1/(1−p). x (N, C, H, W); `rng` as in `dropout`."""
    x = _tensor(x)
    if not 0 <= p < 1:
        raise ValueError(f"dropout2d probability must be in [0, 1), got {p}")
    if x.ndim != 4:
        raise ValueError(
            f"dropout2d expects input of shape (batch, channels, height, width), got {x.shape}"
        )
    if not training or p == 0:
        return x
    return x * Tensor(_keep_mask((*x.shape[:2], 1, 1), p, x.dtype, rng))


def batch_norm(
    x: Any,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel (axis 1) of x (N, C, ...), as torch.nn.functional.batch_norm.

    Training normalises by the batch's mean and biased variance over every other axis and, given
    running estimates, updates them in place: r ← (1 − momentum)·r + momentum·batch (the variance
    unbiased). Otherwise the running estimates normalise. weight and bias (C,) scale and shift.
    """
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (batch, channels, ...), got {x.shape}")
    if training:
        axes = (0, *range(2, x.ndim))
        count = x.size // x.shape[1]
        if count < 2:
            raise ValueError(
                f"batch_norm needs more than one value per channel while training, got input of "
                f"shape {x.shape}"
            )

        def update_running(x: np.ndarray) -> None:
            if running_mean is not None:
                running_mean[...] = (1 - momentum) * running_mean + momentum * x.mean(axis=axes)
            if running_var is not None:  # the variance unbiased
                running_var[...] = (1 - momentum) * running_var + momentum * x.var(
                    axis=axes
                ) * count / (count - 1)

        update_running(x.data)
        if tracing.active is not None:  # a side effect outside the graph: replayed too
            tracing.active.effect(update_running, (x.data,))
        options = dict(eps=eps, training=True)  # the op takes the batch's statistics itself
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        # Updated in place while training, so a replay reads their values at the time.
        options = dict(mean=running_mean, var=running_var, eps=eps, training=False)
    if weight is None:
        return apply(ops.batch_norm, x, **options)
    return apply(ops.batch_norm, x, _tensor(weight), _tensor(bias), **options)
