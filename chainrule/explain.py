"""The chain rule with real numbers: every factor of every gradient of a small network, checked.

Why: backpropagation *is* the chain rule, ∂L/∂W = ∂L/∂a · ∂a/∂z · ∂z/∂W applied layer by layer
(the founding tutorial's derivation), and learners ask to see it with their own network's numbers
plugged in. This runs the engine's real forward and backward pass on a float64 copy of the model,
keeps every intermediate gradient (`retain_grad`) and checks each against central differences. It
derives nothing itself: the math of every layer stays in `chainrule.ops`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chainrule import nn
from chainrule.explain_text import Writer, compare, kink_at_or_after
from chainrule.gradcheck import central_differences
from chainrule.registry import LOSSES, activation_for
from chainrule.tensor import Tensor, no_grad
from chainrule.validation import check_choice, check_number

# Losses and activations come from chainrule.registry: each loss averages over the samples,
# L = (1/N)·Σ_n L_n, so sample n's own gradient ∂L_n/∂· is N times its row of ∂L/∂·.
_FD_LIMIT = 5000  # above this many numbers, difference only the chosen weights (2 passes each)


@dataclass(repr=False)
class Layer:
    """A layer in the tutorial's sense: z = a_prev·Wᵀ + b, then a = f(z) (f = Identity if absent).

    Arrays are (batch, units) and gradients are of the batch loss L. `da_dz` is elementwise, or
    (batch, k, j) = ∂a_k/∂z_j for Softmax. `kink` marks ReLU inputs too near 0 for differences.
    """

    index: int  # l in the tutorial's z^[l]
    name: str  # the Linear's name in the Sequential, e.g. '0' (parameters '0.weight', '0.bias')
    activation: str  # the class name of f
    a_prev: np.ndarray
    z: np.ndarray
    a: np.ndarray
    dL_da: np.ndarray
    da_dz: np.ndarray
    dL_dz: np.ndarray
    numeric_dL_da: np.ndarray
    numeric_dL_dz: np.ndarray
    kink: np.ndarray


@dataclass(repr=False)
class Chain:
    """One parameter element's gradient as the product the chain rule makes, sample by sample.

    Factors are per sample, of the sample's own loss L_n, and `value` = mean over n of `terms`.
    For a Softmax layer `dL_da` and `da_dz` are None: ∂L/∂z_j is a sum over outputs, not a product.
    """

    parameter: str  # '0.weight'
    index: tuple[int, ...]  # (j, i) for a weight, (j,) for a bias
    layer: str
    dL_da: np.ndarray | None
    da_dz: np.ndarray | None
    dL_dz: np.ndarray
    dz_dw: np.ndarray  # a_prev[:, i] for a weight, ones for a bias
    terms: np.ndarray  # ∂L_n/∂w
    value: float
    numeric: float
    status: str  # 'agrees' | 'mismatch' | 'kink' | 'tiny' | 'unchecked'
    relative_error: float
    # Hidden layers, sample 0: the pairs (∂L_0/∂z^[l+1]_k, W^[l+1]_kj) that sum to ∂L_0/∂a_j.
    backprop: list[tuple[float, float]] | None


@dataclass(repr=False)
class ConvSum:
    """One convolution weight's gradient as the sum over every position its window touched.

    ∂L/∂W[o,c,i,j] = Σ_n Σ_(y,x) ∂L/∂z[n,o,y,x] · a_prev[n,c',y·s+i·d−p, x·s+j·d−p], where c' is
    the input channel the weight reads (c in its group) and a_prev is 0 in the padding. Arrays
    are (batch, positions); `terms` holds each sample's sum over its positions.
    """

    parameter: str  # '0.weight'
    index: tuple[int, ...]  # (o, c, i, j) for Conv2d, (o, c, i) for Conv1d
    layer: str  # the convolution's name in the Sequential
    description: str  # its repr
    channel: int  # c': the input channel it reads
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[int, ...]  # p: padding before the first element, per axis
    positions: np.ndarray  # (P, axes) output positions (y, x)
    sources: np.ndarray  # (P, axes) the input positions read there (outside: the padding)
    inside: np.ndarray  # (P,) whether the source is inside the input
    dL_dz: np.ndarray  # (batch, P) ∂L/∂z[n,o,y,x], of the batch loss
    a_prev: np.ndarray  # (batch, P) a_prev at the source, 0 in the padding
    terms: np.ndarray  # (batch,) Σ_(y,x) ∂L/∂z · a_prev, per sample
    value: float  # the engine's ∂L/∂W[o,c,i,j]
    numeric: float
    status: str
    relative_error: float


@dataclass(repr=False)
class Explanation:
    """Everything one forward and backward pass computed; `str()` walks it back from the loss."""

    model: str
    loss_name: str
    x: np.ndarray
    y: np.ndarray
    loss: float
    sample_losses: np.ndarray
    lr: float
    eps: float
    layers: dict[str, Layer]  # by the Linear's name
    parameters: dict[str, np.ndarray]  # by model.named_parameters() names, before the step
    grad: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]  # central differences (NaN where not computed)
    updated: dict[str, np.ndarray]  # after one step θ ← θ − lr·∂L/∂θ
    chains: list[Chain]
    # A CNN: the layers up to its Flatten (their output is a^[0] of the dense head), and the
    # convolution weights written out as sums over positions
    features: str | None = None
    convolutions: list[ConvSum] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Explanation({self.model}, loss={self.loss_name} {self.loss:.6g})"

    def __str__(self) -> str:
        return self.format()

    def format(self, precision: int = 4, step: bool = False) -> str:
        """The walk back from the loss, in `precision` significant digits; `step` adds the
        update."""
        return Writer(self, precision).text(step)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain lists, floats and strings (an element not differenced: None)."""
        return _plain(vars(self))


def explain(
    model: nn.Sequential,
    x: Any,
    y: Any,
    loss: str = "half_mse",
    lr: float = 0.1,
    weight: str | list[str] | None = None,
    eps: float = 1e-6,
) -> Explanation:
    """One forward and backward pass of `model` on x (features,) or (batch, features), kept whole.

    `model` is a Sequential of Linear layers, each followed by at most one activation (Sigmoid,
    Tanh, ReLU, LeakyReLU, GELU, Softplus, Softmax, Identity). `loss` is a name of
    `chainrule.registry.LOSSES`: "half_mse" (the default) is the founding tutorial's
    ½·mean((ŷ − y)²), "mse" PyTorch's mean((ŷ − y)²).
    `weight` names the elements whose chain is written out, e.g. "2.weight[0,1]" (default: W[0,0]
    of every Linear). It all runs in float64 on a copy: the model and its .grad never change.

    A CNN — convolutions, pooling, BatchNorm2d and activations, a Flatten, then the dense layers
    above — takes x (batch, channels, height, width): the walk goes through the dense head with
    the flattened features as a^[0], and a convolution weight ("0.weight[0,0,1,1]"; default: the
    first convolution's W[0,0,0,0]) is written as the sum over the positions its window touched.

    >>> net = nn.Sequential(nn.Linear(2, 1, rng=0), nn.Sigmoid())
    >>> print(explain(net, [1.0, 1.0], [0.0]))  # doctest: +SKIP
    >>> print(explain(net, [1.0, 1.0], [0.0]).format(precision=6, step=True))  # doctest: +SKIP
    """
    check_choice("explain", "loss", loss, LOSSES)
    for label, value in (("lr", lr), ("eps", eps)):
        check_number("explain", label, value, low=0.0, low_open=True)
    head = _head_start(model)
    stages = _stages(model, head)
    model64 = copy.deepcopy(model).double()
    model64.zero_grad()  # a copied .grad would be added to
    loss_fn = LOSSES[loss].function
    x = _inputs(x, model64.layers[0]) if head == 0 else _images(x, model64)
    h, outputs = Tensor(x), []
    for module in model64.layers:
        h = module(h)
        h.retain_grad()
        outputs.append(h)
    y = _targets(y, h.data, loss)
    total = loss_fn(h, y)
    total.backward()
    named = dict(model64.named_parameters())
    params = {name: p.data.copy() for name, p in named.items()}
    grad = {name: p.grad.copy() for name, p in named.items()}
    chosen = _parse_weights(weight, params, stages, _convolutions(model64, head))
    with no_grad():
        sample_losses = np.array([loss_fn(h[[n]], y[[n]]).item() for n in range(len(x))])

    def loss_after(start: int, value: np.ndarray) -> Callable[[], float]:
        return lambda: loss_fn(model64[start:](Tensor(value)), y).item()

    count = sum(v.size for v in params.values()) + 2 * sum(o.data.size for o in outputs)
    everything = count <= _FD_LIMIT
    numeric = {}
    for name, p in named.items():
        only = [np.ravel_multi_index(i, p.shape) for n, i in chosen if n == name]
        numeric[name] = central_differences(
            loss_after(0, x), p.data, eps, None if everything else only
        )

    def intermediate(module: int) -> np.ndarray:
        value = outputs[module].data.copy()  # nudged in place and fed to the layers after it
        return central_differences(
            loss_after(module + 1, value), value, eps, None if everything else []
        )

    layers: dict[str, Layer] = {}
    a_prev = x if head == 0 else outputs[head - 1].data
    for index, (first, last) in enumerate(stages, start=1):
        z, a = outputs[first], outputs[last]
        f = model64.layers[last] if last > first else nn.Identity()
        numeric_dL_dz = intermediate(first)
        layers[str(first)] = Layer(
            index=index,
            name=str(first),
            activation=type(f).__name__,
            a_prev=a_prev,
            z=z.data,
            a=a.data,
            dL_da=a.grad,
            da_dz=_local_derivative(f, z.data),
            dL_dz=z.grad,
            numeric_dL_da=intermediate(last) if last > first else numeric_dL_dz,
            numeric_dL_dz=numeric_dL_dz,
            kink=_kinks(f, z.data, a_prev, eps),
        )
        a_prev = a.data
    return Explanation(
        model=_describe(model),
        loss_name=loss,
        x=x,
        y=y,
        loss=total.item(),
        sample_losses=sample_losses,
        lr=float(lr),
        eps=float(eps),
        layers=layers,
        parameters=params,
        grad=grad,
        numeric=numeric,
        updated={name: params[name] - lr * grad[name] for name in params},
        chains=[
            _chain(name, i, layers, params, grad, numeric, total.item(), eps)
            for name, i in chosen
            if name.rsplit(".", 1)[0] in layers
        ],
        features=_describe(model64[:head]) if head else None,
        convolutions=[
            _conv_sum(name, i, model64, x, outputs, grad, numeric, total.item(), eps)
            for name, i in chosen
            if name.rsplit(".", 1)[0] not in layers
        ],
    )


# ---- checking the model and the data ------------------------------------------------------
# What may come before a CNN's Flatten: the layers whose gradients flow through the features.
_FEATURE_LAYERS = (
    nn.Conv2d,
    nn.Conv1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm2d,
    nn.Dropout2d,
    nn.Dropout,
)


def _head_start(model: Any) -> int:
    """Where the dense head starts: after the last Flatten of a model with convolutions, else 0."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"explain needs a chainrule.nn.Sequential, got {type(model).__name__}")
    flattens = [i for i, m in enumerate(model.layers) if isinstance(m, nn.Flatten)]
    if not flattens or not any(isinstance(m, _FEATURE_LAYERS) for m in model.layers):
        return 0
    head = flattens[-1] + 1
    for i, module in enumerate(model.layers[: head - 1]):
        if not isinstance(module, (*_FEATURE_LAYERS, nn.Flatten)) and not activation_for(module):
            raise ValueError(
                f"explain: layer {i} is {type(module).__name__}; before a CNN's Flatten explain "
                "takes convolutions, pooling, BatchNorm2d, dropout and activations"
            )
    return head


def _convolutions(model: nn.Sequential, head: int) -> list[int]:
    return [i for i, m in enumerate(model.layers[:head]) if isinstance(m, (nn.Conv2d, nn.Conv1d))]


def _stages(model: Any, head: int = 0) -> list[tuple[int, int]]:
    """(index of each Linear, index of the module whose output is its a) in the Sequential."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"explain needs a chainrule.nn.Sequential, got {type(model).__name__}")
    supported = ", ".join(
        [
            "Linear",
            "Sigmoid",
            "Tanh",
            "ReLU",
            "LeakyReLU",
            "GELU",
            "Softplus",
            "Softmax",
            "Identity",
        ]
    )
    stages: list[tuple[int, int]] = []
    for i, module in enumerate(model.layers):
        if i < head:
            continue
        kind = type(module).__name__
        if isinstance(module, nn.Linear):
            stages.append((i, i))
        elif activation_for(module) is None:
            raise ValueError(f"explain: layer {i} is {kind}; supported: {supported}")
        elif not stages or stages[-1][1] != stages[-1][0]:
            raise ValueError(
                f"explain: layer {i} ({kind}) does not follow a Linear; each Linear may be "
                "followed by at most one activation"
            )
        elif isinstance(module, nn.Softmax) and module.dim not in (-1, 1):
            raise ValueError(f"explain: layer {i} is Softmax(dim={module.dim}); use dim=-1")
        else:
            stages[-1] = (stages[-1][0], i)
    if not stages:
        raise ValueError("explain: the model has no Linear layer")
    return stages


def _inputs(x: Any, first: nn.Linear) -> np.ndarray:
    try:
        x = np.array(x.data if isinstance(x, Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"explain: the input must be numbers, got {type(x).__name__}") from None
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != first.in_features or len(x) == 0:
        raise ValueError(
            f"explain: the model's first Linear takes {first.in_features} features, so x must have "
            f"shape ({first.in_features},) or (batch, {first.in_features}); got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("explain: the input contains NaN or infinity")
    return x


def _images(x: Any, model: nn.Sequential) -> np.ndarray:
    """x as (batch, channels, ...) for a CNN: one image gets a batch axis; the layers check the
    shape and name themselves when it does not fit."""
    try:
        x = np.array(x.data if isinstance(x, Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"explain: the input must be numbers, got {type(x).__name__}") from None
    first = model.layers[0]
    axes = len(first.kernel_size) if isinstance(first, (nn.Conv2d, nn.Conv1d)) else 2
    x = x[None] if x.ndim == axes + 1 else x
    if x.ndim != axes + 2 or len(x) == 0:
        spatial = "height, width" if axes == 2 else "length"
        raise ValueError(
            f"explain: the model takes images (batch, channels, {spatial}), got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("explain: the input contains NaN or infinity")
    return x


def _targets(y: Any, output: np.ndarray, loss: str) -> np.ndarray:
    y = np.asarray(y.data if isinstance(y, Tensor) else y)
    if loss == "cross_entropy" and y.dtype.kind in "iu" and y.size == len(output):
        return y.reshape(len(output))  # class indices
    if y.dtype.kind not in "fiub" or y.size != output.size:
        raise ValueError(
            f"explain: the model gives {output.shape[1]} output(s) per sample ({output.shape} for "
            f"this batch) but the target is {y.dtype} of shape {y.shape}"
        )
    if not np.isfinite(y).all():
        raise ValueError("explain: the target contains NaN or infinity")
    return y.astype(np.float64).reshape(output.shape)


def _parse_weights(
    weight: Any, params: dict, stages: list, convolutions: list[int] = ()
) -> list[tuple[str, tuple[int, ...]]]:
    if weight is None:
        chosen = [(f"{first}.weight", (0, 0)) for first, _ in stages]
        conv = [(f"{i}.weight", (0,) * params[f"{i}.weight"].ndim) for i in convolutions[:1]]
        return conv + chosen
    layers = {str(first) for first, _ in stages} | {str(i) for i in convolutions}
    chosen = []
    for spec in [weight] if isinstance(weight, str) else list(weight):
        match = re.fullmatch(r"\s*([\w.]+?)\s*(?:\[\s*(\d+(?:\s*,\s*\d+)*)\s*\])?\s*", str(spec))
        name = match.group(1) if match else spec
        if name not in params:
            raise KeyError(f"explain: no parameter {spec!r}; the model has {', '.join(params)}")
        if name.rsplit(".", 1)[0] not in layers:
            raise ValueError(
                f"explain: {spec!r} is not a weight of a Linear or a convolution; explain writes "
                "out those"
            )
        shape = params[name].shape
        index = tuple(int(i) for i in match.group(2).split(",")) if match.group(2) else None
        index = (0,) * len(shape) if index is None else index
        if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape)):
            raise ValueError(f"explain: {spec!r} is not an element of {name} (shape {shape})")
        chosen.append((name, index))
    return chosen


def _describe(model: nn.Sequential) -> str:
    linear = "Linear({0.in_features}, {0.out_features})".format
    conv = "{0}({1.in_channels}, {1.out_channels}, {2})".format
    parts = []
    for m in model.layers:
        if isinstance(m, nn.Linear):
            parts.append(linear(m))
        elif isinstance(m, (nn.Conv2d, nn.Conv1d)):
            parts.append(conv(type(m).__name__, m, "×".join(map(str, m.kernel_size))))
        else:
            parts.append(type(m).__name__)
    return f"Sequential({', '.join(parts)})"


# ---- the numbers ----------------------------------------------------------------------------
def _local_derivative(f: nn.Module, z: np.ndarray) -> np.ndarray:
    """∂a/∂z from the engine's own backward of f: elementwise, or (batch, k, j) for Softmax."""
    if not isinstance(f, nn.Softmax):
        return _pullback(f, z, np.ones_like(z))
    return np.stack([_pullback(f, z, np.eye(z.shape[1])[k] + 0 * z) for k in range(z.shape[1])], 1)


def _pullback(f: nn.Module, z: np.ndarray, seed: np.ndarray) -> np.ndarray:
    leaf = Tensor(z.copy(), requires_grad=True)
    f(leaf).backward(seed)
    return leaf.grad


def _kinks(f: nn.Module, z: np.ndarray, a_prev: np.ndarray, eps: float) -> np.ndarray:
    # Nudging one weight or bias of this layer by eps moves z by up to eps·max(1, |a_prev_i|).
    entry = activation_for(f)
    if entry is None or not entry[1].kinked:
        return np.zeros(z.shape, dtype=bool)
    return np.abs(z) <= eps * (1 + np.abs(a_prev).sum(axis=1, keepdims=True))


def _chain(name, element, layers, params, grad, numeric, loss, eps) -> Chain:
    layer_name, kind = name.rsplit(".", 1)
    layer, j = layers[layer_name], element[0]
    n = len(layer.z)
    dz_dw = layer.a_prev[:, element[1]] if kind == "weight" else np.ones(n)
    softmax = layer.da_dz.ndim == 3
    dL_da = None if softmax else n * layer.dL_da[:, j]
    da_dz = None if softmax else layer.da_dz[:, j]
    terms = n * layer.dL_dz[:, j] * dz_dw if softmax else dL_da * da_dz * dz_dw
    after = [other for other in layers.values() if other.index == layer.index + 1]
    backprop = None
    if after:
        W = params[f"{after[0].name}.weight"]
        backprop = [(float(n * after[0].dL_dz[0, k]), float(W[k, j])) for k in range(len(W))]
    status, relative = compare(grad[name][element], numeric[name][element], loss, eps)
    status = "kink" if kink_at_or_after(layers, layer.index) else status
    return Chain(
        parameter=name,
        index=element,
        layer=layer_name,
        dL_da=dL_da,
        da_dz=da_dz,
        dL_dz=n * layer.dL_dz[:, j],
        dz_dw=dz_dw,
        terms=terms,
        value=float(grad[name][element]),
        numeric=float(numeric[name][element]),
        status=status,
        relative_error=relative,
        backprop=backprop,
    )


def _conv_sum(name, element, model, x, outputs, grad, numeric, loss, eps) -> ConvSum:
    """The sum over positions for one convolution weight, from the engine's ∂L/∂z and a_prev."""
    k = int(name.rsplit(".", 1)[0])
    conv = model.layers[k]
    a_prev = x if k == 0 else outputs[k - 1].data
    dz = outputs[k].grad
    o, c, offsets = element[0], element[1], np.array(element[2:])
    channel = (o // (conv.out_channels // conv.groups)) * (conv.in_channels // conv.groups) + c
    stride, dilation = np.array(conv.stride), np.array(conv.dilation)
    kernel = np.array(conv.kernel_size)
    if conv.padding == "valid":
        pad = np.zeros_like(kernel)
    elif conv.padding == "same":  # as the op: d·(k−1) in all, the odd one after
        pad = dilation * (kernel - 1) // 2
    else:
        pad = np.broadcast_to(np.array(conv.padding), kernel.shape)
    positions = np.array(list(np.ndindex(*dz.shape[2:])))
    sources = positions * stride + offsets * dilation - pad
    size = np.array(a_prev.shape[2:])
    inside = ((sources >= 0) & (sources < size)).all(axis=1)
    read = np.zeros((len(a_prev), len(positions)))
    read[:, inside] = a_prev[(slice(None), channel, *sources[inside].T)]
    dL_dz = dz[(slice(None), o, *positions.T)]
    status, relative = compare(grad[name][element], numeric[name][element], loss, eps)
    return ConvSum(
        parameter=name,
        index=tuple(element),
        layer=str(k),
        description=repr(conv),
        channel=int(channel),
        stride=tuple(int(v) for v in stride),
        dilation=tuple(int(v) for v in dilation),
        pad=tuple(int(v) for v in pad),
        positions=positions,
        sources=sources,
        inside=inside,
        dL_dz=dL_dz,
        a_prev=read,
        terms=(dL_dz * read).sum(axis=1),
        value=float(grad[name][element]),
        numeric=float(numeric[name][element]),
        status=status,
        relative_error=relative,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (Layer, Chain, ConvSum)):
        return _plain(vars(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return int(value) if isinstance(value, (int, np.integer)) else value
