"""The architecture of a model as JSON, and back: the fixed registry of layer types a model file
may name, with a check for every constructor argument.

No name read from a file is ever imported, looked up with getattr, or evaluated: a type is either in
`LAYER_TYPES` or refused. `chainrule.io` uses this to write and read model files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainrule import nn
from chainrule.validation import check_int, check_number

MAX_SIZE = 2**31 - 1
MAX_DEPTH = 32  # nested Sequentials
MAX_LAYERS = 100_000


class ArchitectureError(ValueError):
    """An architecture defect; chainrule.io names the file (ModelFileError) on load."""


# ---- argument checks: each returns the normalised value or raises ArchitectureError ----------
def _size(value: Any) -> int:
    return check_int("", "", value, 1, MAX_SIZE, error=ArchitectureError)


def _finite(value: Any) -> float:
    return check_number("", "", value, -math.inf, math.inf, error=ArchitectureError)


def _positive(value: Any) -> float:
    return check_number("", "", value, 0.0, low_open=True, error=ArchitectureError)


def _fraction(value: Any) -> float:
    return check_number("", "", value, 0.0, 1.0, error=ArchitectureError)


def _probability(value: Any) -> float:
    return check_number("", "", value, 0.0, 1.0, high_open=True, error=ArchitectureError)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):  # JSON's true/false only: no NumPy bools come from a file
        raise ArchitectureError(f"must be true or false, got {value!r}")
    return value


def _dim(value: Any) -> int:
    return check_int("", "", value, -64, 63, error=ArchitectureError)


def _shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= 8:
        raise ArchitectureError(f"must be a list of 1 to 8 sizes, got {value!r}")
    return [_size(n) for n in value]


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise ArchitectureError(
                f"must be one of {', '.join(map(repr, options))}, got {value!r}"
            )
        return value

    return check


_dtype = _choice("float32", "float64")


def _sizes(count: int, low: int = 1) -> Callable[[Any], list[int]]:
    """A list of `count` integers from `low` (kernel sizes, strides, dilations, paddings)."""

    def check(value: Any) -> list[int]:
        if not isinstance(value, list) or len(value) != count:
            raise ArchitectureError(f"must be a list of {count} integers, got {str(value)[:80]}")
        return [check_int("", "", v, low, MAX_SIZE, error=ArchitectureError) for v in value]

    return check


def _conv_padding(count: int) -> Callable[[Any], str | list[int]]:
    """'same', 'valid', or a list of `count` integers >= 0."""
    sizes = _sizes(count, 0)

    def check(value: Any) -> str | list[int]:
        if isinstance(value, str):
            return _choice("same", "valid")(value)
        return sizes(value)

    return check


def _check_conv(a: dict) -> None:
    """What the constructor would refuse, refused before anything is built."""
    for what in ("in_channels", "out_channels"):
        if a[what] % a["groups"]:
            raise ArchitectureError(
                f"{what} ({a[what]}) must be divisible by groups ({a['groups']})"
            )
    if a["padding"] == "same" and any(s != 1 for s in a["stride"]):
        raise ArchitectureError(f"padding 'same' needs stride 1, got stride {a['stride']}")


def _check_pool(a: dict) -> None:
    if any(2 * p > k for p, k in zip(a["padding"], a["kernel_size"])):
        raise ArchitectureError(
            f"padding {a['padding']} must be at most half the kernel size {a['kernel_size']}"
        )


def _conv_tensors(a: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    weight = (a["out_channels"], a["in_channels"] // a["groups"], *a["kernel_size"])
    return [("weight", weight, True)] + (
        [("bias", (a["out_channels"],), True)] if a["bias"] else []
    )


def _conv_arguments(count: int) -> dict[str, Callable[[Any], Any]]:
    return {
        "in_channels": _size,
        "out_channels": _size,
        "kernel_size": _sizes(count),
        "stride": _sizes(count),
        "padding": _conv_padding(count),
        "dilation": _sizes(count),
        "groups": _size,
        "bias": _flag,
        "dtype": _dtype,
    }


def _describe_conv(m: Any) -> dict:
    padding = m.padding
    if not isinstance(padding, str):
        padding = list(padding) if isinstance(padding, tuple) else [padding]
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": padding,
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "dtype": m.weight.dtype.name,
    }


def _build_conv1d(a: dict) -> nn.Conv1d:
    padding = a["padding"] if isinstance(a["padding"], str) else a["padding"][0]
    return nn.Conv1d(
        a["in_channels"],
        a["out_channels"],
        a["kernel_size"][0],
        a["stride"][0],
        padding,
        a["dilation"][0],
        a["groups"],
        a["bias"],
        a["dtype"],
        rng=0,
    )


def _build_conv2d(a: dict) -> nn.Conv2d:
    padding = a["padding"] if isinstance(a["padding"], str) else tuple(a["padding"])
    return nn.Conv2d(
        a["in_channels"],
        a["out_channels"],
        tuple(a["kernel_size"]),
        tuple(a["stride"]),
        padding,
        tuple(a["dilation"]),
        a["groups"],
        a["bias"],
        a["dtype"],
        rng=0,  # as Linear: the values are overwritten
    )


def _linear_output(a: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    if not shape or shape[-1] != a["in_features"]:
        raise ArchitectureError(f"takes {a['in_features']} features, gets {shape}")
    return (*shape[:-1], a["out_features"])


def _window_output(
    shape: tuple[int, ...], kernel: list, stride: list, padding: Any, dilation: list
) -> tuple[int, ...]:
    """The spatial sizes a convolution or pooling window leaves of `shape`'s."""
    if padding == "same":
        return shape
    pads = [0] * len(shape) if padding == "valid" else padding
    sizes = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(shape, kernel, stride, pads, dilation)
    )
    if any(n < 1 for n in sizes):
        raise ArchitectureError(f"the window is larger than the padded input {shape}")
    return sizes


def _conv_output(a: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != len(a["kernel_size"]) + 1 or shape[0] != a["in_channels"]:
        raise ArchitectureError(f"takes {a['in_channels']} channels, gets {shape}")
    spatial = _window_output(shape[1:], a["kernel_size"], a["stride"], a["padding"], a["dilation"])
    return (a["out_channels"], *spatial)


def _pool_output(a: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 3:
        raise ArchitectureError(f"takes (channels, height, width), gets {shape}")
    ones = [1] * len(a["kernel_size"])
    return (shape[0], *_window_output(shape[1:], a["kernel_size"], a["stride"], a["padding"], ones))


def _pool_arguments() -> dict[str, Callable[[Any], Any]]:
    return {"kernel_size": _sizes(2), "stride": _sizes(2), "padding": _sizes(2, 0)}


def _describe_pool(m: Any) -> dict:
    return {
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": list(m.padding),
    }


# ---- the layer table ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerType:
    """How one built-in layer is described, checked, built, and which tensors it owns."""

    module: type
    arguments: dict[str, Callable[[Any], Any]]
    build: Callable[[dict], nn.Module]
    describe: Callable[[Any], dict]
    # (name, shape, is_parameter) of the layer's state_dict entries, from its arguments alone
    tensors: Callable[[dict], list[tuple[str, tuple[int, ...], bool]]] = lambda a: []
    # a check across arguments (the constructor's own refusals), raising ArchitectureError
    check: Callable[[dict], None] = lambda a: None
    # the shape (without the batch) it makes of an input's shape, or ArchitectureError if the
    # input does not fit; by default the shape it was given (activations, norms, dropout)
    output: Callable[[dict, tuple[int, ...]], tuple[int, ...]] = lambda a, shape: shape


def _no_arguments(module: type) -> LayerType:
    return LayerType(module, {}, lambda a: module(), lambda m: {})


def _affine(shape: tuple[int, ...], present: bool) -> list[tuple[str, tuple[int, ...], bool]]:
    return [("weight", shape, True), ("bias", shape, True)] if present else []


def _layer_norm_dtype(m: nn.LayerNorm) -> str:
    # Without affine parameters the dtype lives only in LayerNorm's private _dtype.
    return np.dtype(m.weight.dtype if m.weight is not None else m._dtype).name


LAYER_TYPES: dict[str, LayerType] = {
    "Linear": LayerType(
        nn.Linear,
        {"in_features": _size, "out_features": _size, "bias": _flag, "dtype": _dtype},
        # rng=0: the values are overwritten, and the user's default generator stays untouched.
        lambda a: nn.Linear(a["in_features"], a["out_features"], a["bias"], a["dtype"], rng=0),
        lambda m: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
            "dtype": m.weight.dtype.name,
        },
        lambda a: (
            [("weight", (a["out_features"], a["in_features"]), True)]
            + ([("bias", (a["out_features"],), True)] if a["bias"] else [])
        ),
        output=lambda a, shape: _linear_output(a, shape),
    ),
    "Sigmoid": _no_arguments(nn.Sigmoid),
    "Tanh": _no_arguments(nn.Tanh),
    "ReLU": _no_arguments(nn.ReLU),
    "Softplus": _no_arguments(nn.Softplus),
    "Identity": _no_arguments(nn.Identity),
    "Flatten": LayerType(
        nn.Flatten, {}, lambda a: nn.Flatten(), lambda m: {}, output=lambda a, s: (math.prod(s),)
    ),
    "LeakyReLU": LayerType(
        nn.LeakyReLU,
        {"negative_slope": _finite},
        lambda a: nn.LeakyReLU(a["negative_slope"]),
        lambda m: {"negative_slope": m.negative_slope},
    ),
    "GELU": LayerType(
        nn.GELU,
        {"approximate": _choice("none", "tanh")},
        lambda a: nn.GELU(a["approximate"]),
        lambda m: {"approximate": m.approximate},
    ),
    "Softmax": LayerType(
        nn.Softmax, {"dim": _dim}, lambda a: nn.Softmax(a["dim"]), lambda m: {"dim": m.dim}
    ),
    "Dropout": LayerType(
        nn.Dropout, {"p": _probability}, lambda a: nn.Dropout(a["p"]), lambda m: {"p": m.p}
    ),
    "BatchNorm1d": LayerType(
        nn.BatchNorm1d,
        {
            "num_features": _size,
            "eps": _positive,
            "momentum": _fraction,
            "affine": _flag,
            "dtype": _dtype,
        },
        lambda a: nn.BatchNorm1d(
            a["num_features"], a["eps"], a["momentum"], a["affine"], a["dtype"]
        ),
        lambda m: {
            "num_features": m.num_features,
            "eps": m.eps,
            "momentum": m.momentum,
            "affine": m.weight is not None,
            "dtype": np.asarray(m.running_mean).dtype.name,
        },
        lambda a: (
            _affine((a["num_features"],), a["affine"])
            + [
                ("running_mean", (a["num_features"],), False),
                ("running_var", (a["num_features"],), False),
            ]
        ),
    ),
    "LayerNorm": LayerType(
        nn.LayerNorm,
        {
            "normalized_shape": _shape,
            "eps": _positive,
            "elementwise_affine": _flag,
            "dtype": _dtype,
        },
        lambda a: nn.LayerNorm(
            tuple(a["normalized_shape"]), a["eps"], a["elementwise_affine"], a["dtype"]
        ),
        lambda m: {
            "normalized_shape": list(m.normalized_shape),
            "eps": m.eps,
            "elementwise_affine": m.weight is not None,
            "dtype": _layer_norm_dtype(m),
        },
        lambda a: _affine(tuple(a["normalized_shape"]), a["elementwise_affine"]),
    ),
}


def _batch_norm_tensors(a: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    return _affine((a["num_features"],), a["affine"]) + [
        ("running_mean", (a["num_features"],), False),
        ("running_var", (a["num_features"],), False),
    ]


LAYER_TYPES.update(
    {
        "Conv2d": LayerType(
            nn.Conv2d,
            _conv_arguments(2),
            _build_conv2d,
            _describe_conv,
            _conv_tensors,
            _check_conv,
            _conv_output,
        ),
        "Conv1d": LayerType(
            nn.Conv1d,
            _conv_arguments(1),
            _build_conv1d,
            _describe_conv,
            _conv_tensors,
            _check_conv,
            _conv_output,
        ),
        "MaxPool2d": LayerType(
            nn.MaxPool2d,
            _pool_arguments(),
            lambda a: nn.MaxPool2d(
                tuple(a["kernel_size"]), tuple(a["stride"]), tuple(a["padding"])
            ),
            _describe_pool,
            check=_check_pool,
            output=_pool_output,
        ),
        "AvgPool2d": LayerType(
            nn.AvgPool2d,
            {**_pool_arguments(), "count_include_pad": _flag},
            lambda a: nn.AvgPool2d(
                tuple(a["kernel_size"]),
                tuple(a["stride"]),
                tuple(a["padding"]),
                a["count_include_pad"],
            ),
            lambda m: {**_describe_pool(m), "count_include_pad": m.count_include_pad},
            check=_check_pool,
            output=_pool_output,
        ),
        "AdaptiveAvgPool2d": LayerType(
            nn.AdaptiveAvgPool2d,
            {"output_size": _sizes(2)},
            lambda a: nn.AdaptiveAvgPool2d(tuple(a["output_size"])),
            lambda m: {"output_size": list(m.output_size)},
            output=lambda a, shape: (shape[0], *a["output_size"]),
        ),
        "BatchNorm2d": LayerType(
            nn.BatchNorm2d,
            {
                "num_features": _size,
                "eps": _positive,
                "momentum": _fraction,
                "affine": _flag,
                "dtype": _dtype,
            },
            lambda a: nn.BatchNorm2d(
                a["num_features"], a["eps"], a["momentum"], a["affine"], a["dtype"]
            ),
            lambda m: {
                "num_features": m.num_features,
                "eps": m.eps,
                "momentum": m.momentum,
                "affine": m.weight is not None,
                "dtype": np.asarray(m.running_mean).dtype.name,
            },
            _batch_norm_tensors,
        ),
        "Dropout2d": LayerType(
            nn.Dropout2d, {"p": _probability}, lambda a: nn.Dropout2d(a["p"]), lambda m: {"p": m.p}
        ),
    }
)
_NAMES_BY_MODULE = {layer.module: name for name, layer in LAYER_TYPES.items()}
_KNOWN = ", ".join(["Sequential", *LAYER_TYPES])


def _plain(value: Any) -> Any:
    """NumPy scalars and tuples as the JSON types they stand for."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe_model(model: nn.Module) -> dict:
    """The JSON architecture of a model built from LAYER_TYPES and (nested) Sequentials.

    >>> describe_model(nn.Sequential(nn.Linear(2, 3), nn.Tanh()))["layers"][1]
    {'type': 'Tanh'}
    """
    node = _describe(model, "model")
    try:
        return parse_node(node, "model", 0, [0])
    except ArchitectureError as error:
        raise ValueError(f"cannot describe the model: {error}") from None


def _describe(module: Any, where: str) -> dict:
    if type(module) is nn.Sequential:
        return {
            "type": "Sequential",
            "layers": [_describe(m, f"{where}.{i}") for i, m in enumerate(module)],
        }
    name = _NAMES_BY_MODULE.get(type(module))
    if name is None:
        raise TypeError(
            f"cannot save {where}: {type(module).__name__} is not a built-in layer; model files "
            f"hold Sequentials of {_KNOWN} (exact types, not subclasses)"
        )
    arguments = {key: _plain(value) for key, value in LAYER_TYPES[name].describe(module).items()}
    return {"type": name, **arguments}


def parse_node(node: Any, where: str, depth: int, count: list[int]) -> dict:
    """Check one architecture node against LAYER_TYPES and return it normalised."""
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise ArchitectureError(f"more than {MAX_LAYERS} layers")
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ArchitectureError(
            f"{where} must be an object with a string 'type', got {str(node)[:80]}"
        )
    kind = node["type"]
    if kind == "Sequential":
        if depth >= MAX_DEPTH:
            raise ArchitectureError(f"{where}: Sequentials nested more than {MAX_DEPTH} deep")
        if set(node) != {"type", "layers"} or not isinstance(node["layers"], list):
            raise ArchitectureError(
                f"{where} (Sequential) must have exactly the keys 'type' and 'layers' (a list)"
            )
        layers = [
            parse_node(n, f"{where}.{i}", depth + 1, count) for i, n in enumerate(node["layers"])
        ]
        return {"type": "Sequential", "layers": layers}
    layer = LAYER_TYPES.get(kind)
    if layer is None:
        raise ArchitectureError(
            f"{where} has unknown layer type {kind[:80]!r}; known types: {_KNOWN}"
        )
    given, expected = set(node) - {"type"}, set(layer.arguments)
    if given != expected:
        raise ArchitectureError(
            f"{where} ({kind}) needs arguments {sorted(expected)}; "
            f"missing {sorted(expected - given)}, unknown {sorted(map(str, given - expected))[:10]}"
        )
    normalised: dict[str, Any] = {"type": kind}
    for name, check in layer.arguments.items():
        try:
            normalised[name] = check(node[name])
        except ArchitectureError as error:
            raise ArchitectureError(f"{where} ({kind}): {name} {error}") from None
    try:
        layer.check(normalised)
    except ArchitectureError as error:
        raise ArchitectureError(f"{where} ({kind}): {error}") from None
    return normalised


def expected_tensors(node: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str, bool]]:
    """name -> (shape, dtype, is_parameter), named as Module.state_dict() names them."""
    if node["type"] == "Sequential":
        result = {}
        for i, child in enumerate(node["layers"]):
            result.update(expected_tensors(child, f"{prefix}{i}."))
        return result
    own = LAYER_TYPES[node["type"]].tensors(node)
    return {
        f"{prefix}{name}": (shape, node["dtype"], is_parameter) for name, shape, is_parameter in own
    }


def build(node: dict) -> nn.Module:
    if node["type"] == "Sequential":
        return nn.Sequential(*(build(child) for child in node["layers"]))
    return LAYER_TYPES[node["type"]].build(node)


def leaves(node: dict, prefix: str = "") -> list[dict]:
    if node["type"] == "Sequential":
        return [
            row for i, child in enumerate(node["layers"]) for row in leaves(child, f"{prefix}{i}.")
        ]
    tensors = LAYER_TYPES[node["type"]].tensors(node)
    arguments = {key: value for key, value in node.items() if key != "type"}
    parameters = sum(math.prod(shape) for _, shape, is_parameter in tensors if is_parameter)
    return [
        {
            "name": prefix.rstrip(".") or "model",
            "type": node["type"],
            "arguments": arguments,
            "parameters": parameters,
        }
    ]


def output_shapes(node: dict, input_shape: tuple[int, ...]) -> list[tuple[int, ...] | None]:
    """Each leaf layer's output shape (without the batch) for inputs of `input_shape`, computed
    from the arguments alone (nothing is built); None from the first layer the shape does not fit.

    >>> output_shapes({"type": "Sequential", "layers": [{"type": "Flatten"}]}, (1, 8, 8))
    [(64,)]
    """
    shapes: list[tuple[int, ...] | None] = []
    shape: tuple[int, ...] | None = tuple(input_shape)
    for leaf in _leaf_nodes(node):
        if shape is not None:
            try:
                shape = tuple(LAYER_TYPES[leaf["type"]].output(leaf, shape))
            except (ArchitectureError, IndexError):
                shape = None
        shapes.append(shape)
    return shapes


def input_shape(node: dict, metadata: dict) -> tuple[int, ...] | None:
    """The shape of one input: the metadata's `input_shape`, else (in_features,) of a first
    parametrised layer that is a Linear; None when neither tells."""
    shape = metadata.get("input_shape")
    if isinstance(shape, list) and shape and all(type(n) is int and n >= 1 for n in shape):
        return tuple(shape)
    for leaf in _leaf_nodes(node):
        if leaf["type"] == "Linear":
            return (leaf["in_features"],)
        if LAYER_TYPES[leaf["type"]].tensors(leaf):
            return None
    return None


def _leaf_nodes(node: dict) -> list[dict]:
    if node["type"] == "Sequential":
        return [leaf for child in node["layers"] for leaf in _leaf_nodes(child)]
    return [node]
