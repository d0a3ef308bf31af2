"""ONNX export: one function per layer type (the EXPORTERS table) writing its nodes with the
`onnx` package's helpers, and `export`, which checks the file and writes it atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chainrule import nn
from chainrule.atomic import atomic_write
from chainrule.io import json_metadata
from chainrule.tensor import Tensor, no_grad
from chainrule.version import __version__

MIN_EXPORT_OPSET = 17  # LayerNormalization
MAX_OPSET = onnx.defs.onnx_opset_version()  # newer opsets may change what an operation means
MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit; larger models need external data, refused
METADATA_KEY = "chainrule.metadata"  # metadata_props entry: the JSON metadata of a model file
ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class _Graph:
    """The graph being written: its nodes and initializers, and the tensor the chain has reached."""

    def __init__(self, dtype: np.dtype, opset: int, input_name: str) -> None:
        self.dtype = dtype
        self.opset = opset
        self.x = input_name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: Any, dtype: Any = None) -> str:
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(numpy_helper.from_array(array.copy(order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], where: str, **attributes: Any) -> str:
        """Append `op` and return its output's name (the chain moves on only through `apply`)."""
        name = f"/{where}/{op}_{len(self.nodes)}" if where else f"/{op}_{len(self.nodes)}"
        output = f"{name}_output"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def apply(self, op: str, inputs: list[str], where: str, **attributes: Any) -> None:
        self.x = self.node(op, inputs, where, **attributes)


def _name(where: str, leaf: str) -> str:
    return f"{where}.{leaf}" if where else leaf


Exporter = Callable[[Any, _Graph, str], None]


def _single(op: str) -> Exporter:
    def export_layer(layer: Any, graph: _Graph, where: str) -> None:
        graph.apply(op, [graph.x], where)

    return export_layer


def _export_linear(layer: nn.Linear, graph: _Graph, where: str) -> None:
    inputs = [graph.x, graph.constant(_name(where, "weight"), layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(_name(where, "bias"), layer.bias.data))
    graph.apply("Gemm", inputs, where, transB=1)


def _export_leaky_relu(layer: nn.LeakyReLU, graph: _Graph, where: str) -> None:
    slope = layer.negative_slope
    if graph.dtype == np.float32 or float(np.float32(slope)) == slope:
        graph.apply("LeakyRelu", [graph.x], where, alpha=slope)
    else:
        # LeakyRelu's alpha is a float32 attribute; a float64 slope such as 0.01 would be off by
        # 2e-10 of x. PRelu takes its slope as a tensor, so the float64 slope stays exact.
        slope_name = graph.constant(_name(where, "negative_slope"), [slope])
        graph.apply("PRelu", [graph.x, slope_name], where)


SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _export_gelu(layer: nn.GELU, graph: _Graph, where: str) -> None:
    if graph.opset >= 20:
        graph.apply("Gelu", [graph.x], where, approximate=layer.approximate)
        return
    # NOTE: opsets 17 to 19 have no Gelu; compose it in the order chainrule computes it, so the
    # graph rounds as the model does (and `load` recognises exactly these nodes as one GELU).
    x = graph.x
    one = graph.constant(_name(where, "one"), 1.0)
    half = graph.constant(_name(where, "half"), 0.5)
    if layer.approximate == "none":  # z · 0.5·(1 + erf(z/√2))
        scaled = graph.node("Div", [x, graph.constant(_name(where, "sqrt_2"), SQRT_2)], where)
        cdf = graph.node(
            "Mul",
            [graph.node("Add", [graph.node("Erf", [scaled], where), one], where), half],
            where,
        )
        graph.apply("Mul", [x, cdf], where)
        return
    # 0.5·z · (1 + tanh(√(2/π)·(z + 0.044715·z³)))
    cube = graph.node("Pow", [x, graph.constant(_name(where, "three"), 3.0)], where)
    inner = graph.node("Mul", [cube, graph.constant(_name(where, "coefficient"), 0.044715)], where)
    inner = graph.node("Add", [x, inner], where)
    inner = graph.node(
        "Mul", [inner, graph.constant(_name(where, "sqrt_2_over_pi"), SQRT_2_OVER_PI)], where
    )
    t = graph.node("Add", [graph.node("Tanh", [inner], where), one], where)
    graph.apply("Mul", [graph.node("Mul", [x, half], where), t], where)


def _export_softmax(layer: nn.Softmax, graph: _Graph, where: str) -> None:
    graph.apply("Softmax", [graph.x], where, axis=layer.dim)


def _export_flatten(layer: nn.Flatten, graph: _Graph, where: str) -> None:
    graph.apply("Flatten", [graph.x], where, axis=1)


def _export_dropout(layer: nn.Dropout, graph: _Graph, where: str) -> None:
    # An identity at inference; the node keeps p, so a loaded model trains with the same dropout.
    ratio = graph.constant(_name(where, "p"), layer.p, np.float64)
    graph.apply("Dropout", [graph.x, ratio], where)


def _affine_inputs(layer: Any, graph: _Graph, where: str, shape: tuple[int, ...]) -> list[str]:
    if layer.weight is not None:
        return [
            graph.constant(_name(where, "weight"), layer.weight.data),
            graph.constant(_name(where, "bias"), layer.bias.data),
        ]
    # ONNX requires a scale (and BatchNormalization a shift): the identity ones. `load` reads
    # them back as affine parameters holding 1 and 0, the same function.
    return [
        graph.constant(_name(where, "unit_scale"), np.ones(shape)),
        graph.constant(_name(where, "zero_shift"), np.zeros(shape)),
    ]


def _export_batch_norm(layer: nn.BatchNorm1d, graph: _Graph, where: str) -> None:
    inputs = [graph.x, *_affine_inputs(layer, graph, where, (layer.num_features,))]
    inputs.append(graph.constant(_name(where, "running_mean"), layer.running_mean))
    inputs.append(graph.constant(_name(where, "running_var"), layer.running_var))
    # ONNX's momentum weighs the running value, PyTorch's (and ours) the batch value.
    graph.apply(
        "BatchNormalization", inputs, where, epsilon=layer.eps, momentum=1.0 - layer.momentum
    )


def _export_layer_norm(layer: nn.LayerNorm, graph: _Graph, where: str) -> None:
    inputs = [graph.x, *_affine_inputs(layer, graph, where, layer.normalized_shape)]
    # stash_type is the precision of the mean and variance: the model's own.
    stash = ELEMENT_TYPES[graph.dtype]
    axis = -len(layer.normalized_shape)
    graph.apply("LayerNormalization", inputs, where, axis=axis, epsilon=layer.eps, stash_type=stash)


def _export_sequential(layer: nn.Sequential, graph: _Graph, where: str) -> None:
    for i, child in enumerate(layer):
        _export_module(child, graph, _name(where, str(i)))


# One function per layer type, keyed by the exact type; conv layers slot in here.
EXPORTERS: dict[type, Exporter] = {
    nn.Sequential: _export_sequential,
    nn.Linear: _export_linear,
    nn.Sigmoid: _single("Sigmoid"),
    nn.Tanh: _single("Tanh"),
    nn.ReLU: _single("Relu"),
    nn.Softplus: _single("Softplus"),
    nn.Identity: _single("Identity"),
    nn.LeakyReLU: _export_leaky_relu,
    nn.GELU: _export_gelu,
    nn.Softmax: _export_softmax,
    nn.Flatten: _export_flatten,
    nn.Dropout: _export_dropout,
    nn.BatchNorm1d: _export_batch_norm,
    nn.LayerNorm: _export_layer_norm,
}


# ---- images: Conv2d and friends, registered only when chainrule has them -----------------------
def _conv_pads(layer: Any) -> list[int]:
    """ONNX pads (all the starts, then all the ends) for PyTorch's padding argument."""
    if layer.padding == "valid":
        return [0] * 2 * len(layer.kernel_size)
    if layer.padding == "same":  # as PyTorch: any odd total padding goes at the end
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        return [t // 2 for t in totals] + [t - t // 2 for t in totals]
    padding = layer.padding if isinstance(layer.padding, tuple) else (layer.padding,)
    return [int(p) for p in padding] * 2


def _export_conv(layer: Any, graph: _Graph, where: str) -> None:
    inputs = [graph.x, graph.constant(_name(where, "weight"), layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.constant(_name(where, "bias"), layer.bias.data))
    graph.apply(
        "Conv",
        inputs,
        where,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        pads=_conv_pads(layer),
        group=layer.groups,
    )


def _pool_attributes(layer: Any) -> dict[str, Any]:
    return {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": list(layer.padding) * 2,
    }


def _export_max_pool(layer: Any, graph: _Graph, where: str) -> None:
    graph.apply("MaxPool", [graph.x], where, **_pool_attributes(layer))


def _export_avg_pool(layer: Any, graph: _Graph, where: str) -> None:
    count_include_pad = int(layer.count_include_pad)
    attributes = _pool_attributes(layer)
    graph.apply("AveragePool", [graph.x], where, count_include_pad=count_include_pad, **attributes)


def _export_adaptive_avg_pool(layer: Any, graph: _Graph, where: str) -> None:
    if tuple(layer.output_size) != (1, 1):
        raise ValueError(
            f"cannot export {where}: AdaptiveAvgPool2d exports for output_size 1 (global average "
            f"pooling) only, got {layer.output_size}"
        )
    graph.apply("GlobalAveragePool", [graph.x], where)


if hasattr(nn, "Conv2d"):
    EXPORTERS[nn.Conv2d] = _export_conv
if hasattr(nn, "Conv1d"):
    EXPORTERS[nn.Conv1d] = _export_conv
if hasattr(nn, "MaxPool2d"):
    EXPORTERS[nn.MaxPool2d] = _export_max_pool
if hasattr(nn, "AvgPool2d"):
    EXPORTERS[nn.AvgPool2d] = _export_avg_pool
if hasattr(nn, "AdaptiveAvgPool2d"):
    EXPORTERS[nn.AdaptiveAvgPool2d] = _export_adaptive_avg_pool
if hasattr(nn, "BatchNorm2d"):
    EXPORTERS[nn.BatchNorm2d] = _export_batch_norm  # BatchNormalization takes (N, C, ...) too
if hasattr(nn, "Dropout2d"):
    EXPORTERS[nn.Dropout2d] = _export_dropout  # an identity at inference, like Dropout


def _export_module(module: nn.Module, graph: _Graph, where: str) -> None:
    exporter = EXPORTERS.get(type(module))
    if exporter is None:
        known = ", ".join(sorted(kind.__name__ for kind in EXPORTERS))
        raise TypeError(
            f"cannot export {where or 'the model'}: {type(module).__name__} has no ONNX export; "
            f"exportable layers: {known} (exact types, not subclasses)"
        )
    exporter(module, graph, where)


def _model_dtype(model: nn.Module, example: np.ndarray) -> np.dtype:
    dtypes = {parameter.dtype for parameter in model.parameters()}
    dtypes |= {np.asarray(buffer).dtype for _, buffer in model.named_buffers()}
    dtypes |= {m._dtype for m in model.modules() if type(m) is nn.LayerNorm}
    if len(dtypes) > 1:
        raise ValueError(f"cannot export a model of mixed dtypes {sorted(map(str, dtypes))}")
    dtype = np.dtype(dtypes.pop()) if dtypes else example.dtype
    if dtype not in ELEMENT_TYPES:
        dtype = np.dtype(np.float32)
    return dtype


def _one_name(names: Sequence[str] | str, what: str) -> str:
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != 1 or not isinstance(names[0], str) or not names[0]:
        raise ValueError(f"export: {what} must be one non-empty name, got {names!r}")
    return names[0]


def export(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: Any,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = MIN_EXPORT_OPSET,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write `model` (evaluated as in eval mode) as an ONNX file for ONNX Runtime, like
    `torch.onnx.export`.

    `example_input` (batch, features...) fixes the feature shape; the batch dimension stays
    dynamic. The graph computes in the model's dtype (float32 or float64). `metadata` (JSON) is kept
    in the file's metadata_props, as `chainrule.save` keeps it. The file is checked with
    `onnx.checker.check_model(full_check=True)` and written atomically.

    >>> model = nn.Sequential(nn.Linear(4, 2), nn.Softmax())
    >>> export(model, "model.onnx", np.zeros((1, 4)))  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export expects a chainrule.nn.Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"export: opset must be an integer, got {opset!r}")
    if not MIN_EXPORT_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"export: opset must be from {MIN_EXPORT_OPSET} to {MAX_OPSET} (this onnx package's "
            f"newest), got {opset}"
        )
    input_name = _one_name(input_names, "input_names")
    output_name = _one_name(output_names, "output_names")
    if input_name == output_name:
        raise ValueError(f"export: the input and output are both named {input_name!r}")
    raw = example_input.data if isinstance(example_input, Tensor) else example_input
    example = np.asarray(raw)
    if example.dtype.kind not in "fiu" or example.ndim < 2:
        raise ValueError(
            f"export: example_input must be numbers of shape (batch, features...), got "
            f"{example.dtype} of shape {example.shape}"
        )
    dtype = _model_dtype(model, example)
    example = example.astype(dtype)
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with no_grad():
            output = np.asarray(model(example).data)
    finally:
        for module, training in modes:
            module.training = training
    if output.ndim < 1 or output.shape[0] != example.shape[0]:
        raise ValueError(
            f"export: the model maps a batch of shape {example.shape} to {output.shape}; the "
            f"first dimension must stay the batch"
        )

    graph = _Graph(dtype, opset, input_name)
    _export_module(model, graph, "")
    if graph.nodes:
        graph.nodes[-1].output[0] = output_name
    else:  # an empty Sequential
        graph.nodes.append(helper.make_node("Identity", [input_name], [output_name]))
    element = ELEMENT_TYPES[dtype]
    proto = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "chainrule",
            [helper.make_tensor_value_info(input_name, element, ["batch", *example.shape[1:]])],
            [helper.make_tensor_value_info(output_name, element, ["batch", *output.shape[1:]])],
            graph.initializers,
        ),
        producer_name="chainrule",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", opset)],
    )
    # The oldest IR version that carries this opset: older runtimes read the file too.
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    if metadata is not None:
        text = json.dumps(json_metadata(dict(metadata)), allow_nan=False)
        helper.set_model_props(proto, {METADATA_KEY: text})
    size = proto.ByteSize()
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"export: the model needs {size:,} bytes; an ONNX file holds at most "
            f"{MAX_FILE_BYTES:,} without external data, which chainrule does not write"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ValueError(f"export: the ONNX checker refuses the graph written: {error}") from None
    atomic_write(path, proto.SerializeToString())


_SAME_SHAPE = {
    nn.Sequential,
    nn.Sigmoid,
    nn.Tanh,
    nn.ReLU,
    nn.Softplus,
    nn.Identity,
    nn.LeakyReLU,
    nn.GELU,
    nn.Softmax,
    nn.Dropout,
}


def infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The feature shape (without the batch) the model's first sized layer takes.

    >>> infer_input_shape(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    (4,)
    """
    for module in model.modules():
        kind = type(module)
        if kind is nn.Linear:
            return (module.in_features,)
        if kind is nn.BatchNorm1d:
            return (module.num_features,)
        if kind is nn.LayerNorm:
            return tuple(module.normalized_shape)
        if kind not in _SAME_SHAPE:  # a Flatten or a convolution: the sizes before it are unknown
            break
    raise ValueError(
        "cannot tell the model's input shape from its layers; give it (e.g. --input-shape 1,28,28)"
    )
